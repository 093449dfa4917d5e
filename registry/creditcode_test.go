package registry

import (
	"strings"
	"testing"
)

func TestCheckCreditCode(t *testing.T) {
	tests := []struct {
		code       string
		checksumOK bool
		errHas     string // empty: well-formed
	}{
		{"91310000MA1FL0007C", true, ""},
		{"91350100M0001TGQXM", false, ""}, // early pilot code: well-formed, wrong check character
		{"91310000MA1FL0007D", false, ""},
		{"", false, "has 0 characters"},
		{"91310000MA1FL0007", false, "has 17 characters"},
		{"91310000MA1FL0007CC", false, "has 19 characters"},
		{"91310000ma1fl0007c", false, "character 9 'm'"},
		{"9131000OMA1FL0007C", false, "character 8 'O'"},
		{"91310000MA1FL0007Z", false, "character 18 'Z'"},
		{"91310000MA1FL0007中", false, "character 18 '中'"},
		{"9131000中MA1FL0007C", false, "character 8 '中'"},
	}
	for _, tt := range tests {
		ok, err := CheckCreditCode(tt.code)
		switch {
		case tt.errHas == "" && err != nil:
			t.Errorf("CheckCreditCode(%q): unexpected error %v", tt.code, err)
		case tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)):
			t.Errorf("CheckCreditCode(%q) error = %v, want it to mention %q", tt.code, err, tt.errHas)
		case ok != tt.checksumOK:
			t.Errorf("CheckCreditCode(%q) checksumOK = %v, want %v", tt.code, ok, tt.checksumOK)
		}
	}
}

func TestCreditCodeCheckChar(t *testing.T) {
	c, err := CreditCodeCheckChar("91310000MA1FL0007")
	if err != nil || c != 'C' {
		t.Errorf("CreditCodeCheckChar = %c, %v; want C", c, err)
	}
	if _, err := CreditCodeCheckChar("91310000MA1FL000"); err == nil {
		t.Error("16 characters accepted")
	}
	if _, err := CreditCodeCheckChar("91310000MA1FL000I"); err == nil || !strings.Contains(err.Error(), "character 17") {
		t.Errorf("letter I: error %v", err)
	}
}

// GB 11714 check characters: MA1FL000-7 is inside the credit-code example, D2143569-X is the
// standard's own example.
func TestOrgCodeCheckChar(t *testing.T) {
	for body, want := range map[string]byte{"MA1FL000": '7', "D2143569": 'X'} {
		if got := orgCodeCheckChar(body); got != want {
			t.Errorf("orgCodeCheckChar(%s) = %c, want %c", body, got, want)
		}
	}
}
