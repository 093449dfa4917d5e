package admin

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/store"
)

// registryChanges is the data-sharing platform's HTTP way in (besides the NATS change subject): a
// JSON object, an array of objects or {"firms": [...]}, keyed by catalog keys with credit_code.
// Every firm goes through the registry's one door (the same checks as an import line) and the
// caller's scope: a write is allowed only where a read would be, before and after the change. The
// running matcher engine upserts each firm and re-matches it in one transaction. The audit log
// gets one row for the request and one per firm written, naming each changed field with its old
// and new value (contact data masked).
func (s *Server) registryChanges(w http.ResponseWriter, r *http.Request, p *Principal) {
	if s.opts.Matcher == nil {
		s.fail(w, r, http.StatusServiceUnavailable, "本进程未运行匹配引擎（serve 或 demo 才接收名录变更），请发往运行匹配引擎的实例或 NATS 变更主题", nil)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.fail(w, r, http.StatusRequestEntityTooLarge, "请求体过大（上限 2 MiB）：请分批发送，或使用 NATS 变更主题", nil)
		return
	}
	res, err := s.opts.Matcher.ApplyChangeJSONGuarded(r.Context(), body, p.mayWrite)
	switch {
	case errors.Is(err, matcher.ErrBadChange):
		s.fail(w, r, http.StatusBadRequest, "变更格式不对："+err.Error()+"（字段见 GET /api/v1/fields，每家企业须有 credit_code）", nil)
		return
	case errors.Is(err, matcher.ErrNotLoaded):
		w.Header().Set("Retry-After", "10")
		s.fail(w, r, http.StatusServiceUnavailable, "匹配引擎正在载入企业名录，请稍后重试", nil)
		return
	case err != nil:
		s.failErr(w, r, err)
		return
	}
	changes := maskChanges(res.Written)
	if err := s.auditRegistryChanges(r, p, res, changes); err != nil {
		s.failErr(w, r, err)
		return
	}
	status := http.StatusOK
	if w := res.WriteResult(); len(res.Rejected) > 0 && w.Inserted+w.Updated+w.Unchanged == 0 {
		status = http.StatusUnprocessableEntity // nothing could be applied
	}
	writeJSON(w, status, struct {
		matcher.ChangeResult
		Changes []registry.FirmChange `json:"changes"`
	}{res, changes})
}

// errOutOfScope is the one answer for a firm outside the caller's scope, whether it exists or not,
// so a scoped token cannot probe which credit codes are registered elsewhere.
var errOutOfScope = errors.New("不在本账号/令牌的数据范围内：只能修改或新建范围内的企业，也不能把企业移入或移出范围")

// mayWrite is the scope check of a registry write: the stored firm (nil for a new one) and its new
// state must both lie in the principal's scope, exactly as a read would require.
func (p *Principal) mayWrite(old, next *store.Enterprise) error {
	if (old != nil && !p.sees(old)) || !p.sees(next) {
		return fmt.Errorf("%w（%s）", errOutOfScope, p.ScopeLabel())
	}
	return nil
}

// personalFields are masked in audit rows and responses.
var personalFields = map[string]func(string) string{"contact_phone": MaskPhone, "wechat_openid": MaskOpenID}

func maskChanges(in []registry.FirmChange) []registry.FirmChange {
	out := make([]registry.FirmChange, len(in))
	for i, c := range in {
		fields := make([]registry.FieldChange, len(c.Fields))
		for j, f := range c.Fields {
			if mask := personalFields[f.Key]; mask != nil {
				f.Old, f.New = mask(f.Old), mask(f.New)
			}
			fields[j] = f
		}
		out[i] = registry.FirmChange{CreditCode: c.CreditCode, New: c.New, Fields: fields}
	}
	return out
}

// auditRegistryChanges writes the request's row (counts, the firms written and the rejections) and
// one row per firm written, in one transaction.
func (s *Server) auditRegistryChanges(r *http.Request, p *Principal, res matcher.ChangeResult, changes []registry.FirmChange) error {
	codes := make([]string, len(changes))
	for i, c := range changes {
		codes[i] = c.CreditCode
	}
	now := time.Now().UTC()
	rows := []audit.Entry{{At: now, Actor: p.Name, Action: audit.RegistryChange, Object: "enterprises", Detail: map[string]any{
		"firms": res.Firms, "written": codes, "changed": res.Changed, "new": res.New, "revoked": res.Revoked,
		"rejected": res.Rejected}}}
	for _, c := range changes {
		rows = append(rows, audit.Entry{At: now, Actor: p.Name, Action: audit.RegistryFirm, Object: "enterprise:" + c.CreditCode,
			Detail: map[string]any{"new": c.New, "fields": c.Fields}})
	}
	return audit.WriteAll(s.opts.DB.WithContext(r.Context()), rows)
}
