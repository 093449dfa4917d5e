package store

import (
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"
)

// The console's long lists (matches, failed deliveries, the audit log) page by keyset, newest
// first: a page is the rows after (or before) a key of the page the link came from, never an
// OFFSET, so the database walks an index from that key and stops at the page's LIMIT, whatever
// page it is. admin encodes keys as opaque cursors and draws the links (admin/page.go); the SQL is
// here. docs/console.md "Lists at provincial size".

// CountCap is where the console's lists stop counting: past it a list says "10,000+" instead of
// counting millions of rows on every page, and a jump to page N (?page=N) must start within it.
const CountCap = 10000

// Cursor is a row's key in a newest-first list: its time (matched_at, updated_at; zero for lists
// ordered by id alone) and id, and the number of the page it leads to (a label only).
type Cursor struct {
	At   time.Time
	ID   uint64
	Page int
}

// Page is the page of a list asked for: the first, one after or before a cursor (at most one of
// After and Before is set), or page number Page reached by a jump.
type Page struct {
	Page    int     `json:"page"`
	PerPage int     `json:"per_page"`
	After   *Cursor `json:"-"`
	Before  *Cursor `json:"-"`
}

// JumpTooFarError refuses a jump to a page that starts past the first CountCap rows: finding
// where it starts would read that many keys. Following the pages' cursors reaches it.
type JumpTooFarError struct{ Page int }

func (e *JumpTooFarError) Error() string {
	return fmt.Sprintf("page %d starts past the first %d rows: follow the next-page cursors", e.Page, CountCap)
}

// jumpOffset is the number of rows before page Page when it was asked for by number (no cursor):
// at most CountCap, so finding where the page starts reads a bounded number of keys.
func (p Page) jumpOffset() (int, error) {
	off := (p.Page - 1) * p.PerPage
	if off > CountCap {
		return 0, &JumpTooFarError{Page: p.Page}
	}
	return off, nil
}

// Window is one page of a keyset list: the rows' keys newest first, whether rows exist beyond
// either end, and the page's number.
type Window struct {
	Keys             []Cursor
	HasNext, HasPrev bool
	Page             int
}

// IDs are the window's row ids, in list order.
func (w Window) IDs() []uint64 {
	out := make([]uint64, len(w.Keys))
	for i, k := range w.Keys {
		out[i] = k.ID
	}
	return out
}

// KeysetWindow reads the keys of one page of q, a filtered newest-first list ordered by
// (timeCol DESC, idCol DESC), or by idCol DESC alone when timeCol is empty. q has no select, order
// or limit yet. The caller then reads the page's rows by id. It is exported for lists whose query
// is built elsewhere (core/audit.Query).
func KeysetWindow(q *gorm.DB, timeCol, idCol string, p Page) (Window, error) {
	return keysetWindow(func(r keyRead) ([]Cursor, error) {
		return scanKeys(r.apply(q.Session(&gorm.Session{}), timeCol, idCol).Offset(r.offset))
	}, p)
}

// keyRead is one read of a list's keys: up to limit keys after offset of them, newest first
// (desc) or oldest first, of the rows after (older than) or before (newer than) a cursor when
// set.
type keyRead struct {
	after, before *Cursor
	desc          bool
	limit, offset int
}

// apply gives q (a list's query with no select, order or limit) the read's key columns, cursor
// condition, order and limit; not the offset, which the caller adds (to q, or over a union of
// such reads, each of which then reads limit+offset keys).
func (r keyRead) apply(q *gorm.DB, timeCol, idCol string) *gorm.DB {
	dir := " ASC"
	if r.desc {
		dir = " DESC"
	}
	sel, order := idCol+" AS id", idCol+dir
	if timeCol != "" {
		sel, order = timeCol+" AS at, "+sel, timeCol+dir+", "+order
	}
	q = q.Select(sel)
	switch c := r.after; {
	case c != nil && timeCol == "":
		q = q.Where(idCol+" < ?", c.ID)
	case c != nil:
		q = q.Where(timeCol+" <= ? AND ("+timeCol+" < ? OR "+idCol+" < ?)", c.At, c.At, c.ID)
	}
	switch c := r.before; {
	case c != nil && timeCol == "":
		q = q.Where(idCol+" > ?", c.ID)
	case c != nil:
		q = q.Where(timeCol+" >= ? AND ("+timeCol+" > ? OR "+idCol+" > ?)", c.At, c.At, c.ID)
	}
	return q.Order(order).Limit(r.limit)
}

