package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/store"
)

// leaseMargin is added to the send timeout for the lease of a claimed delivery: past the lease, a
// delivery still in state sending was abandoned (crash) and is in doubt.
const leaseMargin = 5 * time.Second

// action is what a dispatch decided for a delivery.
type action int

const (
	actSend     action = iota // claim it and call the provider
	actSkip                   // not sent on purpose (firm inactive, opted out, every match revoked)
	actDefer                  // not now (quiet hours, throttle, paused provider, in-doubt grace)
	actResolved               // an in-doubt attempt turned out accepted
	actDead                   // cannot be sent
)

// hint is what the intake of this very batch knows about a delivery it created due at once, with
// no open digest (no other notice can join it): the dispatch then reads nothing again.
type hint struct {
	d       store.Delivery
	firm    *store.Enterprise
	items   []store.DeliveryItem
	matches []*store.Match
}

// candidate is a due delivery and what the dispatch does with it.
type candidate struct {
	d       store.Delivery
	firm    *store.Enterprise
	hint    *hint
	inDoubt bool
	prov    *provider

	act          action
	until        time.Time
	code, detail string
	resolved     Result

	claim   string
	items   []store.DeliveryItem // as claimed: the matches this message announces
	dropped []uint64             // matches of items revoked since they were queued
	matches []*store.Match
	notice  Notice
	revoked bool // nothing left to announce: no provider call
	res     Result
	err     *SendError
	// lost: the delivery changed hands under this dispatch (another notifier claimed or settled
	// it first). The message that asked for it may be the other notifier's carrier too — JetStream
	// handed it to both when a batch outlasted AckWait — so it is not this dispatch's to
	// acknowledge: an ack would remove it, and were the other notifier to die before recording,
	// nothing would bring the delivery back.
	lost bool
}

// dispatch attempts the given deliveries. It returns, per delivery, how long the messages that
// asked for it should wait before JetStream brings them back (0: acknowledge them). Every decision
// that postpones a delivery writes an outbox row for its new time, so an acknowledged message never
// strands a delivery; a delivery that changed hands under the dispatch keeps its message until the
// other notifier's lease has run out (candidate.lost).
func (n *Notifier) dispatch(ctx context.Context, rt *route, ids []uint64, hints map[uint64]*hint) (map[uint64]time.Duration, error) {
	now := n.now()
	db := n.db.WithContext(ctx)
	answers := make(map[uint64]time.Duration, len(ids))
	var load []uint64
	var cands []*candidate
	for _, id := range ids {
		answers[id] = 0 // a delivery that no longer exists has nothing left to do
		if h := hints[id]; h != nil {
			cands = append(cands, &candidate{d: h.d, firm: h.firm, hint: h})
		} else {
			load = append(load, id)
		}
	}
	var ds []store.Delivery
	if len(load) > 0 {
		if err := db.Where("id IN ?", load).Find(&ds).Error; err != nil {
			return nil, fmt.Errorf("load deliveries: %w", err)
		}
	}
	for _, d := range ds {
		switch s, doubt := classifyDue(&d, now); s {
		case dueLeased:
			answers[d.ID] = d.LeaseUntil.Sub(now) + time.Second // someone is sending it right now
		case dueCandidate:
			cands = append(cands, &candidate{d: d, inDoubt: doubt})
		}
		// dueFinished: nothing to do; dueEarly: an outbox row brings it back at its time.
	}
	if len(cands) == 0 {
		return answers, nil
	}
	begin := time.Now()
	if err := n.plan(ctx, rt, cands, now); err != nil {
		return nil, err
	}
	if err := n.claim(ctx, rt, cands, now); err != nil {
		return nil, err
	}
	begin = timePhase(rt.channel, "claim", begin)
	var sending []*candidate
	for _, c := range cands {
		if c.lost {
			answers[c.d.ID] = n.leaseWait()
		}
		if c.act == actSend && c.claim != "" {
			c.d.Attempts++
			sending = append(sending, c)
		}
	}
	if len(sending) > 0 {
		if err := n.prepare(ctx, sending); err != nil {
			// Claimed but not sent: the lease runs out and the deliveries come back in doubt,
			// which for a call that never happened resolves to "not found" and a send.
			for _, c := range sending {
				answers[c.d.ID] = n.leaseWait()
			}
			return answers, err
		}
		begin = timePhase(rt.channel, "prepare", begin)
		n.send(ctx, rt, sending)
		begin = timePhase(rt.channel, "send", begin)
		defer timePhase(rt.channel, "record", begin)
		if err := n.record(ctx, rt, sending); err != nil {
			for _, c := range sending {
				answers[c.d.ID] = n.leaseWait()
			}
			return answers, err
		}
	}
	for _, c := range sending {
		if c.lost {
			answers[c.d.ID] = n.leaseWait()
		}
	}
	return answers, nil
}

