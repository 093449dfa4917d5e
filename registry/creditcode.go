package registry

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// creditCodeAlphabet is the GB 32100-2015 character set; a character's value is its index (0–30).
// I, O, Z, S and V are left out because they are easily confused with 1, 0, 2, 5 and U.
const creditCodeAlphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"

// creditCodeLen is the length of a unified social credit code.
const creditCodeLen = 18

// creditCodeWeights are 3^i mod 31 for positions 1–17.
var creditCodeWeights = [creditCodeLen - 1]int{1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28}

// CheckCreditCode validates a unified social credit code (统一社会信用代码). A non-nil error means
// the code is malformed and the record must be rejected; it names the offending position. A
// well-formed code whose check character is wrong returns checksumOK=false and a nil error: some
// legitimately issued early pilot codes fail the checksum, so callers keep them with a warning.
//
// The check is strict: lowercase letters are malformed here. Callers that accept user input
// uppercase and trim it first, as ParseRecord does.
func CheckCreditCode(code string) (checksumOK bool, err error) {
	rs := []rune(code)
	if len(rs) != creditCodeLen {
		return false, fmt.Errorf("has %d characters, a credit code has %d", len(rs), creditCodeLen)
	}
	want, err := CreditCodeCheckChar(string(rs[:creditCodeLen-1]))
	if err != nil {
		return false, err
	}
	last := rs[creditCodeLen-1]
	if last >= utf8.RuneSelf || strings.IndexByte(creditCodeAlphabet, byte(last)) < 0 {
		return false, badCharError(creditCodeLen, last)
	}
	return byte(last) == want, nil
}

// CreditCodeCheckChar computes the check character (position 18) for the first 17 characters.
func CreditCodeCheckChar(first17 string) (byte, error) {
	if n := utf8.RuneCountInString(first17); n != creditCodeLen-1 {
		return 0, fmt.Errorf("has %d characters before the check character, want %d", n, creditCodeLen-1)
	}
	sum := 0
	for i, r := range []rune(first17) {
		v := -1
		if r < utf8.RuneSelf {
			v = strings.IndexByte(creditCodeAlphabet, byte(r))
		}
		if v < 0 {
			return 0, badCharError(i+1, r)
		}
		sum += v * creditCodeWeights[i]
	}
	return creditCodeAlphabet[(31-sum%31)%31], nil
}

func badCharError(pos int, r rune) error {
	hint := ""
	switch {
	case r >= 'a' && r <= 'z':
		hint = " (lowercase; credit codes use capital letters)"
	case strings.ContainsRune("IOZSV", r):
		hint = " (GB 32100 leaves out I, O, Z, S and V)"
	}
	return fmt.Errorf("character %d %q is not allowed in a credit code%s", pos, r, hint)
}
