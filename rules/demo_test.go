package rules

import "testing"

// The demo catalog compiles and every policy's own tests pass.
func TestDemoCatalog(t *testing.T) {
	dir, err := WriteDemoCatalog(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defs, errs := LoadDir(dir)
	for _, e := range errs {
		t.Error(e)
	}
	if len(defs) != 6 {
		t.Fatalf("want 6 demo policies, got %d", len(defs))
	}
	for _, d := range defs {
		p, err := d.Compile()
		if err != nil {
			t.Fatalf("%s: %v", d.ID, err)
		}
		if len(d.Tests) < 3 {
			t.Errorf("%s: only %d test cases", d.ID, len(d.Tests))
		}
		for _, r := range p.RunTests() {
			if !r.Passed {
				t.Errorf("%s / %s: %s", d.ID, r.Name, r.Problem)
			}
		}
	}
}
