package admin

import (
	"net/url"
	"strconv"
)

// page is the pagination of a list: ?page=1&per_page=50 (at most 200).
type page struct {
	Page    int `json:"page"`
	PerPage int `json:"per_page"`
}

const maxPerPage = 200

func parsePage(q url.Values) (page, error) {
	p := page{Page: 1, PerPage: 50}
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			return p, badRequest("参数 page=%q 无效：须为从 1 开始的页码", v)
		}
		p.Page = n
	}
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPerPage {
			return p, badRequest("参数 per_page=%q 无效：须为 1 到 %d", v, maxPerPage)
		}
		p.PerPage = n
	}
	return p, nil
}

func (p page) offset() int { return (p.Page - 1) * p.PerPage }

// pager is what the list templates show below a table.
type pager struct {
	Page, Pages int
	Total       int64
	Prev, Next  string // links, empty at the ends
}

func newPager(path string, filter url.Values, p page, total int64) pager {
	pages := int((total + int64(p.PerPage) - 1) / int64(p.PerPage))
	if pages == 0 {
		pages = 1
	}
	link := func(n int) string {
		v := url.Values{}
		for k, vs := range filter {
			v[k] = vs
		}
		v.Set("page", strconv.Itoa(n))
		if p.PerPage != 50 {
			v.Set("per_page", strconv.Itoa(p.PerPage))
		}
		return path + "?" + v.Encode()
	}
	out := pager{Page: p.Page, Pages: pages, Total: total}
	if p.Page > 1 {
		out.Prev = link(p.Page - 1)
	}
	if p.Page < pages {
		out.Next = link(p.Page + 1)
	}
	return out
}
