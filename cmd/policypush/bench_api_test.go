package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/policypush/policypush/internal/testenv"
)

// TestBenchAPISmoke: `bench api` on a tiny data dir for a second drives every endpoint of every
// role, with requests and without errors, and measures the export.
func TestBenchAPISmoke(t *testing.T) {
	t.Parallel()
	args := []string{"bench", "api", "--firms", "800", "--policies", "16", "--rate", "60", "--duration", "1s",
		"--query-timeout", "1m", "--json", "--dir", filepath.Join(t.TempDir(), "bench")}
	if db := testenv.OpenDB(t); db.Driver == "mysql" { // a fresh database of the test's own
		args = append(args, "--mysql-dsn", db.DSN)
	}
	cmd := exec.Command(binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench api: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	var res apiResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("bench api --json: %v\n%s", err, stdout.String())
	}
	if res.Matches == 0 {
		t.Fatalf("no matches to browse: %+v", res)
	}
	if res.EngineLoadSeconds <= 0 {
		t.Errorf("the attack did not wait for the matcher engine's load: %+v", res)
	}
	want := map[string][]string{
		"admin": {"page /", "page /firms", "page /firms (page 2)", "page /firms/{code}", "page /audit", "GET /api/v1/matches", "GET /api/v1/audit",
			"GET /api/v1/matches?q={name}"},
		"region_3205": {"page /firms", "GET /api/v1/matches", "GET /api/v1/firms/{code}", "GET /api/v1/dashboard"},
		"park_sip":    {"page /firms", "GET /api/v1/matches", "GET /api/v1/firms/{code}", "GET /api/v1/deliveries"},
	}
	seen := map[string]map[string]bool{}
	for _, e := range res.Endpoints {
		if e.Requests == 0 || e.Errors != 0 {
			t.Errorf("%s %s: %d requests, %d errors %v", e.Role, e.Endpoint, e.Requests, e.Errors, e.Codes)
		}
		if seen[e.Role] == nil {
			seen[e.Role] = map[string]bool{}
		}
		seen[e.Role][e.Endpoint] = true
	}
	for role, eps := range want {
		for _, ep := range eps {
			if !seen[role][ep] {
				t.Errorf("no line for %s %s in %+v", role, ep, res.Endpoints)
			}
		}
	}
	if seen["park_sip"]["page /audit"] {
		t.Error("a park manager was sent to the audit log")
	}
	if res.ExportRows == 0 || res.ExportRows > res.Matches || res.ExportRowsPerSec <= 0 {
		t.Errorf("export: %d rows (%d matches), %.0f rows/s %s", res.ExportRows, res.Matches, res.ExportRowsPerSec, res.ExportError)
	}
}
