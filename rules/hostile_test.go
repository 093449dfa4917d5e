package rules

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/store"
)

// The hostile corpus (testdata/hostile) is a directory of policy files as `policy apply` reads
// them, each saying on its first line what must happen to it:
//
//	# want: reject: <text the error must contain>
//	# want: accept                (evaluates for every firm without an error)
//	# want: accept errors         (evaluates, with a runtime error recorded for some firms)
//
// Rejected files must fail with a located, clear error; accepted ones are evaluated over a
// 5,000-firm synthetic registry plus deliberately odd firms, which must finish — never a crash,
// never a hang — with bounded allocation.
const hostileDir = "testdata/hostile"

type hostileCase struct {
	file    string
	reject  bool
	mention string
	errors  bool
}

func hostileCases(t testing.TB) map[string]hostileCase {
	t.Helper()
	entries, err := os.ReadDir(hostileDir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]hostileCase{}
	for _, e := range entries {
		f, err := os.Open(filepath.Join(hostileDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(f).ReadString('\n')
		f.Close()
		want, ok := strings.CutPrefix(strings.TrimSpace(line), "# want: ")
		if !ok {
			t.Fatalf("%s: first line must be `# want: ...`", e.Name())
		}
		c := hostileCase{file: e.Name()}
		switch {
		case strings.HasPrefix(want, "reject:"):
			c.reject, c.mention = true, strings.TrimSpace(strings.TrimPrefix(want, "reject:"))
		case want == "accept":
		case want == "accept errors":
			c.errors = true
		default:
			t.Fatalf("%s: unknown expectation %q", e.Name(), want)
		}
		out[e.Name()] = c
	}
	return out
}

// oddFirms are firms at the edges of what the registry can hold.
func oddFirms(asOf time.Time) []Env {
	long := strings.Repeat("啊", 500)
	firms := []store.Enterprise{
		{CreditCode: "ODD000000000000001", Status: store.StatusActive},
		{CreditCode: "ODD000000000000002", Status: store.StatusActive, Name: long, RegionCode: long, IndustryCode: long,
			Employees: math.MaxInt64, InsuredEmployees: math.MaxInt64, AnnualRevenue: math.MaxFloat64, TotalAssets: math.Inf(1),
			VATSales: math.NaN(), LayoffRate: 1, UnemploymentInsurancePaid: math.MaxFloat64, GraduatesHired: math.MaxInt64},
		{CreditCode: "ODD000000000000003", Status: store.StatusActive, Name: "12", Employees: -5, InsuredEmployees: math.MinInt64,
			AnnualRevenue: -1e308, IndustryCode: "H62", RegionCode: "3205"},
	}
	out := make([]Env, len(firms))
	for i := range firms {
		out[i] = envOf(&firms[i], asOf)
	}
	return out
}

func TestHostileCorpus(t *testing.T) {
	cases := hostileCases(t)
	if len(cases) < 60 {
		t.Fatalf("the corpus has only %d cases", len(cases))
	}
	defs, errs := LoadDir(hostileDir)
	rejected := map[string]*FileError{}
	for _, err := range errs {
		var fe *FileError
		if !errors.As(err, &fe) {
			t.Fatalf("not a FileError: %v", err)
		}
		rejected[filepath.Base(fe.File)] = fe
	}
	accepted := map[string]*Definition{}
	for _, d := range defs {
		accepted[strings.TrimPrefix(d.ID, "hostile-")+".yaml"] = d
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			fe, isRejected := rejected[name]
			def := accepted[name]
			switch {
			case c.reject && !isRejected:
				t.Errorf("%s: accepted, want it rejected (%s)", name, c.mention)
			case c.reject && !strings.Contains(fe.Error(), c.mention):
				t.Errorf("%s: error %q does not say %q", name, fe.Error(), c.mention)
			case c.reject && (fe.Line < 1 || fe.PolicyID == ""):
				t.Errorf("%s: error %q has no position or policy id", name, fe.Error())
			case !c.reject && isRejected:
				t.Errorf("%s: rejected (%v), want it accepted", name, fe)
			case !c.reject && def == nil:
				t.Errorf("%s: not loaded", name)
			}
		})
	}
}

