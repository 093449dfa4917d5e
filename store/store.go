// Package store owns the database: opening SQLite or MySQL through GORM, the schema shared by every
// stage (registry, policies, matches, outbox, deliveries, users, audit) and its migrations. It holds
// no business logic; the stages above it decide what to write.
package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Options says which database to open.
type Options struct {
	Driver  string // "sqlite" or "mysql"
	DSN     string // MySQL DSN; for SQLite a file path
	MaxOpen int    // MySQL connection pool size
}

// Open connects and migrates the schema. SQLite runs in WAL mode through a single connection (one
// writer at a time is what SQLite allows anyway; queuing in Go avoids SQLITE_BUSY).
func Open(ctx context.Context, o Options) (*gorm.DB, error) {
	var dial gorm.Dialector
	switch o.Driver {
	case "sqlite":
		if dir := filepath.Dir(o.DSN); dir != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("create database directory: %w", err)
			}
		}
		dial = sqlite.Open(o.DSN + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)")
	case "mysql":
		dial = mysql.Open(mysqlDSN(o.DSN))
	default:
		return nil, fmt.Errorf("database.driver %q: must be sqlite or mysql", o.Driver)
	}
	db, err := gorm.Open(dial, &gorm.Config{
		Logger:                 logger.Default.LogMode(logger.Silent),
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
	if o.Driver == "sqlite" {
		sqlDB.SetMaxOpenConns(1)
	} else {
		n := o.MaxOpen
		if n <= 0 {
			n = 16
		}
		sqlDB.SetMaxOpenConns(n)
		sqlDB.SetMaxIdleConns(n)
		sqlDB.SetConnMaxLifetime(30 * time.Minute)
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("connect to %s database: %w", o.Driver, err)
	}
	if err := Migrate(ctx, db); err != nil {
		return nil, err
	}
	return db, nil
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
	return nil
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
