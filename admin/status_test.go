package admin

import (
	"net/http"
	"testing"

	"github.com/policypush/policypush/store"
)

// /api/v1/status counts what the caller may see (a park manager its park, a district its region
// prefix) and counts active policies on the evaluation date, not today.
func TestStatusIsScopedAndDated(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	count := func(q string, args ...any) int64 {
		var n int64
		if err := f.db.Raw(q, args...).Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}
	firms := "SELECT COUNT(*) FROM enterprises e WHERE "
	matches := "SELECT COUNT(*) FROM matches m JOIN enterprises e ON e.credit_code = m.credit_code WHERE m.state = 'active' AND "
	for _, tc := range userScopes {
		var st store.Status
		res := f.do(f.session(tc.user), http.MethodGet, "/api/v1/status", nil)
		res.json(t, &st)
		if res.status != http.StatusOK {
			t.Fatalf("%s: %d %s", tc.user, res.status, res.body)
		}
		want := store.Status{Enterprises: count(firms+tc.where, tc.arg), MatchesActive: count(matches+tc.where, tc.arg)}
		if st.Enterprises != want.Enterprises || st.MatchesActive != want.MatchesActive {
			t.Errorf("%s: %d firms, %d matches; want %d, %d", tc.user, st.Enterprises, st.MatchesActive, want.Enterprises, want.MatchesActive)
		}
		if tc.user != "admin" && (st.Enterprises >= count(firms+"1 = 1") || st.OutboxPending != -1) {
			t.Errorf("%s sees province-wide totals: %+v", tc.user, st)
		}
		// The demo's 2022 policies are in effect on the evaluation date (2022-09-30), not today.
		if st.PoliciesActive != 6 {
			t.Errorf("%s: %d active policies on the evaluation date, want 6", tc.user, st.PoliciesActive)
		}
	}
}

// The policy list's active matches per policy (summed from the maintained counts) equal a count of
// the active matches of firms in the registry.
func TestPolicyListCountsActiveMatches(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var out struct {
		Items []policyRow `json:"items"`
	}
	res := f.do(f.session("admin"), http.MethodGet, "/api/v1/policies", nil)
	res.json(t, &out)
	if res.status != http.StatusOK || len(out.Items) == 0 {
		t.Fatalf("%d %s", res.status, res.body)
	}
	some := false
	for _, p := range out.Items {
		var want int64
		if err := f.db.Raw(`SELECT COUNT(*) FROM matches m JOIN enterprises e ON e.credit_code = m.credit_code
			WHERE m.policy_id = ? AND m.state = 'active'`, p.ID).Scan(&want).Error; err != nil {
			t.Fatal(err)
		}
		if p.Matches != want {
			t.Errorf("policy %s: %d active matches listed, want %d", p.ID, p.Matches, want)
		}
		some = some || want > 0
	}
	if !some {
		t.Fatal("the fixture has no active matches: the test compares nothing")
	}
}

// The matched-firms list's total, summed from the maintained counts when the filter narrows only by
// policy, park and region, equals the rows the list walks page by page, for every role.
func TestMatchListTotalEqualsRecount(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	some := false
	for _, user := range []string{"admin", "park_sip", "park_njjb", "region_3205"} {
		for _, filter := range []string{"", "policy_id=" + f.sipPolicy, "park_id=SIP", "region=3205", "region=32", "policy_id=" + f.njjbPolicy + "&region=3201"} {
			var total, listed int64
			after := ""
			for page := 0; ; page++ {
				var l matchList
				res := f.do(f.session(user), http.MethodGet, "/api/v1/matches?per_page=100&"+filter+after, nil)
				res.json(t, &l)
				if res.status == http.StatusForbidden && page == 0 { // a park outside the caller's scope
					break
				}
				if res.status != http.StatusOK {
					t.Fatalf("%s ?%s: %d %s", user, filter, res.status, res.body)
				}
				if page == 0 {
					total = l.Total
				}
				listed += int64(len(l.Items))
				if l.NextCursor == "" {
					break
				}
				after = "&after=" + l.NextCursor
			}
			if total != listed {
				t.Errorf("%s ?%s: total %d, the list holds %d", user, filter, total, listed)
			}
			some = some || listed > 0
		}
	}
	if !some {
		t.Fatal("no role saw any match: the test compares nothing")
	}
}
