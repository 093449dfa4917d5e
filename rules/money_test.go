package rules

import (
	"math"
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// decimalFen is the oracle: the exact decimal product of decimal factors, rounded half away from
// zero to the fen, as finance's spreadsheet computes it.
func decimalFen(t *testing.T, factors ...string) float64 {
	t.Helper()
	p := big.NewRat(1, 1)
	for _, f := range factors {
		r, ok := new(big.Rat).SetString(f)
		if !ok {
			t.Fatalf("bad decimal %q", f)
		}
		p.Mul(p, r)
	}
	fen := new(big.Rat).Mul(p, big.NewRat(100, 1))
	q, m := new(big.Int).QuoRem(fen.Num(), fen.Denom(), new(big.Int))
	if new(big.Int).Mul(new(big.Int).Abs(m), big.NewInt(2)).Cmp(fen.Denom()) >= 0 {
		q.Add(q, big.NewInt(int64(fen.Sign())))
	}
	f, _ := new(big.Rat).SetFrac(q, big.NewInt(100)).Float64()
	return f
}

func TestRoundFenHalfFenCases(t *testing.T) {
	cases := []struct {
		a, b string
		want float64
	}{
		{"165.85", "0.9", 149.27},       // 149.265: the float is 149.26499999999999
		{"385013.31", "0.5", 192506.66}, // 192506.655
		{"1.005", "1", 1.01},
		{"2.675", "1", 2.68},
		{"0.005", "1", 0.01},
		{"0.0049", "1", 0},
		{"149.2649", "1", 149.26},
		{"1000", "0.9", 900},
		{"3.3", "3", 9.9},
		{"1234567.89", "0.6", 740740.73}, // 740740.734
		{"999999999.99", "0.9", 899999999.99},
		{"0", "0.9", 0},
	}
	for _, c := range cases {
		t.Run(c.a+"×"+c.b, func(t *testing.T) {
			a, _ := strconv.ParseFloat(c.a, 64)
			b, _ := strconv.ParseFloat(c.b, 64)
			got, err := RoundAmount(a * b)
			if err != nil || got != c.want {
				t.Errorf("%s × %s: got %v (%v), want %v", c.a, c.b, got, err, c.want)
			}
			if want := decimalFen(t, c.a, c.b); want != c.want {
				t.Errorf("oracle %s × %s = %v, table says %v", c.a, c.b, want, c.want)
			}
		})
	}
	if got := RoundFen(-165.85 * 0.9); got != -149.27 {
		t.Errorf("negative half fen: %v", got)
	}
}

// RoundAmount equals decimal arithmetic on the formulas amounts come from: a fen amount times a rate
// of up to four decimals, and a whole headcount times a per-head sum.
func TestRoundFenAgreesWithDecimal(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for i := 0; i < 50000; i++ {
		fen := r.Int64N(100_000_000_00) // up to 1亿元
		amount := strconv.FormatFloat(float64(fen)/100, 'f', 2, 64)
		rate := strconv.FormatFloat(float64(r.IntN(10001))/10000, 'f', 4, 64)
		a, _ := strconv.ParseFloat(amount, 64)
		b, _ := strconv.ParseFloat(rate, 64)
		got, err := RoundAmount(a * b)
		if want := decimalFen(t, amount, rate); err != nil || got != want {
			t.Fatalf("%s × %s: got %v (%v), decimal gives %v", amount, rate, got, err, want)
		}
	}
}

func TestRoundAmountRejectsWhatIsNotMoney(t *testing.T) {
	for _, v := range []float64{math.NaN(), math.Inf(1), -0.01, 1e14} {
		if _, err := RoundAmount(v); err == nil {
			t.Errorf("%v accepted", v)
		}
	}
}

// The half-fen cases come out the same through evaluation, the explanation (amount and its label)
// and the calculator.
func TestHalfFenThroughExplainAndCalc(t *testing.T) {
	d, err := Parse("rate.yaml", []byte(`id: rate
title: 比例返还
effective_from: 2022-01-01
params: {sme_rate: 0.9, large_rate: 0.5}
eligibility: unemployment_insurance_paid > 0
amount: |
  (employees >= 300 ? params.large_rate : params.sme_rate) * unemployment_insurance_paid
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := d.Compile()
	if err != nil {
		t.Fatal(err)
	}
	Link([]*Policy{p})
	asOf := d.EffectiveFrom.Time
	for _, c := range []struct {
		employees int64
		paid      float64
		want      float64
		label     string
	}{
		{10, 165.85, 149.27, "= 149.27元"},
		{500, 385013.31, 192506.66, "= 192506.66元"},
	} {
		t.Run(c.label, func(t *testing.T) {
			facts := map[string]any{"employees": c.employees, "unemployment_insurance_paid": c.paid}
			env, err := EnvFromFacts(facts, asOf)
			if err != nil {
				t.Fatal(err)
			}
			out, err := p.Evaluate(&env)
			if err != nil || out.Amount == nil || *out.Amount != c.want {
				t.Errorf("evaluate %v: %v %v", c.paid, out.Amount, err)
			}
			ex, err := Explain(p, &env)
			if err != nil || ex.Amount == nil || *ex.Amount != c.want || !strings.HasSuffix(ex.AmountLabel, c.label) {
				t.Errorf("explain %v: %v %q %v", c.paid, ex.Amount, ex.AmountLabel, err)
			}
			rep, err := Calculate([]*Policy{p}, facts, asOf)
			if err != nil || len(rep.Results) != 1 || rep.Results[0].Amount == nil || *rep.Results[0].Amount != c.want {
				t.Errorf("calc %v: %+v %v", c.paid, rep.Results, err)
			}
		})
	}
}
