// Package core holds the operations the console (admin) and the CLI (cmd/policypush) both offer,
// once: matches export, near-misses, readiness and the pending-outbox count, each with its audit
// entry inside (package core/audit). admin keeps request parsing and rendering, cmd keeps flags and
// printing; neither runs these queries itself. Payout steps follow the same pattern in package
// payout.
//
// A function here takes the database, the actor (for the audit log) and a request struct, checks
// the request, writes the audit record before any firm data leaves, and returns typed errors
// (ErrInvalid, ErrNotFound) that callers map to HTTP status codes or exit messages.
package core

import (
	"errors"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/rules"
)

// Errors an operation returns, wrapped with what to do.
var (
	ErrInvalid  = errors.New("invalid request")
	ErrNotFound = errors.New("not found")
)

// Options configure the service.
type Options struct {
	// Location is the time zone times are shown in (exports).
	Location *time.Location
	// Now is the clock; nil = time.Now.
	Now func() time.Time
	// Vocabulary is what published rules compile against (config fields.extra); nil: the standard
	// catalog.
	Vocabulary *rules.Vocabulary
	// Journal takes the audit records of reads (exports, near misses) off the request path
	// (audit.Journal; serve's console); nil: they are written directly.
	Journal *audit.Journal
}

// Service runs the operations against one database. It is built like payout.Service on purpose
// (database, Options with Location and Now, defaults in New): every operations package is
// constructed the same way.
type Service struct {
	db   *gorm.DB
	opts Options
}

// New builds a service.
func New(db *gorm.DB, o Options) *Service {
	if o.Location == nil {
		o.Location = time.UTC
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Service{db: db, opts: o}
}

// DB is the database the service runs on.
func (s *Service) DB() *gorm.DB { return s.db }

func (s *Service) now() time.Time { return s.opts.Now().UTC() }
