package notify

import (
	"context"
	"errors"
	"net"
	"net/url"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	alierr "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	tcerr "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common/errors"
	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// These tests hold the delivery state machine (machine.go) to its table without a database.

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

// TestTransitionTable is the state machine written out once more: a change to machine.go that
// is not also made here fails, so every change to how a delivery moves is deliberate.
func TestTransitionTable(t *testing.T) {
	t.Parallel()
	const (
		q, f, s, snt = store.DeliveryQueued, store.DeliveryFailed, store.DeliverySending, store.DeliverySent
		dl, sk, dd   = store.DeliveryDead, store.DeliverySkipped, store.DeliveryDelivered
		und, unk     = store.DeliveryUndelivered, store.DeliveryUnknown
	)
	rows := []struct {
		name  string
		from  []string
		to    string // keep: unchanged
		event string
		guard guard
		cols  []string // every column the UPDATE writes
	}{
		{TrJoin, []string{q}, q, "", guardOpenKey, []string{"items", "state", "updated_at"}},
		{TrClaim, []string{q, f, s}, s, "", guardStateAndClaim, []string{"attempted_at", "attempts", "claim", "due_at", "lease_until", "open_key", "provider", "state", "updated_at"}},
		{TrSkip, []string{q, f, s}, sk, store.EventSkipped, guardStateAndClaim, []string{"claim", "due_at", "last_code", "last_error", "lease_until", "open_key", "state", "updated_at"}},
		{TrGiveUp, []string{q, f, s}, dl, store.EventDead, guardStateAndClaim, []string{"claim", "due_at", "last_code", "last_error", "lease_until", "open_key", "state", "updated_at"}},
		{TrDefer, []string{q, f}, keep, store.EventDeferred, guardStateAndClaim, []string{"due_at", "updated_at"}},
		{TrDeferInDoubt, []string{s}, f, store.EventDeferred, guardStateAndClaim, []string{"claim", "due_at", "in_doubt", "lease_until", "state", "updated_at"}},
		{TrResolve, []string{f, s}, snt, store.EventResolved, guardStateAndClaim, []string{"claim", "due_at", "in_doubt", "last_code", "last_error", "lease_until", "provider_id", "sent_at", "state", "updated_at"}},
		{TrSent, []string{s}, snt, store.EventSent, guardClaim, []string{"claim", "in_doubt", "items", "last_code", "last_error", "lease_until", "provider_id", "sent_at", "state", "updated_at"}},
		{TrRevoked, []string{s}, sk, store.EventSkipped, guardClaim, []string{"attempts", "claim", "last_code", "last_error", "lease_until", "state", "updated_at"}},
		{TrRetry, []string{s}, f, store.EventFailed, guardClaim, []string{"claim", "due_at", "in_doubt", "last_code", "last_error", "lease_until", "state", "updated_at"}},
		{TrWait, []string{s}, f, store.EventDeferred, guardClaim, []string{"attempts", "claim", "due_at", "in_doubt", "last_code", "last_error", "lease_until", "state", "updated_at"}},
		{TrDead, []string{s}, dl, store.EventDead, guardClaim, []string{"claim", "in_doubt", "last_code", "last_error", "lease_until", "state", "updated_at"}},
		{TrFallback, []string{s}, sk, store.EventFallback, guardClaim, []string{"claim", "last_code", "last_error", "lease_until", "state", "updated_at"}},
		{TrDelivered, []string{snt, und, unk}, dd, store.EventDelivered, guardState, []string{"delivered_at", "state", "updated_at"}},
		{TrUndelivered, []string{snt, unk}, und, store.EventUndelivered, guardState, []string{"last_code", "last_error", "state", "updated_at"}},
		{TrUnknown, []string{snt}, unk, store.EventUnknown, guardState, []string{"last_error", "state", "updated_at"}},
		{TrMaxDeliveries, []string{q, f}, dl, store.EventDead, guardState, []string{"last_code", "last_error", "open_key", "state", "updated_at"}},
		{TrResend, []string{dl, f}, f, store.EventResend, guardStateAndClaim, []string{"attempts", "due_at", "state", "updated_at"}},
	}
	if len(rows) != len(transitions) {
		t.Errorf("the table has %d transitions, this test %d", len(transitions), len(rows))
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			tr, ok := transitions[row.name]
			if !ok {
				t.Fatalf("no transition %s", row.name)
			}
			if tr.Name != row.name {
				t.Errorf("named %q under %q", tr.Name, row.name)
			}
			if !slices.Equal(tr.From, row.from) || tr.To != row.to || tr.Event != row.event || tr.Guard != row.guard {
				t.Errorf("%v → %q (event %q, guard %d); want %v → %q (event %q, guard %d)", tr.From, tr.To, tr.Event, tr.Guard,
					row.from, row.to, row.event, row.guard)
			}
			vars := map[string]any{}
			for _, c := range tr.Vars {
				vars[c] = "x"
			}
			set, err := tr.columns(t0, vars)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for c := range set {
				got = append(got, c)
			}
			sort.Strings(got)
			if !slices.Equal(got, row.cols) {
				t.Errorf("writes %v, want %v", got, row.cols)
			}
			if row.to != keep && set["state"] != row.to {
				t.Errorf("state = %v", set["state"])
			}
			if set["updated_at"] != t0 {
				t.Errorf("updated_at = %v", set["updated_at"])
			}
			if _, err := tr.columns(t0, map[string]any{"recipient": "x"}); err == nil {
				t.Error("a column the transition does not declare was accepted")
			}
			// Nothing leaves a finished delivery but a provider's report or an operator's resend.
			for _, from := range tr.From {
				if terminal(from) && tr.Guard != guardState && tr.Name != TrResend {
					t.Errorf("leaves the finished state %s", from)
				}
			}
		})
	}
}

