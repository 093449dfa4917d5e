// Package store owns the database: opening SQLite or MySQL through GORM, the schema shared by every
// stage (registry, policies, matches, outbox, deliveries, users, audit) and its migrations. It holds
// no business logic; the stages above it decide what to write.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/glebarez/sqlite"
	gomysql "github.com/go-sql-driver/mysql"
	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"modernc.org/libc"
	"modernc.org/libc/sys/types"
)

// Options says which database to open.
type Options struct {
	Driver  string // "sqlite" or "mysql"
	DSN     string // MySQL DSN; for SQLite a file path
	MaxOpen int    // connection pool size (SQLite: readers at once; writers take turns)
	// LogSQL logs every statement with its duration; SlowQuery logs statements slower than it
	// (0: none). Both go to Log (nil: standard error).
	LogSQL    bool
	SlowQuery time.Duration
	Log       *slog.Logger
	// Pool opens another pool on a database this process has already opened (and migrated)
	// with Open: no migration. serve gives the console a pool of its own this way.
	Pool bool
	// CheckpointBeside (SQLite) is for a process that writes in bulk (match): its commits do not
	// checkpoint, a goroutine of its own does (checkpoint.go).
	CheckpointBeside bool
}

// Open connects and migrates the schema. SQLite runs in WAL mode with a pool of connections, so
// that the console's reads, the relay, the notifiers and the matcher never queue behind each
// other's statements: readers run beside the one writer SQLite allows, and every transaction
// begins IMMEDIATE, taking the write lock at BEGIN (waiting up to busy_timeout) instead of failing
// with SQLITE_BUSY when a read transaction later tries to write. Another process (a CLI command
// beside serve) takes its turn the same way. A bulk writer's checkpoints run beside it, not in
// its commits (Options.CheckpointBeside, checkpoint.go). No memory map (mmap_size): it made
// match's load of 190,000 firms 0.6 s shorter and its write 1 s longer, and doubled the
// process's resident size.
func Open(ctx context.Context, o Options) (*gorm.DB, error) {
	var dial gorm.Dialector
	switch o.Driver {
	case "sqlite":
		pinAllocatorPages()
		if dir := filepath.Dir(o.DSN); dir != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("create database directory: %w", err)
			}
		}
		registerInterruptible()
		dsn := o.DSN + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_pragma=temp_store(MEMORY)&_pragma=cache_size(-65536)&_pragma=journal_size_limit(67108864)&_txlock=immediate"
		if o.CheckpointBeside {
			dsn += "&" + checkpointBesidePragma
		}
		dial = &sqlite.Dialector{DriverName: interruptibleDriver, DSN: dsn}
	case "mysql":
		if err := reachMySQL(ctx, o.DSN); err != nil {
			return nil, err
		}
		dial = mysql.Open(mysqlDSN(o.DSN))
	default:
		return nil, fmt.Errorf("database.driver %q: must be sqlite or mysql", o.Driver)
	}
	db, err := gorm.Open(dial, &gorm.Config{
		Logger:                 sqlLogger(o),
		SkipDefaultTransaction: true,
		NowFunc:                func() time.Time { return time.Now().UTC() },
	})
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", o.Driver, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	n := o.MaxOpen
	if n <= 0 {
		n = 16
	}
	sqlDB.SetMaxOpenConns(n)
	sqlDB.SetMaxIdleConns(n)
	if o.Driver == "mysql" {
		sqlDB.SetConnMaxLifetime(30 * time.Minute)
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("connect to %s database: %w", o.Driver, err)
	}
	if o.Pool {
		return db, nil
	}
	if err := Migrate(ctx, db); err != nil {
		return nil, err
	}
	return db, nil
}

// sqlLogger logs statements as Options say: every one with LogSQL, slow ones past SlowQuery.
func sqlLogger(o Options) logger.Interface {
	if !o.LogSQL && o.SlowQuery <= 0 {
		return logger.Default.LogMode(logger.Silent)
	}
	out := o.Log
	if out == nil {
		out = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	level := logger.Warn // slow statements and errors
	if o.LogSQL {
		level = logger.Info
	}
	return logger.New(slogWriter{out}, logger.Config{SlowThreshold: o.SlowQuery, LogLevel: level,
		IgnoreRecordNotFoundError: true, ParameterizedQueries: true, Colorful: false})
}

// slogWriter hands GORM's log lines to slog. Statements are logged with placeholders, never
// their values: values hold phone numbers and credit codes.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Printf(format string, args ...any) {
	w.log.Info("sql", "statement", strings.TrimSpace(fmt.Sprintf(format, args...)))
}

