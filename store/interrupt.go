package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	gomysql "github.com/go-sql-driver/mysql"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gosqlite "github.com/glebarez/go-sqlite"
	"gorm.io/gorm"
	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// The pure-Go SQLite driver (glebarez/go-sqlite, from modernc.org/sqlite) watches a query's
// context only while it prepares the statement: the steps that read the rows (rows.Next) run
// unwatched, and so does the first step, where SQLite sorts or aggregates. A console request
// abandoned by its client, or past its deadline, then kept its connection busy for minutes
// (issue 9: 480 s). modernc.org/sqlite v1.55 also watches the first step only. database/sql
// closes the rows of a cancelled context, but only between two calls of Next, never during one.
//
// sqliteInterruptible wraps the driver: while a query's rows are open, a goroutine waits for the
// query's context and calls sqlite3_interrupt on the connection when it ends, so the step in
// progress returns SQLITE_INTERRUPT at once and the connection goes back to the pool. The
// driver's handle (the sqlite3* of its unexported conn) is read by reflection; a driver whose
// conn has no such field keeps working without the interrupt (TestSQLiteInterruptsAbandonedQuery
// fails then).

const interruptibleDriver = "sqlite-interruptible"

var registerInterruptible = sync.OnceFunc(func() {
	sql.Register(interruptibleDriver, interruptDriver{&gosqlite.Driver{}})
})

type interruptDriver struct{ inner driver.Driver }

func (d interruptDriver) Open(name string) (driver.Conn, error) {
	c, err := d.inner.Open(name)
	if err != nil {
		return nil, err
	}
	release := attachCheckpointer(name, func() (driver.Conn, error) { return d.inner.Open(name) })
	return &interruptConn{Conn: c, db: sqliteHandle(c), release: release}, nil
}

// sqliteHandle is the sqlite3* of a driver connection, 0 when it cannot be found.
func sqliteHandle(c driver.Conn) uintptr {
	v := reflect.ValueOf(c)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return 0
	}
	f := v.Elem().FieldByName("db")
	if !f.IsValid() || f.Kind() != reflect.Uintptr {
		return 0
	}
	return uintptr(f.Uint())
}

// interruptTLS is the C thread state the interrupts run on: sqlite3_interrupt only sets a flag
// on the connection, so one shared state, used under a lock, does.
var (
	interruptMu  sync.Mutex
	interruptTLS *libc.TLS
)

func interruptHandle(db uintptr) {
	interruptMu.Lock()
	defer interruptMu.Unlock()
	if interruptTLS == nil {
		interruptTLS = libc.NewTLS()
	}
	sqlite3.Xsqlite3_interrupt(interruptTLS, db)
}

type interruptConn struct {
	driver.Conn
	db      uintptr
	release func() // counts the connection out of its file's checkpointer (checkpoint.go)
}

