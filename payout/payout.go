// Package payout owns the last stage of 免申即享: from a policy's active matches to money in the
// firm's account. A batch (批次) lists the firms to pay and their amounts; a second person approves
// it (removing lines with a reason), the 公示 lists it publicly for N working days while firms can
// object on their own page, finance gets a payment file (csv or xlsx), and the bank's results come
// back line by line. Each step writes an append-only event, an audit record and, where a firm must
// know, a notice through the outbox (publicized, paid, failed).
//
// It does not send anything itself (notices go through the outbox like every other notice), does
// not decide who qualifies (the matcher did), and holds no HTTP or CLI code: the console and the
// CLI call the same functions, with the scope check and the audit entry inside.
package payout

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	auditlog "github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/notify"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/store"
)

// Errors a step returns, wrapped with what to do. Callers map them to HTTP status codes.
var (
	ErrForbidden = errors.New("not allowed")
	ErrState     = errors.New("not in the right state")
	ErrNotFound  = errors.New("not found")
	ErrInvalid   = errors.New("invalid input")
)

// Notice kinds a payout step queues for the firm.
const (
	NoticePublicized = bus.NoticePublicized
	NoticePaid       = bus.NoticePaid
	NoticeFailed     = bus.NoticeFailed
)

// Options configure the service.
type Options struct {
	// SubjectPrefix is the NATS subject prefix notices are queued under (config nats.subject_prefix).
	SubjectPrefix string
	// Location is the time zone working days and 公示 ends are counted in.
	Location *time.Location
	// Now is the clock; nil = time.Now.
	Now func() time.Time
	// Holidays are extra non-working dates (YYYY-MM-DD) on top of Saturdays and Sundays.
	Holidays []string
}

// Service runs the payout steps against one database. core.Service is built the same way on purpose
// (database, Options with Location and Now, defaults in New): every operations package is
// constructed alike, and the two share no options type.
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

// Location is the time zone the service counts days in.
func (s *Service) Location() *time.Location { return s.opts.Location }

func (s *Service) now() time.Time { return s.opts.Now().UTC() }

// Actor is who performs a step: a console user or the CLI operator (--by).
type Actor = policies.Actor

// mayWrite reports whether the actor may change payouts of a policy of the given department:
// authors only for their own department; reviewers, admins and the CLI operator for every one.
func mayWrite(by Actor, department string) error {
	if strings.TrimSpace(by.Name) == "" {
		return fmt.Errorf("%w: the person doing this must be named (--by)", ErrInvalid)
	}
	if by.Role == store.RoleAuthor && by.Department != department {
		return fmt.Errorf("%w: %s belongs to department %q, the policy to %q", ErrForbidden, by.Name, by.Department, department)
	}
	switch by.Role {
	case store.RolePark, store.RoleDistrict, store.RoleAuditor:
		return fmt.Errorf("%w: role %s cannot change payouts", ErrForbidden, by.Role)
	}
	return nil
}

// Fen converts an amount in 元 to fen, rounding half away from zero on its shortest decimal form
// (what finance's spreadsheet shows), so 1.005 gives 101 fen and not the binary 100.
func Fen(yuan float64) (int64, error) {
	if math.IsNaN(yuan) || math.IsInf(yuan, 0) || math.Abs(yuan) >= 9e13 {
		return 0, fmt.Errorf("%w: amount %v is not a payable sum", ErrInvalid, yuan)
	}
	return ParseFen(strconv.FormatFloat(yuan, 'f', -1, 64))
}

// ParseFen reads a decimal amount in 元 ("12,345.675", "-3", "0.5") to fen, half away from zero.
func ParseFen(s string) (int64, error) {
	t := strings.ReplaceAll(strings.TrimSpace(s), ",", "")
	neg := strings.HasPrefix(t, "-")
	t = strings.TrimPrefix(strings.TrimPrefix(t, "-"), "+")
	ip, fp, _ := strings.Cut(t, ".")
	if ip == "" && fp != "" {
		ip = "0"
	}
	if !digits(ip) || (fp != "" && !digits(fp)) || len(ip) > 13 {
		return 0, fmt.Errorf("%w: %q is not an amount in 元", ErrInvalid, s)
	}
	fp += "000"
	whole, _ := strconv.ParseInt(ip, 10, 64)
	cents, _ := strconv.ParseInt(fp[:2], 10, 64)
	fen := whole*100 + cents
	if fp[2] >= '5' {
		fen++
	}
	if neg {
		fen = -fen
	}
	return fen, nil
}

func digits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// Yuan renders fen as a plain decimal: 1234567 → "12345.67" (payment files).
func Yuan(fen int64) string {
	sign := ""
	if fen < 0 {
		sign, fen = "-", -fen
	}
	return fmt.Sprintf("%s%d.%02d", sign, fen/100, fen%100)
}

// YuanGrouped renders fen with thousands separators: 1234567 → "12,345.67" (pages and notices,
// in the notices' own format).
func YuanGrouped(fen int64) string {
	if fen < 0 {
		return "-" + YuanGrouped(-fen)
	}
	y := float64(fen) / 100 // exact to the fen below 2^53 fen
	return strings.TrimSuffix(notify.FormatAmount(&y), "元")
}

// MaskCode shows a credit code on the public 公示 page: the first 6 (registration authority and
// region) and the last 4 characters, the rest hidden.
func MaskCode(code string) string {
	if len(code) < 12 {
		return strings.Repeat("*", len(code))
	}
	return code[:6] + strings.Repeat("*", len(code)-10) + code[len(code)-4:]
}

// event appends one step of a batch's history.
func event(tx *gorm.DB, batch, line uint64, kind, actor, detail string, at time.Time) error {
	if err := tx.Create(&store.PayoutEvent{BatchID: batch, LineID: line, At: at, Kind: kind, Actor: actor, Detail: clip(detail, 1000)}).Error; err != nil {
		return fmt.Errorf("record %s event of batch %d: %w", kind, batch, err)
	}
	return nil
}

// audit appends the audit record of a payout write: who, what, which record and which fields.
func audit(tx *gorm.DB, by Actor, action auditlog.Action, object string, detail map[string]any, at time.Time) error {
	if by.Role != "" {
		detail["role"] = by.Role
	}
	return auditlog.Write(tx, auditlog.Entry{At: at, Actor: by.Name, Action: action, Object: object, Detail: detail})
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n])
}

func batchObject(id uint64) string { return "payout:" + strconv.FormatUint(id, 10) }
