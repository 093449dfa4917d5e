package rules

import (
	"strings"
	"testing"
)

func combPolicy(t *testing.T, id, from string, priority int, excludes ...string) *Policy {
	t.Helper()
	d := &Definition{ID: id, Title: "政策" + id, EffectiveFrom: Date{mustDate(t, from)}, Eligibility: "insured_employees > 0",
		Amount: "100", Channels: []string{"wechat"}, Priority: priority, Excludes: excludes}
	p, err := d.Compile()
	if err != nil {
		t.Fatal(err)
	}
	p.Version = 1
	return p
}

func TestExcludesTieBreak(t *testing.T) {
	env := Env{CreditCode: "F", InsuredEmployees: 3, AsOf: mustDate(t, "2022-09-30"), Status: "active"}
	cases := []struct {
		name   string
		a, b   *Policy
		winner string
	}{
		{"higher priority wins", combPolicy(t, "a", "2022-01-01", 0, "b"), combPolicy(t, "b", "2022-06-01", 5), "b"},
		{"then the earlier effective_from", combPolicy(t, "a", "2022-06-01", 0), combPolicy(t, "b", "2022-01-01", 0, "a"), "b"},
		{"then the smaller id", combPolicy(t, "b", "2022-01-01", 0, "a"), combPolicy(t, "a", "2022-01-01", 0), "a"},
		{"declared on one side only still binds both", combPolicy(t, "x", "2022-01-01", 0), combPolicy(t, "y", "2022-01-01", 1, "x"), "y"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			Link([]*Policy{c.a, c.b})
			for _, p := range []*Policy{c.a, c.b} {
				out, err := p.Evaluate(&env)
				if err != nil {
					t.Fatal(err)
				}
				wantEligible := p.Def.ID == c.winner
				if out.Eligible != wantEligible {
					t.Errorf("%s: %s eligible=%v", c.name, p.Def.ID, out.Eligible)
				}
				if !wantEligible && (out.Excluded == nil || out.Excluded.PolicyID != c.winner || out.Excluded.Rule != RuleExcludes ||
					!strings.Contains(out.Excluded.Reason, "不得与「政策"+c.winner+"」重复享受")) {
					t.Errorf("%s: %s excluded by %+v", c.name, p.Def.ID, out.Excluded)
				}
				if ex, _ := Explain(p, &env); ex.Eligible != wantEligible || (!wantEligible && ex.Excluded == nil) {
					t.Errorf("%s: explanation of %s disagrees: %+v", c.name, p.Def.ID, ex)
				}
			}
		})
	}
}

// A loser does not exclude: with a > b > c pairwise exclusive only a–b and b–c, a firm eligible for
// all gets a (b loses to a) and c (its only rival b is not granted).
func TestExcludesChain(t *testing.T) {
	a := combPolicy(t, "a", "2022-01-01", 3, "b")
	b := combPolicy(t, "b", "2022-01-01", 2, "c")
	c := combPolicy(t, "c", "2022-01-01", 1)
	Link([]*Policy{c, b, a})
	env := Env{CreditCode: "F", InsuredEmployees: 3, AsOf: mustDate(t, "2022-09-30")}
	got := ""
	for _, p := range []*Policy{a, b, c} {
		if out, _ := p.Evaluate(&env); out.Eligible {
			got += p.Def.ID
		}
	}
	if got != "ac" {
		t.Fatalf("granted %q, want ac", got)
	}
	// A rival outside its window does not exclude (a itself is not evaluated: the matcher skips it).
	a.Def.EffectiveTo = &Date{mustDate(t, "2022-03-31")}
	got = ""
	for _, p := range []*Policy{b, c} {
		if out, _ := p.Evaluate(&env); out.Eligible {
			got += p.Def.ID
		}
	}
	if got != "b" {
		t.Fatalf("with a expired: granted %q, want b", got)
	}
	if !b.HasCombination() || a.HasCombination() {
		t.Error("HasCombination: b has a better rival, a has none")
	}
}

func TestOncePerFirm(t *testing.T) {
	p := combPolicy(t, "once", "2022-01-01", 0)
	p.Def.OncePer = OncePerFirm
	p.Version = 2
	p.received = map[string]int{"F": 1}
	env := Env{CreditCode: "F", InsuredEmployees: 3, AsOf: mustDate(t, "2022-09-30")}
	out, _ := p.Evaluate(&env)
	if out.Eligible || out.Excluded == nil || out.Excluded.Rule != RuleOncePer || out.Excluded.Version != 1 {
		t.Fatalf("a firm that received v1: %+v", out)
	}
	env.CreditCode = "G"
	if out, _ := p.Evaluate(&env); !out.Eligible {
		t.Fatal("another firm is eligible")
	}
	if !p.HasCombination() {
		t.Error("HasCombination with a once-per history")
	}
}

func TestCombinationValidation(t *testing.T) {
	for body, want := range map[string]string{
		"excludes: [p1]":            "cannot exclude itself",
		"excludes: [x, x]":          "listed twice",
		"excludes: [\"Not An Id\"]": "not a policy id",
		"once_per: year":            "not firm",
	} {
		t.Run(want, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(goodPolicy+body+"\n"))
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %v, want %q", body, err, want)
			}
		})
	}
}
