package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// SQLite in WAL mode appends every committed page to the -wal file and copies the pages back
// into the database file at a checkpoint. By default the commit that takes the WAL past 1,000
// pages runs that checkpoint itself, on the writer's connection, before its COMMIT returns: the
// one writer SQLite allows then also does all the copying. A full match of 200,000 firms spent
// a seventh of its write phase there (1.0 s of 12: the copying, its fsyncs and the frames'
// checksums, in this process's pure-Go SQLite), while the machine's other core was idle.
//
// So a process that writes in bulk (match: Options.CheckpointBeside) does not checkpoint when it
// commits (wal_autocheckpoint(0), in Open's DSN): a goroutine per database file, on a
// connection of its own, runs PASSIVE checkpoints beside the writer. PASSIVE never waits and
// never blocks a reader or the writer: it copies what no open read transaction still needs. The
// goroutine looks at the WAL's size and time every checkpointEvery and checkpoints only when it
// changed since its last complete checkpoint (and grew by checkpointGrowth, or checkpointGap has
// passed), so an idle process costs one stat per tick. It starts with the first connection to
// the file and stops, with its connection, when the last one closes (sql.DB.Close closes its
// idle connections before it returns: nothing is left running); the last connection's close
// checkpoints what is left, as SQLite always does. Measured in a full match of 200,000 firms ×
// 140 policies: write 10.7–10.9 s against 12.6–13.8 s (docs/matcher.md, fourteenth session).
//
// The price is the WAL's size while a writer commits without pause: it starts the WAL over only
// when it finds every frame copied as it begins a transaction, which a full match's writer, one
// transaction after the other, never does, so the WAL holds all it writes (464 MB in that match,
// beside a database of 687 MB) until the last connection closes and removes it; once it starts
// over, journal_size_limit (Open's DSN) cuts the file back to 64 MiB. Bounding it instead
// (wal_autocheckpoint(16384) on the writer: its own checkpoint, when the WAL passed 64 MiB, copied
// the few frames left and synced the database file, so that its next transaction started the WAL
// over) kept it under 121 MB and made the write phase a second longer (13.1 / 13.2 s against
// 12.4 / 12.0 s alternated); a RESTART checkpoint from this goroutine seldom caught the writer
// between two transactions (the WAL still reached 111–199 MB).
//
// Only the bulk writer: in serve many connections commit small transactions in turn (relay,
// notifiers, receipts), where a commit's checkpoint is small and its next transaction starts the
// WAL over, which a goroutine beside them would seldom let happen; bench deliver on SQLite showed
// no gain from it (2,880-3,236 notices/s against 3,000-3,420, the spread of two identical builds).

// checkpointEvery is how often the checkpointer looks at the WAL (a variable for tests). It
// checkpoints when the WAL grew by checkpointGrowth since its last checkpoint, else at most once
// per checkpointGap (each checkpoint syncs the WAL and the database file).
var (
	checkpointEvery        = 100 * time.Millisecond
	checkpointGap          = time.Second
	checkpointGrowth int64 = 4 << 20
)

// checkpointers holds the running checkpointer of each database file by path.
var (
	checkpointMu  sync.Mutex
	checkpointers = map[string]*checkpointer{}
)

type checkpointer struct {
	open  func() (driver.Conn, error) // a connection to the file
	wal   string                      // the -wal file's path
	conns int                         // this process's connections to the file
	stop  chan struct{}
	done  chan struct{}
}

// sqlitePath is the file of a DSN without its query ("" for an in-memory database).
func sqlitePath(dsn string) string {
	path, _, _ := strings.Cut(strings.TrimPrefix(dsn, "file:"), "?")
	if path == "" || path == ":memory:" || strings.Contains(dsn, "mode=memory") {
		return ""
	}
	return path
}

// checkpointBesidePragma is the DSN parameter of a pool whose commits do not checkpoint.
const checkpointBesidePragma = "_pragma=wal_autocheckpoint(0)"

// attachCheckpointer counts a new connection to the file of dsn, starting the file's
// checkpointer with the first, and returns what the connection's Close must call; nothing for a
// connection that checkpoints in its commits.
func attachCheckpointer(dsn string, open func() (driver.Conn, error)) (release func()) {
	path := sqlitePath(dsn)
	if path == "" || !strings.Contains(dsn, checkpointBesidePragma) {
		return func() {}
	}
	checkpointMu.Lock()
	defer checkpointMu.Unlock()
	c := checkpointers[path]
	if c == nil {
		c = &checkpointer{open: open, wal: path + "-wal", stop: make(chan struct{}), done: make(chan struct{})}
		checkpointers[path] = c
		go c.run()
	}
	c.conns++
	var once sync.Once
	return func() {
		once.Do(func() {
			checkpointMu.Lock()
			c.conns--
			last := c.conns == 0
			if last {
				delete(checkpointers, path)
			}
			checkpointMu.Unlock()
			if last {
				close(c.stop)
				<-c.done
			}
		})
	}
}

func (c *checkpointer) run() {
	defer close(c.done)
	var conn driver.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close()
		}
	}()
	tick := time.NewTicker(checkpointEvery)
	defer tick.Stop()
	var seen os.FileInfo // the WAL as the last complete checkpoint left it
	var lastSize int64   // its size at the last checkpoint
	var last time.Time   // when that was
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		fi, err := os.Stat(c.wal)
		if err != nil || fi.Size() == 0 {
			continue // no WAL yet, or not any more
		}
		if seen != nil && fi.Size() == seen.Size() && fi.ModTime().Equal(seen.ModTime()) {
			continue
		}
		if time.Since(last) < checkpointGap && fi.Size()-lastSize < checkpointGrowth {
			continue // a few small commits: wait for more, one checkpoint (and its fsyncs) for all
		}
		last, lastSize = time.Now(), fi.Size()
		if conn == nil {
			if conn, err = c.open(); err != nil {
				conn = nil
				continue
			}
		}
		complete, err := checkpoint(conn)
		if err != nil {
			if errors.Is(err, driver.ErrBadConn) {
				_ = conn.Close()
				conn = nil
			}
			slog.Debug("sqlite checkpoint", "wal", c.wal, "err", err)
			continue
		}
		if complete {
			seen = fi
		} else {
			seen = nil
		}
	}
}

// checkpoint runs a PASSIVE checkpoint and reports whether it copied every frame of the WAL.
func checkpoint(conn driver.Conn) (bool, error) {
	q, ok := conn.(driver.QueryerContext)
	if !ok {
		return false, errors.New("the sqlite driver's connection cannot query")
	}
	rows, err := q.QueryContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)", nil)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	v := make([]driver.Value, 3)
	if err := rows.Next(v); err != nil {
		if err == io.EOF {
			return false, errors.New("wal_checkpoint returned no row")
		}
		return false, err
	}
	busy, log, copied := asInt(v[0]), asInt(v[1]), asInt(v[2])
	return busy == 0 && log == copied, nil
}

func asInt(v driver.Value) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int:
		return int64(x)
	}
	return -1
}
