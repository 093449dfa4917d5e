package admin

import (
	"context"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/notify"
	"github.com/policypush/policypush/store"
)

// Dashboards: the funnel matched → notified → delivered → opened → confirmed, and amounts by
// policy, city, park and day, all inside the principal's scope. Charts are inline SVG drawn here.

type funnel struct {
	Matched   int64 `json:"matched"`
	Notified  int64 `json:"notified"`
	Delivered int64 `json:"delivered"`
	Opened    int64 `json:"opened"`
	Confirmed int64 `json:"confirmed"`
	Objected  int64 `json:"objected"`
}

// amountRow is a group of active matches: how many firms and how much money.
type amountRow struct {
	Key    string   `json:"key"`
	Label  string   `json:"label"`
	Firms  int64    `json:"firms"`
	Amount *float64 `json:"amount"`
}

type dashboard struct {
	PolicyID string       `json:"policy_id,omitempty"`
	Scope    string       `json:"scope"`
	Funnel   funnel       `json:"funnel"`
	ByPolicy []amountRow  `json:"by_policy"`
	ByCity   []amountRow  `json:"by_city"`
	ByPark   []amountRow  `json:"by_park"`
	ByDay    []amountRow  `json:"by_day"` // matches made per day (local time), with their amounts
	Failed   int64        `json:"failed_deliveries"`
	Payout   payoutFunnel `json:"payout"` // approved → paid (dashboard_payout.go)

	Charts   map[string]template.HTML `json:"-"`
	Policies []policyOpt              `json:"-"`
}

// cities of Jiangsu (GB/T 2260), to label the by-city chart.
var cityNames = map[string]string{
	"3201": "南京市", "3202": "无锡市", "3203": "徐州市", "3204": "常州市", "3205": "苏州市", "3206": "南通市",
	"3207": "连云港市", "3208": "淮安市", "3209": "盐城市", "3210": "扬州市", "3211": "镇江市", "3212": "泰州市",
	"3213": "宿迁市",
}

func (s *Server) scopedMatches(ctx context.Context, p *Principal, policyID string) *gorm.DB {
	q := s.opts.DB.WithContext(ctx).Table("matches AS m").
		Joins("JOIN enterprises e ON e.credit_code = m.credit_code").
		Where("m.state = ?", store.MatchActive)
	if policyID != "" {
		q = q.Where("m.policy_id = ?", policyID)
	}
	return p.scopeFirms(q, "e")
}

// funnelStages counts the active matches in scope that reached each stage after "matched". These
// are not maintained (docs/console.md, "Maintained aggregates"): they are counted from the notify
// side. A firm's link opening and its response are unique per (firm, policy), so opened, confirmed
// and objected join those tables, the few firms that acted, to the active matches (by credit code
// and policy), instead of probing them once per match. Notified and delivered remain one indexed
// semi-join (delivery_items by firm and policy) per active match in scope: a match is notified when
// a message carrying it was sent or delivered, as notifySQL decides.
func (s *Server) funnelStages(ctx context.Context, p *Principal, policyID string) (funnel, error) {
	var f funnel
	sent := func(states string) string {
		return "EXISTS (SELECT 1 FROM delivery_items i JOIN deliveries d ON d.id = i.delivery_id WHERE i.credit_code = m.credit_code" +
			" AND i.policy_id = m.policy_id AND d.state IN (" + states + "))"
	}
	if err := s.scopedMatches(ctx, p, policyID).Select(`COALESCE(SUM(CASE WHEN ` + sent("'sent', 'delivered'") + ` THEN 1 ELSE 0 END), 0) AS notified,
		COALESCE(SUM(CASE WHEN ` + sent("'delivered'") + ` THEN 1 ELSE 0 END), 0) AS delivered`).Scan(&f).Error; err != nil {
		return f, err
	}
	acted := func(table string) *gorm.DB {
		q := s.opts.DB.WithContext(ctx).Table(table).
			Joins("JOIN matches m ON m.credit_code = x.credit_code AND m.policy_id = x.policy_id AND m.state = ?", store.MatchActive).
			Joins("JOIN enterprises e ON e.credit_code = x.credit_code")
		if policyID != "" {
			q = q.Where("x.policy_id = ?", policyID)
		}
		return p.scopeFirms(q, "e")
	}
	if err := acted("link_opens x").Count(&f.Opened).Error; err != nil {
		return f, err
	}
	var resp struct{ Confirmed, Objected int64 }
	if err := acted("enterprise_responses x").Select("COALESCE(SUM(CASE WHEN x.kind = ? THEN 1 ELSE 0 END), 0) AS confirmed, "+
		"COALESCE(SUM(CASE WHEN x.kind = ? THEN 1 ELSE 0 END), 0) AS objected", store.ResponseConfirm, store.ResponseObject).
		Scan(&resp).Error; err != nil {
		return f, err
	}
	f.Confirmed, f.Objected = resp.Confirmed, resp.Objected
	return f, nil
}

