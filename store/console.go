package store

// The console's queries (package admin: pages and the JSON API) live in this package, in the
// files store/console_*.go, one per concern: matches (the matched-firms list and its export),
// firms (a firm's page), dashboard, auth (accounts, sessions, tokens, sign-in attempts),
// enterprise (the firm's own page), policies (library, versions, review queue), deliveries (the
// failed-delivery log) and keyset paging. admin parses requests, decides who may see what and
// renders; it calls these functions with the request's context and the *gorm.DB it holds (which
// carries the console's statement limits, BoundStatements) and gets plain structs back. It builds
// no SQL and opens no transaction itself (TestAdminRunsNoQueries keeps it so).
//
// Why here and not a sub-package: store owns the schema, the indexes and the maintained counts the
// console's queries depend on, so the console's SQL is reviewed next to them (as miniflux keeps
// every query in its storage package); the console's files are named console_* so they stay
// apart from the pipeline's.
//
// A caller's firm scope (a park manager's park, a district official's region prefix) reaches
// these functions as a FirmScope value, never as SQL.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// ErrNotFound is what a console read of one record returns when there is none (gorm's
// ErrRecordNotFound, so errors.Is works with either).
var ErrNotFound = gorm.ErrRecordNotFound

// Recorder writes the audit record of a change inside the change's transaction, so that both
// commit or neither does. The console passes a core/audit.Write call (store cannot import
// core/audit, which imports store).
type Recorder func(tx *gorm.DB) error

// FirmScope is which firms a console caller may see: every firm (the zero value), the firms of
// one park, those whose region code starts with a prefix, or none — a park manager or district
// official whose park or prefix is missing sees nothing, a missing scope never widens to all.
type FirmScope struct {
	ParkID       string
	RegionPrefix string
	None         bool
}

// All reports whether the scope is every firm.
func (s FirmScope) All() bool { return s == FirmScope{} }

// Apply narrows q, a query that reaches enterprises (or a table carrying their region_code and
// park_id, such as match_counts) under alias, to the scope. core.NearMissRequest.Firms and
// ReadStatus take it as a function.
func (s FirmScope) Apply(q *gorm.DB, alias string) *gorm.DB {
	switch {
	case s.ParkID != "":
		q = q.Where(alias+".park_id = ?", s.ParkID)
	case s.RegionPrefix != "":
		q = WherePrefix(q, alias+".region_code", s.RegionPrefix)
	case s.None:
		q = q.Where("1 = 0")
	}
	return q
}

// PolicyTitle names a policy in a choice list or a chart.
type PolicyTitle struct{ ID, Title string }

// PolicySet says which policies a title list holds.
type PolicySet int

const (
	PoliciesAll       PolicySet = iota // every policy, published or not
	PoliciesPublished                  // every policy with a published version, retired ones included
	PoliciesInForce                    // published and not retired
)

// PolicyTitles lists the ids and titles of a set of policies, by id.
func PolicyTitles(ctx context.Context, db *gorm.DB, set PolicySet) ([]PolicyTitle, error) {
	q := db.WithContext(ctx).Table("policies").Select("id, title")
	switch set {
	case PoliciesPublished:
		q = q.Where("published_version > 0")
	case PoliciesInForce:
		q = q.Where("published_version > 0 AND retired = ?", false)
	}
	var out []PolicyTitle
	if err := q.Order("id").Scan(&out).Error; err != nil {
		return nil, fmt.Errorf("read policy titles: %w", err)
	}
	return out, nil
}

// LatestMatchAsOf is the evaluation date of the newest active match; ok is false when there is
// none. It is the first row of the province's list: ix_match_recent finds it on SQLite, the
// merge of each place's newest match on MySQL (placeWindow), without reading every match.
func LatestMatchAsOf(ctx context.Context, db *gorm.DB) (asOf time.Time, ok bool, err error) {
	w, err := MatchKeys(ctx, db, MatchFilter{}, Page{Page: 1, PerPage: 1})
	if err == nil && len(w.Keys) > 0 {
		var m Match
		err = db.WithContext(ctx).Select("as_of").Where("id = ?", w.Keys[0].ID).Take(&m).Error
		if err == nil {
			return m.AsOf, true, nil
		}
	}
	switch {
	case err == nil, errors.Is(err, ErrNotFound): // none, or revoked meanwhile (the next look finds another)
		return time.Time{}, false, nil
	default:
		return time.Time{}, false, fmt.Errorf("read the evaluation date: %w", err)
	}
}
