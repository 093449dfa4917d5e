package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// TestSQLiteInterruptsAbandonedQuery: a statement whose context ends stops within moments, even
// in the middle of one long step (here a count over a generated series, which the driver alone
// runs to the end: tens of seconds), and its connection serves the next query at once.
func TestSQLiteInterruptsAbandonedQuery(t *testing.T) {
	t.Parallel()
	db, err := Open(context.Background(), Options{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "t.db"), MaxOpen: 1})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	const long = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000000) SELECT COUNT(*) FROM c"
	before := InterruptedQueries.Load()
	for _, how := range []string{"deadline", "cancel"} {
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		if how == "cancel" {
			ctx, cancel = context.WithCancel(context.Background())
			time.AfterFunc(150*time.Millisecond, cancel)
		}
		start := time.Now()
		var n int64
		err := db.WithContext(ctx).Raw(long).Scan(&n).Error
		took := time.Since(start)
		cancel()
		if err == nil {
			t.Fatalf("%s: the query ran to the end (%d) in %v", how, n, took)
		}
		if took > 3*time.Second {
			t.Fatalf("%s: the query stopped only after %v: %v", how, took, err)
		}
		// The one connection is free again.
		ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
		var one int
		if err := db.WithContext(ctx2).Raw("SELECT 1").Scan(&one).Error; err != nil || one != 1 {
			t.Fatalf("%s: next query on the pool: %v", how, err)
		}
		cancel2()
		if errors.Is(err, context.DeadlineExceeded) && how == "cancel" {
			t.Fatalf("cancel reported as a deadline: %v", err)
		}
	}
	if InterruptedQueries.Load()-before < 2 {
		t.Fatalf("InterruptedQueries moved by %d, want 2", InterruptedQueries.Load()-before)
	}
}
