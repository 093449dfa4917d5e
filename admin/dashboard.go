package admin

import (
	"context"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

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
	Policies []store.PolicyTitle      `json:"-"`
}

// cities of Jiangsu (GB/T 2260), to label the by-city chart.
var cityNames = map[string]string{
	"3201": "南京市", "3202": "无锡市", "3203": "徐州市", "3204": "常州市", "3205": "苏州市", "3206": "南通市",
	"3207": "连云港市", "3208": "淮安市", "3209": "盐城市", "3210": "扬州市", "3211": "镇江市", "3212": "泰州市",
	"3213": "宿迁市",
}

// amountOf is the amount row of a group of counter rows: matches, and their amount in 元 when any has
// one.
func amountOf(g store.CountGroup) amountRow {
	r := amountRow{Key: g.Key, Firms: g.N}
	if g.Amounts > 0 {
		a := float64(g.AmountFen) / 100
		r.Amount = &a
	}
	return r
}

// dashboardReads is how many of a dashboard's statements run at once. They are independent
// reads of maintained counts and small tables (about fifteen); one after another their waits
// under a busy pipeline add up (0.5–1.1 s p95 at 1,000,000 firms on MariaDB, each statement
// milliseconds when idle). Four at once keep one request from taking the console's pool
// (database.max_open) from the others.
const dashboardReads = 4

// dashboard reads a principal's dashboard; choices also reads the policies the page's filter
// offers.
func (s *Server) dashboard(ctx context.Context, p *Principal, policyID string, choices bool) (dashboard, error) {
	d := dashboard{PolicyID: policyID, Scope: p.ScopeLabel()}
	f := store.DashboardFilter{Scope: p.firmScope(), PolicyID: policyID}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(dashboardReads)
	var stages store.FunnelStages
	var titles []store.PolicyTitle
	g.Go(func() (err error) { d.Funnel.Matched, err = store.ActiveMatchTotal(ctx, s.opts.DB, f); return })
	g.Go(func() (err error) { stages, err = store.ReadFunnelStages(ctx, s.opts.DB, f); return })
	groups := []struct {
		dst *[]amountRow
		by  store.GroupBy
	}{{&d.ByPolicy, store.ByPolicy}, {&d.ByCity, store.ByCity}, {&d.ByPark, store.ByPark}}
	for _, gr := range groups {
		g.Go(func() error {
			rows, err := store.ActiveMatchGroups(ctx, s.opts.DB, f, gr.by)
			if err != nil {
				return err
			}
			*gr.dst = make([]amountRow, len(rows))
			for i, r := range rows {
				(*gr.dst)[i] = amountOf(r)
			}
			return nil
		})
	}
	g.Go(func() (err error) { titles, err = store.PolicyTitles(ctx, s.opts.DB, store.PoliciesAll); return })
	if choices {
		g.Go(func() (err error) {
			d.Policies, err = store.PolicyTitles(ctx, s.opts.DB, store.PoliciesPublished)
			return
		})
	}
	g.Go(func() (err error) { d.ByDay, err = s.byDay(ctx, f); return })
	g.Go(func() (err error) { d.Failed, err = store.DeadDeliveries(ctx, s.opts.DB, f); return })
	s.payoutFunnel(ctx, g, f, &d.Payout)
	if err := g.Wait(); err != nil {
		return d, err
	}
	d.Funnel.Notified, d.Funnel.Delivered, d.Funnel.Opened = stages.Notified, stages.Delivered, stages.Opened
	d.Funnel.Confirmed, d.Funnel.Objected = stages.Confirmed, stages.Objected
	labelPolicies(titles, d.ByPolicy)
	for i := range d.ByCity {
		d.ByCity[i].Label = cityNames[d.ByCity[i].Key]
		if d.ByCity[i].Label == "" {
			d.ByCity[i].Label = d.ByCity[i].Key
		}
	}
	for i := range d.ByPark {
		d.ByPark[i].Label = d.ByPark[i].Key
	}
	return d, nil
}

// labelPolicies labels rows keyed by policy id with the policies' titles.
func labelPolicies(titles []store.PolicyTitle, rows []amountRow) {
	byID := make(map[string]string, len(titles))
	for _, t := range titles {
		byID[t.ID] = t.Title
	}
	for i := range rows {
		rows[i].Label = rows[i].Key
		if t, ok := byID[rows[i].Key]; ok {
			rows[i].Label = t
		}
	}
}

// byDay groups matches by the local day they were made. The counts are kept by UTC hour
// (store.MatchHour); folding hours into local days happens here.
func (s *Server) byDay(ctx context.Context, f store.DashboardFilter) ([]amountRow, error) {
	hours, err := store.ActiveMatchHours(ctx, s.opts.DB, f)
	if err != nil {
		return nil, err
	}
	days := map[string]*store.CountGroup{}
	for _, h := range hours {
		t, err := time.ParseInLocation("2006-01-02T15", h.Key, time.UTC)
		if err != nil || h.N == 0 {
			continue
		}
		key := t.In(s.opts.Location).Format("2006-01-02")
		r := days[key]
		if r == nil {
			r = &store.CountGroup{Key: key}
			days[key] = r
		}
		r.N += h.N
		r.Amounts += h.Amounts
		r.AmountFen += h.AmountFen
	}
	out := make([]amountRow, 0, len(days))
	for _, g := range days {
		r := amountOf(*g)
		r.Label = g.Key[5:]
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b amountRow) int { return strings.Compare(a.Key, b.Key) })
	if len(out) > 60 {
		out = out[len(out)-60:]
	}
	return out, nil
}

func (s *Server) readDashboard(r *http.Request, p *Principal, choices bool) (dashboard, error) {
	policyID := strings.TrimSpace(r.URL.Query().Get("policy_id"))
	if policyID != "" && !policyIDPattern.MatchString(policyID) {
		return dashboard{}, badRequest("参数 policy_id=%q 无效", policyID)
	}
	return s.dashboard(r.Context(), p, policyID, choices)
}

func (s *Server) dashboardPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	d, err := s.readDashboard(r, p, true)
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
	s.render(w, r, p, "dashboard", "总览", d)
}

func (s *Server) apiDashboard(w http.ResponseWriter, r *http.Request, p *Principal) {
	d, err := s.readDashboard(r, p, false)
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
