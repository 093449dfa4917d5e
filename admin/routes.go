package admin

import (
	"net/http"
	"regexp"
	"strings"

	"github.com/policypush/policypush/notify"
)

// routeTable lists every page and API endpoint with the permission it needs. Pages and their API
// twins call the same functions; they differ only in how they read input (form or JSON) and answer
// (page or JSON).
func (s *Server) routeTable() []route {
	g, p := http.MethodGet, http.MethodPost
	return []route{
		// Health and sign-in.
		{g, "/healthz", permPublic, "进程存活", nil, "", s.healthz},
		{g, "/readyz", permPublic, "数据库与 NATS 可用", nil, "", s.readyz},
		{g, "/login", permPublic, "登录页", nil, "", s.loginPage},
		{p, "/login", permPublic, "登录", nil, "", s.loginPost},
		{p, "/logout", PermSignedIn, "退出登录", nil, "", s.logoutPost},

		// Enterprise pages (the signed link is the credential).
		{g, "/p/{id}", permPublic, "政策公开页", nil, "", s.publicPolicy},
		{g, "/calc", permPublic, "政策计算器（企业自测）", nil, "", s.calcPage},
		{g, "/e/{token}", permPublic, "企业专属页", nil, "", s.enterprisePage},
		{p, "/e/{token}/respond", permPublic, "企业确认或提出异议", nil, "", s.enterpriseRespondPost},
		{p, "/e/{token}/channels", permPublic, "企业退订或恢复通知渠道", nil, "", s.enterpriseChannelPost},
		{p, "/e/{token}/payout-objections", permPublic, "企业对公示中的本单位拨付提出异议", nil, "", s.enterpriseObjectPost},
		{p, "/e/{token}/payout-feedback", permPublic, "企业评价已到账的拨付（每笔一次）", nil, "", s.enterpriseFeedbackPost},
		{g, "/publicity", permPublic, "拨付公示列表", nil, "", s.publicityIndex},
		{g, "/publicity/{id}", permPublic, "拨付公示（企业名称、脱敏信用代码、金额）", nil, "", s.publicityPage},

		// Staff pages.
		{g, "/{$}", PermDashboard, "总览", nil, "", s.dashboardPage},
		{g, "/policies", PermPolicyRead, "政策库", nil, "", s.policiesPage},
		{g, "/policies/new", PermPolicyAuthor, "编写政策", nil, "", s.editorPage},
		{g, "/policies/{id}", PermPolicyRead, "政策详情与版本", nil, "", s.policyPage},
		{p, "/policies/drafts", PermPolicyAuthor, "保存草稿", nil, "", s.draftPost},
		{g, "/policies/{id}/versions/{version}", PermPolicyRead, "版本详情、与发布版本的差异", nil, "", s.versionPage},
		{g, "/policies/{id}/versions/{version}/preview", PermPreview, "发布前预览", nil, "", s.previewPage},
		{p, "/policies/{id}/versions/{version}/submit", PermPolicyAuthor, "提交审核", nil, "", s.stepPost(s.submitStep, "submitted")},
		{p, "/policies/{id}/versions/{version}/approve", PermPolicyReview, "审核通过", nil, "", s.stepPost(s.approveStep, "approved")},
		{p, "/policies/{id}/versions/{version}/reject", PermPolicyReview, "退回", nil, "", s.stepPost(s.rejectStep, "rejected")},
		{p, "/policies/{id}/versions/{version}/publish", PermPolicyReview, "发布", nil, "", s.stepPost(s.publishStep, "published")},
		{p, "/policies/{id}/retire", PermPolicyReview, "下线", nil, "", s.retirePost},
		{g, "/review", PermPolicyReview, "待审核队列", nil, "", s.reviewPage},
		{g, "/firms", PermFirmRead, "匹配企业列表", nil, "", pageOf(s, s.listMatches, "firms", "匹配企业")},
		{g, "/firms/export", PermFirmExport, "导出匹配企业", nil, "", s.exportMatches},
		{g, "/firms/{code}", PermFirmRead, "企业详情", nil, "", s.firmPage},
		{p, "/firms/{code}/notes", PermFirmNote, "添加跟进记录", nil, "", s.notePost},
		{g, "/near-misses", PermFirmRead, "差一点符合的企业", nil, "", s.nearMissPage},
		{g, "/deliveries/failed", PermDeliveryRead, "发送失败记录", nil, "", pageOf(s, s.listDeliveries, "failed", "发送失败")},
		{g, "/deliveries/{id}", PermDeliveryRead, "投递时间线", nil, "", s.deliveryPage},
		{p, "/deliveries/{id}/resend", PermResend, "重新发送", nil, "", s.resendPost},
		{g, "/payouts", PermPayoutRead, "拨付批次", nil, "", pageOf(s, s.listPayouts, "payouts", "拨付批次")},
		{p, "/payouts", PermPayoutWrite, "生成拨付批次", nil, "", s.payoutCreatePost},
		{g, "/payouts/{id}", PermPayoutRead, "拨付批次详情、异议与历史", nil, "", s.payoutPage},
		{p, "/payouts/{id}/approve", PermPayoutReview, "审核通过拨付批次", nil, "", s.formStep(s.approveBatch, "payout_approved")},
		{p, "/payouts/{id}/remove", PermPayoutReview, "移出一家企业（须写明理由）", nil, "", s.formStep(s.removeLines, "payout_removed")},
		{p, "/payouts/{id}/publicize", PermPayoutWrite, "开始公示", nil, "", s.formStep(s.publicizeBatch, "payout_publicized")},
		{p, "/payouts/objections/{id}/decide", PermPayoutReview, "处理公示异议", nil, "", s.formStep(s.decideObjection, "payout_decided")},
		{p, "/payouts/{id}/export", PermPayoutWrite, "下载付款文件", nil, "", s.exportPayout},
		{p, "/payouts/{id}/results", PermPayoutWrite, "导入银行结果", nil, "", s.payoutResultsPost},
		{g, "/audit", PermAuditRead, "审计日志", nil, "", pageOf(s, s.loadAudit, "audit", "审计日志")},
		{g, "/users", PermUserAdmin, "账号与令牌", nil, "", s.usersPage},
		{p, "/users", PermUserAdmin, "创建账号", nil, "", s.userPost},
		{p, "/users/{username}/unlock", PermUserAdmin, "清除账号的登录失败记录", nil, "", s.unlockPost},
		{p, "/tokens", PermUserAdmin, "创建 API 令牌", nil, "", s.tokenPost},
		{p, "/tokens/{id}/revoke", PermUserAdmin, "吊销 API 令牌", nil, "", s.tokenRevokePost},
		{g, "/sandbox", PermSandbox, "沙箱：企业收到的消息", nil, "", s.sandboxPage},

		// JSON API.
		{g, "/api/v1/openapi.json", permPublic, "本接口的 OpenAPI 文档", nil, "", s.apiOpenAPI},
		{p, "/api/v1/session", permPublic, "登录：返回会话信息与 csrf_token，并设置会话 Cookie", nil, "username, password", s.apiLogin},
		{g, "/api/v1/session", PermSignedIn, "当前登录信息（含 csrf_token）", nil, "", s.apiSession},
		{http.MethodDelete, "/api/v1/session", PermSignedIn, "退出登录", nil, "", s.apiLogout},
		{g, "/api/v1/status", PermDashboard, "系统状态计数", nil, "", s.apiStatus},
		{g, "/api/v1/fields", PermPolicyRead, "规则可用字段（中文名、类型、单位）与辅助函数", nil, "", s.apiFields},
		{p, "/api/v1/rules/check", PermPolicyAuthor, "编译草稿并定位错误（行、列）；run_tests=true 时运行测试用例", nil, draftBody + ", run_tests", s.apiCheck},
		{g, "/api/v1/policies", PermPolicyRead, "政策列表", nil, "", s.apiPolicies},
		{g, "/api/v1/policies/{id}", PermPolicyRead, "政策详情与全部版本", nil, "", s.apiPolicy},
		{p, "/api/v1/policies/drafts", PermPolicyAuthor, "保存草稿（本部门；须能编译）", nil, draftBody, s.apiDraftPost},
		{g, "/api/v1/policies/{id}/versions/{version}", PermPolicyRead, "版本详情：定义、测试结果、与发布版本的差异", nil, "", s.apiVersion},
		{g, "/api/v1/policies/{id}/versions/{version}/preview", PermPreview, "发布前预览：按市、园区、行业的新增/继续/不再符合及样例", nil, "", s.apiPreview},
		{p, "/api/v1/policies/{id}/versions/{version}/submit", PermPolicyAuthor, "提交审核（测试须通过）", nil, "", s.apiStep(s.submitStep)},
		{p, "/api/v1/policies/{id}/versions/{version}/approve", PermPolicyReview, "审核通过（审核人不能是起草人）", nil, "reason", s.apiStep(s.approveStep)},
		{p, "/api/v1/policies/{id}/versions/{version}/reject", PermPolicyReview, "退回（须写明理由）", nil, "reason", s.apiStep(s.rejectStep)},
		{p, "/api/v1/policies/{id}/versions/{version}/publish", PermPolicyReview, "发布已审核通过的版本", nil, "", s.apiStep(s.publishStep)},
		{p, "/api/v1/policies/{id}/retire", PermPolicyReview, "下线政策并撤销其全部匹配", nil, "reason", s.apiRetire},
		{g, "/api/v1/review", PermPolicyReview, "待审核与待发布的版本", nil, "", s.apiReviewQueue},
		{g, "/api/v1/matches", PermFirmRead, "匹配企业（按权限范围，分页、筛选）", filterParams, "", apiOf(s, s.listMatches)},
		{g, "/api/v1/matches/export", PermFirmExport, "导出匹配企业（format=xlsx|csv，筛选同列表）", append([]string{"format"}, filterParams...), "", s.exportMatches},
		{g, "/api/v1/firms/{code}", PermFirmRead, "企业详情：匹配、时间线、跟进记录", nil, "", s.apiFirm},
		{p, "/api/v1/firms/{code}/notes", PermFirmNote, "添加跟进记录", nil, "body, policy_id", s.apiNotePost},
		{g, "/api/v1/near-misses", PermFirmRead, "只差一个条件的企业（按权限范围）", []string{"policy_id", "park_id", "region"}, "", s.apiNearMisses},
		{g, "/api/v1/dashboard", PermDashboard, "漏斗与金额统计（按权限范围）", []string{"policy_id"}, "", s.apiDashboard},
		{p, "/api/v1/registry/changes", PermRegistry, "推送企业名录变更（JSON 对象、数组或 {\"firms\":[…]}，键为字段目录中的字段，须含 credit_code）：写入并重新匹配", nil,
			"credit_code", s.registryChanges},
		{g, "/api/v1/deliveries", PermDeliveryRead, "发送失败记录（按权限范围）", []string{"state", "channel", "page", "per_page", "after", "before"}, "", apiOf(s, s.listDeliveries)},
		{g, "/api/v1/deliveries/{id}", PermDeliveryRead, "投递时间线：事件、回执、企业打开与回复", nil, "", s.apiDelivery},
		{p, "/api/v1/deliveries/resend", PermResend, "重新发送已放弃或重试中的投递", nil, "ids[]", s.apiResend},
		{g, "/api/v1/payouts", PermPayoutRead, "拨付批次、各政策拨付统计与企业评价", []string{"policy_id"}, "", apiOf(s, s.listPayouts)},
		{p, "/api/v1/payouts", PermPayoutWrite, "生成拨付批次（排除已异议、已入批或已拨付的企业；超出剩余预算时拒绝并给出缺口）", nil,
			"policy_id, as_of, confirmed_only", s.apiPayoutCreate},
		{g, "/api/v1/payouts/{id}", PermPayoutRead, "拨付批次：明细（按权限范围）、异议、历史、预算", nil, "", s.apiPayout},
		{p, "/api/v1/payouts/{id}/approve", PermPayoutReview, "审核通过（创建人不能审核）；可同时移出企业", nil, "removals[]", s.apiPayoutStep(s.approveBatch)},
		{p, "/api/v1/payouts/{id}/remove", PermPayoutReview, "公示前移出企业（每家须写明理由）", nil, "removals[]", s.apiPayoutStep(s.removeLines)},
		{p, "/api/v1/payouts/{id}/publicize", PermPayoutWrite, "开始公示 days 个工作日（0：无需公示）并通知企业", nil, "days", s.apiPayoutStep(s.publicizeBatch)},
		{p, "/api/v1/payouts/objections/{id}/decide", PermPayoutReview, "处理异议：sustained（移出）或 dismissed（继续拨付）", nil, "decision, note", s.apiPayoutStep(s.decideObjection)},
		{p, "/api/v1/payouts/{id}/export", PermPayoutWrite, "付款文件（format=xlsx|csv；公示结束且异议处理完后）", []string{"format"}, "", s.exportPayout},
		{p, "/api/v1/payouts/{id}/results", PermPayoutWrite, "导入银行结果：请求体为 CSV 或 xlsx（name=文件名），列 credit_code, status, paid_at, reason", []string{"name"}, "", s.apiPayoutResults},
		{g, "/api/v1/publicity/{id}", permPublic, "拨付公示数据", nil, "", s.apiPublicity},
		{g, "/api/v1/audit", PermAuditRead, "审计日志", []string{"actor", "action", "object", "from", "to", "page", "per_page", "after", "before"}, "", apiOf(s, s.loadAudit)},
		{g, "/api/v1/users", PermUserAdmin, "账号与令牌列表", nil, "", s.apiUsers},
		{p, "/api/v1/users", PermUserAdmin, "创建账号", nil, "username, password, role, department, park_id, region_prefix", s.apiUserPost},
		{p, "/api/v1/users/{username}/unlock", PermUserAdmin, "清除账号（及可选的客户端地址 addr）的登录失败记录，登录等待随即结束", nil, "addr", s.apiUnlock},
		{p, "/api/v1/tokens", PermUserAdmin, "创建 API 令牌（secret 只返回这一次）", nil, "name, permissions[], park_id, region_prefix, ttl_days", s.apiTokenPost},
		{http.MethodDelete, "/api/v1/tokens/{id}", PermUserAdmin, "吊销 API 令牌", nil, "", s.apiTokenDelete},
		{p, "/api/v1/calc", permPublic, "政策计算器：按已知情况（facts）判断每项有效政策", nil, "facts", s.apiCalc},
		{g, "/api/v1/e/{token}", permPublic, "企业专属页数据（凭通知链接中的令牌）", nil, "", s.apiEnterprise},
		{p, "/api/v1/e/{token}/responses", permPublic, "企业确认（kind=confirm，需 agree 与 signer）或异议（kind=object，需 reason）", nil,
			"policy_id, kind, signer, agree, reason", s.apiEnterpriseRespond},
		{p, "/api/v1/e/{token}/channels", permPublic, "企业退订或恢复通知渠道", nil, "channel, subscribed", s.apiEnterpriseChannel},
		{p, "/api/v1/e/{token}/payout-objections", permPublic, "企业对公示中的本单位拨付提出异议", nil, "batch_id, reason", s.apiEnterpriseObject},
		{p, "/api/v1/e/{token}/payout-feedback", permPublic, "企业评价已到账的拨付（rating 1–5，每笔一次）", nil, "line_id, rating, comment", s.apiEnterpriseFeedback},

		// Delivery path (serve only): provider callbacks, signature- or token-checked by their
		// handlers, and the operators' endpoints.
		{g, notify.WeChatCallbackPath, permSigned, "微信服务器地址验证（signature、timestamp、nonce、echostr）", []string{"signature", "timestamp", "nonce", "echostr"}, "", s.delivery(s.opts.Delivery.WeChatCallback)},
		{p, notify.WeChatCallbackPath, permSigned, "微信模板消息送达事件（签名校验；支持安全模式 encrypt_type=aes）", []string{"signature", "timestamp", "nonce", "encrypt_type", "msg_signature"}, "", s.delivery(s.opts.Delivery.WeChatCallback)},
		{p, notify.TencentReceiptPath, permSigned, "腾讯云短信状态回执（token 校验）", []string{"token"}, "", s.delivery(s.opts.Delivery.TencentReceipt)},
		{p, notify.AliyunReceiptPath, permSigned, "阿里云短信状态回执（token 校验）", []string{"token"}, "", s.delivery(s.opts.Delivery.AliyunReceipt)},
		{g, "/metrics", permPublic, "Prometheus 指标（投递、回执、outbox）", nil, "", s.delivery(s.opts.Delivery.Metrics)},
		{g, "/readyz/delivery", permPublic, "投递链路就绪：数据库、NATS、relay 最近一轮、各渠道消费者与服务商", nil, "", s.delivery(s.opts.Delivery.Ready)},
	}
}

