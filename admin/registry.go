package admin

import (
	"errors"
	"io"
	"net/http"

	"github.com/policypush/policypush/matcher"
)

// registryChanges is the data-sharing platform's HTTP way in (besides the NATS change subject): a
// JSON object, an array of objects or {"firms": [...]}, keyed by catalog keys with credit_code.
// The running matcher engine upserts each firm and re-matches it in one transaction.
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
	res, err := s.opts.Matcher.ApplyChangeJSON(r.Context(), body)
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
	if err := s.audit(r, p, "registry.change", "enterprises", map[string]any{"firms": res.Firms, "changed": res.Changed,
		"new": res.New, "revoked": res.Revoked, "rejected": len(res.Rejected)}); err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