// scopedCounts is the maintained counts (store.MatchCount) of the active matches in scope. The
// counter rows carry the firm's region_code and park_id, so the principal's firm scope applies to
// them under the alias "e" as it does to enterprises.
func (s *Server) scopedCounts(ctx context.Context, p *Principal, policyID string) *gorm.DB {
	q := s.opts.DB.WithContext(ctx).Table("match_counts AS e").Where("e.state = ?", store.MatchActive)
	if policyID != "" {
		q = q.Where("e.policy_id = ?", policyID)
	}
	return p.scopeFirms(q, "e")
}

// countGroup is a group of counter rows: matches, how many have an amount, the amounts in fen.
type countGroup struct {
	Key       string
	N         int64
	Amounts   int64
	AmountFen int64
}

func (g countGroup) row() amountRow {
	r := amountRow{Key: g.Key, Firms: g.N}
	if g.Amounts > 0 {
		a := float64(g.AmountFen) / 100
		r.Amount = &a
	}
	return r
}

// countSums is the SELECT list of a countGroup.
const countSums = "COALESCE(SUM(e.n), 0) AS n, COALESCE(SUM(e.amounts), 0) AS amounts, COALESCE(SUM(e.amount_fen), 0) AS amount_fen"

func (s *Server) dashboard(ctx context.Context, p *Principal, policyID string) (dashboard, error) {
	d := dashboard{PolicyID: policyID, Scope: p.ScopeLabel()}
	var matched int64
	var err error
	if err := s.scopedCounts(ctx, p, policyID).Select("COALESCE(SUM(e.n), 0)").Scan(&matched).Error; err != nil {
		return d, err
	}
	if d.Funnel, err = s.funnelStages(ctx, p, policyID); err != nil {
		return d, err
	}
	d.Funnel.Matched = matched
	groups := []struct {
		dst  *[]amountRow
		key  string
		cond string
	}{
		{&d.ByPolicy, "e.policy_id", ""},
		{&d.ByCity, "SUBSTR(e.region_code, 1, 4)", ""},
		{&d.ByPark, "e.park_id", "e.park_id <> ''"},
	}
	for _, g := range groups {
		q := s.scopedCounts(ctx, p, policyID).Select(g.key + " AS `key`, " + countSums).
			Group(g.key).Having("SUM(e.n) > 0").Order("n DESC").Order("`key`")
		if g.cond != "" {
			q = q.Where(g.cond)
		}
		var rows []countGroup
		if err := q.Limit(30).Scan(&rows).Error; err != nil {
			return d, err
		}
		*g.dst = make([]amountRow, len(rows))
		for i, r := range rows {
			(*g.dst)[i] = r.row()
		}
	}
	if err := s.labelPolicies(ctx, d.ByPolicy); err != nil {
		return d, err
	}
	for i := range d.ByCity {
		d.ByCity[i].Label = cityNames[d.ByCity[i].Key]
		if d.ByCity[i].Label == "" {
			d.ByCity[i].Label = d.ByCity[i].Key
		}
	}
	for i := range d.ByPark {
		d.ByPark[i].Label = d.ByPark[i].Key
	}
	if d.ByDay, err = s.byDay(ctx, p, policyID); err != nil {
		return d, err
	}
	fq := s.opts.DB.WithContext(ctx).Table("deliveries AS d").Joins("JOIN enterprises e ON e.credit_code = d.credit_code").
		Where("d.state = ?", store.DeliveryDead)
	if policyID != "" {
		fq = fq.Where("d.policy_id = ?", policyID)
	}
	if err := p.scopeFirms(fq, "e").Count(&d.Failed).Error; err != nil {
		return d, err
	}
	d.Payout, err = s.payoutFunnel(ctx, p, policyID)
	return d, err
}

