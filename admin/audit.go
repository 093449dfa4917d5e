package admin

import (
	"net/http"
	"net/url"
	"strings"

	"gorm.io/gorm"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// writeAudit appends one audit row (package core/audit). detail never holds contact data: callers
// pass filters, ids and counts, not phone numbers or openids.
func writeAudit(db *gorm.DB, actor string, action audit.Action, object string, detail map[string]any) error {
	return audit.Write(db, audit.Entry{Actor: actor, Action: action, Object: object, Detail: detail})
}

// audit records a staff read (through the audit journal when the console has one) or change; a
// failure to record fails the request, so nothing is read unrecorded.
func (s *Server) audit(r *http.Request, p *Principal, action audit.Action, object string, detail map[string]any) error {
	return audit.Record(s.opts.DB.WithContext(r.Context()), s.opts.AuditJournal,
		audit.Entry{Actor: p.Name, Action: action, Object: object, Detail: detail})
}

// auditFilter is what the audit log viewer filters on.
type auditFilter struct {
	Actor, Action, Object string
	From, To              string // 2006-01-02, inclusive
	page
}

func parseAuditFilter(q url.Values) (auditFilter, error) {
	f := auditFilter{Actor: strings.TrimSpace(q.Get("actor")), Action: strings.TrimSpace(q.Get("action")),
		Object: strings.TrimSpace(q.Get("object")), From: q.Get("from"), To: q.Get("to")}
	for _, d := range []struct{ name, v string }{{"from", f.From}, {"to", f.To}} {
		if d.v == "" {
			continue
		}
		if _, err := rules.ParseDate(d.v); err != nil {
			return f, badRequest("参数 %s：%v", d.name, err)
		}
	}
	var err error
	f.page, err = parsePage(q)
	return f, err
}

func (f auditFilter) query() url.Values {
	v := url.Values{}
	for k, val := range map[string]string{"actor": f.Actor, "action": f.Action, "object": f.Object, "from": f.From, "to": f.To} {
		if val != "" {
			v.Set(k, val)
		}
	}
	return v
}

type auditList struct {
	Filter auditFilter      `json:"-"`
	Rows   []store.AuditLog `json:"items"`
	listPage
	Actions []string `json:"-"`
}

func (s *Server) listAudit(r *http.Request, f auditFilter) (auditList, error) {
	ctx := r.Context()
	q := audit.Filter{Actor: f.Actor, Action: f.Action, Object: f.Object}
	if f.From != "" {
		d, _ := rules.ParseDate(f.From)
		q.From = d.Time
	}
	if f.To != "" {
		d, _ := rules.ParseDate(f.To)
		q.Before = d.Time.AddDate(0, 0, 1)
	}
	out := auditList{Filter: f, listPage: listPage{PerPage: f.PerPage}}
	sel := audit.Query(ctx, s.opts.DB, q)
	total, err := store.CountUpTo(sel, store.CountCap)
	if err != nil {
		return out, err
	}
	w, err := store.KeysetWindow(sel, "", "id", f.page)
	if err != nil {
		return out, err
	}
	if len(w.Keys) > 0 {
		if out.Rows, err = store.AuditLogsByID(ctx, s.opts.DB, w.IDs()); err != nil {
			return out, err
		}
	}
	if out.Actions, err = audit.Recorded(ctx, s.opts.DB); err != nil {
		return out, err
	}
	out.paged(newPager(r.URL.Path, f.query(), f.page, w, total))
	return out, nil
}

// loadAudit reads the audit log page the request asks for (/audit and GET /api/v1/audit).
func (s *Server) loadAudit(r *http.Request, _ *Principal) (auditList, error) {
	f, err := parseAuditFilter(r.URL.Query())
	if err != nil {
		return auditList{}, err
	}
	return s.listAudit(r, f)
}
