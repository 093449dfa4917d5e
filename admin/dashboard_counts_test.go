package admin

import (
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/store"
)

// The dashboard reads the maintained counts (store.MatchCount); its figures equal the queries over
// the raw tables it ran before (kept here as the oracle) for the admin, a district and both parks,
// with and without a policy filter, before and after firms move park and region through the
// registry API.
func TestDashboardCountsEqualRawQueries(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	loc := time.FixedZone("CST", 8*3600)
	type fig struct {
		firms  int64
		amount *float64
	}
	// oracle is the dashboard's former SQL: active matches joined to their firms, in scope.
	oracle := func(where string, args []any, policyID, key string) map[string]fig {
		t.Helper()
		q := f.db.Table("matches AS m").Joins("JOIN enterprises e ON e.credit_code = m.credit_code").
			Where("m.state = ?", store.MatchActive).Where(where, args...)
		if policyID != "" {
			q = q.Where("m.policy_id = ?", policyID)
		}
		if key == "e.park_id" {
			q = q.Where("e.park_id <> ''")
		}
		var rows []struct {
			Key    string
			Firms  int64
			Amount *float64
		}
		if err := q.Select(key + " AS `key`, COUNT(*) AS firms, SUM(m.amount) AS amount").Group(key).Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		out := map[string]fig{}
		for _, r := range rows {
			if key == "SUBSTR(m.matched_at, 1, 13)" { // fold UTC hours into local days, as the old code did
				at, err := time.ParseInLocation("2006-01-02 15", strings.Replace(r.Key, "T", " ", 1), time.UTC)
				if err != nil {
					t.Fatal(err)
				}
				r.Key = at.In(loc).Format("2006-01-02")
			}
			g := out[r.Key]
			g.firms += r.Firms
			if r.Amount != nil {
				sum := *r.Amount
				if g.amount != nil {
					sum += *g.amount
				}
				g.amount = &sum
			}
			out[r.Key] = g
		}
		return out
	}
	same := func(who, what string, got []amountRow, want map[string]fig) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s %s: %d groups, want %d (%v)", who, what, len(got), len(want), want)
			return
		}
		for _, r := range got {
			w, ok := want[r.Key]
			switch {
			case !ok || r.Firms != w.firms:
				t.Errorf("%s %s %s: %d firms, want %d", who, what, r.Key, r.Firms, w.firms)
			case (r.Amount == nil) != (w.amount == nil) || r.Amount != nil && math.Abs(*r.Amount-*w.amount) > 0.005:
				t.Errorf("%s %s %s: amount %v, want %v", who, what, r.Key, fmtAmt(r.Amount), fmtAmt(w.amount))
			}
		}
	}
	// Notices sent, delivered and bounced, links opened, responses: the funnel's later stages.
	var acted []store.Match
	for _, where := range []string{"e.park_id = 'SIP'", "e.park_id = 'NJ-JB'", "e.region_code LIKE '3205%' AND e.park_id = ''"} {
		var some []store.Match
		if err := f.db.Table("matches AS m").Joins("JOIN enterprises e ON e.credit_code = m.credit_code").
			Where("m.state = ? AND "+where, store.MatchActive).
			Where("NOT EXISTS (SELECT 1 FROM delivery_items i WHERE i.match_id = m.id)").
			Order("m.credit_code, m.policy_id").Limit(20).Select("m.*").Find(&some).Error; err != nil || len(some) < 20 {
			t.Fatalf("%d matches to act on where %s: %v", len(some), where, err)
		}
		acted = append(acted, some...)
	}
	now := time.Now().UTC()
	for i, m := range acted {
		if state := []string{store.DeliverySent, store.DeliveryDelivered, store.DeliveryUndelivered, ""}[i%4]; state != "" {
			d := store.Delivery{MatchID: m.ID, Channel: "sms", Recipient: "1380000" + m.CreditCode[10:14], CreditCode: m.CreditCode,
				PolicyID: m.PolicyID, State: state, Provider: "tencent", Items: 1}
			if err := f.db.Create(&d).Error; err != nil {
				t.Fatal(err)
			}
			if err := f.db.Create(&store.DeliveryItem{MatchID: m.ID, Channel: "sms", DeliveryID: d.ID, CreditCode: m.CreditCode,
				PolicyID: m.PolicyID, QueuedAt: now}).Error; err != nil {
				t.Fatal(err)
			}
			// what every delivery transition into or out of sent and delivered does (notify/apply.go)
			if err := store.RefreshReach(f.db, []uint64{d.ID}); err != nil {
				t.Fatal(err)
			}
		}
		if i%3 == 0 {
			if err := f.db.Create(&store.LinkOpen{CreditCode: m.CreditCode, PolicyID: m.PolicyID, FirstAt: now, LastAt: now}).Error; err != nil {
				t.Fatal(err)
			}
		}
		if i%5 < 2 {
			if err := f.db.Create(&store.EnterpriseResponse{MatchID: m.ID, CreditCode: m.CreditCode, PolicyID: m.PolicyID,
				PolicyVersion: m.PolicyVersion, Kind: []string{store.ResponseConfirm, store.ResponseObject}[i%5], At: now}).Error; err != nil {
				t.Fatal(err)
			}
		}
	}
	// funnelOracle is the former funnel: the notify state (from the deliveries, as the list read it
	// before matches kept their reach), link opening and answer of each active match in scope,
	// counted. The list's own notify state must agree with it.
	const itemOf = "SELECT 1 FROM delivery_items i JOIN deliveries d ON d.id = i.delivery_id WHERE i.credit_code = m.credit_code AND i.policy_id = m.policy_id"
	const rawNotify = "(CASE WHEN EXISTS (" + itemOf + " AND d.state = 'delivered') THEN 'delivered'" +
		" WHEN EXISTS (" + itemOf + " AND d.state = 'sent') THEN 'sent'" +
		" WHEN EXISTS (" + itemOf + " AND d.state IN ('dead', 'undelivered'))" +
		" OR EXISTS (SELECT 1 FROM delivery_items i WHERE i.credit_code = m.credit_code AND i.policy_id = m.policy_id AND i.state = 'dead')" +
		" THEN 'failed' ELSE 'pending' END)"
	funnelOracle := func(where string, arg any, policyID string) funnel {
		t.Helper()
		var rows []store.MatchRow
		if err := store.MatchExportQuery(t.Context(), f.db, store.MatchFilter{PolicyID: policyID}).Where(where, arg).
			Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		var raws []struct {
			ID  uint64
			Raw string
		}
		if err := f.db.Table("matches AS m").Where("m.state = ?", store.MatchActive).Select("m.id, " + rawNotify + " AS raw").
			Scan(&raws).Error; err != nil {
			t.Fatal(err)
		}
		raw := map[uint64]string{}
		for _, r := range raws {
			raw[r.ID] = r.Raw
		}
		fn := funnel{Matched: int64(len(rows))}
		for _, row := range rows {
			r := struct {
				store.MatchRow
				Raw string
			}{row, raw[row.MatchID]}
			if r.Notify != r.Raw {
				t.Errorf("match %d: the list says %s, the deliveries say %s", r.MatchID, r.Notify, r.Raw)
			}
			if r.Raw == "sent" || r.Raw == "delivered" {
				fn.Notified++
			}
			if r.Raw == "delivered" {
				fn.Delivered++
			}
			if r.Opened {
				fn.Opened++
			}
			switch r.Response {
			case store.ResponseConfirm:
				fn.Confirmed++
			case store.ResponseObject:
				fn.Objected++
			}
		}
		return fn
	}
	compare := func(stage string) {
		t.Helper()
		for _, sc := range userScopes {
			for _, policyID := range []string{"", f.sipPolicy} {
				path := "/api/v1/dashboard"
				if policyID != "" {
					path += "?policy_id=" + policyID
				}
				res := f.do(f.session(sc.user), http.MethodGet, path, nil)
				if res.status != http.StatusOK {
					t.Fatalf("%s: %d %s", sc.user, res.status, res.body)
				}
				var d dashboard
				res.json(t, &d)
				who := stage + " " + sc.user + " " + policyID
				args := []any{sc.arg}
				want := funnelOracle(sc.where, sc.arg, policyID)
				if d.Funnel != want {
					t.Errorf("%s: funnel %+v, want %+v", who, d.Funnel, want)
				}
				if policyID == "" && (want.Matched == 0 || want.Notified == 0 || want.Delivered == 0 || want.Opened == 0 ||
					want.Confirmed == 0 || want.Objected == 0) {
					t.Errorf("%s: a funnel stage is empty in scope (%+v), the comparison proves little", who, want)
				}
				same(who, "by policy", d.ByPolicy, oracle(sc.where, args, policyID, "m.policy_id"))
				same(who, "by city", d.ByCity, oracle(sc.where, args, policyID, "SUBSTR(e.region_code, 1, 4)"))
				same(who, "by park", d.ByPark, oracle(sc.where, args, policyID, "e.park_id"))
				same(who, "by day", d.ByDay, oracle(sc.where, args, policyID, "SUBSTR(m.matched_at, 1, 13)"))
			}
		}
	}
	compare("seeded")

	// Firms move: into a park, out of one, to another city. The registry API re-matches them too.
	var movers []store.Enterprise
	if err := f.db.Table("enterprises AS e").Where("EXISTS (SELECT 1 FROM matches m WHERE m.credit_code = e.credit_code AND m.state = 'active')").
		Order("e.credit_code").Limit(6).Find(&movers).Error; err != nil || len(movers) < 6 {
		t.Fatalf("%d matched firms to move: %v", len(movers), err)
	}
	tok := f.token("mover", NewAPIToken{Permissions: []Perm{PermRegistry}})
	for i, e := range movers {
		body := map[string]any{"credit_code": e.CreditCode}
		switch i % 3 {
		case 0:
			body["park_id"] = "SIP"
		case 1:
			body["park_id"] = ""
			body["region_code"] = "320505"
		default:
			body["region_code"] = "320102"
			body["park_id"] = "NJ-JB"
		}
		if res := f.do(tok, http.MethodPost, "/api/v1/registry/changes", body); res.status != http.StatusOK {
			t.Fatalf("move %s: %d %s", e.CreditCode, res.status, res.body)
		}
	}
	compare("moved")
	if rep, err := store.Recount(t.Context(), f.db, false); err != nil || len(rep.Diffs) > 0 {
		t.Fatalf("after the moves the counts differ from a recount: %v %v", rep.Diffs, err)
	}
}

func fmtAmt(a *float64) any {
	if a == nil {
		return nil
	}
	return *a
}
