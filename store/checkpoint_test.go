package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSQLiteCheckpointsBesideTheWriter: a pool opened with CheckpointBeside does not checkpoint
// in its commits (a plain one does, and has no checkpointer), the file's checkpointer copies the WAL into the database while it is open, and it stops, its connection
// closed, when the pool closes (Close would hang otherwise).
func TestSQLiteCheckpointsBesideTheWriter(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "t.db")
	plain, err := Open(context.Background(), Options{Driver: "sqlite", DSN: path, MaxOpen: 2})
	if err != nil {
		t.Fatal(err)
	}
	plainDB, _ := plain.DB()
	var auto int
	if err := plainDB.QueryRow("PRAGMA wal_autocheckpoint").Scan(&auto); err != nil || auto != 1000 {
		t.Fatalf("a pool without CheckpointBeside: wal_autocheckpoint = %d (%v), want SQLite's 1000", auto, err)
	}
	checkpointMu.Lock()
	_, running := checkpointers[path]
	checkpointMu.Unlock()
	if running {
		t.Fatal("a pool whose commits checkpoint has a checkpointer")
	}
	plainDB.Close()
	db, err := Open(context.Background(), Options{Driver: "sqlite", DSN: path, MaxOpen: 4, CheckpointBeside: true})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	ctx := context.Background()
	if err := sqlDB.QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&auto); err != nil || auto != 0 {
		t.Fatalf("wal_autocheckpoint = %d (%v), want 0: commits must not checkpoint", auto, err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// 2,000 pages of 4 KiB: twice the WAL size at which a commit would checkpoint by default.
	if _, err := sqlDB.ExecContext(ctx, "CREATE TABLE blobs (b BLOB)"); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlDB.ExecContext(ctx, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000) INSERT INTO blobs SELECT randomblob(4000) FROM c"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() >= before.Size()+7_000_000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the database file is %d bytes 20 s after a commit of 8 MB (%d before): nothing checkpointed the WAL", fi.Size(), before.Size())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := sqlDB.Close(); err != nil {
		t.Fatal(err)
	}
	checkpointMu.Lock()
	_, running = checkpointers[path]
	checkpointMu.Unlock()
	if running {
		t.Fatal("the checkpointer is still registered after the pool closed")
	}
	if _, err := os.Stat(path + "-wal"); !os.IsNotExist(err) {
		t.Fatalf("the WAL is still there after the last connection closed (%v)", err)
	}
}