// leaseWait is how long a message waits when its delivery is, or may be, claimed by someone (this
// dispatch, whose attempt was not recorded, or another notifier): a whole lease from now and a
// second. By then the delivery is recorded, or its claim was abandoned and is settled in doubt.
func (n *Notifier) leaseWait() time.Duration {
	return n.opts.SendTimeout + leaseMargin + time.Second
}

// plan decides, without sending anything, what happens to each candidate: skip, defer, settle an
// in-doubt attempt, or send with which provider.
func (n *Notifier) plan(ctx context.Context, rt *route, cands []*candidate, now time.Time) error {
	ch := rt.channel
	var codes []string
	var ids []uint64
	for _, c := range cands {
		if c.hint == nil {
			codes = append(codes, c.d.CreditCode)
			ids = append(ids, c.d.ID)
		}
	}
	firms, err := loadFirms(ctx, n.db, codes)
	if err != nil {
		return err
	}
	optedOut, err := loadOptOuts(ctx, n.db, ch, codes)
	if err != nil {
		return err
	}
	live := map[uint64]int{}
	if len(ids) > 0 {
		if live, err = n.liveItems(ctx, ids); err != nil {
			return err
		}
	}
	for _, c := range cands {
		if c.hint != nil {
			continue // checked by the intake a moment ago
		}
		c.firm = firms[c.d.CreditCode]
		if code, detail := dispatchSkip(ch, c.firm, optedOut[c.d.CreditCode], live[c.d.ID]); code != "" {
			c.skip(code, detail)
		}
		if c.act == actSkip && c.inDoubt {
			c.detail += "; the outcome of the last attempt is unknown"
		}
		if c.act != actSend || !c.inDoubt {
			continue
		}
		c.prov = rt.byName(c.d.Provider)
		if c.prov == nil {
			c.act, c.code = actDead, "in_doubt"
			c.detail = fmt.Sprintf("the last attempt with %q may have been accepted, and that provider is no longer configured: check with it, then resend by hand if the firm did not get it", c.d.Provider)
		}
	}
	if err := n.settleInDoubt(ctx, rt, cands, now); err != nil {
		return err
	}

	// Pace: quiet hours, the per-firm throttle, and a provider that is not paused.
	paced, err := n.recentSends(ctx, ch, cands, now)
	if err != nil {
		return err
	}
	allowed := map[string]bool{}
	for _, c := range cands {
		if c.act != actSend {
			continue
		}
		if until, quiet := n.opts.QuietHours.Until(ch, now); quiet {
			c.deferTo(until, "quiet_hours", "quiet hours for "+ch)
			continue
		}
		r := paced[c.d.CreditCode]
		if allowed[c.d.CreditCode] && n.opts.Throttle.MinInterval > 0 {
			r.count++
			r.last = &now
		}
		if at := n.opts.Throttle.next(now, r.count, r.first, r.last); !at.IsZero() {
			c.deferTo(at, "throttle", "per-firm pace on "+ch)
			continue
		}
		allowed[c.d.CreditCode] = true
		if c.prov == nil {
			p, resume := rt.pick(now)
			if p == nil {
				c.deferTo(resume, "paused", "every "+ch+" provider is out of quota")
				continue
			}
			c.prov = p
		} else if until := c.prov.pausedUntilAt(now); !until.IsZero() {
			c.deferTo(until, "paused", c.prov.name()+" is out of quota")
		}
	}
	return nil
}

func (c *candidate) skip(code, detail string) { c.act, c.code, c.detail = actSkip, code, detail }

func (c *candidate) deferTo(t time.Time, code, detail string) {
	c.act, c.until, c.code = actDefer, t, code
	c.detail = detail + "; next try " + t.Format(time.RFC3339)
}

// liveItems counts, per delivery, the items whose match still holds.
func (n *Notifier) liveItems(ctx context.Context, ids []uint64) (map[uint64]int, error) {
	var rows []struct {
		DeliveryID uint64
		N          int
	}
	err := n.db.WithContext(ctx).Table("delivery_items AS i").
		Select("i.delivery_id, COUNT(*) AS n").
		Joins("JOIN matches m ON m.id = i.match_id").
		Where("i.delivery_id IN ? AND i.state = '' AND (m.state <> ? OR i.kind <> '')", ids, store.MatchRevoked).
		Group("i.delivery_id").Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("count items: %w", err)
	}
	out := make(map[uint64]int, len(rows))
	for _, r := range rows {
		out[r.DeliveryID] = r.N
	}
	return out, nil
}

