package notify

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/store"
)

// takeIn turns match notices into delivery items. Each match gets one item per channel (the
// primary key makes a repeat a no-op); the item joins the firm's open digest on that channel or
// opens a new delivery. It returns the notices whose delivery is due at once (no digest window, a
// fallback, a repeat of a notice whose delivery is still due) so the caller attempts it before
// acknowledging; a delivery due later has an outbox row that brings it back at its time.
func (n *Notifier) takeIn(ctx context.Context, rt *route, envs []*envelope) (map[*envelope]uint64, map[uint64]*hint, error) {
	var out map[*envelope]uint64
	var hints map[uint64]*hint
	var err error
	for i := range 4 {
		out, hints, err = n.takeInOnce(ctx, rt, envs)
		if err == nil || !retryable(err) {
			break
		}
		sleepCtx(ctx, time.Duration(50<<i)*time.Millisecond)
	}
	return out, hints, err
}

// intakeGroup is the new items of one firm, channel and recipient in a batch.
type intakeGroup struct {
	key       string
	kind      string // what the items announce (bus.NoticeJob.Kind)
	firm      *store.Enterprise
	recipient string
	items     []*store.DeliveryItem
	envs      []*envelope
	fallback  bool // every item is a fallback: do not wait for a digest window
}

// intakePlan is what one intake round decided, before its transaction.
type intakePlan struct {
	items     []*store.DeliveryItem // every new item, ended (skipped, fallback, dead) or in a group
	fallbacks []store.Outbox        // SMS notices for WeChat items without an openid
	groups    []*intakeGroup        // the new items that need a message, by firm, channel and recipient
	matches   map[uint64]*store.Match
}

// takeInOnce is one try of takeIn: group the notices, answer the ones already taken in, read
// the rest's matches and firms, decide each one, and write the items and deliveries.
func (n *Notifier) takeInOnce(ctx context.Context, rt *route, envs []*envelope) (map[*envelope]uint64, map[uint64]*hint, error) {
	now := n.now()
	byKey, ids := groupNotices(envs)
	rd, err := n.readIntake(ctx, rt.channel, ids)
	if err != nil {
		return nil, nil, err
	}
	out, err := n.alreadyTakenIn(ctx, rd.known, byKey, now)
	if err != nil || len(byKey) == 0 {
		return out, nil, err
	}
	plan := n.planIntake(rt.channel, byKey, rd, now)
	for k, es := range byKey {
		if plan.matches[k.match] == nil {
			n.opts.Log.Error("notice for unknown match", "match", k.match, "channel", rt.channel)
			for _, e := range es {
				n.recordDeadLetter(ctx, e, fmt.Sprintf("match %d does not exist", k.match))
			}
		}
	}
	dueNow, hints, err := n.writeIntake(ctx, rt.channel, plan, now)
	if err != nil {
		return nil, nil, err
	}
	for e, id := range dueNow {
		out[e] = id
	}
	for _, g := range plan.groups {
		noticesTakenIn.WithLabelValues(rt.channel, "queued").Add(float64(len(g.items)))
	}
	return out, hints, nil
}

// intakeReads is what the intake reads about a batch's matches.
type intakeReads struct {
	known    []store.DeliveryItem // items that exist already on the channel
	matches  []store.Match
	firms    map[string]*store.Enterprise
	optedOut map[string]bool
}

