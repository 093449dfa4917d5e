package store_test

import (
	"testing"

	"github.com/policypush/policypush/store"
)

// TestNameGrams: the pairs the name index keeps are adjacent Han characters of the BMP, each
// once, without the legal form's; anything else between two characters breaks the pair.
func TestNameGrams(t *testing.T) {
	pair := func(a, b rune) int64 { return int64(a)<<21 | int64(b) }
	for _, c := range []struct {
		name, text string
		want       []int64
	}{
		{"legal form left out", "恒瑞有限公司", []int64{pair('恒', '瑞'), pair('瑞', '有')}},
		{"each pair once", "瑞瑞瑞", []int64{pair('瑞', '瑞')}},
		{"ASCII breaks a pair (matched without case, and by MySQL with accents)", "恒A瑞", nil},
		{"full-width parentheses break a pair", "恒（瑞）达", nil},
		{"outside the BMP (equal to each other in utf8mb4_general_ci)", "恒𠀀瑞", nil},
		{"a compatibility ideograph (equal to 豈 U+8C48 in the Unicode collations)", "恒\uF900瑞", nil},
		{"extension A counts", "恒\u3400", []int64{pair('恒', '\u3400')}},
		{"one character", "恒", nil},
		{"only the legal form", "股份有限公司", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := store.NameGrams(c.text)
			if len(got) != len(c.want) {
				t.Fatalf("NameGrams(%q) = %v, want %v", c.text, got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("NameGrams(%q) = %v, want %v", c.text, got, c.want)
				}
			}
		})
	}
}
