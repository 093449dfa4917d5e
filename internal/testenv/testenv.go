// Package testenv owns how tests reach the real services: a fresh database (a throw-away MySQL
// database when POLICYPUSH_TEST_MYSQL_DSN is set, else a SQLite file) and a NATS bus (the server at
// POLICYPUSH_TEST_NATS_URL when set, else an embedded one) with names no other test uses. When
// POLICYPUSH_TEST_REQUIRE_SERVICES=1 (CI), a configured service that cannot be reached fails the
// test instead of skipping it.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/store"
)

// Environment variables that point tests at real services.
const (
	EnvMySQL   = "POLICYPUSH_TEST_MYSQL_DSN" // e.g. root@tcp(127.0.0.1:3306)/test
	EnvNATS    = "POLICYPUSH_TEST_NATS_URL"  // e.g. nats://127.0.0.1:4222
	EnvRequire = "POLICYPUSH_TEST_REQUIRE_SERVICES"
)

// DB describes a database made for one test.
type DB struct {
	Driver string
	DSN    string // for sqlite: the file path
	DB     *gorm.DB
}

// MySQLDSN returns the configured MySQL DSN, or "" (requiring it when CI says so).
func MySQLDSN(t testing.TB) string {
	dsn := os.Getenv(EnvMySQL)
	if dsn == "" && os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s=1 but %s is not set", EnvRequire, EnvMySQL)
	}
	return dsn
}

// NATSURL returns the configured NATS URL, or "" for the embedded server.
func NATSURL(t testing.TB) string {
	url := os.Getenv(EnvNATS)
	if url == "" && os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s=1 but %s is not set", EnvRequire, EnvNATS)
	}
	return url
}

// Suffix is a random name part for databases, streams and subjects.
func Suffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// OpenDB opens a fresh, migrated database: a new MySQL database (dropped at cleanup) when MySQL is
// configured, otherwise a SQLite file in t.TempDir().
func OpenDB(t testing.TB) DB {
	t.Helper()
	ctx := context.Background()
	if dsn := MySQLDSN(t); dsn != "" {
		name := "pptest_" + Suffix()
		admin, err := gorm.Open(mysql.Open(dsn), &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
		if err != nil {
			t.Fatalf("MySQL at %s unreachable: %v", dsn, err)
		}
		if err := admin.Exec("CREATE DATABASE " + name + " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin").Error; err != nil {
			t.Fatalf("MySQL at %s: create database: %v", dsn, err)
		}
		t.Cleanup(func() {
			admin.Exec("DROP DATABASE IF EXISTS " + name)
			if s, err := admin.DB(); err == nil {
				s.Close()
			}
		})
		testDSN := withDatabase(dsn, name)
		db, err := store.Open(ctx, store.Options{Driver: "mysql", DSN: testDSN, MaxOpen: 8})
		if err != nil {
			t.Fatalf("open MySQL test database: %v", err)
		}
		t.Cleanup(func() { closeDB(db) })
		return DB{Driver: "mysql", DSN: testDSN, DB: db}
	}
	path := filepath.Join(t.TempDir(), "test.db")
	db, err := store.Open(ctx, store.Options{Driver: "sqlite", DSN: path})
	if err != nil {
		t.Fatalf("open SQLite: %v", err)
	}
	t.Cleanup(func() { closeDB(db) })
	return DB{Driver: "sqlite", DSN: path, DB: db}
}

func closeDB(db *gorm.DB) {
	if s, err := db.DB(); err == nil {
		s.Close()
	}
}

// withDatabase replaces the database name of a MySQL DSN (user:pass@tcp(host)/db?params).
func withDatabase(dsn, name string) string {
	slash := strings.LastIndex(dsn, "/")
	if slash < 0 {
		return dsn + "/" + name
	}
	rest := ""
	if q := strings.Index(dsn[slash:], "?"); q >= 0 {
		rest = dsn[slash+q:]
	}
	return dsn[:slash+1] + name + rest
}

// BusOptions returns bus options with a stream and subject prefix unique to this test. With an
// external server the stream is deleted at cleanup.
func BusOptions(t testing.TB) bus.Options {
	t.Helper()
	sfx := Suffix()
	return bus.Options{URL: NATSURL(t), StoreDir: filepath.Join(t.TempDir(), "js"), Stream: "PPTEST_" + sfx,
		SubjectPrefix: "pptest" + sfx, Replicas: 1, DuplicateWindow: 5 * time.Minute}
}

// OpenBus opens a bus for a test and closes it (deleting its stream) at cleanup.
func OpenBus(t testing.TB) *bus.Bus {
	t.Helper()
	o := BusOptions(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, o)
	if err != nil {
		t.Fatalf("NATS %s unreachable: %v", describe(o.URL), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if o.URL != "" {
			_ = b.JS.DeleteStream(ctx, o.Stream)
		}
		b.Close()
	})
	return b
}

func describe(url string) string {
	if url == "" {
		return "(embedded)"
	}
	return fmt.Sprintf("at %s", url)
}
