package matcher

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// benchData is a synthetic province and catalog shared by the benchmarks (built once).
var benchData = sync.OnceValue(func() struct {
	firms    []store.Enterprise
	policies []*rules.Policy
} {
	var d struct {
		firms    []store.Enterprise
		policies []*rules.Policy
	}
	d.firms = registry.Synth(100000, 1)
	for _, def := range SynthCatalog(1000, 1) {
		p, err := def.Compile()
		if err != nil {
			panic(err)
		}
		d.policies = append(d.policies, p)
	}
	return d
})

// BenchmarkEngineFullMatch: every policy over every firm; ns/eval is per (firm, policy).
func BenchmarkEngineFullMatch(b *testing.B) {
	d := benchData()
	snap, err := NewSnapshot(d.firms, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		pl := newPlanner(snap, testAsOf)
		plans := pl.prepared(d.policies, 0)
		if _, err := evaluateAll(context.Background(), snap, plans, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(snap.Active()*len(d.policies)), "ns/eval")
}

// BenchmarkPlainFullMatch: the same with expr alone, on every core.
func BenchmarkPlainFullMatch(b *testing.B) {
	d := benchData()
	var envs []rules.Env
	for i := range d.firms[:20000] {
		if d.firms[i].Status == store.StatusActive {
			envs = append(envs, policies.EnvOf(&d.firms[i], testAsOf))
		}
	}
	b.ResetTimer()
	for b.Loop() {
		for _, p := range d.policies {
			Evaluate(p, envs, 0)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(envs)*len(d.policies)), "ns/eval")
}

// BenchmarkEngineOneFirm: one firm re-evaluated against every policy (plans already built).
func BenchmarkEngineOneFirm(b *testing.B) {
	d := benchData()
	snap, err := NewSnapshot(d.firms, nil)
	if err != nil {
		b.Fatal(err)
	}
	pl := newPlanner(snap, testAsOf)
	idx := pl.index(pl.prepared(d.policies, 0))
	r := rand.New(rand.NewPCG(1, 2))
	f := &frame{}
	b.ResetTimer()
	for b.Loop() {
		evaluateRow(snap, idx, r.IntN(snap.n), f)
	}
}

// BenchmarkEngineEvaluate: like BenchmarkEngineFullMatch with the plans built beforehand.
func BenchmarkEngineEvaluate(b *testing.B) {
	d := benchData()
	snap, err := NewSnapshot(d.firms, nil)
	if err != nil {
		b.Fatal(err)
	}
	plans := newPlanner(snap, testAsOf).prepared(d.policies, 0)
	b.ResetTimer()
	for b.Loop() {
		if _, err := evaluateAll(context.Background(), snap, plans, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(snap.Active()*len(d.policies)), "ns/eval")
}
