package notify

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"gorm.io/gorm"

	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// policyText is what a notice shows of a policy version. Versions are immutable, so it is cached
// for the life of the process.
type policyText struct {
	Title, Deadline string
}

type versionKey struct {
	policy  string
	version int
}

type textCache struct {
	mu sync.Mutex
	m  map[versionKey]policyText
}

// texts returns the texts of the given policy versions, reading the ones not cached yet.
func (c *textCache) texts(ctx context.Context, db *gorm.DB, keys []versionKey) (map[versionKey]policyText, error) {
	out := make(map[versionKey]policyText, len(keys))
	var missing []string
	c.mu.Lock()
	if c.m == nil {
		c.m = map[versionKey]policyText{}
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if t, ok := c.m[k]; ok {
			out[k] = t
		} else if !seen[k.policy] {
			seen[k.policy] = true
			missing = append(missing, k.policy)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	var rows []store.PolicyVersion
	if err := db.WithContext(ctx).Select("policy_id, version, source").Where("policy_id IN ?", missing).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("load policy versions: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range rows {
		def, err := rules.FromCanonical([]byte(v.Source))
		if err != nil {
			return nil, fmt.Errorf("policy %s v%d: %w", v.PolicyID, v.Version, err)
		}
		c.m[versionKey{v.PolicyID, v.Version}] = policyText{Title: def.Title, Deadline: def.Deadline}
	}
	for _, k := range keys {
		t, ok := c.m[k]
		if !ok {
			return nil, fmt.Errorf("policy %s v%d not found", k.policy, k.version)
		}
		out[k] = t
	}
	return out, nil
}

// digestTitleLimit bounds the policy list of a digest: provider template variables are short
// (SMS variables are cut by the carrier, WeChat folds long keywords).
const digestTitleLimit = 60

// composeNotice renders one message for the matches it announces (in queue order). A digest lists
// the policies, sums the amounts and gives the earliest deadline; the link opens the firm's page,
// which shows all of its current matches.
func composeNotice(deliveryID uint64, firm *store.Enterprise, matches []*store.Match, texts map[versionKey]policyText, url string) Notice {
	n := Notice{
		DeliveryID: strconv.FormatUint(deliveryID, 10),
		OpenID:     firm.WechatOpenID,
		Phone:      firm.ContactPhone,
		FirmName:   firm.Name,
		URL:        url,
		Policies:   len(matches),
	}
	titles := make([]string, 0, len(matches))
	var sum float64
	amounts := 0
	for _, m := range matches {
		t := texts[versionKey{m.PolicyID, m.PolicyVersion}]
		titles = append(titles, t.Title)
		if m.Amount != nil {
			sum += *m.Amount
			amounts++
		}
		if t.Deadline != "" && (n.Deadline == "" || t.Deadline < n.Deadline) {
			n.Deadline = t.Deadline
		}
	}
	switch len(matches) {
	case 1:
		n.PolicyTitle = titles[0]
		n.Amount = FormatAmount(matches[0].Amount)
	default:
		n.PolicyTitle = listTitles(titles)
		if amounts > 0 {
			n.Amount = "合计" + FormatAmount(&sum)
		}
	}
	summarize(&n, "", titles, sum, amounts)
	n.Date = n.Deadline
	return n
}

// listTitles joins titles with 、 and, past the limit, ends with 等N项.
func listTitles(titles []string) string {
	var b strings.Builder
	for i, t := range titles {
		sep := ""
		if i > 0 {
			sep = "、"
		}
		rest := fmt.Sprintf("等%d项", len(titles))
		if i > 0 && utf8.RuneCountInString(b.String()+sep+t) > digestTitleLimit-utf8.RuneCountInString(rest) {
			return b.String() + rest
		}
		b.WriteString(sep + t)
	}
	return b.String()
}

// FormatAmount renders 元 with thousands separators: 12,345.00元; empty when there is no amount.
func FormatAmount(a *float64) string {
	if a == nil {
		return ""
	}
	s := strconv.FormatFloat(*a, 'f', 2, 64)
	intPart, frac, _ := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String() + "." + frac + "元"
}