// pace is a firm's recent messages on a channel.
type pace struct {
	count       int
	first, last *time.Time
}

// recentSends reads the firms' messages of the last 24 hours, for the throttle.
func (n *Notifier) recentSends(ctx context.Context, ch string, cands []*candidate, now time.Time) (map[string]pace, error) {
	out := map[string]pace{}
	th := n.opts.Throttle
	if th.MinInterval <= 0 && th.PerDay <= 0 {
		return out, nil
	}
	var codes []string
	for _, c := range cands {
		if c.act == actSend {
			codes = append(codes, c.d.CreditCode)
		}
	}
	if len(codes) == 0 {
		return out, nil
	}
	// Rows rather than MIN/MAX: SQLite returns aggregates of times as text. A firm has at most a
	// few messages a day, so this stays small.
	var rows []store.Delivery
	err := n.db.WithContext(ctx).Select("credit_code, sent_at").
		Where("channel = ? AND credit_code IN ? AND sent_at >= ?", ch, dedupe(codes), now.Add(-24*time.Hour)).
		Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("read recent sends: %w", err)
	}
	for _, r := range rows {
		p := out[r.CreditCode]
		p.count++
		if p.first == nil || r.SentAt.Before(*p.first) {
			p.first = r.SentAt
		}
		if p.last == nil || r.SentAt.After(*p.last) {
			p.last = r.SentAt
		}
		out[r.CreditCode] = p
	}
	return out, nil
}

// settleInDoubt decides what to do about attempts whose outcome is unknown. A provider that drops
// repeats is simply sent to again. Otherwise the provider is asked (policy "lookup"): found means
// sent; not found is trusted once the grace period since the attempt has passed, and the notice is
// then sent again through the same provider. Never to another provider before that.
func (n *Notifier) settleInDoubt(ctx context.Context, rt *route, cands []*candidate, now time.Time) error {
	var ask []*candidate
	for _, c := range cands {
		if c.act != actSend || !c.inDoubt {
			continue
		}
		if id, ok := c.prov.sender.(Idempotent); ok && id.Idempotent() || n.opts.InDoubt == InDoubtResend {
			inDoubt.WithLabelValues(c.prov.name(), "resent").Inc()
			continue
		}
		if _, ok := c.prov.sender.(Resolver); !ok {
			c.act, c.code = actDead, "in_doubt"
			c.detail = c.prov.name() + " cannot be asked whether it accepted the last attempt: check with it, then resend by hand if the firm did not get it"
			continue
		}
		ask = append(ask, c)
	}
	if len(ask) == 0 {
		return nil
	}
	var wg sync.WaitGroup
	sem := n.slots(rt.channel)
	for _, c := range ask {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			since := c.d.UpdatedAt
			if c.d.AttemptedAt != nil {
				since = *c.d.AttemptedAt
			}
			rctx, cancel := context.WithTimeout(ctx, n.opts.SendTimeout)
			res, ok, err := c.prov.sender.(Resolver).Resolve(rctx, Notice{DeliveryID: idText(c.d.ID), Phone: c.d.Recipient, OpenID: c.d.Recipient}, since)
			cancel()
			switch {
			case err != nil:
				inDoubt.WithLabelValues(c.prov.name(), "lookup_error").Inc()
				c.deferTo(now.Add(backoff(n.opts.Backoff, 1)), "in_doubt", "could not ask "+c.prov.name()+" about the last attempt: "+redact(err.Error()))
			case ok:
				inDoubt.WithLabelValues(c.prov.name(), "found").Inc()
				c.act, c.resolved = actResolved, res
				c.code, c.detail = "in_doubt", c.prov.name()+" confirms it accepted the last attempt"
			case now.Before(since.Add(n.opts.InDoubtGrace)):
				c.deferTo(since.Add(n.opts.InDoubtGrace), "in_doubt", c.prov.name()+" does not list the last attempt yet")
			default:
				inDoubt.WithLabelValues(c.prov.name(), "not_found").Inc()
			}
		}()
	}
	wg.Wait()
	return nil
}

