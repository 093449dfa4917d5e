package core

import (
	"context"
	"net/http"
	"time"

	"gorm.io/gorm"
)

// Health is a dependency that can say whether it works (bus.Bus).
type Health interface{ Healthy() error }

// Readiness is the state of the database and NATS, as /readyz and /readyz/delivery report it:
// "ok", "unreachable", "not used by this process" or the bus's error.
type Readiness struct {
	Database string `json:"database"`
	NATS     string `json:"nats"`
}

// Ready reports whether nothing this process uses is down (a process without a database or
// without NATS is ready as far as they go).
func (r Readiness) Ready() bool {
	return r.Database != "unreachable" && (r.NATS == "ok" || r.NATS == "not used by this process")
}

// Status is the HTTP status of r: 200 when ready, else 503.
func (r Readiness) Status() int {
	if r.Ready() {
		return http.StatusOK
	}
	return http.StatusServiceUnavailable
}

// readyTimeout bounds the database ping.
const readyTimeout = 2 * time.Second

// CheckReady pings the database (at most 2 s) and asks the bus; db nil: not opened, b nil: this
// process uses no NATS.
func CheckReady(ctx context.Context, db *gorm.DB, b Health) Readiness {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	r := Readiness{Database: "ok", NATS: "ok"}
	if db == nil {
		r.Database = "not opened"
	} else if s, err := db.DB(); err != nil || s.PingContext(ctx) != nil {
		r.Database = "unreachable"
	}
	if b == nil {
		r.NATS = "not used by this process"
	} else if err := b.Healthy(); err != nil {
		r.NATS = err.Error()
	}
	return r
}