// readIntake reads the batch's existing items, matches, firms and opt-outs: four independent
// queries (firms and opt-outs are found through the match ids), run at once, so the intake waits
// for one round trip rather than four.
func (n *Notifier) readIntake(ctx context.Context, ch string, ids []uint64) (*intakeReads, error) {
	db := n.db.WithContext(ctx)
	rd := &intakeReads{firms: map[string]*store.Enterprise{}, optedOut: map[string]bool{}}
	var firms []store.Enterprise
	var optOuts []string
	err := parallel(
		func() error {
			if err := db.Where("channel = ? AND match_id IN ?", ch, ids).Find(&rd.known).Error; err != nil {
				return fmt.Errorf("load delivery items: %w", err)
			}
			return nil
		},
		func() error {
			if err := db.Where("id IN ?", ids).Find(&rd.matches).Error; err != nil {
				return fmt.Errorf("load matches: %w", err)
			}
			return nil
		},
		func() error {
			if err := db.Table("enterprises AS e").Distinct("e.credit_code, e.name, e.status, e.contact_phone, e.wechat_openid").
				Joins("JOIN matches m ON m.credit_code = e.credit_code").Where("m.id IN ?", ids).Scan(&firms).Error; err != nil {
				return fmt.Errorf("load firms: %w", err)
			}
			return nil
		},
		func() error {
			if err := db.Table("channel_opt_outs AS o").
				Joins("JOIN matches m ON m.credit_code = o.credit_code").Where("o.channel = ? AND m.id IN ?", ch, ids).
				Pluck("o.credit_code", &optOuts).Error; err != nil {
				return fmt.Errorf("load opt-outs: %w", err)
			}
			return nil
		},
	)
	if err != nil {
		return nil, err
	}
	for i := range firms {
		rd.firms[firms[i].CreditCode] = &firms[i]
	}
	for _, c := range optOuts {
		rd.optedOut[c] = true
	}
	return rd, nil
}

// parallel runs fns at once and returns the first error.
func parallel(fns ...func() error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// groupNotices keys a batch's notices (a message can repeat in a batch) and lists their matches.
func groupNotices(envs []*envelope) (map[noticeKey][]*envelope, []uint64) {
	byKey := map[noticeKey][]*envelope{}
	ids := make([]uint64, 0, len(envs))
	for _, e := range envs {
		k := keyOfJob(e.job)
		if _, ok := byKey[k]; !ok {
			ids = append(ids, e.job.MatchID)
		}
		byKey[k] = append(byKey[k], e)
	}
	return byKey, dedupe(ids)
}

// alreadyTakenIn takes the notices that have their item already (a redelivery, a republish past
// the duplicate window, a fallback for a match the policy already sends by SMS) out of byKey, and
// returns those whose delivery is still due now, to be attempted.
func (n *Notifier) alreadyTakenIn(ctx context.Context, known []store.DeliveryItem, byKey map[noticeKey][]*envelope, now time.Time) (map[*envelope]uint64, error) {
	db := n.db.WithContext(ctx)
	out := map[*envelope]uint64{}
	if len(known) == 0 {
		return out, nil
	}
	dids := make([]uint64, 0, len(known))
	for _, it := range known {
		if it.DeliveryID != 0 {
			dids = append(dids, it.DeliveryID)
		}
	}
	var ds []store.Delivery
	if len(dids) > 0 {
		if err := db.Select("id, state, due_at").Where("id IN ?", dids).Find(&ds).Error; err != nil {
			return nil, fmt.Errorf("load deliveries: %w", err)
		}
	}
	dueNow := map[uint64]bool{}
	for _, d := range ds {
		dueNow[d.ID] = !terminal(d.State) && (d.DueAt == nil || !d.DueAt.After(now))
	}
	for _, it := range known {
		k := keyOfItem(&it)
		if dueNow[it.DeliveryID] {
			for _, e := range byKey[k] {
				out[e] = it.DeliveryID
			}
		}
		delete(byKey, k)
	}
	return out, nil
}

// planIntake decides each new notice (intakeDecision): an item that ends at once, or one that
// joins the group of its firm, channel and recipient (the digest key).
func (n *Notifier) planIntake(ch string, byKey map[noticeKey][]*envelope, rd *intakeReads, now time.Time) *intakePlan {
	firms, optedOut := rd.firms, rd.optedOut
	p := &intakePlan{matches: make(map[uint64]*store.Match, len(rd.matches))}
	for i := range rd.matches {
		p.matches[rd.matches[i].ID] = &rd.matches[i]
	}
	keys := make([]noticeKey, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].less(keys[j]) })
	groups := map[string]*intakeGroup{}
	for _, k := range keys {
		m := p.matches[k.match]
		if m == nil {
			continue
		}
		es := byKey[k]
		it := &store.DeliveryItem{MatchID: m.ID, Channel: ch, Kind: k.kind, Ref: k.ref, CreditCode: m.CreditCode, PolicyID: m.PolicyID,
			QueuedAt: now, Fallback: es[0].job.Fallback}
		p.items = append(p.items, it)
		firm := firms[m.CreditCode]
		it.State, it.Note = intakeDecision(intakeFacts{Channel: ch, Firm: firm, Match: m, Kind: k.kind,
			OptedOut: optedOut[m.CreditCode], SMSRoute: n.routes[ChannelSMS] != nil})
		if it.State != "" {
			if it.State == store.ItemFallback {
				p.fallbacks = append(p.fallbacks, n.outboxJob(bus.NoticeJob{MatchID: m.ID, Channel: ChannelSMS, Fallback: true, Kind: k.kind, Ref: k.ref}, nil, now))
			}
			noticesTakenIn.WithLabelValues(ch, it.State).Inc()
			continue
		}
		recipient := firm.ContactPhone
		if ch == ChannelWeChat {
			recipient = firm.WechatOpenID
		}
		key := n.digestKey(ch, k, firm.CreditCode, recipient)
		g := groups[key]
		if g == nil {
			g = &intakeGroup{key: key, kind: k.kind, firm: firm, recipient: recipient, fallback: true}
			groups[key] = g
			p.groups = append(p.groups, g)
		}
		g.items = append(g.items, it)
		g.envs = append(g.envs, es...)
		g.fallback = g.fallback && it.Fallback
	}
	return p
}

