package rules

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// demoFS holds the demo catalog: the six real 2022 policies of the domain brief, with tests.
//
//go:embed demo/*.yaml
var demoFS embed.FS

// WriteDemoCatalog copies the demo policy files into dir (created if needed) and returns dir.
func WriteDemoCatalog(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	entries, err := fs.ReadDir(demoFS, "demo")
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		b, err := demoFS.ReadFile("demo/" + e.Name())
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			return "", fmt.Errorf("write demo policy: %w", err)
		}
	}
	return dir, nil
}

// DemoPolicies compiles the embedded demo catalog, in file order, without writing it anywhere.
func DemoPolicies() ([]*Policy, error) {
	entries, err := fs.ReadDir(demoFS, "demo")
	if err != nil {
		return nil, err
	}
	var out []*Policy
	for _, e := range entries {
		name := "demo/" + e.Name()
		b, err := demoFS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		d, err := Parse(name, b)
		if err != nil {
			return nil, err
		}
		p, err := d.Compile()
		if err != nil {
			return nil, d.Locate(name, err)
		}
		out = append(out, p)
	}
	return out, nil
}
