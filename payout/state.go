package payout

import (
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// Step is an operation on a batch.
type Step string

// Steps of a batch's life.
const (
	StepApprove   Step = "approve"
	StepRemove    Step = "remove"
	StepPublicize Step = "publicize"
	StepObject    Step = "object"
	StepDecide    Step = "decide"
	StepExport    Step = "export"
	StepResults   Step = "results"
)

// transition says in which batch states a step is allowed and which state it leaves (empty: the
// state does not change). The database code applies a transition; it never decides one.
type transition struct {
	from []string
	to   string
	// hint tells the user what to do instead when the state is wrong.
	hint string
}

var transitions = map[Step]transition{
	StepApprove:   {from: []string{store.BatchCreated}, to: store.BatchApproved, hint: "only a created batch can be approved"},
	StepRemove:    {from: []string{store.BatchCreated, store.BatchApproved}, hint: "lines can be removed only before the 公示 starts"},
	StepPublicize: {from: []string{store.BatchApproved}, to: store.BatchPublicized, hint: "approve the batch first (a second person)"},
	StepObject:    {from: []string{store.BatchPublicized}, hint: "objections are taken only during the 公示"},
	StepDecide:    {from: []string{store.BatchPublicized}, hint: "objections are decided before the payment file is exported"},
	StepExport:    {from: []string{store.BatchPublicized, store.BatchExported}, to: store.BatchExported, hint: "publicize the batch and wait for the 公示 to end"},
	StepResults:   {from: []string{store.BatchExported, store.BatchClosed}, hint: "export the payment file first"},
}

// check returns an error saying why the step is not allowed on b now.
func check(step Step, b *store.PayoutBatch) error {
	t := transitions[step]
	if !slices.Contains(t.from, b.State) {
		return fmt.Errorf("%w: batch %d is %s; %s", ErrState, b.ID, b.State, t.hint)
	}
	return nil
}

// begin loads a batch for a step by a person: it must exist, be in a state the step allows, and
// belong to a department the person may act for.
func begin(tx *gorm.DB, id uint64, step Step, by Actor) (*store.PayoutBatch, error) {
	b, err := load(tx, id)
	if err != nil {
		return nil, err
	}
	if err := check(step, b); err != nil {
		return nil, err
	}
	if err := mayWrite(by, b.Department); err != nil {
		return nil, err
	}
	return b, nil
}

// Working days: Monday to Friday, minus configured holidays.

func (s *Service) workday(d time.Time) bool {
	if wd := d.Weekday(); wd == time.Saturday || wd == time.Sunday {
		return false
	}
	return !slices.Contains(s.opts.Holidays, d.Format(time.DateOnly))
}

// publicizeUntil is when a 公示 of n working days that starts at `from` ends: at midnight after
// the n-th full working day following the start day (a listing put up on Friday afternoon with
// n = 5 runs Monday to Friday of the next week). n = 0 ends at once.
func (s *Service) publicizeUntil(from time.Time, n int) time.Time {
	if n <= 0 {
		return from
	}
	local := from.In(s.opts.Location)
	d := time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, s.opts.Location)
	for {
		d = d.AddDate(0, 0, 1)
		if s.workday(d) {
			n--
			if n == 0 {
				return d.AddDate(0, 0, 1).UTC()
			}
		}
	}
}
