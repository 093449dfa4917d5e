package admin

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/policypush/policypush/notify"
	"github.com/policypush/policypush/payout"
)

// view is what every staff page template receives: the page's own data under .Data, the rest
// for the layout.
type view struct {
	Title string
	User  *Principal
	CSRF  string
	Nonce string
	Nav   []navItem
	Flash string
	Data  any
}

type navItem struct {
	Href, Label string
	Active      bool
}

// nav lists the pages the principal may open, in the order of the work.
var nav = []struct {
	href, label string
	perm        Perm
}{
	{"/", "总览", PermDashboard},
	{"/policies", "政策库", PermPolicyRead},
	{"/review", "待审核", PermPolicyReview},
	{"/firms", "匹配企业", PermFirmRead},
	{"/near-misses", "差一点符合", PermFirmRead},
	{"/deliveries/failed", "发送失败", PermDeliveryRead},
	{"/payouts", "拨付", PermPayoutRead},
	{"/audit", "审计日志", PermAuditRead},
	{"/users", "账号与令牌", PermUserAdmin},
	{"/sandbox", "沙箱消息", PermSandbox},
	{"/calc", "政策计算器", PermSignedIn},
}

func (s *Server) parseTemplates() error {
	funcs := template.FuncMap{
		"amount": notify.FormatAmount,
		"day":    func(t time.Time) string { return t.In(s.opts.Location).Format("2006-01-02") },
		"clock":  func(t time.Time) string { return t.In(s.opts.Location).Format("2006-01-02 15:04") },
		"when": func(t *time.Time) string { // an optional time (payout steps); empty when it did not happen
			if t == nil {
				return ""
			}
			return t.In(s.opts.Location).Format("2006-01-02 15:04")
		},
		"yuan":          payout.YuanGrouped,
		"batchState":    func(st string) string { return batchLabels[st] },
		"lineState":     func(st string) string { return payoutLineLabels[st] },
		"decisionLabel": func(d string) string { return decisionLabels[d] },
		"stateLabel": func(state string) string {
			if l, ok := stateLabels[state]; ok {
				return l
			}
			return state
		},
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	for _, path := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(path, "templates/"), ".html")
		if strings.HasPrefix(name, "layout") || name == "partials" {
			continue
		}
		layout := "templates/layout.html"
		if strings.HasPrefix(name, "enterprise") {
			layout = "templates/layout_enterprise.html"
		}
		t, err := template.New(strings.TrimPrefix(layout, "templates/")).Funcs(funcs).ParseFS(templateFS, layout, "templates/partials.html", path)
		if err != nil {
			return fmt.Errorf("parse template %s: %w", name, err)
		}
		s.pages[name] = t
	}
	return nil
}

// stateLabels name delivery states and firm responses in Chinese.
var stateLabels = map[string]string{
	"queued": "排队中", "sent": "已发送", "delivered": "已送达", "failed": "发送失败（重试中）",
	"dead": "发送失败", "skipped": "未发送", "": "待通知", "sending": "发送中", "undelivered": "未送达",
	"unknown": "结果未知", "confirm": "已确认", "object": "有异议", "none": "未回复",
	"draft": "草稿", "in_review": "待审核", "published": "已发布", "retired": "已下线", "superseded": "已被新版本取代",
	"rejected": "已退回", "active": "有效", "revoked": "已失效", "approved": "已审核通过", "withdrawn": "已撤回",
	"eligible": "符合", "not_eligible": "不符合", "undecided": "暂无法判断",
	"deferred": "延后发送", "in_doubt": "结果待确认", "resolved": "确认已送出", "fallback": "改发短信", "resend": "重新发送",
	"read": "企业已打开", "confirmed": "企业已确认", "wechat": "微信", "sms": "短信",
}

// render writes a staff page with status 200.
func (s *Server) render(w http.ResponseWriter, r *http.Request, p *Principal, name, title string, data any) {
	s.page(w, r, p, http.StatusOK, name, title, data)
}

// page renders into a buffer first, so a template error becomes a clean 500 instead of half a page.
func (s *Server) page(w http.ResponseWriter, r *http.Request, p *Principal, status int, name, title string, data any) {
	v := view{Title: title, User: p, Nonce: nonceOf(r), Data: data, Flash: flashes[r.URL.Query().Get("msg")]}
	if p != nil {
		v.CSRF = p.csrf
		for _, n := range nav {
			if p.Can(n.perm) {
				active := n.href == r.URL.Path || (n.href != "/" && strings.HasPrefix(r.URL.Path, n.href))
				v.Nav = append(v.Nav, navItem{Href: n.href, Label: n.label, Active: active})
			}
		}
	}
	t, ok := s.pages[name]
	if !ok {
		s.opts.Log.Error("no such template", "page", name)
		http.Error(w, "页面模板缺失", http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, v); err != nil {
		s.opts.Log.Error("render page", "page", name, "err", err)
		http.Error(w, "页面生成失败", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}
