package rules

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Money goes to finance departments, who reconcile it against their spreadsheets: an amount must be
// what decimal arithmetic gives, rounded to the fen half away from zero — Excel's ROUND(x, 2) of the
// same formula. Rules compute in float64, which is not decimal: 165.85 × 0.9 is 149.265 in decimal
// but 149.26499999999999 as a float64, so rounding the float directly gives 149.26. Like Excel, the
// float is first rounded to 15 significant digits (the precision a float64 holds for every decimal
// of up to 15 digits, so this recovers the decimal result of a formula over fen amounts and short
// rates), then that decimal is rounded to the fen. RoundFen is the one rounding every amount goes
// through: matching (either engine path), explanations, the calculator, policy tests and exports.

// maxFen bounds an amount so that its fen fit a float64 exactly (2^53 fen ≈ 90 万亿元).
const maxFen = 1 << 53

// RoundFen rounds x to the fen as finance does: to 15 significant digits, then half away from zero
// to 0.01. NaN and infinities are returned unchanged.
func RoundFen(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) || x == 0 {
		return x
	}
	// d.dddddddddddddde±XX: 15 significant digits, correctly rounded from the binary value.
	s := strconv.FormatFloat(math.Abs(x), 'e', 14, 64)
	mant, expText, _ := strings.Cut(s, "e")
	exp, err := strconv.Atoi(expText)
	if err != nil {
		return x
	}
	digits := strings.Replace(mant, ".", "", 1) // 15 digits; value = digits × 10^(exp-14)
	// In fen: digits × 10^(exp-12). Keep the digits before the fen point, round on the next one.
	keep := len(digits) + exp - 12
	var fen float64
	switch {
	case keep <= 0:
		if keep == 0 && digits[0] >= '5' {
			fen = 1
		}
	case keep >= len(digits):
		n, _ := strconv.ParseUint(digits, 10, 64)
		fen = float64(n) * math.Pow10(keep-len(digits))
	default:
		n, _ := strconv.ParseUint(digits[:keep], 10, 64)
		if digits[keep] >= '5' {
			n++
		}
		fen = float64(n)
	}
	if fen >= maxFen {
		return x // too large to be money: RoundAmount rejects it
	}
	return math.Copysign(fen/100, x)
}

// RoundAmount rounds an amount to the fen (RoundFen) and rejects what is not money: NaN, infinite,
// negative, or too large to hold to the fen.
func RoundAmount(v float64) (float64, error) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("amount is not a number (%v)", v)
	}
	if v < 0 {
		return 0, fmt.Errorf("amount %.2f is negative", v)
	}
	if v*100 >= maxFen {
		return 0, fmt.Errorf("amount %.0f 元 is too large to be paid to the fen", v)
	}
	return RoundFen(v), nil
}