// slots is the channel's pool of provider calls, notify.workers of them, shared by its lanes: a
// lane that is sending uses whatever the lanes busy with the database leave free, so a batch's
// calls take a few rounds of the pool rather than batch_size / (workers / lanes).
func (n *Notifier) slots(channel string) chan struct{} {
	n.slotsMu.Lock()
	defer n.slotsMu.Unlock()
	if n.sendSlots == nil {
		n.sendSlots = map[string]chan struct{}{}
	}
	sem := n.sendSlots[channel]
	if sem == nil {
		sem = make(chan struct{}, n.opts.Workers)
		n.sendSlots[channel] = sem
	}
	return sem
}

// claim writes every decision of the plan in one transaction. The deliveries to send become
// "sending" with a lease and this dispatch's claim token, in one statement per (old state, old
// token, provider); the conditions on the old state and token make two notifiers that picked the
// same delivery claim it once.
func (n *Notifier) claim(ctx context.Context, rt *route, cands []*candidate, now time.Time) error {
	ch := rt.channel
	token := newClaim()
	lease := now.Add(n.opts.SendTimeout + leaseMargin)
	type claimKey struct{ state, claim, provider string }
	run := n.retryTx
	if n.claimOnly(cands) {
		// The common case, every candidate sent with one provider from one state: a single UPDATE
		// needs no transaction around it (BEGIN and COMMIT would be two more round trips).
		run = n.retryStmt
	}
	return run(ctx, func(tx *gorm.DB) error {
		var outbox []store.Outbox
		var events []store.DeliveryEvent
		groups := map[claimKey][]*candidate{}
		var order []claimKey
		type deferKey struct{ state, claim, code string }
		deferred := map[deferKey][]*candidate{}
		var deferOrder []deferKey
		for _, c := range cands {
			c.claim, c.lost = "", false
			if c.act == actSend {
				k := claimKey{c.d.State, c.d.Claim, c.prov.name()}
				if groups[k] == nil {
					order = append(order, k)
				}
				groups[k] = append(groups[k], c)
				continue
			}
			if c.act == actDefer && deferTransition(c.d.State) == TrDefer {
				k := deferKey{c.d.State, c.d.Claim, c.outcomeCode()}
				if deferred[k] == nil {
					deferOrder = append(deferOrder, k)
				}
				deferred[k] = append(deferred[k], c)
				continue
			}
			t, vars, provider := n.decided(c, now)
			rows, err := apply(tx, change{tr: t, ids: []uint64{c.d.ID}, state: c.d.State, claim: c.d.Claim, vars: vars, channel: ch, code: c.outcomeCode()}, now)
			if err != nil {
				return fmt.Errorf("%s delivery %d: %w", t.Name, c.d.ID, err)
			}
			if rows == 0 {
				c.lost = true
				continue
			}
			detail := c.detail
			if c.act != actResolved {
				detail = clip(detail, 480)
			}
			events = append(events, t.event(c.d.ID, now, provider, c.eventCode(), detail))
			switch c.act {
			case actDead:
				deadLetters.WithLabelValues(ch, c.code).Inc()
			case actDefer:
				until := c.until
				outbox = append(outbox, n.outboxJob(bus.NoticeJob{Channel: ch, DeliveryID: c.d.ID}, &until, now))
			}
		}
		for _, k := range deferOrder {
			jobs, evs, err := n.deferTogether(tx, ch, deferred[k], k.state, k.claim, k.code, now)
			if err != nil {
				return err
			}
			outbox, events = append(outbox, jobs...), append(events, evs...)
		}
		claimedAll := true
		for _, k := range order {
			group := groups[k]
			ids := make([]uint64, len(group))
			for i, c := range group {
				ids[i] = c.d.ID
			}
			rows, err := apply(tx, change{tr: tr(TrClaim), ids: ids, state: k.state, claim: k.claim, vars: map[string]any{
				"claim": token, "provider": k.provider, "lease_until": lease, "attempted_at": now, "attempts": gorm.Expr("attempts + 1")}}, now)
			if err != nil {
				return fmt.Errorf("claim deliveries: %w", err)
			}
			claimedAll = claimedAll && rows == int64(len(group))
		}
		claimed := map[uint64]bool{}
		if !claimedAll {
			// Another notifier got some of them first: find out which are ours.
			var ids []uint64
			for _, group := range groups {
				for _, c := range group {
					ids = append(ids, c.d.ID)
				}
			}
			var mine []uint64
			if err := tx.Model(&store.Delivery{}).Where("id IN ? AND claim = ?", ids, token).Pluck("id", &mine).Error; err != nil {
				return fmt.Errorf("read claims: %w", err)
			}
			for _, id := range mine {
				claimed[id] = true
			}
		}
		for _, group := range groups {
			for _, c := range group {
				if claimedAll || claimed[c.d.ID] {
					c.claim = token
				} else {
					c.lost = true
				}
			}
		}
		return n.scheduleAndRecord(tx, outbox, events)
	})
}

