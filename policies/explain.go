package policies

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// ErrNotFound is returned when a policy version or firm does not exist.
var ErrNotFound = errors.New("not found")

// ExplainRequest names what to explain. Version 0 is the published version; a match id replays a
// stored decision (its policy, version, firm and as-of date).
type ExplainRequest struct {
	PolicyID   string
	Version    int
	CreditCode string
	AsOf       time.Time
	MatchID    uint64
}

// ExplainFirm explains a stored firm against a stored policy version, linked to the published
// catalog's combination rules, exactly as `match` decides it on that date. Replaying an older
// version uses the registry as it is now: the registry keeps no history of firm data.
func ExplainFirm(ctx context.Context, db *gorm.DB, req ExplainRequest, opts ...rules.Option) (rules.Explanation, error) {
	if req.MatchID != 0 {
		var m store.Match
		if err := db.WithContext(ctx).Where("id = ?", req.MatchID).Take(&m).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return rules.Explanation{}, fmt.Errorf("match %d: %w", req.MatchID, ErrNotFound)
			}
			return rules.Explanation{}, fmt.Errorf("load match %d: %w", req.MatchID, err)
		}
		req.PolicyID, req.Version, req.CreditCode, req.AsOf = m.PolicyID, m.PolicyVersion, m.CreditCode, m.AsOf
	}
	p, err := LinkedVersion(ctx, db, req.PolicyID, req.Version, opts...)
	if err != nil {
		return rules.Explanation{}, err
	}
	env, err := FirmEnv(ctx, db, req.CreditCode, req.AsOf, opts...)
	if err != nil {
		return rules.Explanation{}, err
	}
	return rules.Explain(p, &env)
}

// LinkedVersion compiles a version of a policy (0: the published one) and links it to the
// published catalog's combination rules, the way the matcher evaluates it.
func LinkedVersion(ctx context.Context, db *gorm.DB, policyID string, version int, opts ...rules.Option) (*rules.Policy, error) {
	published, err := LoadPublished(ctx, db, "", opts...)
	if err != nil {
		return nil, err
	}
	return linkVersion(ctx, db, published, policyID, version, opts...)
}

// linkVersion is LinkedVersion on the published catalog as LoadPublished returned it (linked, the
// earlier matches of once-per-firm policies loaded); it links the catalog again around the
// version, so the caller explains with it before linking another.
func linkVersion(ctx context.Context, db *gorm.DB, published []*rules.Policy, policyID string, version int, opts ...rules.Option) (*rules.Policy, error) {
	var p *rules.Policy
	set := make([]*rules.Policy, 0, len(published)+1)
	for _, q := range published {
		if q.Def.ID == policyID {
			if version == 0 || version == q.Version {
				p = q
			}
			continue
		}
		set = append(set, q)
	}
	fromCatalog := p != nil
	if p == nil {
		if version == 0 {
			return nil, fmt.Errorf("policy %s is not published (give --version, or see `policypush policy versions %s`): %w", policyID, policyID, ErrNotFound)
		}
		var row store.PolicyVersion
		if err := db.WithContext(ctx).Where("policy_id = ? AND version = ?", policyID, version).Take(&row).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return nil, fmt.Errorf("policy %s has no version %d: %w", policyID, version, ErrNotFound)
			}
			return nil, fmt.Errorf("load policy %s v%d: %w", policyID, version, err)
		}
		var err error
		if p, err = compileVersion(row, opts...); err != nil {
			return nil, err
		}
	}
	rules.Link(append(set, p))
	if !fromCatalog { // LoadPublished loaded those of the catalog's versions
		if err := loadReceived(ctx, db, p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// ExplainMatches explains stored matches as ExplainFirm explains each (its version and as-of
// date), reading the published catalog once for all of them and each firm once per date: the
// firm page explains every active match of a firm, and explained one by one each explanation
// read and linked the whole catalog again (with the earlier matches of every once-per-firm
// policy). errs[i] is the error of ids[i]'s explanation.
func ExplainMatches(ctx context.Context, db *gorm.DB, ids []uint64, opts ...rules.Option) (out []rules.Explanation, errs []error) {
	out, errs = make([]rules.Explanation, len(ids)), make([]error, len(ids))
	fail := func(err error) ([]rules.Explanation, []error) {
		for i := range errs {
			errs[i] = err
		}
		return out, errs
	}
	if len(ids) == 0 {
		return out, errs
	}
	var ms []store.Match
	if err := db.WithContext(ctx).Where("id IN ?", ids).Find(&ms).Error; err != nil {
		return fail(fmt.Errorf("load matches: %w", err))
	}
	byID := make(map[uint64]*store.Match, len(ms))
	for i := range ms {
		byID[ms[i].ID] = &ms[i]
	}
	published, err := LoadPublished(ctx, db, "", opts...)
	if err != nil {
		return fail(err)
	}
	type firmDay struct {
		code string
		day  time.Time
	}
	envs := map[firmDay]rules.Env{}
	for i, id := range ids {
		m := byID[id]
		if m == nil {
			errs[i] = fmt.Errorf("match %d: %w", id, ErrNotFound)
			continue
		}
		p, err := linkVersion(ctx, db, published, m.PolicyID, m.PolicyVersion, opts...)
		if err != nil {
			errs[i] = err
			continue
		}
		k := firmDay{m.CreditCode, m.AsOf}
		env, ok := envs[k]
		if !ok {
			if env, err = FirmEnv(ctx, db, m.CreditCode, m.AsOf, opts...); err != nil {
				errs[i] = err
				continue
			}
			envs[k] = env
		}
		e := env
		out[i], errs[i] = rules.Explain(p, &e)
	}
	return out, errs
}

// FirmEnv loads one firm of the registry (whatever its status) with its extra fields.
func FirmEnv(ctx context.Context, db *gorm.DB, creditCode string, asOf time.Time, opts ...rules.Option) (rules.Env, error) {
	var e store.Enterprise
	if err := db.WithContext(ctx).Where("credit_code = ?", strings.ToUpper(strings.TrimSpace(creditCode))).Take(&e).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return rules.Env{}, fmt.Errorf("firm %s is not in the registry: %w", creditCode, ErrNotFound)
		}
		return rules.Env{}, fmt.Errorf("load firm %s: %w", creditCode, err)
	}
	envs := []rules.Env{EnvOf(&e, asOf)}
	if err := AttachExtraFacts(ctx, db, envs, opts...); err != nil {
		return rules.Env{}, err
	}
	return envs[0], nil
}
