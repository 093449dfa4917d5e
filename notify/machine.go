package notify

import (
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// The delivery state machine: every way a delivery (or a delivery item) changes state, in one
// table, and the pure decisions that pick a row of it. Nothing here touches the database; the
// shell (apply, below, and the callers in intake.go, dispatch.go, receipts.go, reconcile.go,
// ops.go and advisory.go) turns a row into one guarded UPDATE and its timeline event.
//
//	         intake            claim              send ok
//	(none) ───────▶ queued ──────────▶ sending ──────────▶ sent ──receipt──▶ delivered
//	                  │ ▲ join            │  │ transient        │ ▲             ▲
//	                  │ └─(digest)        │  └──────▶ failed ───┘ └─undelivered ─┤
//	   skip, give up  ▼                   │ permanent, out of tries        │     │
//	        skipped / dead ◀──────────────┘            ▲                 unknown ─┘
//	                                  resend (dead, failed → failed) ────┘
//
// A transition's guard is what makes two notifiers (or a notifier and a receipt) that act on the
// same delivery at once change it once: an UPDATE … WHERE <guard> that affects no row lost the
// race and writes nothing else.

// guard is the WHERE condition of a transition's UPDATE besides the delivery id.
type guard int

const (
	// guardState: state IN From (receipts, reconciliation, advisories).
	guardState guard = iota
	// guardStateAndClaim: state = the state read AND claim = the claim read (dispatch decisions,
	// resend): nobody changed the delivery since it was read.
	guardStateAndClaim
	// guardClaim: claim = this dispatch's token (the outcome of an attempt this dispatch claimed).
	guardClaim
	// guardOpenKey: open_key = the digest key AND state queued (a notice joins an open digest).
	guardOpenKey
)

// keep as a transition's To leaves the state as it is (a deferral of a queued or failed delivery).
const keep = ""

// Transition is one row of the delivery state machine.
type Transition struct {
	Name  string
	From  []string // states it leaves (for guardState the guard itself; otherwise documentation checked by tests)
	To    string   // the new state; keep leaves it
	Guard guard
	Event string // timeline event kind written when the update changed the row; "" none
	// Fixed are the columns every use of the transition writes with these values (besides state
	// and updated_at); nil values are SQL NULL.
	Fixed map[string]any
	// Vars are the columns the caller supplies (the provider's answer, the next due time …).
	// apply refuses any other column, so that the table stays the whole truth.
	Vars []string
	// Outcome is the state label of policypush_deliveries_total ("" counts nothing).
	Outcome string
}

// Names of the delivery transitions.
const (
	TrJoin          = "join"           // a notice joins an open digest (items + n)
	TrClaim         = "claim"          // a notifier takes it for an attempt, under a lease
	TrSkip          = "skip"           // not sent on purpose: firm inactive, opted out, every match revoked
	TrGiveUp        = "give_up"        // cannot be sent: in doubt with a provider that cannot be asked
	TrDefer         = "defer"          // not now: quiet hours, throttle, paused provider, in-doubt grace
	TrDeferInDoubt  = "defer_in_doubt" // not now, and an abandoned attempt (lease ran out) stays in doubt
	TrResolve       = "resolve"        // an in-doubt attempt turned out accepted
	TrSent          = "sent"           // the provider accepted it
	TrRevoked       = "revoked"        // claimed, but every match was revoked before the call
	TrRetry         = "retry"          // transient failure: again after the backoff
	TrWait          = "wait"           // out of quota, or the number's limit: again later, attempt not counted
	TrDead          = "dead"           // permanent failure, or out of attempts
	TrFallback      = "fallback"       // WeChat cannot reach the firm: its matches go by SMS
	TrDelivered     = "delivered"      // the provider reported it reached the firm
	TrUndelivered   = "undelivered"    // the provider reported it did not
	TrUnknown       = "unknown"        // no report within the receipt window, and the provider cannot say
	TrMaxDeliveries = "max_deliveries" // JetStream gave up on the message that carries it
	TrResend        = "resend"         // an operator asks for a new attempt
)

var (
	stDue      = []string{store.DeliveryQueued, store.DeliveryFailed, store.DeliverySending} // what a dispatch may act on
	stAccepted = []string{store.DeliverySent, store.DeliveryUndelivered, store.DeliveryUnknown}
)

// transitions is the delivery state machine.
var transitions = map[string]Transition{
	TrJoin: {Name: TrJoin, From: []string{store.DeliveryQueued}, To: store.DeliveryQueued, Guard: guardOpenKey,
		Vars: []string{"items"}},
	TrClaim: {Name: TrClaim, From: stDue, To: store.DeliverySending, Guard: guardStateAndClaim,
		Fixed: map[string]any{"open_key": nil, "due_at": nil},
		Vars:  []string{"claim", "provider", "lease_until", "attempted_at", "attempts"}},
	TrSkip: {Name: TrSkip, From: stDue, To: store.DeliverySkipped, Guard: guardStateAndClaim, Event: store.EventSkipped,
		Fixed: map[string]any{"open_key": nil, "due_at": nil, "lease_until": nil, "claim": ""},
		Vars:  []string{"last_code", "last_error"}, Outcome: store.DeliverySkipped},
	TrGiveUp: {Name: TrGiveUp, From: stDue, To: store.DeliveryDead, Guard: guardStateAndClaim, Event: store.EventDead,
		Fixed: map[string]any{"open_key": nil, "due_at": nil, "lease_until": nil, "claim": ""},
		Vars:  []string{"last_code", "last_error"}, Outcome: store.DeliveryDead},
	TrDefer: {Name: TrDefer, From: []string{store.DeliveryQueued, store.DeliveryFailed}, To: keep, Guard: guardStateAndClaim,
		Event: store.EventDeferred, Vars: []string{"due_at"}, Outcome: "deferred"},
	TrDeferInDoubt: {Name: TrDeferInDoubt, From: []string{store.DeliverySending}, To: store.DeliveryFailed, Guard: guardStateAndClaim,
		Event: store.EventDeferred, Fixed: map[string]any{"in_doubt": true, "lease_until": nil, "claim": ""},
		Vars: []string{"due_at"}, Outcome: "deferred"},
	TrResolve: {Name: TrResolve, From: []string{store.DeliveryFailed, store.DeliverySending}, To: store.DeliverySent,
		Guard: guardStateAndClaim, Event: store.EventResolved,
		Fixed: map[string]any{"in_doubt": false, "lease_until": nil, "claim": "", "due_at": nil, "last_code": "", "last_error": ""},
		Vars:  []string{"sent_at", "provider_id"}, Outcome: store.DeliverySent},
	TrSent: {Name: TrSent, From: []string{store.DeliverySending}, To: store.DeliverySent, Guard: guardClaim, Event: store.EventSent,
		Fixed: map[string]any{"in_doubt": false, "last_code": "", "last_error": "", "lease_until": nil, "claim": ""},
		Vars:  []string{"sent_at", "provider_id", "items"}, Outcome: store.DeliverySent},
	TrRevoked: {Name: TrRevoked, From: []string{store.DeliverySending}, To: store.DeliverySkipped, Guard: guardClaim,
		Event: store.EventSkipped,
		Fixed: map[string]any{"lease_until": nil, "claim": "", "attempts": gorm.Expr("attempts - 1"), "last_code": "match_revoked",
			"last_error": "the firm no longer qualifies for any policy of this notice"},
		Outcome: store.DeliverySkipped},
	TrRetry: {Name: TrRetry, From: []string{store.DeliverySending}, To: store.DeliveryFailed, Guard: guardClaim, Event: store.EventFailed,
		Fixed: map[string]any{"lease_until": nil, "claim": ""},
		Vars:  []string{"due_at", "in_doubt", "last_code", "last_error"}, Outcome: store.DeliveryFailed},
	TrWait: {Name: TrWait, From: []string{store.DeliverySending}, To: store.DeliveryFailed, Guard: guardClaim, Event: store.EventDeferred,
		Fixed: map[string]any{"lease_until": nil, "claim": "", "attempts": gorm.Expr("attempts - 1")},
		Vars:  []string{"due_at", "in_doubt", "last_code", "last_error"}, Outcome: "deferred"},
	TrDead: {Name: TrDead, From: []string{store.DeliverySending}, To: store.DeliveryDead, Guard: guardClaim, Event: store.EventDead,
		Fixed: map[string]any{"lease_until": nil, "claim": ""},
		Vars:  []string{"in_doubt", "last_code", "last_error"}, Outcome: store.DeliveryDead},
	TrFallback: {Name: TrFallback, From: []string{store.DeliverySending}, To: store.DeliverySkipped, Guard: guardClaim,
		Event: store.EventFallback, Fixed: map[string]any{"lease_until": nil, "claim": ""},
		Vars: []string{"last_code", "last_error"}, Outcome: "fallback"},
	TrDelivered: {Name: TrDelivered, From: stAccepted, To: store.DeliveryDelivered, Guard: guardState, Event: store.EventDelivered,
		Vars: []string{"delivered_at"}, Outcome: store.EventDelivered},
	TrUndelivered: {Name: TrUndelivered, From: []string{store.DeliverySent, store.DeliveryUnknown}, To: store.DeliveryUndelivered,
		Guard: guardState, Event: store.EventUndelivered, Vars: []string{"last_code", "last_error"}, Outcome: store.EventUndelivered},
	TrUnknown: {Name: TrUnknown, From: []string{store.DeliverySent}, To: store.DeliveryUnknown, Guard: guardState,
		Event: store.EventUnknown, Vars: []string{"last_error"}},
	TrMaxDeliveries: {Name: TrMaxDeliveries, From: []string{store.DeliveryQueued, store.DeliveryFailed}, To: store.DeliveryDead,
		Guard: guardState, Event: store.EventDead, Fixed: map[string]any{"last_code": "max_deliveries", "open_key": nil},
		Vars: []string{"last_error"}},
	TrResend: {Name: TrResend, From: []string{store.DeliveryDead, store.DeliveryFailed}, To: store.DeliveryFailed,
		Guard: guardStateAndClaim, Event: store.EventResend, Fixed: map[string]any{"attempts": 0}, Vars: []string{"due_at"}},
}

// tr returns a row of the table; a name that is not there is a programming error caught by every test.
func tr(name string) Transition {
	t, ok := transitions[name]
	if !ok {
		panic("notify: no delivery transition " + name)
	}
	return t
}

// columns is what the transition's UPDATE sets: its state, its fixed columns, the caller's values
// and updated_at. A value for a column the transition does not declare is an error.
func (t Transition) columns(now time.Time, vars map[string]any) (map[string]any, error) {
	set := make(map[string]any, len(t.Fixed)+len(vars)+2)
	for k, v := range t.Fixed {
		set[k] = v
	}
	for k, v := range vars {
		if !slices.Contains(t.Vars, k) {
			return nil, fmt.Errorf("delivery transition %s does not set %s", t.Name, k)
		}
		set[k] = v
	}
	if t.To != keep {
		set["state"] = t.To
	}
	set["updated_at"] = now
	return set, nil
}

// Item transitions: an item's state is empty while it follows its delivery; these end that.
const (
	ItemTrIntake   = "item_intake"   // taken in, but no message will carry it (the intake decision says why)
	ItemTrDropped  = "item_dropped"  // its match was revoked between queueing and the attempt
	ItemTrFallback = "item_fallback" // its WeChat message cannot reach the firm: an SMS item is queued
)

// ItemTransition is one way a delivery item leaves its delivery.
type ItemTransition struct {
	Name string
	To   []string // the item states it may end in
	Note string   // what the note says (documentation)
}

var itemTransitions = map[string]ItemTransition{
	ItemTrIntake:   {Name: ItemTrIntake, To: []string{store.ItemSkipped, store.ItemFallback, store.ItemDead}, Note: "the intake decision's reason"},
	ItemTrDropped:  {Name: ItemTrDropped, To: []string{store.ItemSkipped}, Note: "match_revoked"},
	ItemTrFallback: {Name: ItemTrFallback, To: []string{store.ItemFallback}, Note: "the provider's code"},
}

// ---- pure decisions ----

// intakeFacts is what the intake knows about one new notice.
type intakeFacts struct {
	Channel  string
	Firm     *store.Enterprise // nil: not in the registry
	Match    *store.Match
	Kind     string // empty for a match notice, else a payout step
	OptedOut bool   // the firm unsubscribed from Channel
	SMSRoute bool   // an SMS channel exists to fall back to
}

// intakeDecision says whether a new notice joins a message (state "") or ends at once: skipped
// (with the reason), fallback to SMS (no openid), or dead (no message can carry it).
func intakeDecision(f intakeFacts) (state, note string) {
	switch {
	case f.Firm == nil:
		return store.ItemSkipped, "firm_unknown"
	case f.Firm.Status != store.StatusActive:
		return store.ItemSkipped, "firm_" + f.Firm.Status
	case f.Match.State == store.MatchRevoked && f.Kind == "":
		// A payout notice is about money already decided; it goes out whatever the match does now.
		return store.ItemSkipped, "match_revoked"
	case f.OptedOut:
		return store.ItemSkipped, "opted_out"
	case f.Channel == ChannelWeChat && f.Firm.WechatOpenID == "":
		if !f.SMSRoute {
			return store.ItemDead, "no openid and no SMS channel to fall back to"
		}
		return store.ItemFallback, "no_openid"
	}
	return "", ""
}

// dispatchSkip says whether a due delivery is skipped rather than attempted: the firm is gone or
// inactive, it unsubscribed, or none of the delivery's matches still holds (live items).
func dispatchSkip(channel string, firm *store.Enterprise, optedOut bool, live int) (code, detail string) {
	switch {
	case firm == nil:
		return "firm_unknown", "the firm is not in the registry"
	case firm.Status != store.StatusActive:
		return "firm_" + firm.Status, "the firm is " + firm.Status
	case optedOut:
		return "opted_out", "the firm unsubscribed from " + channel
	case live == 0:
		return "match_revoked", "the firm no longer qualifies for any policy of this notice"
	}
	return "", ""
}

// dueState classifies a delivery a dispatch was asked about, before any decision: finished
// (nothing to do), being sent by someone right now (wait for the lease), early (an outbox row brings
// it back), or a candidate (in doubt when its last attempt's outcome is unknown).
type dueState int

const (
	dueFinished dueState = iota
	dueLeased
	dueEarly
	dueCandidate
)

func classifyDue(d *store.Delivery, now time.Time) (s dueState, inDoubt bool) {
	switch {
	case terminal(d.State):
		return dueFinished, false
	case d.State == store.DeliverySending && d.LeaseUntil != nil && d.LeaseUntil.After(now):
		return dueLeased, false
	case d.State != store.DeliverySending && d.DueAt != nil && d.DueAt.After(now):
		return dueEarly, false
	}
	return dueCandidate, d.InDoubt || d.State == store.DeliverySending
}

// terminal reports delivery states that no attempt changes any more.
func terminal(state string) bool {
	switch state {
	case store.DeliverySent, store.DeliveryDelivered, store.DeliveryUndelivered, store.DeliveryDead, store.DeliverySkipped:
		return true
	}
	return false
}

// deferTransition is the row for postponing a delivery in state: an abandoned attempt (sending
// past its lease) becomes a failed one in doubt.
func deferTransition(state string) string {
	if state == store.DeliverySending {
		return TrDeferInDoubt
	}
	return TrDefer
}

// sendFacts is an attempt's result and what the next step depends on.
type sendFacts struct {
	Channel     string
	Revoked     bool       // every match was revoked between the plan and the claim: no call made
	Err         *SendError // nil: accepted
	Attempts    int        // attempts so far, this one included
	MaxAttempts int
	Backoff     []time.Duration
	SMSRoute    bool // an SMS channel exists to fall back to
}

// next is the decision after an attempt: the transition, when the delivery comes back (retry,
// wait), and whether the failure is one of the error classes that pause or trip the provider.
type next struct {
	Tr      string
	At      time.Time // for TrRetry and TrWait
	GaveUp  bool      // TrDead because the attempts ran out (not a permanent error)
	NoRoute bool      // TrDead because a fallback had nowhere to go
}

// afterSend maps an attempt's outcome (the provider's error class) to the delivery's next state.
// The classes come from the senders' shared classification (channel.go: transportError and
// httpStatusClass for failures without a provider code; classifyWeChat, classifyTencent and
// classifyAliyun for the providers' codes).
func afterSend(f sendFacts, now time.Time) next {
	if f.Revoked {
		return next{Tr: TrRevoked}
	}
	if f.Err == nil {
		return next{Tr: TrSent}
	}
	switch f.Err.Class {
	case Fallback:
		if f.Channel != ChannelWeChat || !f.SMSRoute {
			return next{Tr: TrDead, NoRoute: true}
		}
		return next{Tr: TrFallback}
	case Permanent:
		return next{Tr: TrDead}
	case Quota:
		return next{Tr: TrWait, At: now} // the provider pauses; the next dispatch picks another or waits for the pause
	case Throttled:
		wait := f.Err.RetryAfter
		if wait <= 0 {
			wait = time.Hour
		}
		return next{Tr: TrWait, At: now.Add(wait)}
	}
	if f.Attempts >= f.MaxAttempts {
		return next{Tr: TrDead, GaveUp: true}
	}
	return next{Tr: TrRetry, At: now.Add(backoff(f.Backoff, f.Attempts))}
}

// backoff is the delay before retry attempt (1-based); the last step repeats.
func backoff(steps []time.Duration, attempt int) time.Duration {
	if len(steps) == 0 {
		return 5 * time.Second
	}
	return steps[min(max(attempt-1, 0), len(steps)-1)]
}

// maxNakDelay is the longest nakDelay.
const maxNakDelay = time.Minute

// nakDelay is the pause before JetStream redelivers a message the notifier could not handle
// (database or bus trouble): doubling from 1 s up to maxNakDelay, by how often it was delivered.
func nakDelay(delivered int) time.Duration {
	d := time.Second << min(max(delivered-1, 0), 6)
	return min(d, maxNakDelay)
}

// receiptTransition is the row for a provider's report.
func receiptTransition(delivered bool) string {
	if delivered {
		return TrDelivered
	}
	return TrUndelivered
}

// reportable reports delivery states a receipt applies to now; a report for any other state (not
// yet recorded as sent) waits.
func reportable(state string) bool {
	return state == store.DeliveryDelivered || slices.Contains(stAccepted, state)
}