// deferTogether defers candidates that share a state, claim and reason, each to its own time, in
// one UPDATE (their due times in a CASE) instead of one per delivery: a firm paced or in quiet
// hours defers every notice of a batch, and those single-row UPDATEs were most of the pipeline's
// statements beside a busy console (47,341 in 45 s at 200,000 firms). The rows the guard admits
// are locked first, so the UPDATE changes exactly those; the others changed hands (lost), as one
// whose single UPDATE changed nothing was. It returns each deferred delivery's outbox job and
// event.
func (n *Notifier) deferTogether(tx *gorm.DB, ch string, group []*candidate, state, claim, code string, now time.Time) ([]store.Outbox, []store.DeliveryEvent, error) {
	ids := make([]uint64, len(group))
	for i, c := range group {
		ids[i] = c.d.ID
	}
	held := ids
	if len(group) > 1 {
		held = nil
		guard := change{tr: tr(TrDefer), ids: ids, state: state, claim: claim}
		if err := guard.rows(tx).Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).Pluck("id", &held).Error; err != nil {
			return nil, nil, fmt.Errorf("lock deliveries to defer: %w", err)
		}
	}
	ours := make(map[uint64]bool, len(held))
	for _, id := range held {
		ours[id] = true
	}
	var due any
	var cases []any
	for _, c := range group {
		if ours[c.d.ID] {
			due = c.until
			cases = append(cases, c.d.ID, c.until)
		}
	}
	if len(cases) > 2 {
		due = gorm.Expr("CASE id"+strings.Repeat(" WHEN ? THEN ?", len(cases)/2)+" END", cases...)
	}
	var rows int64
	if len(held) > 0 {
		var err error
		rows, err = apply(tx, change{tr: tr(TrDefer), ids: held, state: state, claim: claim, vars: map[string]any{"due_at": due},
			channel: ch, code: code}, now)
		if err != nil {
			return nil, nil, fmt.Errorf("defer deliveries: %w", err)
		}
	}
	if rows != int64(len(held)) && len(group) > 1 {
		return nil, nil, fmt.Errorf("defer deliveries: %d of the %d locked rows changed", rows, len(held))
	}
	var jobs []store.Outbox
	var events []store.DeliveryEvent
	for _, c := range group {
		if !ours[c.d.ID] || rows == 0 {
			c.lost = true
			continue
		}
		events = append(events, tr(TrDefer).event(c.d.ID, now, "", c.eventCode(), clip(c.detail, 480)))
		until := c.until
		jobs = append(jobs, n.outboxJob(bus.NoticeJob{Channel: ch, DeliveryID: c.d.ID}, &until, now))
	}
	return jobs, events, nil
}

// scheduleAndRecord writes the outbox rows and delivery events a claim or record transaction produced.
func (n *Notifier) scheduleAndRecord(tx *gorm.DB, outbox []store.Outbox, events []store.DeliveryEvent) error {
	if err := insertRows(n, tx, outbox, 5, "schedule deliveries"); err != nil {
		return err
	}
	return insertRows(n, tx, events, 7, "record events")
}

// claimOnly reports whether claiming cands is one statement: all are sent, from the same state
// and claim, with the same provider.
func (n *Notifier) claimOnly(cands []*candidate) bool {
	for _, c := range cands {
		if c.act != actSend || c.d.State != cands[0].d.State || c.d.Claim != cands[0].d.Claim || c.prov != cands[0].prov {
			return false
		}
	}
	return true
}

// decided is the transition of a plan's decision other than a send, its columns, and the provider
// its event names.
func (n *Notifier) decided(c *candidate, now time.Time) (Transition, map[string]any, string) {
	switch c.act {
	case actSkip:
		return tr(TrSkip), map[string]any{"last_code": c.code, "last_error": clip(c.detail, 480)}, c.d.Provider
	case actDead:
		return tr(TrGiveUp), map[string]any{"last_code": c.code, "last_error": clip(c.detail, 480)}, c.d.Provider
	case actDefer:
		return tr(deferTransition(c.d.State)), map[string]any{"due_at": c.until}, ""
	}
	// actResolved
	sentAt := now
	if c.d.AttemptedAt != nil {
		sentAt = *c.d.AttemptedAt
	}
	vars := map[string]any{"sent_at": sentAt}
	if c.resolved.ProviderID != "" {
		vars["provider_id"] = c.resolved.ProviderID
	}
	return tr(TrResolve), vars, c.prov.name()
}

