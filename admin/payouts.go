package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/payout"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// Payout pages and API (docs/payout.md): every step calls package payout, which checks the
// department scope, applies the two-person rule and writes the history and the audit record.
// Staff reads of batch lines are narrowed to the principal's firm scope and audited.

func init() {
	flashes["payout_created"] = "批次已生成，请另一位审核人审核"
	flashes["payout_approved"] = "批次已审核通过"
	flashes["payout_removed"] = "已移出该企业"
	flashes["payout_publicized"] = "公示已开始，已通知名单内企业"
	flashes["payout_decided"] = "异议已处理"
	flashes["payout_results"] = "银行结果已导入"
	flashes["payout_objected"] = "异议已提交，该笔拨付暂缓，工作人员会尽快处理"
	flashes["payout_feedback"] = "感谢您的评价"
}

func (s *Server) payouts() *payout.Service {
	return payout.New(s.opts.DB, payout.Options{SubjectPrefix: s.opts.SubjectPrefix, Location: s.opts.Location,
		Now: s.opts.Now, Holidays: s.opts.PayoutHolidays})
}

func payoutActor(p *Principal) payout.Actor {
	return payout.Actor{Name: p.Name, Role: p.Role, Department: p.Department}
}

// payoutErr turns a payout error into the status a person can act on.
func payoutErr(err error) error {
	msg := func(prefix string) string { return prefix + err.Error() }
	switch {
	case errors.Is(err, payout.ErrNotFound):
		return &httpError{http.StatusNotFound, msg("不存在：")}
	case errors.Is(err, payout.ErrForbidden):
		return &httpError{http.StatusForbidden, msg("无权执行：")}
	case errors.Is(err, payout.ErrState):
		return &httpError{http.StatusConflict, msg("当前状态下不能执行：")}
	case errors.Is(err, payout.ErrInvalid):
		return &httpError{http.StatusBadRequest, msg("输入有误：")}
	}
	return err
}

func batchID(r *http.Request) (uint64, error) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		return 0, badRequest("批次编号 %q 无效", r.PathValue("id"))
	}
	return id, nil
}

// payoutsView is the list page: batches, the figures per policy and the create form.
type payoutsView struct {
	Batches  []store.PayoutBatch      `json:"batches"`
	Figures  []payout.PolicyFigures   `json:"figures"`
	Feedback []payout.FeedbackFigures `json:"feedback"`
	Policies []store.Policy           `json:"-"`
	CanWrite bool                     `json:"-"`
}

func (s *Server) listPayouts(r *http.Request, p *Principal) (payoutsView, error) {
	svc := s.payouts()
	v := payoutsView{CanWrite: p.Can(PermPayoutWrite)}
	var err error
	if v.Batches, err = svc.List(r.Context(), r.URL.Query().Get("policy_id")); err != nil {
		return v, err
	}
	if v.Figures, err = svc.Figures(r.Context()); err != nil {
		return v, err
	}
	if v.Feedback, err = svc.FeedbackByPolicy(r.Context(), nil); err != nil {
		return v, err
	}
	if v.CanWrite {
		department := ""
		if p.Role == store.RoleAuthor {
			department = p.Department
		}
		if v.Policies, err = store.DepartmentPolicies(r.Context(), s.opts.DB, department); err != nil {
			return v, err
		}
	}
	return v, nil
}

// createInput asks for a batch.
type createInput struct {
	PolicyID      string `json:"policy_id"`
	AsOf          string `json:"as_of"`
	ConfirmedOnly bool   `json:"confirmed_only"`
}

func (s *Server) createPayout(r *http.Request, p *Principal, in createInput) (*payout.Created, error) {
	req := payout.CreateRequest{PolicyID: strings.TrimSpace(in.PolicyID), ConfirmedOnly: in.ConfirmedOnly, By: payoutActor(p)}
	if req.PolicyID == "" {
		return nil, badRequest("请选择政策（policy_id）")
	}
	if in.AsOf != "" {
		d, err := rules.ParseDate(in.AsOf)
		if err != nil {
			return nil, badRequest("as_of：%v", err)
		}
		req.AsOf = d.Time
	}
	c, err := s.payouts().Create(r.Context(), req)
	return c, payoutErr(err)
}

func (s *Server) payoutCreatePost(w http.ResponseWriter, r *http.Request, p *Principal) {
	c, err := s.createPayout(r, p, createInput{PolicyID: r.PostFormValue("policy_id"), AsOf: r.PostFormValue("as_of"),
		ConfirmedOnly: r.PostFormValue("confirmed_only") == "on"})
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	redirect(w, r, "/payouts/"+strconv.FormatUint(c.BatchID, 10), "payout_created")
}

