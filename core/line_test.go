package core

import (
	"math"
	"testing"
)

// TestColumnScannersTakeEveryDriverType feeds the scanners what SQLite and MySQL hand over — MySQL
// in both protocols: bytes from the binary one, parsed int64/uint64/float32 from the text protocol
// of interpolated statements — so an export never fails on the driver's choice of Go type.
func TestColumnScannersTakeEveryDriverType(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
		want int64
	}{
		{"int64", int64(42), 42},
		{"uint64", uint64(42), 42},
		{"bytes", []byte("42"), 42},
		{"string", "42", 42},
		{"float64", float64(42), 42},
		{"nil", nil, 0},
	} {
		t.Run("int/"+tc.name, func(t *testing.T) {
			var n int64
			if err := (intCol{&n}).Scan(tc.v); err != nil || n != tc.want {
				t.Fatalf("intCol.Scan(%#v) = %d, %v; want %d", tc.v, n, err, tc.want)
			}
			var u uint64
			if err := (uintCol{&u}).Scan(tc.v); err != nil || u != uint64(tc.want) {
				t.Fatalf("uintCol.Scan(%#v) = %d, %v; want %d", tc.v, u, err, tc.want)
			}
			var f float64
			if err := (floatCol{&f}).Scan(tc.v); err != nil || f != float64(tc.want) {
				t.Fatalf("floatCol.Scan(%#v) = %v, %v; want %d", tc.v, f, err, tc.want)
			}
		})
	}
	var u uint64
	if err := (uintCol{&u}).Scan(uint64(math.MaxUint64)); err != nil || u != math.MaxUint64 {
		t.Errorf("uintCol.Scan(MaxUint64) = %d, %v", u, err)
	}
	var n int64
	if err := (intCol{&n}).Scan(uint64(math.MaxUint64)); err == nil {
		t.Errorf("intCol.Scan(MaxUint64) = %d, want an out-of-range error", n)
	}
	var f float64
	if err := (floatCol{&f}).Scan(float32(1.5)); err != nil || f != 1.5 {
		t.Errorf("floatCol.Scan(float32 1.5) = %v, %v", f, err)
	}
	var s string
	if err := (strCol{&s}).Scan(uint64(7)); err != nil || s != "7" {
		t.Errorf("strCol.Scan(uint64 7) = %q, %v", s, err)
	}
}