// delivery adapts a delivery endpoint to the route table; nil (not served here) stays nil.
func (s *Server) delivery(h http.Handler) handler {
	if h == nil {
		return nil
	}
	return func(w http.ResponseWriter, r *http.Request, _ *Principal) { h.ServeHTTP(w, r) }
}

// draftBody documents the fields of a draft.
const draftBody = "id, title, doc_no, category, effective_from, effective_to, channels[], summary, interpretation, deadline, contact, source_url, params (YAML), eligibility, amount, tests (YAML)"

var pathParam = regexp.MustCompile(`\{([a-z_]+)\$?\}`)

// apiOpenAPI serves the OpenAPI 3.1 document of every route this server answers, generated from the
// route table so it cannot drift from what the server does: the JSON API (tag API), the pages
// (tag 页面, HTML), the providers' callbacks (tag 回调, signature-checked) and the operators'
// endpoints (tag 运维).
func (s *Server) apiOpenAPI(w http.ResponseWriter, r *http.Request, p *Principal) {
	paths := map[string]map[string]any{}
	for _, rt := range s.routes {
		var params []map[string]any
		for _, m := range pathParam.FindAllStringSubmatch(rt.path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]string{"type": "string"}})
		}
		for _, q := range rt.query {
			params = append(params, map[string]any{"name": q, "in": "query", "schema": map[string]string{"type": "string"}})
		}
		op := map[string]any{
			"summary":      rt.summary,
			"operationId":  operationID(rt),
			"tags":         []string{rt.tag()},
			"x-permission": string(rt.perm),
			"responses":    rt.responses(),
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if rt.body != "" {
			props := map[string]any{}
			for _, f := range strings.Split(rt.body, ",") {
				name := strings.TrimSpace(strings.SplitN(strings.TrimSpace(f), " ", 2)[0])
				typ := "string"
				if strings.HasSuffix(name, "[]") {
					name, typ = strings.TrimSuffix(name, "[]"), "array"
				}
				props[name] = map[string]string{"type": typ}
			}
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{
				"application/json": map[string]any{"schema": map[string]any{"type": "object", "properties": props}}}}
		}
		switch {
		case rt.perm == permPublic || rt.perm == permSigned:
			op["security"] = []any{}
		case !rt.api():
			op["security"] = []map[string][]string{{"session": {}}} // pages: the session cookie only
		}
		if paths[rt.path] == nil {
			paths[rt.path] = map[string]any{}
		}
		paths[rt.path][strings.ToLower(rt.method)] = op
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{"title": "policypush 免申即享 API", "version": "1",
			"description": "会话接口需先 POST /api/v1/session 登录，之后的写操作带 X-CSRF-Token 头；集成方用 API 令牌（Authorization: Bearer）。" +
				"所有企业数据按调用者的权限范围（园区、行政区划）过滤；错误为 {\"error\":{\"code\",\"message\"}}。" +
				"本文档列出服务器的全部路由：API、页面（HTML）、服务商回调（签名校验）与运维端点。"},
		"servers": []map[string]string{{"url": "/"}},
		"tags": []map[string]string{{"name": "API", "description": "JSON 接口"}, {"name": "页面", "description": "控制台与企业页面（HTML）"},
			{"name": "回调", "description": "短信、微信服务商的回执回调：无需登录，由处理程序校验签名或 token"},
			{"name": "运维", "description": "健康检查、就绪与指标"}},
		"components": map[string]any{"securitySchemes": map[string]any{
			"session": map[string]string{"type": "apiKey", "in": "cookie", "name": sessionCookie},
			"token":   map[string]string{"type": "http", "scheme": "bearer"},
		}},
		"security": []map[string][]string{{"session": {}}, {"token": {}}},
		"paths":    paths,
	})
}