// digestKey is the open_key of the message a notice joins: one per channel, firm and recipient
// (and kind of news); without a digest window every notice is a message of its own.
func (n *Notifier) digestKey(ch string, k noticeKey, creditCode, recipient string) string {
	key := ch + "|" + creditCode + "|" + recipient
	if k.kind != "" {
		key = ch + "|" + k.kind + "|" + creditCode + "|" + recipient // a digest announces one kind of news
	}
	if n.opts.DigestWindow <= 0 {
		key += "|" + strconv.FormatUint(k.match, 10) + "|" + strconv.FormatUint(k.ref, 10) // no digests: every notice on its own
	}
	return key
}

// writeIntake writes a plan in one transaction: each group joins its open digest (transition
// join) or opens a delivery, due at once or after the digest window; then the items and the
// outbox rows (a digest's due time, the SMS of a fallback). It returns the notices whose delivery
// is due now, and hints for those no other notice can join.
func (n *Notifier) writeIntake(ctx context.Context, ch string, p *intakePlan, now time.Time) (map[*envelope]uint64, map[uint64]*hint, error) {
	dueNow := map[*envelope]uint64{}
	hints := map[uint64]*hint{}
	err := n.retryTx(ctx, func(tx *gorm.DB) error {
		clear(dueNow)
		clear(hints)
		for _, it := range p.items {
			it.DeliveryID = 0
		}
		open, err := n.openDigests(tx, p.groups)
		if err != nil {
			return err
		}
		var created []*store.Delivery
		var createdGroups []*intakeGroup
		for _, g := range p.groups {
			if id, ok := open[g.key]; ok {
				rows, err := apply(tx, change{tr: tr(TrJoin), ids: []uint64{id}, claim: g.key,
					vars: map[string]any{"items": gorm.Expr("items + ?", len(g.items))}}, now)
				if err != nil {
					return fmt.Errorf("add to digest %d: %w", id, err)
				}
				if rows == 1 {
					for _, it := range g.items {
						it.DeliveryID = id
					}
					continue
				}
			}
			created = append(created, n.newDelivery(ch, g, now))
			createdGroups = append(createdGroups, g)
		}
		if err := insertRows(n, tx, created, 24, "create deliveries"); err != nil {
			return err
		}
		if len(created) > 0 {
			ids := make([]uint64, len(created))
			for i, d := range created {
				ids[i] = d.ID
			}
			if err := store.QueueDeliveries(tx, ids, false); err != nil { // for the delivery counts
				return err
			}
		}
		var outbox []store.Outbox
		for i, d := range created {
			g := createdGroups[i]
			for _, it := range g.items {
				it.DeliveryID = d.ID
			}
			if d.DueAt.After(now) {
				outbox = append(outbox, n.outboxJob(bus.NoticeJob{Channel: ch, DeliveryID: d.ID}, d.DueAt, now))
				continue
			}
			for _, e := range g.envs {
				dueNow[e] = d.ID
			}
			if d.OpenKey == nil {
				h := &hint{d: *d, firm: g.firm}
				for _, it := range g.items {
					h.items = append(h.items, *it)
					h.matches = append(h.matches, p.matches[it.MatchID])
				}
				hints[d.ID] = h
			}
		}
		rows := make([]store.DeliveryItem, len(p.items))
		for i, it := range p.items {
			rows[i] = *it
		}
		if err := insertRows(n, tx, rows, 9, "create delivery items"); err != nil {
			return err
		}
		outbox = append(outbox, p.fallbacks...)
		if err := insertRows(n, tx, outbox, 5, "queue delivery jobs"); err != nil {
			return err
		}
		return nil
	})
	return dueNow, hints, err
}