func TestIntakeDecision(t *testing.T) {
	t.Parallel()
	active := &store.Enterprise{CreditCode: "A", Status: store.StatusActive, WechatOpenID: "o-1", ContactPhone: "13800138000"}
	noOpenID := &store.Enterprise{CreditCode: "B", Status: store.StatusActive, ContactPhone: "13800138001"}
	revoked := &store.Enterprise{CreditCode: "C", Status: "revoked"}
	live := &store.Match{State: store.MatchActive}
	gone := &store.Match{State: store.MatchRevoked}
	rows := []struct {
		name        string
		f           intakeFacts
		state, note string
	}{
		{"joins a message", intakeFacts{Channel: ChannelWeChat, Firm: active, Match: live}, "", ""},
		{"firm not in the registry", intakeFacts{Channel: ChannelSMS, Match: live}, store.ItemSkipped, "firm_unknown"},
		{"firm revoked", intakeFacts{Channel: ChannelSMS, Firm: revoked, Match: live}, store.ItemSkipped, "firm_revoked"},
		{"match revoked", intakeFacts{Channel: ChannelSMS, Firm: active, Match: gone}, store.ItemSkipped, "match_revoked"},
		{"payout notice of a revoked match goes out", intakeFacts{Channel: ChannelSMS, Firm: active, Match: gone, Kind: bus.NoticePaid}, "", ""},
		{"opted out", intakeFacts{Channel: ChannelSMS, Firm: active, Match: live, OptedOut: true}, store.ItemSkipped, "opted_out"},
		{"revoked before opted out", intakeFacts{Channel: ChannelSMS, Firm: active, Match: gone, OptedOut: true}, store.ItemSkipped, "match_revoked"},
		{"no openid falls back", intakeFacts{Channel: ChannelWeChat, Firm: noOpenID, Match: live, SMSRoute: true}, store.ItemFallback, "no_openid"},
		{"no openid and no SMS", intakeFacts{Channel: ChannelWeChat, Firm: noOpenID, Match: live}, store.ItemDead, "no openid and no SMS channel to fall back to"},
		{"no openid does not matter to SMS", intakeFacts{Channel: ChannelSMS, Firm: noOpenID, Match: live}, "", ""},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			state, note := intakeDecision(row.f)
			if state != row.state || note != row.note {
				t.Errorf("got (%q, %q), want (%q, %q)", state, note, row.state, row.note)
			}
		})
	}
}

