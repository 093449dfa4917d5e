package notify

import (
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// change is one use of a row of the state machine (machine.go) on one delivery, or on many that
// share the guard (a batch's claim, a batch's successes).
type change struct {
	tr  Transition
	ids []uint64
	// state and claim are the guard's values: for guardStateAndClaim the state and claim as read,
	// for guardClaim the dispatch's token, for guardOpenKey the digest key (in claim).
	state, claim string
	vars         map[string]any
	channel      string // for the counters
	code         string // for the counters
}

// apply is the one place a delivery's row changes state: the transition's columns under its guard.
// It returns how many rows changed (0: somebody else changed the delivery first, and nothing else
// must be written for it). Counters of deliveries by state (metrics; per-state aggregates kept in
// the same transaction) hook here.
func apply(tx *gorm.DB, c change, now time.Time) (int64, error) {
	set, err := c.tr.columns(now, c.vars)
	if err != nil {
		return 0, err
	}
	res := c.rows(tx).Updates(set)
	if res.Error != nil {
		return 0, res.Error
	}
	if res.RowsAffected > 0 && c.tr.Outcome != "" && c.channel != "" {
		deliveryOutcomes.WithLabelValues(c.channel, c.tr.Outcome, c.code).Add(float64(res.RowsAffected))
	}
	if res.RowsAffected > 0 && c.tr.movesState() {
		if err := store.QueueDeliveries(tx, c.ids, c.tr.movesReach()); err != nil {
			return 0, err
		}
	}
	return res.RowsAffected, nil
}

// rows selects the change's deliveries, by id, under its transition's guard.
func (c change) rows(tx *gorm.DB) *gorm.DB {
	q := tx.Model(&store.Delivery{})
	if len(c.ids) == 1 {
		q = q.Where("id = ?", c.ids[0])
	} else {
		q = q.Where("id IN ?", c.ids)
	}
	switch c.tr.Guard {
	case guardState:
		q = q.Where(guardedState(tx)+" IN ?", c.tr.From)
	case guardStateAndClaim:
		q = q.Where(guardedState(tx)+" = ? AND claim = ?", c.state, c.claim)
	case guardClaim:
		q = q.Where("claim = ?", c.claim)
	case guardOpenKey:
		q = q.Where("open_key = ? AND state = ?", c.claim, store.DeliveryQueued)
	}
	return q
}

// guardedState is the state column as a guard names it beside the rows' ids: the ids find the
// rows. SQLite, which has no statistics, preferred ix_delivery_failed (state, updated_at) to a
// list of more than a few ids and read every delivery in the state — every queued one, 180,000 at
// 200,000 firms, for each batch's claim —, so there the column is written so that no index can
// serve it.
func guardedState(tx *gorm.DB) string {
	if tx.Dialector.Name() == "sqlite" {
		return "+state"
	}
	return "state"
}

// movesState reports whether the transition can change a delivery's state: then the delivery is
// queued, in the same transaction, for the delivery counts (store.DeliveryCount, moved by the
// notifier's drain of the queue) and, when it movesReach, for its matches' reach. A claim is not
// queued: sending lasts one attempt (at most its lease), whose outcome queues the delivery, so
// the counts show it under the state it was claimed from meanwhile; the claim is on every
// notice's path, and its queue row cost MariaDB's delivery rate more than any other.
func (t Transition) movesState() bool {
	return t.To != keep && t.To != store.DeliverySending && slices.ContainsFunc(t.From, func(s string) bool { return s != t.To })
}

// movesReach reports whether the transition can enter or leave a state that decides how far a
// match's notices got (sent, delivered): then the delivery is queued, in the same transaction, for
// the refresh of its matches' reach and the dashboard's counts of them (store.QueueDeliveries; the
// notifier drains the queue, reach.go).
func (t Transition) movesReach() bool {
	reach := func(s string) bool { return s == store.DeliverySent || s == store.DeliveryDelivered }
	return reach(t.To) || slices.ContainsFunc(t.From, reach)
}

// event is the timeline entry of a transition that changed a delivery.
func (t Transition) event(id uint64, now time.Time, provider, code, detail string) store.DeliveryEvent {
	return store.DeliveryEvent{DeliveryID: id, At: now, Kind: t.Event, Provider: provider, Code: code, Detail: detail}
}

// endItems moves the items of a delivery that still follow it (state empty) to an end state;
// matches narrows it to those matches' match notices (a revoked match's items).
func endItems(tx *gorm.DB, name string, deliveryID uint64, channel string, matches []uint64, state, note string) error {
	if it, ok := itemTransitions[name]; !ok || !slices.Contains(it.To, state) {
		return fmt.Errorf("item transition %s does not end in %q", name, state)
	}
	q := tx.Model(&store.DeliveryItem{}).Where("delivery_id = ? AND state = ''", deliveryID)
	if matches != nil {
		q = q.Where("channel = ? AND match_id IN ? AND kind = ''", channel, matches)
	}
	return q.Updates(map[string]any{"state": state, "note": note}).Error
}
