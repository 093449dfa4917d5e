package admin

import (
	"slices"
	"time"

	"gorm.io/gorm"
)

// keysetWindow reads the keys of one page of q, a filtered newest-first list ordered by
// (timeCol DESC, idCol DESC), or by idCol DESC alone when timeCol is empty. q has no select, order
// or limit yet. The caller then reads the page's rows by id.
func keysetWindow(q *gorm.DB, timeCol, idCol string, p page) (window, error) {
	sel, desc, asc := idCol+" AS id", idCol+" DESC", idCol+" ASC"
	if timeCol != "" {
		sel, desc, asc = timeCol+" AS at, "+idCol+" AS id", timeCol+" DESC, "+idCol+" DESC", timeCol+" ASC, "+idCol+" ASC"
	}
	base := func() *gorm.DB { return q.Session(&gorm.Session{}).Select(sel) }
	older := func(c *cursor) *gorm.DB { // rows after c in list order
		if timeCol == "" {
			return base().Where(idCol+" < ?", c.ID)
		}
		return base().Where(timeCol+" <= ? AND ("+timeCol+" < ? OR "+idCol+" < ?)", c.At, c.At, c.ID)
	}
	newer := func(c *cursor) *gorm.DB { // rows before c in list order
		if timeCol == "" {
			return base().Where(idCol+" > ?", c.ID)
		}
		return base().Where(timeCol+" >= ? AND ("+timeCol+" > ? OR "+idCol+" > ?)", c.At, c.At, c.ID)
	}
	read := func(q *gorm.DB, order string, limit, offset int) ([]cursor, error) {
		var keys []struct {
			At time.Time
			ID uint64
		}
		q = q.Order(order).Limit(limit)
		if offset > 0 {
			q = q.Offset(offset)
		}
		if err := q.Scan(&keys).Error; err != nil {
			return nil, err
		}
		out := make([]cursor, len(keys))
		for i, k := range keys {
			out[i] = cursor{At: k.At.UTC(), ID: k.ID}
		}
		return out, nil
	}
	w := window{page: p.Page}
	switch {
	case p.Before != nil:
		keys, err := read(newer(p.Before), asc, p.PerPage+1, 0)
		if err != nil {
			return w, err
		}
		if len(keys) > p.PerPage { // a full page, with more before it
			slices.Reverse(keys[:p.PerPage])
			w.keys, w.hasPrev, w.hasNext, w.page = keys[:p.PerPage], true, true, max(p.Before.Page, 2)
			return w, nil
		}
		// At the top: show the first page, full, as the first-page link would.
		p.Before, p.Page = nil, 1
		return keysetWindow(q, timeCol, idCol, p)
	case p.After != nil:
		keys, err := read(older(p.After), desc, p.PerPage+1, 0)
		if err != nil {
			return w, err
		}
		w.hasNext = len(keys) > p.PerPage
		w.keys, w.hasPrev = keys[:min(len(keys), p.PerPage)], true
		return w, nil
	case p.Page > 1: // a jump to page N: find the key that ends page N-1
		off, err := p.jumpOffset()
		if err != nil {
			return w, err
		}
		keys, err := read(base(), desc, 1, off-1)
		if err != nil || len(keys) == 0 {
			return w, err // past the end: an empty page
		}
		keys[0].Page = p.Page
		p.After = &keys[0]
		return keysetWindow(q, timeCol, idCol, p)
	}
	keys, err := read(base(), desc, p.PerPage+1, 0)
	if err != nil {
		return w, err
	}
	w.hasNext = len(keys) > p.PerPage
	w.keys = keys[:min(len(keys), p.PerPage)]
	return w, nil
}

// windowOf is keysetWindow over keys already in memory, newest first (lists filtered in Go).
func windowOf(keys []cursor, p page) (window, error) {
	less := func(a, b cursor) bool { // a comes after b in list order
		return a.At.Before(b.At) || (a.At.Equal(b.At) && a.ID < b.ID)
	}
	w := window{page: p.Page}
	switch {
	case p.Before != nil:
		end := 0 // keys[:end] come before the cursor
		for end < len(keys) && less(*p.Before, keys[end]) {
			end++
		}
		if end > p.PerPage {
			w.keys, w.hasPrev, w.hasNext, w.page = keys[end-p.PerPage:end], true, true, max(p.Before.Page, 2)
			return w, nil
		}
		p.Before, p.Page = nil, 1
		return windowOf(keys, p)
	case p.After != nil:
		start := 0
		for start < len(keys) && !less(keys[start], *p.After) {
			start++
		}
		keys = keys[start:]
		w.hasPrev = true
	case p.Page > 1:
		off, err := p.jumpOffset()
		if err != nil {
			return w, err
		}
		if off >= len(keys) {
			return w, nil
		}
		keys, w.hasPrev = keys[off:], true
	}
	w.hasNext = len(keys) > p.PerPage
	w.keys = keys[:min(len(keys), p.PerPage)]
	return w, nil
}

// ids are the window's row ids, in list order.
func (w window) ids() []uint64 {
	out := make([]uint64, len(w.keys))
	for i, k := range w.keys {
		out[i] = k.ID
	}
	return out
}