// eventCode is the code on the timeline event of a plan's decision (a settled attempt has none).
func (c *candidate) eventCode() string {
	if c.act == actResolved {
		return ""
	}
	return c.code
}

// outcomeCode is the code label of the decision's counter.
func (c *candidate) outcomeCode() string {
	if c.act == actResolved {
		return "resolved"
	}
	return c.code
}

// prepare reads what the claimed messages announce, now that no item can join them any more, and
// renders them.
func (n *Notifier) prepare(ctx context.Context, cands []*candidate) error {
	db := n.db.WithContext(ctx)
	var ids []uint64
	for _, c := range cands {
		if c.hint == nil {
			ids = append(ids, c.d.ID)
		}
	}
	var items []store.DeliveryItem
	if len(ids) > 0 {
		if err := db.Where("delivery_id IN ? AND state = ''", ids).Order("queued_at, match_id").Find(&items).Error; err != nil {
			return fmt.Errorf("load items: %w", err)
		}
	}
	mids := make([]uint64, len(items))
	for i, it := range items {
		mids[i] = it.MatchID
	}
	var ms []store.Match
	if len(mids) > 0 {
		if err := db.Where("id IN ?", mids).Find(&ms).Error; err != nil {
			return fmt.Errorf("load matches: %w", err)
		}
	}
	byID := make(map[uint64]*store.Match, len(ms))
	var keys []versionKey
	for i := range ms {
		byID[ms[i].ID] = &ms[i]
		keys = append(keys, versionKey{ms[i].PolicyID, ms[i].PolicyVersion})
	}
	for _, c := range cands {
		if c.hint != nil {
			for _, m := range c.hint.matches {
				keys = append(keys, versionKey{m.PolicyID, m.PolicyVersion})
			}
		}
	}
	texts, err := n.texts.texts(ctx, n.db, keys)
	if err != nil {
		return err
	}
	byDelivery := map[uint64]*candidate{}
	for _, c := range cands {
		byDelivery[c.d.ID] = c
		c.items, c.matches, c.dropped = nil, nil, nil
		if c.hint != nil {
			c.items, c.matches = c.hint.items, c.hint.matches
		}
	}
	for _, it := range items {
		c := byDelivery[it.DeliveryID]
		m := byID[it.MatchID]
		if m == nil || (m.State == store.MatchRevoked && it.Kind == "") {
			c.dropped = append(c.dropped, it.MatchID)
			continue
		}
		c.items = append(c.items, it)
		c.matches = append(c.matches, m)
	}
	for _, c := range cands {
		if len(c.matches) == 0 {
			c.revoked = true // every match was revoked between the plan and the claim
			continue
		}
		c.notice = composeNotice(c.d.ID, c.firm, c.matches, texts, n.opts.NoticeURL(c.d.CreditCode, c.matches[0].PolicyID))
	}
	return n.payoutContent(ctx, cands)
}

// send calls the providers, as many at a time as the channel's pool has free.
func (n *Notifier) send(ctx context.Context, rt *route, cands []*candidate) {
	var wg sync.WaitGroup
	sem := n.slots(rt.channel)
	for _, c := range cands {
		if c.revoked {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sctx, cancel := context.WithTimeout(ctx, n.opts.SendTimeout)
			begin := time.Now()
			res, err := c.prov.sender.Send(sctx, c.notice)
			cancel()
			outcome := "ok"
			if err != nil {
				var se *SendError
				if !errors.As(err, &se) {
					se = &SendError{Provider: c.prov.name(), Code: "error", Message: redact(err.Error()), Class: Transient, InDoubt: true}
				}
				c.err = se
				outcome = se.Class.String()
			}
			c.res = res
			providerLatency.WithLabelValues(c.prov.name(), outcome).Observe(time.Since(begin).Seconds())
		}()
	}
	wg.Wait()
}

