package admin

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/policypush/policypush/store"
)

// Lists that can grow large (matches, failed deliveries, the audit log) page by keyset, newest
// first: a page is the rows after (or before) a key of the previous page, never an OFFSET, so the
// database walks an index from that key and stops at the page's LIMIT, whatever page it is.
//
//   - ?after=<cursor> is the page after a row (the "下一页" link); ?cursor= is the same parameter.
//   - ?before=<cursor> is the page before a row (the "上一页" link).
//   - ?page=N still works for the first pages, as a jump: the server finds the key that starts
//     page N with a light query of keys only, bounded by store.CountCap rows; a page further in is
//     refused (400) with a message to follow the links instead.
//
// A cursor is opaque to callers: base64url of "v1.<unix nanoseconds>.<id>.<page number>". The
// page number only labels the page ("第 N 页"); rows inserted meanwhile never shift a page, so
// following next links neither repeats nor skips a row.

// page is the pagination of a list: ?page=1&per_page=50 (at most 200), or a cursor. Keys, pages
// and windows are the store's (store/console_keyset.go); the cursors' text is the console's.
type page = store.Page

const maxPerPage = 200

// cursorText is a cursor as links carry it.
func cursorText(c store.Cursor) string {
	raw := fmt.Sprintf("v1.%d.%d.%d", c.At.UnixNano(), c.ID, c.Page)
	if c.At.IsZero() {
		raw = fmt.Sprintf("v1.z.%d.%d", c.ID, c.Page)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func decodeCursor(param, s string) (*store.Cursor, error) {
	bad := badRequest("参数 %s 无效：翻页标记已损坏、被修改或来自旧版本，请回到第一页重新翻页", param)
	if len(s) > 120 {
		return nil, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	parts := strings.Split(string(raw), ".")
	if len(parts) != 4 || parts[0] != "v1" {
		return nil, bad
	}
	var c store.Cursor
	if parts[1] != "z" {
		ns, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil || ns <= 0 {
			return nil, bad
		}
		c.At = time.Unix(0, ns).UTC()
	}
	if c.ID, err = strconv.ParseUint(parts[2], 10, 64); err != nil || c.ID == 0 {
		return nil, bad
	}
	if c.Page, err = strconv.Atoi(parts[3]); err != nil || c.Page < 1 {
		return nil, bad
	}
	return &c, nil
}

func parsePage(q url.Values) (page, error) {
	p := page{Page: 1, PerPage: 50}
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPerPage {
			return p, badRequest("参数 per_page=%q 无效：须为 1 到 %d", v, maxPerPage)
		}
		p.PerPage = n
	}
	after, before := q.Get("after"), q.Get("before")
	if after == "" {
		after = q.Get("cursor")
	}
	switch {
	case after != "" && before != "":
		return p, badRequest("参数 after 与 before 只能给一个")
	case (after != "" || before != "") && q.Get("page") != "":
		return p, badRequest("参数 page 不能与 after/before 同时使用")
	case after != "":
		c, err := decodeCursor("after", after)
		if err != nil {
			return p, err
		}
		p.After, p.Page = c, c.Page
		return p, nil
	case before != "":
		c, err := decodeCursor("before", before)
		if err != nil {
			return p, err
		}
		p.Before, p.Page = c, c.Page
		return p, nil
	}
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			return p, badRequest("参数 page=%q 无效：须为从 1 开始的页码", v)
		}
		p.Page = n
	}
	return p, nil
}

// nextCursor and prevCursor are the cursors of a window's links; empty at the ends.
func nextCursor(w store.Window) string {
	if !w.HasNext || len(w.Keys) == 0 {
		return ""
	}
	c := w.Keys[len(w.Keys)-1]
	c.Page = w.Page + 1
	return cursorText(c)
}

func prevCursor(w store.Window) string {
	if !w.HasPrev || len(w.Keys) == 0 {
		return ""
	}
	c := w.Keys[0]
	c.Page = max(w.Page-1, 1)
	return cursorText(c)
}

// pager is what the list templates show below a table.
type pager struct {
	Page       int
	Total      int64
	Capped     bool   // more than Total rows
	First      string // link to the first page, empty on it
	Prev, Next string // links, empty at the ends
	NextCursor string
	PrevCursor string
}

// listPage is the paging part of every keyset list's answer (matches, failed deliveries, audit
// log), flattened into its JSON.
type listPage struct {
	Total int64 `json:"total"`
	// TotalCapped: more than store.CountCap rows; Total is store.CountCap.
	TotalCapped bool `json:"total_capped"`
	Page        int  `json:"page"`
	PerPage     int  `json:"per_page"`
	// NextCursor and PrevCursor are the after= and before= values of the next and previous
	// pages; empty at the ends.
	NextCursor string `json:"next_cursor"`
	PrevCursor string `json:"prev_cursor"`
	Pager      pager  `json:"-"`
}

// paged fills l from the pager of the page read.
func (l *listPage) paged(p pager) {
	l.Pager = p
	l.Total, l.TotalCapped, l.Page = p.Total, p.Capped, p.Page
	l.NextCursor, l.PrevCursor = p.NextCursor, p.PrevCursor
}

func newPager(path string, filter url.Values, p page, w store.Window, total int64) pager {
	link := func(k, v string) string {
		q := url.Values{}
		for key, vs := range filter {
			q[key] = vs
		}
		if k != "" {
			q.Set(k, v)
		}
		if p.PerPage != 50 {
			q.Set("per_page", strconv.Itoa(p.PerPage))
		}
		if len(q) == 0 {
			return path
		}
		return path + "?" + q.Encode()
	}
	out := pager{Page: w.Page, Total: min(total, store.CountCap), Capped: total > store.CountCap, NextCursor: nextCursor(w), PrevCursor: prevCursor(w)}
	if out.NextCursor != "" {
		out.Next = link("after", out.NextCursor)
	}
	if out.PrevCursor != "" {
		out.Prev = link("before", out.PrevCursor)
	}
	if w.Page > 1 {
		out.First = link("", "")
	}
	return out
}