func (s *Server) apiPayoutCreate(w http.ResponseWriter, r *http.Request, p *Principal) {
	var in createInput
	if !s.readJSON(w, r, &in) {
		return
	}
	c, err := s.createPayout(r, p, in)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, c)
}

// payoutView is a batch as the principal may see it, with the actions it may take now.
type payoutView struct {
	*payout.Detail
	Budget     payout.Budget `json:"budget"`
	Scoped     bool          `json:"scoped"` // lines narrowed to the principal's scope
	CanReview  bool          `json:"-"`
	CanWrite   bool          `json:"-"`
	PublicURL  string        `json:"public_url,omitempty"`
	Objectable bool          `json:"-"`
}

func (v payoutView) Amount(fen int64) string { return payout.YuanGrouped(fen) }

func (s *Server) viewPayout(r *http.Request, p *Principal) (payoutView, error) {
	id, err := batchID(r)
	if err != nil {
		return payoutView{}, err
	}
	var scope func(*gorm.DB) *gorm.DB
	if sc := p.firmScope(); !sc.All() {
		scope = func(q *gorm.DB) *gorm.DB { return sc.Apply(q, "e") }
	}
	svc := s.payouts()
	d, err := svc.Get(r.Context(), id, scope)
	if err != nil {
		return payoutView{}, payoutErr(err)
	}
	v := payoutView{Detail: d, Scoped: scope != nil, CanReview: p.Can(PermPayoutReview), CanWrite: p.Can(PermPayoutWrite)}
	if v.Budget, err = svc.BudgetOf(r.Context(), d.Batch.PolicyID); err != nil && !errors.Is(err, payout.ErrState) {
		return v, payoutErr(err)
	}
	if d.Batch.PublicizedAt != nil {
		v.PublicURL = "/publicity/" + strconv.FormatUint(id, 10)
	}
	return v, s.audit(r, p, audit.PayoutView, "payout:"+strconv.FormatUint(id, 10), map[string]any{"lines": len(d.Lines)})
}

func (s *Server) payoutPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	v, err := s.viewPayout(r, p)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, p, "payout", fmt.Sprintf("拨付批次 %d", v.Batch.ID), v)
}

func (s *Server) apiPayout(w http.ResponseWriter, r *http.Request, p *Principal) {
	v, err := s.viewPayout(r, p)
	s.answer(w, r, v, err)
}

// stepInput is the body of the batch steps.
type stepInput struct {
	Removals []payout.Removal `json:"removals"`
	Days     *int             `json:"days"`
	Decision string           `json:"decision"`
	Note     string           `json:"note"`
}

// payoutStep is one write on a batch (or an objection), shared by the form and the API.
type payoutStep func(r *http.Request, p *Principal, id uint64, in stepInput) error

func (s *Server) approveBatch(r *http.Request, p *Principal, id uint64, in stepInput) error {
	return s.payouts().Approve(r.Context(), id, payoutActor(p), in.Removals)
}

func (s *Server) removeLines(r *http.Request, p *Principal, id uint64, in stepInput) error {
	return s.payouts().Remove(r.Context(), id, payoutActor(p), in.Removals)
}

func (s *Server) publicizeBatch(r *http.Request, p *Principal, id uint64, in stepInput) error {
	if in.Days == nil {
		return badRequest("请填写公示天数（days，工作日；不需要公示时填 0）")
	}
	return s.payouts().Publicize(r.Context(), id, *in.Days, payoutActor(p))
}

func (s *Server) decideObjection(r *http.Request, p *Principal, id uint64, in stepInput) error {
	return s.payouts().Decide(r.Context(), id, in.Decision, in.Note, payoutActor(p))
}

// formStep reads a step from a console form and redirects back to the batch.
func (s *Server) formStep(step payoutStep, flash string) handler {
	return func(w http.ResponseWriter, r *http.Request, p *Principal) {
		id, err := batchID(r)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		in := stepInput{Decision: r.PostFormValue("decision"), Note: r.PostFormValue("note")}
		if code := r.PostFormValue("credit_code"); code != "" {
			in.Removals = []payout.Removal{{CreditCode: code, Reason: r.PostFormValue("reason")}}
		}
		if d := r.PostFormValue("days"); d != "" {
			n, err := strconv.Atoi(d)
			if err != nil {
				s.failErr(w, r, badRequest("公示天数 %q 须为整数", d))
				return
			}
			in.Days = &n
		}
		if err := step(r, p, id, in); err != nil {
			s.failErr(w, r, payoutErr(err))
			return
		}
		back := id
		if b := r.PostFormValue("batch_id"); b != "" { // decide is addressed by objection; the form says its batch
			back, _ = strconv.ParseUint(b, 10, 64)
		}
		redirect(w, r, "/payouts/"+strconv.FormatUint(back, 10), flash)
	}
}

