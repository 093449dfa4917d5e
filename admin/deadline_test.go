package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// slowQueries makes every query of the test's database run a long statement first, on the
// query's own context, while on is set: the SQL a heavy page would run, without the data.
func slowQueries(t *testing.T, db *gorm.DB, on *atomic.Bool, ended chan<- time.Time) {
	t.Helper()
	long := "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000000) SELECT COUNT(*) FROM c"
	if db.Dialector.Name() == "mysql" {
		long = "SELECT BENCHMARK(5000000000, MD5('policypush'))" // minutes; stops only when killed
	}
	err := db.Callback().Query().Before("gorm:query").Register("test:slow", func(tx *gorm.DB) {
		if !on.Load() || !strings.Contains(tx.Statement.Table, "matches") {
			return
		}
		rows, err := tx.Statement.ConnPool.QueryContext(tx.Statement.Context, long)
		if err == nil {
			for rows.Next() {
			}
			err = rows.Err()
			rows.Close()
		}
		select {
		case ended <- time.Now():
		default:
		}
		if err == nil {
			err = tx.Statement.Context.Err()
		}
		if err != nil {
			tx.AddError(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestQueryDeadline: a page or API request whose queries outrun console.query_timeout answers a
// clear 503 in Chinese within moments, and its statement is stopped, not left running; a request
// whose client goes away stops its statement too.
func TestQueryDeadline(t *testing.T) {
	t.Parallel()
	f := newListFixture(t, 30, 30)
	var on atomic.Bool
	ended := make(chan time.Time, 4)
	slowQueries(t, f.db, &on, ended)
	f.srv.opts.QueryTimeout = 400 * time.Millisecond
	admin := f.session("admin")
	interrupted := store.InterruptedQueries.Load()

	on.Store(true)
	for _, path := range []string{"/api/v1/matches", "/firms"} {
		start := time.Now()
		res := f.do(admin, http.MethodGet, path, nil)
		took := time.Since(start)
		if res.status != http.StatusServiceUnavailable || !strings.Contains(string(res.body), "查询超时") {
			t.Fatalf("GET %s past the deadline: %d\n%s", path, res.status, res.body)
		}
		if took > 4*time.Second {
			t.Fatalf("GET %s answered after %v (deadline 400ms)", path, took)
		}
		if strings.HasPrefix(path, "/api/") {
			var e apiError
			if err := json.Unmarshal(res.body, &e); err != nil || e.Error.Code != "timeout" {
				t.Fatalf("GET %s: error body %s", path, res.body)
			}
		}
		select {
		case at := <-ended:
			if at.Sub(start) > 4*time.Second {
				t.Fatalf("GET %s: the statement ran %v", path, at.Sub(start))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("GET %s: the statement is still running 5 s after the deadline", path)
		}
		serverStopped(t, f.db)
	}

	// A client that goes away: no deadline hit, the statement stops when the client leaves.
	f.srv.opts.QueryTimeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.ts.URL+"/api/v1/matches", nil)
	req.AddCookie(admin.cookie)
	go func() {
		time.Sleep(300 * time.Millisecond)
		cancel()
	}()
	start := time.Now()
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the abandoned request answered %d", resp.StatusCode)
	}
	select {
	case at := <-ended:
		if at.Sub(start) > 4*time.Second {
			t.Fatalf("the abandoned statement ran %v", at.Sub(start))
		}
	case <-time.After(6 * time.Second):
		t.Fatal("the abandoned statement is still running 6 s after the client left")
	}
	on.Store(false)
	if f.db.Dialector.Name() == "sqlite" && store.InterruptedQueries.Load()-interrupted < 3 {
		t.Fatalf("SQLite statements interrupted: %d, want 3", store.InterruptedQueries.Load()-interrupted)
	}
	// The console works on.
	if got := f.get(admin, "/api/v1/matches?per_page=5"); len(got.Items) != 5 {
		t.Fatalf("after the timeouts: %d items", len(got.Items))
	}
}

// serverStopped waits until MySQL runs no BENCHMARK statement any more: the client giving up does
// not stop a statement on the server, the statement's own time limit does.
func serverStopped(t *testing.T, db *gorm.DB) {
	t.Helper()
	if db.Dialector.Name() != "mysql" {
		return
	}
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		var n int64
		// this test's database only: a statement another run left (bounded by its own limit) is
		// not this one's
		if err := db.Raw("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND INFO LIKE ? AND INFO NOT LIKE ?",
			"%BENCHMARK(5000000000%", "%PROCESSLIST%").Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("MySQL still runs %d abandoned statements 5 s after the deadline", n)
		}
	}
}