func TestDispatchSkip(t *testing.T) {
	t.Parallel()
	active := &store.Enterprise{Status: store.StatusActive}
	rows := []struct {
		name     string
		firm     *store.Enterprise
		optedOut bool
		live     int
		code     string
	}{
		{"sent", active, false, 2, ""},
		{"firm gone", nil, false, 2, "firm_unknown"},
		{"firm deregistered", &store.Enterprise{Status: "deregistered"}, false, 2, "firm_deregistered"},
		{"unsubscribed", active, true, 2, "opted_out"},
		{"every match revoked", active, false, 0, "match_revoked"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			code, detail := dispatchSkip(ChannelSMS, row.firm, row.optedOut, row.live)
			if code != row.code || (code != "") != (detail != "") {
				t.Errorf("got (%q, %q), want code %q", code, detail, row.code)
			}
		})
	}
}

func TestClassifyDue(t *testing.T) {
	t.Parallel()
	later, earlier := t0.Add(time.Minute), t0.Add(-time.Minute)
	rows := []struct {
		name    string
		d       store.Delivery
		want    dueState
		inDoubt bool
	}{
		{"queued and due", store.Delivery{State: store.DeliveryQueued, DueAt: &earlier}, dueCandidate, false},
		{"queued, digest still open", store.Delivery{State: store.DeliveryQueued, DueAt: &later}, dueEarly, false},
		{"failed, retry due", store.Delivery{State: store.DeliveryFailed, DueAt: &earlier}, dueCandidate, false},
		{"failed in doubt", store.Delivery{State: store.DeliveryFailed, DueAt: &earlier, InDoubt: true}, dueCandidate, true},
		{"being sent", store.Delivery{State: store.DeliverySending, LeaseUntil: &later}, dueLeased, false},
		{"lease ran out", store.Delivery{State: store.DeliverySending, LeaseUntil: &earlier}, dueCandidate, true},
		{"sent", store.Delivery{State: store.DeliverySent}, dueFinished, false},
		{"dead", store.Delivery{State: store.DeliveryDead}, dueFinished, false},
		{"skipped", store.Delivery{State: store.DeliverySkipped}, dueFinished, false},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			got, doubt := classifyDue(&row.d, t0)
			if got != row.want || doubt != row.inDoubt {
				t.Errorf("got (%d, %t), want (%d, %t)", got, doubt, row.want, row.inDoubt)
			}
		})
	}
}

func TestDeferTransition(t *testing.T) {
	t.Parallel()
	for state, want := range map[string]string{store.DeliveryQueued: TrDefer, store.DeliveryFailed: TrDefer, store.DeliverySending: TrDeferInDoubt} {
		t.Run(state, func(t *testing.T) {
			if got := deferTransition(state); got != want {
				t.Errorf("got %s, want %s", got, want)
			}
			if !slices.Contains(transitions[want].From, state) {
				t.Errorf("%s does not leave %s", want, state)
			}
		})
	}
}

