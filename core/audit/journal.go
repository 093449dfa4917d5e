package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/stage"
	"github.com/policypush/policypush/store"
)

// A Journal records the console's staff reads without waiting for the database.
//
// Every list, firm page, delivery view and export a person opens writes an audit record before
// the data is sent. Written to the database inside the request, that record waited for SQLite's
// one write lock behind the pipeline's transactions (2–4 s while a backlog was delivered), and
// every read page with it. With a journal the request appends the record to a local file and
// syncs it to disk before it answers: the record is durable before the
// data leaves, as before, and a failure to append still fails the request. The journal's own
// stage moves the records into audit_logs in batches, one transaction every flushEvery, and
// empties the file; the audit log viewer shows a read within a second.
//
// The file is <dir>/audit-journal.jsonl, one JSON record per line. A flush renames it to
// audit-journal.flushing.jsonl (appends go on in a fresh file), stores its records and removes
// it. A process that stops in between leaves the .flushing file, which the next flush stores
// first. Stopping after the commit and before the removal stores that batch a second time: the
// journal is at least once, never lost (docs/console.md, "Audit journal"). A line cut off by a
// crash during its append belongs to a request that never answered; it is logged and skipped.
//
// Changes (policy steps, resends, sign-ins, payouts) are not journalled: their record commits in
// the transaction of the change (Write). Reads of the CLI are written directly too.
type Journal struct {
	db   *gorm.DB
	dir  string
	log  *slog.Logger
	mu   sync.Mutex
	f    *os.File
	size int64 // bytes appended to f

	flushMu   sync.Mutex // one flush at a time
	lastErr   error
	lastFlush time.Time
}

// flushEvery is how often the journal's stage stores what was appended.
const flushEvery = 200 * time.Millisecond

const (
	journalFile  = "audit-journal.jsonl"
	flushingFile = "audit-journal.flushing.jsonl"
)

// OpenJournal opens (or creates) the journal in dir, whose records go to db.
func OpenJournal(db *gorm.DB, dir string, log *slog.Logger) (*Journal, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit journal: %w", err)
	}
	j := &Journal{db: db, dir: dir, log: log}
	if err := j.open(); err != nil {
		return nil, err
	}
	return j, nil
}

func (j *Journal) open() error {
	f, err := os.OpenFile(filepath.Join(j.dir, journalFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("audit journal: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit journal: %w", err)
	}
	j.f, j.size = f, st.Size()
	return nil
}

// Append records e durably (written and synced to disk) or returns why it could not.
func (j *Journal) Append(e Entry) error {
	row, err := Row(e)
	if err != nil {
		return err
	}
	line, err := json.Marshal(row)
	if err != nil {
		return fmt.Errorf("encode audit record %s: %w", e.Action, err)
	}
	line = append(line, '\n')
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return fmt.Errorf("audit journal is closed: cannot record %s", e.Action)
	}
	if _, err := j.f.Write(line); err != nil {
		return fmt.Errorf("append audit record %s to the journal: %w", e.Action, err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("sync the audit journal: %w", err)
	}
	j.size += int64(len(line))
	return nil
}

// Flush stores every record appended so far (and any batch a stopped process left) in the
// database.
func (j *Journal) Flush(ctx context.Context) error {
	j.flushMu.Lock()
	defer j.flushMu.Unlock()
	err := j.flush(ctx)
	j.lastErr = err
	if err == nil {
		j.lastFlush = time.Now()
	}
	return err
}

func (j *Journal) flush(ctx context.Context) error {
	flushing := filepath.Join(j.dir, flushingFile)
	if err := j.store(ctx, flushing); err != nil { // a batch an earlier flush did not finish
		return err
	}
	j.mu.Lock()
	if j.f == nil || j.size == 0 {
		j.mu.Unlock()
		return nil
	}
	err := j.f.Close()
	j.f = nil
	if err == nil {
		err = os.Rename(filepath.Join(j.dir, journalFile), flushing)
	}
	if oerr := j.open(); oerr != nil {
		err = errors.Join(err, oerr)
	}
	j.mu.Unlock()
	if err != nil {
		return fmt.Errorf("audit journal: %w", err)
	}
	return j.store(ctx, flushing)
}

// store writes the records of a batch file into the database in one transaction and removes the
// file; no file is nothing to do.
func (j *Journal) store(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("audit journal: %w", err)
	}
	rows, err := readJournal(f, path, j.log)
	f.Close()
	if err != nil {
		return err
	}
	if len(rows) > 0 {
		if err := j.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			return tx.CreateInBatches(rows, 200).Error
		}); err != nil {
			return fmt.Errorf("store %d journalled audit records: %w", len(rows), err)
		}
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("audit journal: %w", err)
	}
	return nil
}

// readJournal reads the records of a journal file; a line that does not parse (cut off by a crash
// while it was appended) is logged and skipped.
func readJournal(r io.Reader, path string, log *slog.Logger) ([]store.AuditLog, error) {
	var rows []store.AuditLog
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var row store.AuditLog
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			log.Warn("audit journal: a record cut off while it was appended is skipped (its request did not answer)",
				"file", path, "line", n, "err", err)
			continue
		}
		row.ID = 0
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read the audit journal %s: %w", path, err)
	}
	return rows, nil
}

// Run stores the appended records every flushEvery until ctx ends, then once more.
func (j *Journal) Run(ctx context.Context) error {
	stage.Every(ctx, flushEvery, j.Flush, func(err error) { j.log.Warn("audit journal: will retry", "err", err) })
	final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return j.Flush(final)
}

// Ready is down while records wait because the last flush failed.
func (j *Journal) Ready(context.Context) stage.Check {
	j.flushMu.Lock()
	err, last := j.lastErr, j.lastFlush
	j.flushMu.Unlock()
	if err != nil {
		return stage.Down("audit_journal", err, map[string]any{"last_flush": last})
	}
	return stage.OK("audit_journal", nil)
}

// Close closes the file; records not yet stored stay in it for the next start.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

// Record writes e: through the journal when there is one and e is a staff read, else directly
// into db (which may be the transaction of the change it records).
func Record(db *gorm.DB, j *Journal, e Entry) error {
	if j != nil && e.Action.Read() {
		return j.Append(e)
	}
	return Write(db, e)
}

// Read reports whether the action records a staff read (which a Journal may take).
func (a Action) Read() bool {
	switch a {
	case FirmList, FirmView, FirmExport, FirmNearMiss, FirmExplain, DeliveryList, DeliveryView, PayoutView, SandboxView:
		return true
	}
	return false
}
