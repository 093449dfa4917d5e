package admin

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"
	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/store"
)

// TestFiveDoorsStoreTheSameFirms feeds the same records through every way into the registry — a
// CSV file, an XLSX workbook, the HTTP change API, the NATS change subject and the SQL source — and
// requires identical stored firms and the same rejection for the same bad record.
func TestFiveDoorsStoreTheSameFirms(t *testing.T) {
	t.Parallel()
	firms := registry.Synth(14, 41)
	bad := firms[len(firms)-1]
	firms = firms[:len(firms)-1]
	bad.Employees = -4 // every door must refuse it with the same reason
	keys := testenv.PlatformColumns
	text := func(e store.Enterprise, k string) string {
		if k == "employees" && e.CreditCode == bad.CreditCode {
			return "-4"
		}
		return registry.Text(e, k)
	}
	all := append(append([]store.Enterprise{}, firms...), bad)
	const wantReason = "is negative; counts cannot be"

	type door struct {
		name  string
		write func(t *testing.T, db *gorm.DB) []string // returns the rejection messages
	}
	doors := []door{
		{"csv", func(t *testing.T, db *gorm.DB) []string {
			var b bytes.Buffer
			w := csv.NewWriter(&b)
			_ = w.Write(keys)
			for _, e := range all {
				rec := make([]string, len(keys))
				for i, k := range keys {
					rec[i] = text(e, k)
				}
				_ = w.Write(rec)
			}
			w.Flush()
			path := filepath.Join(t.TempDir(), "firms.csv")
			if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			return importIssues(t, db, path)
		}},
		{"xlsx", func(t *testing.T, db *gorm.DB) []string {
			f := excelize.NewFile()
			defer f.Close()
			header := make([]any, len(keys))
			for i, k := range keys {
				header[i] = k
			}
			_ = f.SetSheetRow("Sheet1", "A1", &header)
			for r, e := range all {
				row := make([]any, len(keys))
				for i, k := range keys {
					v := text(e, k)
					row[i] = v
					if n, err := strconv.ParseFloat(v, 64); err == nil && k != "credit_code" && k != "region_code" && k != "contact_phone" {
						row[i] = n // numbers as number cells, as a spreadsheet holds them
					}
				}
				cell, _ := excelize.CoordinatesToCellName(1, r+2)
				_ = f.SetSheetRow("Sheet1", cell, &row)
			}
			path := filepath.Join(t.TempDir(), "firms.xlsx")
			if err := f.SaveAs(path); err != nil {
				t.Fatal(err)
			}
			return importIssues(t, db, path)
		}},
		{"http", func(t *testing.T, db *gorm.DB) []string {
			e := doorEngine(t, db, nil)
			srv, err := New(Options{DB: db, LinkSecret: []byte("test-link-secret-0123456789abcdef"), Matcher: e})
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewServer(srv)
			defer ts.Close()
			_, secret, err := CreateAPIToken(context.Background(), db, NewAPIToken{Name: "platform", Permissions: []Perm{PermRegistry}}, "test", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodPost, ts.URL+"/api/v1/registry/changes", bytes.NewReader(changeJSON(all, keys, text)))
			req.Header.Set("Authorization", "Bearer "+secret)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var out matcher.ChangeResult
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("POST: %d %v", resp.StatusCode, err)
			}
			return out.Rejected
		}},
		{"nats", func(t *testing.T, db *gorm.DB) []string {
			var logs testenv.SyncBuffer
			e := doorEngine(t, db, slog.New(slog.NewTextHandler(&logs, nil)))
			b := testenv.OpenBus(t)
			sfx := testenv.Suffix()
			o := matcher.StreamOptions{Stream: "PPDOOR_" + sfx, Subject: "ppdoor" + sfx + ".registry.changed", Replicas: 1,
				CatchUp: time.Hour, FetchMaxWait: 200 * time.Millisecond, RetryDelay: 100 * time.Millisecond}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); _ = e.Run(ctx, b.JS, o) }()
			defer func() {
				cancel()
				wg.Wait()
				c, cc := context.WithTimeout(context.Background(), 5*time.Second)
				defer cc()
				_ = b.JS.DeleteStream(c, o.Stream+"_REGISTRY")
			}()
			deadline := time.Now().Add(20 * time.Second)
			for {
				if _, err := b.JS.Publish(ctx, o.Subject, changeJSON(all, keys, text)); err == nil {
					break
				} else if time.Now().After(deadline) {
					t.Fatal(err) // the stream is created by Run
				}
				time.Sleep(50 * time.Millisecond)
			}
			for !strings.Contains(logs.String(), "registry change rejected") {
				if time.Now().After(deadline) {
					t.Fatalf("the change event was not applied within 20s; log:\n%s", logs.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			return []string{logs.String()}
		}},
		{"sql", func(t *testing.T, db *gorm.DB) []string {
			p := testenv.NewPlatform(t, firms, time.Date(2024, 5, 6, 9, 0, 0, 0, time.UTC))
			p.Put(t, bad, time.Date(2024, 5, 6, 9, 0, 0, 0, time.UTC))
			sum, err := registry.Sync(context.Background(), db, registry.Source{Driver: p.Driver, DSN: p.DSN, Query: p.Query},
				registry.SyncOptions{Sink: doorEngine(t, db, nil)})
			if err != nil {
				t.Fatal(err)
			}
			return issueStrings(sum.Issues)
		}},
	}
	var want []store.Enterprise
	for _, d := range doors {
		t.Run(d.name, func(t *testing.T) {
			db := testenv.OpenDB(t).DB
			msgs := d.write(t, db)
			t.Logf("rejections: %q", msgs)
			if len(msgs) != 1 || !strings.Contains(msgs[0], bad.CreditCode) && d.name != "csv" && d.name != "xlsx" ||
				!strings.Contains(msgs[0], "employees") || !strings.Contains(msgs[0], wantReason) {
				t.Errorf("rejections %q, want one for %s, employees: %s", msgs, bad.CreditCode, wantReason)
			}
			var got []store.Enterprise
			if err := db.Order("credit_code").Find(&got).Error; err != nil {
				t.Fatal(err)
			}
			if len(got) != len(firms) {
				t.Fatalf("%d firms stored, want %d", len(got), len(firms))
			}
			if want == nil {
				want = got
				return
			}
			for i := range got {
				if !registry.SameData(got[i], want[i]) {
					t.Errorf("firm %d differs from the CSV door\n got %+v\nwant %+v", i, got[i], want[i])
				}
			}
		})
	}
}