func TestAfterSend(t *testing.T) {
	t.Parallel()
	steps := []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}
	fail := func(class ErrorClass, retryAfter time.Duration) *SendError {
		return &SendError{Provider: "p", Code: "c", Class: class, RetryAfter: retryAfter}
	}
	base := sendFacts{Channel: ChannelWeChat, Attempts: 1, MaxAttempts: 12, Backoff: steps, SMSRoute: true}
	with := func(change func(*sendFacts)) sendFacts { f := base; change(&f); return f }
	rows := []struct {
		name string
		f    sendFacts
		want next
	}{
		{"accepted", base, next{Tr: TrSent}},
		{"every match revoked", with(func(f *sendFacts) { f.Revoked = true }), next{Tr: TrRevoked}},
		{"transient, first attempt", with(func(f *sendFacts) { f.Err = fail(Transient, 0) }), next{Tr: TrRetry, At: t0.Add(time.Second)}},
		{"transient, second attempt", with(func(f *sendFacts) { f.Err, f.Attempts = fail(Transient, 0), 2 }), next{Tr: TrRetry, At: t0.Add(5 * time.Second)}},
		{"transient past the backoff steps", with(func(f *sendFacts) { f.Err, f.Attempts = fail(Transient, 0), 7 }), next{Tr: TrRetry, At: t0.Add(30 * time.Second)}},
		{"transient, last attempt", with(func(f *sendFacts) { f.Err, f.Attempts = fail(Transient, 0), 12 }), next{Tr: TrDead, GaveUp: true}},
		{"permanent", with(func(f *sendFacts) { f.Err = fail(Permanent, 0) }), next{Tr: TrDead}},
		{"quota", with(func(f *sendFacts) { f.Err = fail(Quota, 0) }), next{Tr: TrWait, At: t0}},
		{"throttled as asked", with(func(f *sendFacts) { f.Err = fail(Throttled, 30*time.Second) }), next{Tr: TrWait, At: t0.Add(30 * time.Second)}},
		{"throttled without a time", with(func(f *sendFacts) { f.Err = fail(Throttled, 0) }), next{Tr: TrWait, At: t0.Add(time.Hour)}},
		{"wechat fallback", with(func(f *sendFacts) { f.Err = fail(Fallback, 0) }), next{Tr: TrFallback}},
		{"wechat fallback without SMS", with(func(f *sendFacts) { f.Err, f.SMSRoute = fail(Fallback, 0), false }), next{Tr: TrDead, NoRoute: true}},
		{"fallback class on SMS", with(func(f *sendFacts) { f.Err, f.Channel = fail(Fallback, 0), ChannelSMS }), next{Tr: TrDead, NoRoute: true}},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			got := afterSend(row.f, t0)
			if got != row.want {
				t.Errorf("got %+v, want %+v", got, row.want)
			}
			if _, ok := transitions[got.Tr]; !ok {
				t.Errorf("%s is not in the table", got.Tr)
			}
		})
	}
}

// The table decides on the error classes of the senders' shared classification: the same failure
// from either SMS provider leads to the same next state.
func TestSMSFailuresTakeTheSameTransition(t *testing.T) {
	t.Parallel()
	dial := &url.Error{Op: "Post", URL: "https://sms.example/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	reset := &url.Error{Op: "Post", URL: "https://sms.example/", Err: &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}}
	page := func(status int, text string) (error, error) {
		return alierr.NewServerError(status, "<html>"+text+"</html>", ""),
			tcerr.NewTencentCloudSDKError("ClientError.HttpStatusCodeError", "Request fail with http status code: "+text+", with body: <html></html>", "")
	}
	a502, t502 := page(502, "502 Bad Gateway")
	a403, t403 := page(403, "403 Forbidden")
	rows := []struct {
		name            string
		aliyun, tencent error
		want            string
	}{
		{"connection refused", dial, dial, TrRetry},
		{"connection reset", reset, reset, TrRetry},
		{"deadline", context.DeadlineExceeded, context.DeadlineExceeded, TrRetry},
		{"unrecognised", errors.New("sdk: unexpected state"), errors.New("sdk: unexpected state"), TrRetry},
		{"gateway 502", a502, t502, TrRetry},
		{"gateway 403", a403, t403, TrDead},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			var got []next
			for _, err := range []error{aliyunError(row.aliyun), tencentError(row.tencent)} {
				var se *SendError
				if !errors.As(err, &se) {
					t.Fatalf("%v is not a SendError", err)
				}
				got = append(got, afterSend(sendFacts{Channel: ChannelSMS, Err: se, Attempts: 1, MaxAttempts: 12}, t0))
			}
			if got[0] != got[1] {
				t.Errorf("aliyun → %+v, tencent → %+v", got[0], got[1])
			}
			if got[0].Tr != row.want {
				t.Errorf("→ %s, want %s", got[0].Tr, row.want)
			}
		})
	}
}