func (s *Server) labelPolicies(ctx context.Context, rows []amountRow) error {
	var titles []policyOpt
	if err := s.opts.DB.WithContext(ctx).Table("policies").Select("id, title").Scan(&titles).Error; err != nil {
		return err
	}
	for i := range rows {
		rows[i].Label = rows[i].Key
		for _, t := range titles {
			if t.ID == rows[i].Key {
				rows[i].Label = t.Title
			}
		}
	}
	return nil
}

// byDay groups matches by the local day they were made. The counts are kept by UTC hour
// (store.MatchHour); folding hours into local days happens here.
func (s *Server) byDay(ctx context.Context, p *Principal, policyID string) ([]amountRow, error) {
	var hours []countGroup
	q := s.opts.DB.WithContext(ctx).Table("match_hours AS e")
	if policyID != "" {
		q = q.Where("e.policy_id = ?", policyID)
	}
	if err := p.scopeFirms(q, "e").Select("e.hour AS `key`, " + countSums).Group("e.hour").Scan(&hours).Error; err != nil {
		return nil, err
	}
	days := map[string]*countGroup{}
	for _, h := range hours {
		t, err := time.ParseInLocation("2006-01-02T15", h.Key, time.UTC)
		if err != nil || h.N == 0 {
			continue
		}
		key := t.In(s.opts.Location).Format("2006-01-02")
		r := days[key]
		if r == nil {
			r = &countGroup{Key: key}
			days[key] = r
		}
		r.N += h.N
		r.Amounts += h.Amounts
		r.AmountFen += h.AmountFen
	}
	out := make([]amountRow, 0, len(days))
	for _, g := range days {
		r := g.row()
		r.Label = g.Key[5:]
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b amountRow) int { return strings.Compare(a.Key, b.Key) })
	if len(out) > 60 {
		out = out[len(out)-60:]
	}
	return out, nil
}

func (s *Server) readDashboard(r *http.Request, p *Principal) (dashboard, error) {
	policyID := strings.TrimSpace(r.URL.Query().Get("policy_id"))
	if policyID != "" && !policyIDPattern.MatchString(policyID) {
		return dashboard{}, badRequest("参数 policy_id=%q 无效", policyID)
	}
	return s.dashboard(r.Context(), p, policyID)
}

func (s *Server) dashboardPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	d, err := s.readDashboard(r, p)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	f := d.Funnel
	d.Charts = map[string]template.HTML{
		"funnel": funnelChart([]bar{{"匹配", float64(f.Matched), ""}, {"已通知", float64(f.Notified), ""},
			{"已送达", float64(f.Delivered), ""}, {"已打开", float64(f.Opened), ""}, {"已确认", float64(f.Confirmed), ""}}),
		"policy": barChart(moneyBars(d.ByPolicy)),
		"city":   barChart(moneyBars(d.ByCity)),
		"park":   barChart(moneyBars(d.ByPark)),
		"day":    columnChart(countBars(d.ByDay)),
		"dayAmt": columnChart(moneyBars(d.ByDay)),
	}
	if err := s.opts.DB.WithContext(r.Context()).Table("policies").Select("id, title").Where("published_version > 0").
		Order("id").Scan(&d.Policies).Error; err != nil {
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, p, "dashboard", "总览", d)
}

func (s *Server) apiDashboard(w http.ResponseWriter, r *http.Request, p *Principal) {
	d, err := s.readDashboard(r, p)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// moneyBars charts the amount of each group that has one.
func moneyBars(rows []amountRow) []bar {
	var out []bar
	for _, r := range rows {
		if r.Amount != nil && *r.Amount > 0 {
			out = append(out, bar{Label: r.Label, Value: *r.Amount, Note: notify.FormatAmount(r.Amount)})
		}
	}
	return out
}

// countBars charts the number of firms of each group.
func countBars(rows []amountRow) []bar {
	out := make([]bar, len(rows))
	for i, r := range rows {
		out[i] = bar{Label: r.Label, Value: float64(r.Firms), Note: strconv.FormatInt(r.Firms, 10)}
	}
	return out
}