// scanKeys runs a read of keys (columns at, when the list has a time, and id).
func scanKeys(q *gorm.DB) ([]Cursor, error) {
	var keys []struct {
		At time.Time
		ID uint64
	}
	if err := q.Scan(&keys).Error; err != nil {
		return nil, fmt.Errorf("read the keys of a page: %w", err)
	}
	out := make([]Cursor, len(keys))
	for i, k := range keys {
		out[i] = Cursor{At: k.At.UTC(), ID: k.ID}
	}
	return out, nil
}

// keysetWindow reads one page of a list through read.
func keysetWindow(read func(keyRead) ([]Cursor, error), p Page) (Window, error) {
	w := Window{Page: p.Page}
	switch {
	case p.Before != nil:
		keys, err := read(keyRead{before: p.Before, limit: p.PerPage + 1})
		if err != nil {
			return w, err
		}
		if len(keys) > p.PerPage { // a full page, with more before it
			slices.Reverse(keys[:p.PerPage])
			w.Keys, w.HasPrev, w.HasNext, w.Page = keys[:p.PerPage], true, true, max(p.Before.Page, 2)
			return w, nil
		}
		// At the top: show the first page, full, as the first-page link would.
		p.Before, p.Page = nil, 1
		return keysetWindow(read, p)
	case p.After != nil:
		keys, err := read(keyRead{after: p.After, desc: true, limit: p.PerPage + 1})
		if err != nil {
			return w, err
		}
		w.HasNext = len(keys) > p.PerPage
		w.Keys, w.HasPrev = keys[:min(len(keys), p.PerPage)], true
		return w, nil
	case p.Page > 1: // a jump to page N: find the key that ends page N-1
		off, err := p.jumpOffset()
		if err != nil {
			return w, err
		}
		keys, err := read(keyRead{desc: true, limit: 1, offset: off - 1})
		if err != nil || len(keys) == 0 {
			return w, err // past the end: an empty page
		}
		keys[0].Page = p.Page
		p.After = &keys[0]
		return keysetWindow(read, p)
	}
	keys, err := read(keyRead{desc: true, limit: p.PerPage + 1})
	if err != nil {
		return w, err
	}
	w.HasNext = len(keys) > p.PerPage
	w.Keys = keys[:min(len(keys), p.PerPage)]
	return w, nil
}

// WindowOf is KeysetWindow over keys already in memory, newest first (a list filtered in Go, such
// as the matches of one size tier).
func WindowOf(keys []Cursor, p Page) (Window, error) {
	less := func(a, b Cursor) bool { // a comes after b in list order
		return a.At.Before(b.At) || (a.At.Equal(b.At) && a.ID < b.ID)
	}
	w := Window{Page: p.Page}
	switch {
	case p.Before != nil:
		end := 0 // keys[:end] come before the cursor
		for end < len(keys) && less(*p.Before, keys[end]) {
			end++
		}
		if end > p.PerPage {
			w.Keys, w.HasPrev, w.HasNext, w.Page = keys[end-p.PerPage:end], true, true, max(p.Before.Page, 2)
			return w, nil
		}
		p.Before, p.Page = nil, 1
		return WindowOf(keys, p)
	case p.After != nil:
		start := 0
		for start < len(keys) && !less(keys[start], *p.After) {
			start++
		}
		keys = keys[start:]
		w.HasPrev = true
	case p.Page > 1:
		off, err := p.jumpOffset()
		if err != nil {
			return w, err
		}
		if off >= len(keys) {
			return w, nil
		}
		keys, w.HasPrev = keys[off:], true
	}
	w.HasNext = len(keys) > p.PerPage
	w.Keys = keys[:min(len(keys), p.PerPage)]
	return w, nil
}

// CountUpTo counts the rows of q, stopping at max+1; q is left as it was. It is exported for lists
// whose query is built elsewhere (core/audit.Query).
func CountUpTo(q *gorm.DB, max int) (int64, error) {
	var n int64
	err := q.Session(&gorm.Session{}).Raw("SELECT COUNT(*) FROM (?) AS capped", q.Session(&gorm.Session{}).Select("1").Limit(max+1)).Scan(&n).Error
	if err != nil {
		return 0, fmt.Errorf("count the rows of a list: %w", err)
	}
	return n, nil
}