func importIssues(t *testing.T, db *gorm.DB, path string) []string {
	t.Helper()
	sum, err := registry.ImportFile(context.Background(), db, path, registry.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return issueStrings(sum.Issues)
}

func issueStrings(is []registry.Issue) []string {
	out := make([]string, len(is))
	for i, x := range is {
		out[i] = x.String()
	}
	return out
}

// changeJSON is the records as a change message: numbers and booleans as JSON values.
func changeJSON(firms []store.Enterprise, keys []string, text func(store.Enterprise, string) string) []byte {
	var list []map[string]any
	for _, e := range firms {
		o := map[string]any{}
		for _, k := range keys {
			v := text(e, k)
			f, _ := registry.Lookup(k)
			switch f.Type {
			case registry.TypeInt, registry.TypeFloat:
				o[k] = json.Number(v)
			case registry.TypeBool:
				o[k] = v == "true"
			default:
				o[k] = v
			}
			if v == "" {
				o[k] = nil
			}
		}
		list = append(list, o)
	}
	b, _ := json.Marshal(map[string]any{"firms": list})
	return b
}

// doorEngine is a loaded matcher engine on db, as serve runs it.
func doorEngine(t *testing.T, db *gorm.DB, log *slog.Logger) *matcher.Engine {
	t.Helper()
	e := matcher.NewEngine(db, matcher.EngineOptions{Workers: 1, Log: log})
	if err := e.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e
}