// Migrate creates or updates every table. AutoMigrate only adds; it never drops a column.
func Migrate(ctx context.Context, db *gorm.DB) error {
	for _, fix := range fixups {
		if err := fix(db.WithContext(ctx)); err != nil {
			return fmt.Errorf("migrate schema: %w", err)
		}
	}
	if err := db.WithContext(ctx).AutoMigrate(Models()...); err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	if err := recentMatchIndex(db.WithContext(ctx)); err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	return nil
}

// reachTimeout bounds the first connection to MySQL: an unreachable server is reported in seconds,
// not after the operating system's TCP timeout.
const reachTimeout = 5 * time.Second

// reachMySQL connects once to the server a DSN names, within reachTimeout (or ctx's deadline), and
// says which host, port and user it could not reach; the password never appears in the error.
func reachMySQL(ctx context.Context, dsn string) error {
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("database.dsn is not a MySQL DSN (user:password@tcp(host:port)/db): %v", maskPassword(err.Error(), dsn))
	}
	if cfg.Timeout == 0 || cfg.Timeout > reachTimeout {
		cfg.Timeout = reachTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, reachTimeout)
	defer cancel()
	conn, err := gomysql.NewConnector(cfg)
	if err == nil {
		db := sql.OpenDB(conn)
		err = db.PingContext(ctx)
		_ = db.Close()
	}
	if err != nil {
		return fmt.Errorf("cannot reach MySQL at %s %s as user %q (database %q): %s", cfg.Net, cfg.Addr, cfg.User, cfg.DBName,
			maskPassword(err.Error(), dsn))
	}
	return nil
}

// maskPassword removes the DSN's password from a message.
func maskPassword(msg, dsn string) string {
	if cfg, err := gomysql.ParseDSN(dsn); err == nil && cfg.Passwd != "" {
		return strings.ReplaceAll(msg, cfg.Passwd, "***")
	}
	if at := strings.LastIndex(dsn, "@"); at > 0 {
		if colon := strings.Index(dsn[:at], ":"); colon >= 0 && colon+1 < at {
			return strings.ReplaceAll(msg, dsn[colon+1:at], "***")
		}
	}
	return msg
}

var fixups []func(*gorm.DB) error

// RegisterFixup adds a schema change AutoMigrate cannot make (a wider primary key or unique
// index), run before it on every start; a fixup checks whether it is needed. Call it from init.
func RegisterFixup(fix func(*gorm.DB) error) { fixups = append(fixups, fix) }

// mysqlDSN makes sure times come back as time.Time in UTC and text is utf8mb4.
func mysqlDSN(dsn string) string {
	add := func(k, v string) {
		if !strings.Contains(dsn, k+"=") {
			if strings.Contains(dsn, "?") {
				dsn += "&" + k + "=" + v
			} else {
				dsn += "?" + k + "=" + v
			}
		}
	}
	add("parseTime", "true")
	add("loc", "UTC")
	add("charset", "utf8mb4")
	// Without it every statement with arguments is a server-side PREPARE, EXECUTE and CLOSE: two
	// round trips and a parse per statement, never reused. Interpolating in the client (safe with
	// utf8mb4) halves the round trips of the notifier's and relay's batches (docs/delivery.md §10).
	add("interpolateParams", "true")
	// Times at the columns' precision (gorm's DATETIME(3)). The driver writes a time.Time with all
	// nine fractional digits, and MariaDB cannot turn '…05:03:34.756948539' into a range of an
	// index: every "updated_at > ?", "due_at <= ?" then read the whole index (the matcher's
	// catch-up took 18–28 s per idle round at 1,000,000 firms; with milliseconds, 0.1 ms).
	add("timeTruncate", "1ms")
	return dsn
}

// IsUniqueViolation reports whether err is a duplicate-key error on either database.
func IsUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "UNIQUE constraint failed") || strings.Contains(s, "Duplicate entry") || strings.Contains(s, "Error 1062")
}

// IsLockConflict reports a MySQL deadlock (1213) or lock wait timeout (1205): the transaction was
// rolled back and may be run again.
func IsLockConflict(err error) bool {
	var me *gomysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205)
}

// pinAllocatorPages keeps one small allocation alive in every size class of the allocator that
// the pure-Go SQLite uses for its C heap. That allocator returns a 1 MiB page to the kernel the
// moment its last slot is freed, and SQLite's b-tree balancing allocates and frees a scratch buffer
// on almost every page split: without a live slot in the class, every split maps and unmaps a
// page. Measured with `bench pipeline --firms 50000 --policies 140` (368,257 new matches), the
// write phase took 15.0–15.2 s without the pinned slots and 11.4–11.9 s with them. They cost at
// most one page per class, about 15 MiB of address space, mostly never touched.
var pinAllocatorPages = sync.OnceFunc(func() {
	tls := libc.NewTLS()
	for log := 4; log <= 18; log++ {
		libc.Xmalloc(tls, types.Size_t(1)<<log-8)
	}
})
