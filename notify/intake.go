package notify

import (
	"context"
	"fmt"
	"sort"
	"strconv"
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

func (n *Notifier) takeInOnce(ctx context.Context, rt *route, envs []*envelope) (map[*envelope]uint64, map[uint64]*hint, error) {
	db := n.db.WithContext(ctx)
	ch := rt.channel
	now := n.now()
	byKey := map[noticeKey][]*envelope{}
	ids := make([]uint64, 0, len(envs))
	for _, e := range envs {
		k := keyOfJob(e.job)
		if _, ok := byKey[k]; !ok {
			ids = append(ids, e.job.MatchID)
		}
		byKey[k] = append(byKey[k], e)
	}
	ids = dedupe(ids)
	out := map[*envelope]uint64{}

	// Notices already taken in (a redelivery, a republish past the duplicate window, a fallback for
	// a match the policy already sends by SMS): attempt their delivery if it is still due now.
	var known []store.DeliveryItem
	if err := db.Where("channel = ? AND match_id IN ?", ch, ids).Find(&known).Error; err != nil {
		return nil, nil, fmt.Errorf("load delivery items: %w", err)
	}
	if len(known) > 0 {
		dids := make([]uint64, 0, len(known))
		for _, it := range known {
			if it.DeliveryID != 0 {
				dids = append(dids, it.DeliveryID)
			}
		}
		var ds []store.Delivery
		if len(dids) > 0 {
			if err := db.Select("id, state, due_at").Where("id IN ?", dids).Find(&ds).Error; err != nil {
				return nil, nil, fmt.Errorf("load deliveries: %w", err)
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
	}
	if len(byKey) == 0 {
		return out, nil, nil
	}

	fresh := make([]uint64, 0, len(byKey))
	for k := range byKey {
		fresh = append(fresh, k.match)
	}
	fresh = dedupe(fresh)
	var matches []store.Match
	hints := map[uint64]*hint{}
	if err := db.Where("id IN ?", fresh).Find(&matches).Error; err != nil {
		return nil, nil, fmt.Errorf("load matches: %w", err)
	}
	codes := make([]string, 0, len(matches))
	for _, m := range matches {
		codes = append(codes, m.CreditCode)
	}
	firms, err := loadFirms(ctx, n.db, codes)
	if err != nil {
		return nil, nil, err
	}
	optedOut, err := loadOptOuts(ctx, n.db, ch, codes)
	if err != nil {
		return nil, nil, err
	}

	var items []*store.DeliveryItem
	var fallbacks []store.Outbox
	groups := map[string]*intakeGroup{}
	var order []*intakeGroup
	byID := map[uint64]*store.Match{}
	for i := range matches {
		byID[matches[i].ID] = &matches[i]
	}
	keys := make([]noticeKey, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].less(keys[j]) })
	for _, k := range keys {
		m := byID[k.match]
		if m == nil {
			continue
		}
		es := byKey[k]
		it := &store.DeliveryItem{MatchID: m.ID, Channel: ch, Kind: k.kind, Ref: k.ref, CreditCode: m.CreditCode, PolicyID: m.PolicyID,
			QueuedAt: now, Fallback: es[0].job.Fallback}
		items = append(items, it)
		firm := firms[m.CreditCode]
		switch {
		case firm == nil:
			it.State, it.Note = store.ItemSkipped, "firm_unknown"
		case firm.Status != store.StatusActive:
			it.State, it.Note = store.ItemSkipped, "firm_"+firm.Status
		case m.State == store.MatchRevoked && k.kind == "":
			// A payout notice is about money already decided; it goes out whatever the match does now.
			it.State, it.Note = store.ItemSkipped, "match_revoked"
		case optedOut[m.CreditCode]:
			it.State, it.Note = store.ItemSkipped, "opted_out"
		case ch == ChannelWeChat && firm.WechatOpenID == "":
			if n.routes[ChannelSMS] == nil {
				it.State, it.Note = store.ItemDead, "no openid and no SMS channel to fall back to"
				break
			}
			it.State, it.Note = store.ItemFallback, "no_openid"
			fallbacks = append(fallbacks, n.outboxJob(bus.NoticeJob{MatchID: m.ID, Channel: ChannelSMS, Fallback: true, Kind: k.kind, Ref: k.ref}, nil, now))
		default:
			recipient := firm.ContactPhone
			if ch == ChannelWeChat {
				recipient = firm.WechatOpenID
			}
			key := ch + "|" + firm.CreditCode + "|" + recipient
			if k.kind != "" {
				key = ch + "|" + k.kind + "|" + firm.CreditCode + "|" + recipient // a digest announces one kind of news
			}
			if n.opts.DigestWindow <= 0 {
				key += "|" + strconv.FormatUint(m.ID, 10) + "|" + strconv.FormatUint(k.ref, 10) // no digests: every notice on its own
			}
			g := groups[key]
			if g == nil {
				g = &intakeGroup{key: key, kind: k.kind, firm: firm, recipient: recipient, fallback: true}
				groups[key] = g
				order = append(order, g)
			}
			g.items = append(g.items, it)
			g.envs = append(g.envs, es...)
			g.fallback = g.fallback && it.Fallback
		}
		if it.State != "" {
			noticesTakenIn.WithLabelValues(ch, it.State).Inc()
		}
	}
	for k, es := range byKey {
		if byID[k.match] == nil {
			n.opts.Log.Error("notice for unknown match", "match", k.match, "channel", ch)
			for _, e := range es {
				n.recordDeadLetter(ctx, e, fmt.Sprintf("match %d does not exist", k.match))
			}
		}
	}

	dueNow := map[*envelope]uint64{}
	err = n.retryTx(ctx, func(tx *gorm.DB) error {
		clear(dueNow)
		clear(hints)
		for _, it := range items {
			it.DeliveryID = 0
		}
		open := map[string]uint64{}
		if n.opts.DigestWindow > 0 && len(order) > 0 {
			keys := make([]string, len(order))
			for i, g := range order {
				keys[i] = g.key
			}
			var ds []store.Delivery
			if err := tx.Select("id, open_key").Where("open_key IN ?", keys).Find(&ds).Error; err != nil {
				return fmt.Errorf("find open digests: %w", err)
			}
			for _, d := range ds {
				if d.OpenKey != nil {
					open[*d.OpenKey] = d.ID
				}
			}
		}
		var created []*store.Delivery
		var createdGroups []*intakeGroup
		for _, g := range order {
			if id, ok := open[g.key]; ok {
				res := tx.Model(&store.Delivery{}).Where("id = ? AND open_key = ? AND state = ?", id, g.key, store.DeliveryQueued).
					Updates(map[string]any{"items": gorm.Expr("items + ?", len(g.items)), "updated_at": now})
				if res.Error != nil {
					return fmt.Errorf("add to digest %d: %w", id, res.Error)
				}
				if res.RowsAffected == 1 {
					for _, it := range g.items {
						it.DeliveryID = id
					}
					continue
				}
			}
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
			created = append(created, d)
			createdGroups = append(createdGroups, g)
		}
		if len(created) > 0 {
			if err := tx.CreateInBatches(created, n.chunk(24)).Error; err != nil {
				return fmt.Errorf("create deliveries: %w", err)
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
					h.matches = append(h.matches, byID[it.MatchID])
				}
				hints[d.ID] = h
			}
		}
		rows := make([]store.DeliveryItem, len(items))
		for i, it := range items {
			rows[i] = *it
		}
		if len(rows) > 0 {
			if err := tx.CreateInBatches(rows, n.chunk(9)).Error; err != nil {
				return fmt.Errorf("create delivery items: %w", err)
			}
		}
		outbox = append(outbox, fallbacks...)
		if len(outbox) > 0 {
			if err := tx.CreateInBatches(outbox, n.chunk(5)).Error; err != nil {
				return fmt.Errorf("queue delivery jobs: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for e, id := range dueNow {
		out[e] = id
	}
	for _, g := range order {
		noticesTakenIn.WithLabelValues(ch, "queued").Add(float64(len(g.items)))
	}
	return out, hints, nil
}

// terminal reports delivery states that no attempt changes any more.
func terminal(state string) bool {
	switch state {
	case store.DeliverySent, store.DeliveryDelivered, store.DeliveryUndelivered, store.DeliveryDead, store.DeliverySkipped:
		return true
	}
	return false
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