// TestHostileEvaluation is the end-to-end variant: every accepted hostile rule is compiled and
// evaluated (and explained) over 5,000 synthetic firms and the odd ones. The guard below is a
// generous wall-clock limit that turns a hang into a failure instead of a stuck test run; it is not
// a speed assertion.
func TestHostileEvaluation(t *testing.T) {
	if testing.Short() {
		t.Skip("evaluates the hostile corpus over 5,000 firms")
	}
	cases := hostileCases(t)
	defs, _ := LoadDir(hostileDir)
	asOf := mustDate(t, "2022-09-30")
	firms := append(synthEnvs(5000, 3, asOf), oddFirms(asOf)...)
	const guard = 5 * time.Minute
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, d := range defs {
			c := cases[strings.TrimPrefix(d.ID, "hostile-")+".yaml"]
			p, err := d.Compile()
			if err != nil {
				t.Errorf("%s: %v", d.ID, err)
				continue
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			evalErrs := 0
			for i := range firms {
				if _, err := p.Evaluate(&firms[i]); err != nil {
					evalErrs++
				}
				if i%500 == 0 {
					if _, err := Explain(p, &firms[i]); err != nil {
						t.Errorf("%s: explain: %v", d.ID, err)
					}
				}
			}
			runtime.ReadMemStats(&after)
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<30 {
				t.Errorf("%s: allocated %d MiB over %d firms", d.ID, alloc>>20, len(firms))
			}
			switch {
			case c.errors && evalErrs == 0:
				t.Errorf("%s: expected runtime errors for some firms, got none", d.ID)
			case !c.errors && evalErrs > 0:
				t.Errorf("%s: %d firms failed to evaluate", d.ID, evalErrs)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(guard):
		t.Fatalf("the hostile corpus did not finish evaluating within %s: a rule hangs", guard)
	}
}

// The sandbox's static cost bound holds for every accepted rule and is below the limit.
func TestHostileCostBound(t *testing.T) {
	defs, _ := LoadDir(hostileDir)
	for _, d := range defs {
		p, err := d.Compile()
		if err != nil {
			t.Fatal(err)
		}
		if p.Eligibility.Cost <= 0 || p.Eligibility.Cost > MaxCost {
			t.Errorf("%s: cost %d outside (0, %d]", d.ID, p.Eligibility.Cost, MaxCost)
		}
	}
}

// The two bombs of the issue, as they would be written: a million nested parentheses (rejected
// before the parser, which would otherwise overflow its stack) and a repeat/reduce doubling (no
// such functions).
func TestHostileGenerated(t *testing.T) {
	cases := map[string]string{
		strings.Repeat("(", 1_000_000) + "1" + strings.Repeat(")", 1_000_000) + " > 0": "at most 4000",
		strings.Repeat("(", 1000) + "1" + strings.Repeat(")", 1000) + " > 0":           "nesting deeper than 24",
		strings.Repeat("[", 3000):           "nesting deeper than 24",
		strings.Repeat("-", 3990) + "1 > 0": "maximum allowed nodes",
		`"` + strings.Repeat(`\"`, 1999):    "literal not terminated",
	}
	for src, want := range cases {
		t.Run(want, func(t *testing.T) {
			_, err := Compile("eligibility", src, nil, reflect.Bool)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%.40s…: %v, want %q", src, err, want)
			}
		})
	}
}

// BenchmarkCostliestAcceptedRule evaluates, per firm, the accepted hostile rule with the highest
// static cost, next to a demo policy: what the sandbox's limit lets through at worst.
func BenchmarkCostliestAcceptedRule(b *testing.B) {
	defs, _ := LoadDir(hostileDir)
	var worst *Policy
	for _, d := range defs {
		p, err := d.Compile()
		if err != nil {
			b.Fatal(err)
		}
		if worst == nil || p.Eligibility.Cost > worst.Eligibility.Cost {
			worst = p
		}
	}
	demo := demoPolicies(b)
	asOf := time.Date(2022, 9, 30, 0, 0, 0, 0, time.UTC)
	firms := synthEnvs(1000, 3, asOf)
	for _, p := range []*Policy{worst, demo[0]} {
		b.Run(fmt.Sprintf("%s/cost=%d", p.Def.ID, p.Eligibility.Cost), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				_, _ = p.Evaluate(&firms[i%len(firms)])
			}
		})
	}
}
