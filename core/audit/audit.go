// Package audit writes the audit log: one function (Write) and one list of actions (the Action
// constants below), used by the console, the CLI, the policy lifecycle and the payout steps alike.
// It sits below every package that writes an audit record and imports only store.
//
// A record says who (Actor), did what (Action), to which record (Object), with which parameters
// (Detail). Detail never holds contact data: callers pass filters, ids and counts, not phone
// numbers or openids.
package audit

import (
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// Action is what an audit record records. Every action written anywhere is a constant here, so
// the audit log viewer's action filter, the docs and the code agree on one spelling.
type Action string

// Staff reads of firm data.
const (
	FirmList     Action = "firm.list"      // the matched-firms list (a page)
	FirmView     Action = "firm.view"      // one firm's page
	FirmExport   Action = "firm.export"    // matches export (console download or CLI)
	FirmNearMiss Action = "firm.near_miss" // firms that fail a policy by one condition (console or CLI)
	FirmExplain  Action = "firm.explain"   // why a firm does or does not qualify (CLI)
	FirmNote     Action = "firm.note"      // a follow-up note on a firm
	DeliveryList Action = "delivery.list"
	DeliveryView Action = "delivery.view"
	PayoutView   Action = "payout.view"
	SandboxView  Action = "sandbox.view"
)

// Staff changes.
const (
	DeliveryResend Action = "delivery.resend"
	RegistryChange Action = "registry.change" // a registry change posted to the API (the request)
	RegistryFirm   Action = "registry.firm"   // one firm of such a change
	PolicyPreview  Action = "policy.preview"
	PolicyDraft    Action = "policy.draft"
	PolicySubmit   Action = "policy.submit"
	PolicyApprove  Action = "policy.approve"
	PolicyReject   Action = "policy.reject"
	PolicyPublish  Action = "policy.publish"
	PolicyRetire   Action = "policy.retire"

	PayoutCreate    Action = "payout.create"
	PayoutApprove   Action = "payout.approve"
	PayoutRemove    Action = "payout.remove"
	PayoutPublicize Action = "payout.publicize"
	PayoutExport    Action = "payout.export"
	PayoutResults   Action = "payout.results"
	PayoutDecide    Action = "payout.decide"
)

// Accounts and sign-in.
const (
	Login          Action = "login"
	LoginFailed    Action = "login.failed"
	LoginThrottled Action = "login.throttled"
	LoginUnlock    Action = "login.unlock"
	Logout         Action = "logout"
	UserCreate     Action = "user.create"
	UserPassword   Action = "user.password"
	TokenCreate    Action = "token.create"
	TokenRevoke    Action = "token.revoke"
)

// What firms do on their own page (the actor is "enterprise:" + credit code).
const (
	EnterpriseConfirm     Action = "enterprise.confirm"
	EnterpriseObject      Action = "enterprise.object"
	EnterpriseUnsubscribe Action = "enterprise.unsubscribe"
	EnterpriseResubscribe Action = "enterprise.resubscribe"
	PayoutObject          Action = "payout.object"
	PayoutFeedback        Action = "payout.feedback"
)

// Actions lists every action, for the docs and for tests that check nothing else is written.
func Actions() []Action {
	return []Action{FirmList, FirmView, FirmExport, FirmNearMiss, FirmExplain, FirmNote, DeliveryList, DeliveryView,
		PayoutView, SandboxView, DeliveryResend, RegistryChange, RegistryFirm, PolicyPreview, PolicyDraft, PolicySubmit,
		PolicyApprove, PolicyReject, PolicyPublish, PolicyRetire, PayoutCreate, PayoutApprove, PayoutRemove,
		PayoutPublicize, PayoutExport, PayoutResults, PayoutDecide, Login, LoginFailed, LoginThrottled, LoginUnlock,
		Logout, UserCreate, UserPassword, TokenCreate, TokenRevoke, EnterpriseConfirm, EnterpriseObject,
		EnterpriseUnsubscribe, EnterpriseResubscribe, PayoutObject, PayoutFeedback}
}

// Entry is one audit record, not yet written.
type Entry struct {
	At     time.Time // zero: now
	Actor  string
	Action Action
	Object string
	Detail map[string]any
}

// Column limits of store.AuditLog; longer values are cut, never refused (a long name must not make
// a read go unrecorded).
const (
	maxActor  = 64
	maxObject = 200
)

// Row is the record of e as stored.
func Row(e Entry) (store.AuditLog, error) {
	at := e.At
	if at.IsZero() {
		at = time.Now()
	}
	d := ""
	if len(e.Detail) > 0 {
		b, err := json.Marshal(e.Detail)
		if err != nil {
			return store.AuditLog{}, fmt.Errorf("encode audit detail of %s: %w", e.Action, err)
		}
		d = string(b)
	}
	return store.AuditLog{At: at.UTC(), Actor: cut(e.Actor, maxActor), Action: string(e.Action), Object: cut(e.Object, maxObject),
		Detail: d}, nil
}

// Write appends e to the audit log through db (a transaction, when the record must commit with the
// change it records). A failure is returned: callers fail the read or the change, so nothing is
// read or changed unrecorded.
func Write(db *gorm.DB, e Entry) error {
	row, err := Row(e)
	if err != nil {
		return err
	}
	if err := db.Create(&row).Error; err != nil {
		return fmt.Errorf("write audit record %s: %w", e.Action, err)
	}
	return nil
}

// WriteAll appends several entries in one statement.
func WriteAll(db *gorm.DB, es []Entry) error {
	rows := make([]store.AuditLog, 0, len(es))
	for _, e := range es {
		row, err := Row(e)
		if err != nil {
			return err
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil
	}
	if err := db.CreateInBatches(rows, 200).Error; err != nil {
		return fmt.Errorf("write %d audit records: %w", len(rows), err)
	}
	return nil
}

func cut(s string, n int) string {
	if len(s) <= n { // bytes ≥ runes
		return s
	}
	r := []rune(s)
	if len(r) > n {
		return string(r[:n])
	}
	return s
}