// openDigests finds the deliveries still open for the groups' digest keys.
func (n *Notifier) openDigests(tx *gorm.DB, groups []*intakeGroup) (map[string]uint64, error) {
	open := map[string]uint64{}
	if n.opts.DigestWindow <= 0 || len(groups) == 0 {
		return open, nil
	}
	keys := make([]string, len(groups))
	for i, g := range groups {
		keys[i] = g.key
	}
	var ds []store.Delivery
	if err := tx.Select("id, open_key").Where("open_key IN ?", keys).Find(&ds).Error; err != nil {
		return nil, fmt.Errorf("find open digests: %w", err)
	}
	for _, d := range ds {
		if d.OpenKey != nil {
			open[*d.OpenKey] = d.ID
		}
	}
	return open, nil
}

// newDelivery is the queued delivery a group opens: due at once, or after the digest window
// (a group of fallbacks only does not wait for one).
func (n *Notifier) newDelivery(ch string, g *intakeGroup, now time.Time) *store.Delivery {
	d := &store.Delivery{MatchID: g.items[0].MatchID, Channel: ch, Recipient: g.recipient, CreditCode: g.firm.CreditCode,
		PolicyID: g.items[0].PolicyID, State: store.DeliveryQueued, Items: len(g.items), CreatedAt: now, UpdatedAt: now,
		Kind: g.kind, Ref: g.items[0].Ref}
	due := now
	if n.opts.DigestWindow > 0 {
		key := g.key
		d.OpenKey = &key
		if !g.fallback {
			due = now.Add(n.opts.DigestWindow)
		}
	}
	d.DueAt = &due
	return d
}

// loadFirms reads firms by credit code.
func loadFirms(ctx context.Context, db *gorm.DB, codes []string) (map[string]*store.Enterprise, error) {
	out := map[string]*store.Enterprise{}
	if len(codes) == 0 {
		return out, nil
	}
	var firms []store.Enterprise
	if err := db.WithContext(ctx).Select("credit_code, name, status, contact_phone, wechat_openid").
		Where("credit_code IN ?", dedupe(codes)).Find(&firms).Error; err != nil {
		return nil, fmt.Errorf("load firms: %w", err)
	}
	for i := range firms {
		out[firms[i].CreditCode] = &firms[i]
	}
	return out, nil
}

// loadOptOuts reads which of the firms unsubscribed from channel.
func loadOptOuts(ctx context.Context, db *gorm.DB, channel string, codes []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(codes) == 0 {
		return out, nil
	}
	var rows []store.ChannelOptOut
	if err := db.WithContext(ctx).Where("channel = ? AND credit_code IN ?", channel, dedupe(codes)).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("load opt-outs: %w", err)
	}
	for _, r := range rows {
		out[r.CreditCode] = true
	}
	return out, nil
}

func dedupe[T comparable](xs []T) []T {
	seen := make(map[T]bool, len(xs))
	out := xs[:0:0]
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// noticeKey identifies one notice of a match on a channel: the match itself (kind empty) or a
// payout step of a payout line (ref).
type noticeKey struct {
	match uint64
	kind  string
	ref   uint64
}

func keyOfJob(j bus.NoticeJob) noticeKey         { return noticeKey{j.MatchID, j.Kind, j.Ref} }
func keyOfItem(it *store.DeliveryItem) noticeKey { return noticeKey{it.MatchID, it.Kind, it.Ref} }
func (k noticeKey) less(o noticeKey) bool {
	if k.match != o.match {
		return k.match < o.match
	}
	if k.kind != o.kind {
		return k.kind < o.kind
	}
	return k.ref < o.ref
}
