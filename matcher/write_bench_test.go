package matcher

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/rules"
)

// BenchmarkWriteFresh stores the new matches of a full match (every match new) the way writeDiff
// does: 140 policies, each matching a random share of 50,000 firms (about 360,000 matches in all,
// like `bench pipeline --firms 50000`), through storeGroup as matchPolicies does. It reports the
// time and the bytes written (write calls, /proc/self/io) per match. BENCH_PER_POLICY=1 writes
// policy by policy instead, as before storeGroup. Against MySQL with POLICYPUSH_TEST_MYSQL_DSN.
func BenchmarkWriteFresh(b *testing.B) {
	const firms, policies = 50000, 140
	codes := make([]string, firms)
	for i := range codes {
		codes[i] = fmt.Sprintf("9132%014d", rand.New(rand.NewPCG(uint64(i), 1)).Uint64()%1e14)
	}
	sort.Strings(codes)
	r := rand.New(rand.NewPCG(1, 2))
	outcomes := make([][]Outcome, policies)
	total := 0
	for p := range outcomes {
		share := []float64{0.005, 0.02, 0.05, 0.15}[p%4]
		if p%10 == 0 {
			share = 0.3
		}
		for _, c := range codes {
			if r.Float64() < share {
				amount := float64(r.IntN(100000))
				outcomes[p] = append(outcomes[p], Outcome{CreditCode: c, Amount: &amount})
			}
		}
		total += len(outcomes[p])
	}
	ctx := context.Background()
	asOf := time.Date(2022, 6, 30, 0, 0, 0, 0, time.UTC)
	wchar := func() float64 {
		raw, _ := os.ReadFile("/proc/self/io")
		for _, l := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(l, "wchar: "); ok {
				var n float64
				fmt.Sscan(v, &n)
				return n
			}
		}
		return 0
	}
	w0 := wchar()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		tdb := testenv.OpenDB(b)
		b.StartTimer()
		results := make([]PolicyResult, policies)
		var items []policyWrite
		for p, ocs := range outcomes {
			pol := &rules.Policy{Def: &rules.Definition{ID: fmt.Sprintf("bench-policy-%03d", p), Channels: []string{"wechat", "sms"}}, Version: 1}
			items = append(items, policyWrite{policy: pol, outcomes: ocs, res: &results[p]})
			if len(items) == policyGroup || p == policies-1 {
				if os.Getenv("BENCH_PER_POLICY") != "" { // the write before storeGroup, for comparison
					for _, it := range items {
						w := writer{asOf: asOf, prefix: "pp", now: time.Now().UTC()}
						if err := w.writeBatched(ctx, tdb.DB, it.policy, changeSet{fresh: it.outcomes}); err != nil {
							b.Fatal(err)
						}
					}
				} else if err := storeGroup(ctx, tdb.DB, items, asOf, "pp", "", "", nil, &Phases{}); err != nil {
					b.Fatal(err)
				}
				items = nil
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*total), "ns/match")
	b.ReportMetric(float64(total), "matches")
	b.ReportMetric((wchar()-w0)/float64(b.N*total), "written-B/match")
}