// apiStep reads a step from a JSON body.
func (s *Server) apiPayoutStep(step payoutStep) handler {
	return func(w http.ResponseWriter, r *http.Request, p *Principal) {
		id, err := batchID(r)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		var in stepInput
		if !s.readJSON(w, r, &in) {
			return
		}
		if err := step(r, p, id, in); err != nil {
			s.failErr(w, r, payoutErr(err))
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "status": "ok"})
	}
}

// exportPayout writes the payment file (format csv or xlsx) as a download.
func (s *Server) exportPayout(w http.ResponseWriter, r *http.Request, p *Principal) {
	id, err := batchID(r)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	format := r.FormValue("format")
	if format == "" {
		format = payout.FormatXLSX
	}
	var buf bytes.Buffer // the file is complete before the first byte goes out: an error is a clean error page
	sum, err := s.payouts().Export(r.Context(), id, format, &buf, payoutActor(p))
	if err != nil {
		s.failErr(w, r, payoutErr(err))
		return
	}
	ct := "text/csv; charset=utf-8"
	if format == payout.FormatXLSX {
		ct = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="payout-%d.%s"`, id, format))
	w.Header().Set("X-Rows", strconv.Itoa(sum.Rows))
	w.Header().Set("X-Amount-Total", sum.AmountTotal)
	_, _ = io.Copy(w, &buf)
}

// importResults reads the bank's file: a form upload (field "file") or the raw body (?name=… says
// csv or xlsx by its extension).
func (s *Server) importResults(r *http.Request, p *Principal) (payout.ResultSummary, error) {
	id, err := batchID(r)
	if err != nil {
		return payout.ResultSummary{}, err
	}
	var body io.Reader = r.Body
	name := r.URL.Query().Get("name")
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		f, h, err := r.FormFile("file")
		if err != nil {
			return payout.ResultSummary{}, badRequest("请选择银行结果文件（csv 或 xlsx）")
		}
		defer f.Close()
		body, name = f, h.Filename
	}
	if name == "" {
		name = "results.csv"
	}
	sum, err := s.payouts().ImportResults(r.Context(), id, name, body, payoutActor(p))
	return sum, payoutErr(err)
}

func (s *Server) payoutResultsPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	sum, err := s.importResults(r, p)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	if len(sum.Issues) > 0 {
		s.render(w, r, p, "payout_results", "银行结果导入", sum)
		return
	}
	redirect(w, r, "/payouts/"+strconv.FormatUint(sum.BatchID, 10), "payout_results")
}

func (s *Server) apiPayoutResults(w http.ResponseWriter, r *http.Request, p *Principal) {
	sum, err := s.importResults(r, p)
	s.answer(w, r, sum, err)
}

// publicityView is the public 公示 of a batch: names, masked codes and amounts, nothing more.
type publicityView struct {
	*payout.Public
	BatchID uint64    `json:"batch_id"`
	Title   string    `json:"policy_title"`
	Days    int       `json:"days"`
	Until   time.Time `json:"until"`
	Firms   int       `json:"firms"`
}

func (s *Server) publicity(r *http.Request) (publicityView, error) {
	id, err := batchID(r)
	if err != nil {
		return publicityView{}, err
	}
	pub, err := s.payouts().PublicListing(r.Context(), id)
	if err != nil {
		return publicityView{}, payoutErr(err)
	}
	v := publicityView{Public: pub, BatchID: id, Title: pub.Batch.PolicyTitle, Days: pub.Batch.PublicizeDays, Firms: len(pub.Lines)}
	if pub.Batch.PublicizeUntil != nil {
		v.Until = pub.Batch.PublicizeUntil.Add(-time.Second)
	}
	return v, nil
}

func (s *Server) publicityPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	v, err := s.publicity(r)
	if err != nil {
		s.enterpriseFail(w, r, err)
		return
	}
	s.render(w, r, nil, "enterprise_publicity", "拨付公示："+v.Title, v)
}

func (s *Server) apiPublicity(w http.ResponseWriter, r *http.Request, p *Principal) {
	v, err := s.publicity(r)
	s.answer(w, r, v, err)
}

func (s *Server) publicityIndex(w http.ResponseWriter, r *http.Request, p *Principal) {
	bs, err := s.payouts().Publicized(r.Context())
	if err != nil {
		s.enterpriseFail(w, r, err)
		return
	}
	s.render(w, r, nil, "enterprise_publicities", "拨付公示", bs)
}

// firmPayoutInput is a firm's objection to its line (batch_id, reason) or its rating of a paid
// line (line_id, rating, comment).
type firmPayoutInput struct {
	BatchID uint64 `json:"batch_id"`
	Reason  string `json:"reason"`
	LineID  uint64 `json:"line_id"`
	Rating  int    `json:"rating"`
	Comment string `json:"comment"`
}

func (s *Server) firmObject(r *http.Request, token string, in firmPayoutInput) error {
	_, e, err := s.linkFirm(r.Context(), token)
	if err != nil {
		return err
	}
	if n := len([]rune(strings.TrimSpace(in.Reason))); n < 5 || n > 1000 {
		return badRequest("请写明异议理由（5–1000 字），例如金额或账户与实际不符")
	}
	_, err = s.payouts().Object(r.Context(), in.BatchID, e.CreditCode, in.Reason)
	return payoutErr(err)
}

func (s *Server) firmFeedback(r *http.Request, token string, in firmPayoutInput) error {
	_, e, err := s.linkFirm(r.Context(), token)
	if err != nil {
		return err
	}
	return payoutErr(s.payouts().Feedback(r.Context(), in.LineID, e.CreditCode, in.Rating, in.Comment))
}

func formUint(r *http.Request, key string) uint64 {
	n, _ := strconv.ParseUint(r.PostFormValue(key), 10, 64)
	return n
}

func (s *Server) enterpriseObjectPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	token := r.PathValue("token")
	if err := s.firmObject(r, token, firmPayoutInput{BatchID: formUint(r, "batch_id"), Reason: r.PostFormValue("reason")}); err != nil {
		s.enterpriseFail(w, r, err)
		return
	}
	redirect(w, r, "/e/"+url.PathEscape(token), "payout_objected")
}

func (s *Server) enterpriseFeedbackPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	token := r.PathValue("token")
	rating, _ := strconv.Atoi(r.PostFormValue("rating"))
	in := firmPayoutInput{LineID: formUint(r, "line_id"), Rating: rating, Comment: r.PostFormValue("comment")}
	if err := s.firmFeedback(r, token, in); err != nil {
		s.enterpriseFail(w, r, err)
		return
	}
	redirect(w, r, "/e/"+url.PathEscape(token), "payout_feedback")
}

func (s *Server) apiEnterpriseObject(w http.ResponseWriter, r *http.Request, p *Principal) {
	s.apiFirmPayout(w, r, s.firmObject)
}

func (s *Server) apiEnterpriseFeedback(w http.ResponseWriter, r *http.Request, p *Principal) {
	s.apiFirmPayout(w, r, s.firmFeedback)
}

func (s *Server) apiFirmPayout(w http.ResponseWriter, r *http.Request, do func(*http.Request, string, firmPayoutInput) error) {
	var in firmPayoutInput
	if !s.readJSON(w, r, &in) {
		return
	}
	if err := do(r, r.PathValue("token"), in); err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"status": "ok"})
}

// firmPayouts is the payout part of a firm's page: its lines in publicized batches.
func (s *Server) firmPayouts(ctx context.Context, token, creditCode string) ([]firmPayoutView, error) {
	lines, err := s.payouts().FirmLines(ctx, creditCode)
	if err != nil {
		return nil, err
	}
	out := make([]firmPayoutView, len(lines))
	for i, l := range lines {
		out[i] = firmPayoutView{FirmLine: l, Token: token}
	}
	return out, nil
}

type firmPayoutView struct {
	payout.FirmLine
	Token string `json:"-"`
}

func (v firmPayoutView) StateLabel() string { return payoutLineLabels[v.Line.State] }

// LastDay is the last day of the 公示 (it ends at the following midnight).
func (v firmPayoutView) LastDay() time.Time {
	if v.Batch.PublicizeUntil == nil {
		return time.Time{}
	}
	return v.Batch.PublicizeUntil.Add(-time.Second)
}

var payoutLineLabels = map[string]string{
	store.LinePending: "公示中", store.LineHeld: "异议处理中", store.LineRemoved: "已移出", store.LineExported: "拨付办理中",
	store.LinePaid: "已到账", store.LineFailed: "拨付未成功",
}

var batchLabels = map[string]string{
	store.BatchCreated: "待审核", store.BatchApproved: "已审核，待公示", store.BatchPublicized: "公示中",
	store.BatchExported: "付款文件已下载，待银行结果", store.BatchClosed: "已办结",
}

var decisionLabels = map[string]string{store.ObjectionSustained: "异议成立", store.ObjectionDismissed: "异议不成立"}