// record writes the outcome of every attempt in one transaction, guarded by the claim token.
func (n *Notifier) record(ctx context.Context, rt *route, cands []*candidate) error {
	ch := rt.channel
	now := n.now()
	for _, c := range cands {
		switch {
		case c.revoked:
		case c.err == nil:
			c.prov.observe(now, Transient, true, n.opts.Failover, n.opts.QuotaPause)
			for _, m := range c.matches {
				noticeLatency.WithLabelValues(ch).Observe(now.Sub(m.MatchedAt).Seconds())
			}
		case c.err.Class == Transient || c.err.Class == Quota:
			pause := n.opts.QuotaPause
			if c.err.RetryAfter > 0 {
				pause = c.err.RetryAfter
			}
			c.prov.observe(now, c.err.Class, false, n.opts.Failover, pause)
		}
	}
	steps := make([]step, len(cands))
	for i, c := range cands {
		steps[i] = n.outcome(c, now)
	}
	var recorded []uint64
	err := n.retryTx(ctx, func(tx *gorm.DB) error {
		var outbox []store.Outbox
		var events []store.DeliveryEvent
		// Plain successes (the common case) are recorded in one statement; the rest row by row.
		var sentIDs []uint64
		recorded = nil
		var providerIDs []any
		for _, c := range cands {
			c.lost = false
			if c.plainSuccess() {
				sentIDs = append(sentIDs, c.d.ID)
				providerIDs = append(providerIDs, c.d.ID, c.res.ProviderID)
			}
		}
		if len(sentIDs) > 0 {
			rows, err := apply(tx, change{tr: tr(TrSent), ids: sentIDs, claim: cands[0].claim, channel: ch, vars: map[string]any{
				"sent_at": now, "provider_id": gorm.Expr("CASE id"+strings.Repeat(" WHEN ? THEN ?", len(sentIDs))+" END", providerIDs...)}}, now)
			if err != nil {
				return fmt.Errorf("record sent deliveries: %w", err)
			}
			if rows != int64(len(sentIDs)) {
				n.opts.Log.Warn("deliveries changed hands during their attempt", "expected", len(sentIDs), "recorded", rows)
				// Which ones is not worth a read: a message of a recorded one that comes back
				// finds its delivery sent.
				for _, c := range cands {
					c.lost = c.lost || c.plainSuccess()
				}
			}
			recorded = sentIDs
		}
		for i, c := range cands {
			st := steps[i]
			if c.plainSuccess() {
				events = append(events, st.tr.event(c.d.ID, now, c.prov.name(), st.code, st.detail))
				continue
			}
			if len(c.dropped) > 0 {
				if err := endItems(tx, ItemTrDropped, c.d.ID, ch, c.dropped, store.ItemSkipped, "match_revoked"); err != nil {
					return fmt.Errorf("drop revoked items: %w", err)
				}
			}
			if st.tr.Name == TrFallback {
				if err := endItems(tx, ItemTrFallback, c.d.ID, ch, nil, store.ItemFallback, clip(c.err.Code, 200)); err != nil {
					return fmt.Errorf("mark fallback items: %w", err)
				}
			}
			rows, err := apply(tx, change{tr: st.tr, ids: []uint64{c.d.ID}, claim: c.claim, vars: st.vars, channel: ch, code: st.code}, now)
			if err != nil {
				return fmt.Errorf("record delivery %d: %w", c.d.ID, err)
			}
			// The rows that bring the delivery back (a retry, a wait) or carry its matches on (a
			// fallback) are written even when it changed hands, as before the state machine: a
			// spare notice finds its delivery settled, a missing one would strand it.
			outbox = append(outbox, st.outbox...)
			if rows == 0 {
				n.opts.Log.Warn("delivery changed hands during its attempt", "delivery", c.d.ID)
				c.lost = true
				continue
			}
			events = append(events, st.tr.event(c.d.ID, now, c.prov.name(), st.code, st.detail))
		}
		return n.scheduleAndRecord(tx, outbox, events)
	})
	if err != nil {
		return err
	}
	for _, st := range steps {
		switch st.tr.Name {
		case TrDead:
			deadLetters.WithLabelValues(ch, st.code).Inc()
		case TrRetry:
			retries.WithLabelValues(ch).Inc()
		}
	}
	if len(recorded) == 0 {
		return nil
	}
	return n.applyWaitingReceipts(ctx, cands, recorded, now)
}