// operationID names an operation: method and path, e.g. get_matches_export for GET /api/v1/matches/export.
func operationID(rt route) string {
	id := strings.ToLower(rt.method) + strings.NewReplacer("/api/v1", "", "/", "_", "{", "", "}", "", ".", "_", "$", "").Replace(rt.path)
	if !rt.api() {
		id = "page_" + id
	}
	return id
}

// opsPaths are the operators' endpoints.
var opsPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true, "/readyz/delivery": true}

// tag groups a route in the OpenAPI document.
func (rt route) tag() string {
	switch {
	case opsPaths[rt.path]:
		return "运维"
	case rt.perm == permSigned:
		return "回调"
	case rt.api():
		return "API"
	}
	return "页面"
}

func (rt route) responses() map[string]any {
	switch rt.tag() {
	case "API":
		return map[string]any{
			"200": map[string]any{"description": "成功（JSON）"},
			"400": map[string]any{"description": "参数错误", "content": errorContent},
			"401": map[string]any{"description": "未登录", "content": errorContent},
			"403": map[string]any{"description": "无权限或超出权限范围", "content": errorContent},
			"404": map[string]any{"description": "不存在或不在权限范围内", "content": errorContent},
		}
	case "回调":
		return map[string]any{
			"200": map[string]any{"description": "已接收（服务商要求的应答格式）"},
			"403": map[string]any{"description": "签名、时间戳或 token 无效"},
		}
	case "运维":
		return map[string]any{
			"200": map[string]any{"description": "正常"},
			"503": map[string]any{"description": "依赖不可用（JSON 说明哪一项）"},
		}
	}
	html := map[string]any{"text/html": map[string]any{"schema": map[string]string{"type": "string"}}}
	out := map[string]any{
		"200": map[string]any{"description": "页面（HTML）", "content": html},
		"303": map[string]any{"description": "表单提交后跳转；未登录时跳转到登录页"},
		"400": map[string]any{"description": "参数错误（错误页）", "content": html},
		"403": map[string]any{"description": "无权限或跨站请求（错误页）", "content": html},
		"404": map[string]any{"description": "不存在或不在权限范围内（错误页）", "content": html},
	}
	return out
}

var errorContent = map[string]any{"application/json": map[string]any{"schema": map[string]any{
	"type": "object", "properties": map[string]any{"error": map[string]any{"type": "object", "properties": map[string]any{
		"code": map[string]string{"type": "string"}, "message": map[string]string{"type": "string"}}}}}}}