func (c *interruptConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

func (c *interruptConn) watch(ctx context.Context, r driver.Rows, err error) (driver.Rows, error) {
	if err != nil || c.db == 0 || ctx.Done() == nil {
		return r, err
	}
	w := &watchedRows{Rows: r, stop: make(chan struct{})}
	go func() {
		select {
		case <-ctx.Done():
			w.mu.Lock()
			if !w.closed { // the statement still runs on this connection: stop it
				interruptHandle(c.db)
				InterruptedQueries.Add(1)
			}
			w.mu.Unlock()
		case <-w.stop:
		}
	}()
	return w, nil
}

func (c *interruptConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := c.Conn.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	r, err := q.QueryContext(ctx, query, args)
	return c.watch(ctx, r, err)
}

func (c *interruptConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	e, ok := c.Conn.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	return e.ExecContext(ctx, query, args) // the driver watches the whole exec
}

func (c *interruptConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	var s driver.Stmt
	var err error
	if p, ok := c.Conn.(driver.ConnPrepareContext); ok {
		s, err = p.PrepareContext(ctx, query)
	} else {
		s, err = c.Conn.Prepare(query)
	}
	if err != nil {
		return nil, err
	}
	return &interruptStmt{Stmt: s, c: c}, nil
}

func (c *interruptConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if b, ok := c.Conn.(driver.ConnBeginTx); ok {
		return b.BeginTx(ctx, opts)
	}
	return c.Conn.Begin() //nolint:staticcheck // the driver has no BeginTx
}

func (c *interruptConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

type interruptStmt struct {
	driver.Stmt
	c *interruptConn
}

func (s *interruptStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := s.Stmt.(driver.StmtQueryContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	r, err := q.QueryContext(ctx, args)
	return s.c.watch(ctx, r, err)
}

func (s *interruptStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	e, ok := s.Stmt.(driver.StmtExecContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	return e.ExecContext(ctx, args)
}

// watchedRows are rows whose context a goroutine watches until they are closed.
type watchedRows struct {
	driver.Rows
	mu     sync.Mutex
	closed bool
	stop   chan struct{}
}

func (r *watchedRows) Close() error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.stop)
	}
	r.mu.Unlock()
	return r.Rows.Close()
}

func (r *watchedRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *watchedRows) ColumnTypeLength(i int) (int64, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return t.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *watchedRows) ColumnTypeNullable(i int) (bool, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *watchedRows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return t.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}

func (r *watchedRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

// InterruptedQueries counts the SQLite statements interrupted because their context ended.
var InterruptedQueries atomic.Int64

// MySQL and MariaDB: go-sql-driver/mysql gives up on a query whose context ends by closing the
// connection, but the server does not notice a closed connection while a statement computes: the
// statement ran on (issue 9: a dashboard past 900 s, until KILL QUERY). BoundStatements makes the
// server itself stop it: every SELECT run with a context deadline carries the time left as its
// own limit (MariaDB: SET STATEMENT max_statement_time=… FOR …; MySQL: the MAX_EXECUTION_TIME
// optimizer hint), plus boundMargin, so that the client's deadline always comes first and the
// request answers its timeout (a statement the server stops a moment early can come back as a
// plain result, as BENCHMARK does). A client that goes away before the deadline still leaves the
// statement running until the deadline, never more than boundMargin longer.

// BoundStatements returns db (a MySQL or MariaDB handle; others are returned as they are) whose
// SELECTs under a context deadline are bounded on the server as well.
func BoundStatements(ctx context.Context, db *gorm.DB) (*gorm.DB, error) {
	if db.Dialector.Name() != "mysql" {
		return db, nil
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	var version string
	if err := sqlDB.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return nil, fmt.Errorf("read the server version: %w", err)
	}
	tx := db.Session(&gorm.Session{})
	tx.Statement.ConnPool = boundPool{DB: sqlDB, mariaDB: strings.Contains(strings.ToLower(version), "mariadb")}
	return tx, nil
}

// IsStatementTimeout reports whether err is the server stopping a statement at its time limit
// (MariaDB 1969 max_statement_time, MySQL 3024 MAX_EXECUTION_TIME): BoundStatements' limit ends
// at the request's deadline, and may reach the client a moment before the context does.
func IsStatementTimeout(err error) bool {
	var me *gomysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1969 || me.Number == 3024)
}

// boundMargin is how long past the request's deadline the server's limit lets a statement run.
const boundMargin = 100 * time.Millisecond

// boundPool is a connection pool that adds the server-side limit to SELECTs.
type boundPool struct {
	*sql.DB
	mariaDB bool
}

func (p boundPool) bound(ctx context.Context, query string) string {
	deadline, ok := ctx.Deadline()
	trimmed := strings.TrimLeft(query, " \t\r\n")
	if !ok || len(trimmed) < 7 || !strings.EqualFold(trimmed[:7], "SELECT ") {
		return query
	}
	ms := max((time.Until(deadline) + boundMargin).Milliseconds(), 1)
	if p.mariaDB {
		return fmt.Sprintf("SET STATEMENT max_statement_time=%.3f FOR %s", float64(ms)/1000, trimmed)
	}
	return fmt.Sprintf("SELECT /*+ MAX_EXECUTION_TIME(%d) */ %s", ms, trimmed[7:])
}

func (p boundPool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return p.DB.QueryContext(ctx, p.bound(ctx, query), args...)
}

func (p boundPool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return p.DB.QueryRowContext(ctx, p.bound(ctx, query), args...)
}

// GetDBConn lets gorm's DB() find the pool.
func (p boundPool) GetDBConn() (*sql.DB, error) { return p.DB, nil }