// applyWaitingReceipts applies the reports of just-recorded sends that a fast provider delivered
// before the record. Doing it after the commit closes the race with the receipt handler (which does
// the same after committing its report): whichever commits second sees the other's row. Such
// reports are rare, so one read outside a transaction looks for them, by the provider ids this
// dispatch already holds; only when it finds some does a transaction apply them.
func (n *Notifier) applyWaitingReceipts(ctx context.Context, cands []*candidate, recorded []uint64, now time.Time) error {
	var pids []string
	for _, c := range cands {
		if c.plainSuccess() {
			if c.res.ProviderID != "" {
				pids = append(pids, c.res.ProviderID)
			}
		}
	}
	if len(pids) == 0 {
		return nil
	}
	var waiting int64
	if err := n.db.WithContext(ctx).Model(&store.DeliveryReceipt{}).
		Where("applied = ? AND received_at >= ? AND (delivery_id IN ? OR provider_id IN ?)", false, now.Add(-24*time.Hour), recorded, pids).
		Limit(1).Count(&waiting).Error; err != nil {
		return fmt.Errorf("look for waiting receipts: %w", err)
	}
	if waiting == 0 {
		return nil
	}
	rc := ReceiptConfig{SubjectPrefix: n.opts.SubjectPrefix, FallbackToSMS: n.routes[ChannelSMS] != nil}
	return n.retryTx(ctx, func(tx *gorm.DB) error { return applyWaiting(tx, rc, recorded, now) })
}

// plainSuccess is an accepted attempt that left nothing out: recorded with the batch's others.
func (c *candidate) plainSuccess() bool { return c.err == nil && !c.revoked && len(c.dropped) == 0 }

// step is what recording an attempt writes: a transition with its columns, the timeline event's
// code and detail, and the outbox rows it needs (a retry, a wait, the SMS of a fallback).
type step struct {
	tr           Transition
	vars         map[string]any
	code, detail string
	outbox       []store.Outbox
}

// outcome turns an attempt's result into its step: afterSend (machine.go) decides the transition;
// this adds the words and the rows.
func (n *Notifier) outcome(c *candidate, now time.Time) step {
	ch := c.d.Channel
	nx := afterSend(sendFacts{Channel: ch, Revoked: c.revoked, Err: c.err, Attempts: c.d.Attempts, MaxAttempts: n.opts.MaxAttempts,
		Backoff: n.opts.Backoff, SMSRoute: n.routes[ChannelSMS] != nil}, now)
	st := step{tr: tr(nx.Tr)}
	switch nx.Tr {
	case TrRevoked:
		st.code = "match_revoked"
		return st
	case TrSent:
		st.detail = c.res.ProviderID
		if len(c.dropped) > 0 {
			st.detail += fmt.Sprintf("; %d revoked match(es) left out", len(c.dropped))
		}
		st.vars = map[string]any{"sent_at": now, "provider_id": c.res.ProviderID, "items": len(c.matches)}
		return st
	}
	se := c.err
	msg := clip(se.Message, 480)
	st.code = se.Code
	switch nx.Tr {
	case TrFallback:
		for _, it := range c.items {
			st.outbox = append(st.outbox, n.outboxJob(bus.NoticeJob{MatchID: it.MatchID, Channel: ChannelSMS, Fallback: true, Kind: it.Kind, Ref: it.Ref}, nil, now))
		}
		st.detail = clip("fell back to SMS: "+msg, 480)
		st.vars = map[string]any{"last_code": se.Code, "last_error": st.detail}
		return st
	case TrDead:
		detail := msg
		switch {
		case nx.NoRoute:
			detail = msg + " (no SMS channel to fall back to)"
		case nx.GaveUp:
			detail = fmt.Sprintf("gave up after %d attempts: %s", c.d.Attempts, msg)
		}
		st.detail = clip(detail, 480)
		st.vars = map[string]any{"in_doubt": se.InDoubt, "last_code": se.Code, "last_error": st.detail}
		return st
	case TrWait:
		if se.Class == Quota {
			st.detail = c.prov.name() + " is out of quota: " + msg + "; not counted as an attempt"
		} else {
			st.detail = fmt.Sprintf("%s limits this number: %s; next try %s, not counted as an attempt", c.prov.name(), msg, nx.At.Format(time.RFC3339))
		}
	default: // TrRetry
		st.detail = fmt.Sprintf("attempt %d: %s; retry at %s", c.d.Attempts, msg, nx.At.Format(time.RFC3339))
		if se.InDoubt {
			st.detail += "; outcome unknown, settled with " + c.prov.name() + " first"
		}
	}
	at := nx.At
	st.detail = clip(st.detail, 480)
	st.outbox = append(st.outbox, n.outboxJob(bus.NoticeJob{Channel: ch, DeliveryID: c.d.ID}, &at, now))
	st.vars = map[string]any{"due_at": at, "in_doubt": se.InDoubt, "last_code": se.Code, "last_error": msg}
	return st
}

func newClaim() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

func idText(id uint64) string { return strconv.FormatUint(id, 10) }

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary: the column is text, and half a 汉字 is not.
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