func TestBackoffAndNakDelay(t *testing.T) {
	t.Parallel()
	steps := []time.Duration{time.Second, time.Minute}
	for _, row := range []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		{"backoff attempt 0", backoff(steps, 0), time.Second},
		{"backoff attempt 1", backoff(steps, 1), time.Second},
		{"backoff attempt 2", backoff(steps, 2), time.Minute},
		{"backoff past the steps", backoff(steps, 9), time.Minute},
		{"backoff without steps", backoff(nil, 3), 5 * time.Second},
		{"nak first delivery", nakDelay(1), time.Second},
		{"nak third delivery", nakDelay(3), 4 * time.Second},
		{"nak capped", nakDelay(40), time.Minute},
		{"nak unknown count", nakDelay(0), time.Second},
	} {
		t.Run(row.name, func(t *testing.T) {
			if row.got != row.want {
				t.Errorf("got %s, want %s", row.got, row.want)
			}
		})
	}
}

func TestReceiptRows(t *testing.T) {
	t.Parallel()
	for _, row := range []struct {
		state      string
		reportable bool
	}{
		{store.DeliveryQueued, false}, {store.DeliverySending, false}, {store.DeliveryFailed, false},
		{store.DeliverySent, true}, {store.DeliveryDelivered, true}, {store.DeliveryUndelivered, true},
		{store.DeliveryUnknown, true}, {store.DeliveryDead, false}, {store.DeliverySkipped, false},
	} {
		t.Run(row.state, func(t *testing.T) {
			if got := reportable(row.state); got != row.reportable {
				t.Errorf("reportable = %t", got)
			}
			// A report that applies moves the delivery only forward: delivered never goes back.
			for _, delivered := range []bool{true, false} {
				tr := transitions[receiptTransition(delivered)]
				if row.state == store.DeliveryDelivered && slices.Contains(tr.From, row.state) {
					t.Errorf("%s leaves delivered", tr.Name)
				}
			}
		})
	}
}

func TestItemTransitions(t *testing.T) {
	t.Parallel()
	for name, want := range map[string][]string{
		ItemTrIntake:   {store.ItemSkipped, store.ItemFallback, store.ItemDead},
		ItemTrDropped:  {store.ItemSkipped},
		ItemTrFallback: {store.ItemFallback},
	} {
		t.Run(name, func(t *testing.T) {
			if got := itemTransitions[name]; !slices.Equal(got.To, want) {
				t.Errorf("ends in %v, want %v", got.To, want)
			}
		})
	}
}

// A batch's transition finds its rows by their ids. On SQLite, which has no statistics, the state
// guard beside a list of ids made the planner walk ix_delivery_failed over every delivery in the
// state (every queued one, for each batch's claim); checked on the plan of the statements a claim
// and a batch's deferral run. (MySQL's optimizer reads the ids by primary key.)
func TestBatchTransitionsFindTheirRowsByID(t *testing.T) {
	db := testenv.OpenDB(t).DB
	if db.Dialector.Name() != "sqlite" {
		t.Skip("the plan checked is SQLite's")
	}
	ids := make([]uint64, 100)
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	now := time.Now()
	var stmts []*gorm.Statement
	dry := db.Session(&gorm.Session{DryRun: true})
	for _, c := range []change{
		{tr: tr(TrClaim), ids: ids, state: store.DeliveryQueued, vars: map[string]any{"claim": "c", "provider": "p", "lease_until": now,
			"attempted_at": now, "attempts": gorm.Expr("attempts + 1")}},
		{tr: tr(TrDefer), ids: ids, state: store.DeliveryQueued, vars: map[string]any{"due_at": now}},
		{tr: tr(TrDelivered), ids: ids, vars: map[string]any{"delivered_at": now}},
	} {
		set, err := c.tr.columns(now, c.vars)
		if err != nil {
			t.Fatal(err)
		}
		stmts = append(stmts, c.rows(dry).Updates(set).Statement)
	}
	var held []uint64
	stmts = append(stmts, change{tr: tr(TrDefer), ids: ids, state: store.DeliveryQueued}.rows(dry).Pluck("id", &held).Statement)
	for _, st := range stmts {
		var plan []string
		rows, err := db.Raw("EXPLAIN QUERY PLAN "+st.SQL.String(), st.Vars...).Rows()
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if text := strings.Join(plan, "\n"); !strings.Contains(text, "INTEGER PRIMARY KEY") {
			t.Errorf("%s\nreads: %s", st.SQL.String(), text)
		}
	}
}
