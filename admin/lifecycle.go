package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// The review lifecycle in the console: an author saves drafts and submits them, a reviewer (never
// the author: rules enforces the two-person rule) approves or rejects, publishes and retires. The
// console checks the route's permission; rules checks department and authorship again and keeps
// the audit trail of every step.

func actorOf(p *Principal) policies.Actor {
	return policies.Actor{Name: p.Name, Role: p.Role, Department: p.Department}
}

// lifecycleError maps an error of a lifecycle step to an answer.
func lifecycleError(err error) error {
	var ce *rules.CompileError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return &httpError{http.StatusUnprocessableEntity, fmt.Sprintf("规则无法编译（%s 第 %d 行第 %d 列）：%s", ce.Field, ce.Line, ce.Column, ce.Message)}
	case errors.Is(err, policies.ErrForbidden):
		return forbidden("不允许：%v", err)
	case errors.Is(err, policies.ErrState):
		return conflict("状态不符：%v", err)
	case errors.Is(err, policies.ErrNotFound):
		return notFound("没有找到：%v", err)
	case strings.Contains(err.Error(), "test case"):
		return &httpError{http.StatusUnprocessableEntity, "测试用例未通过，请修改规则或测试后保存新草稿：" + err.Error()}
	}
	return err
}

// pathVersion reads {id} and {version} of a version route.
func pathVersion(r *http.Request) (string, int, error) {
	id := r.PathValue("id")
	if !policyIDPattern.MatchString(id) {
		return "", 0, badRequest("政策编号 %q 无效", id)
	}
	v, err := strconv.Atoi(r.PathValue("version"))
	if err != nil || v < 1 {
		return "", 0, badRequest("版本号 %q 无效：须为正整数", r.PathValue("version"))
	}
	return id, v, nil
}

// saveDraft checks a draft and stores it as a new version of the author's department.
func (s *Server) saveDraft(ctx context.Context, p *Principal, in draftInput) (store.PolicyVersion, checkResult, error) {
	in.Department = p.Department
	in.RunTests = true
	def, res := check(in, s.vocab())
	if len(res.Problems) > 0 {
		return store.PolicyVersion{}, res, &httpError{http.StatusUnprocessableEntity, "草稿有 " + strconv.Itoa(len(res.Problems)) + " 处问题，未保存：" + res.Problems[0].Message}
	}
	v, err := policies.SaveDraft(ctx, s.opts.DB, def, actorOf(p), "console", s.vocab())
	return v, res, lifecycleError(err)
}

func (s *Server) draftPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	_ = r.ParseForm()
	in := draftInput{ID: r.PostFormValue("id"), Title: r.PostFormValue("title"), DocNo: r.PostFormValue("doc_no"),
		Category: r.PostFormValue("category"), EffectiveFrom: r.PostFormValue("effective_from"), EffectiveTo: r.PostFormValue("effective_to"),
		Channels: r.PostForm["channels"], Summary: r.PostFormValue("summary"), Interpretation: r.PostFormValue("interpretation"),
		Deadline: r.PostFormValue("deadline"), Contact: r.PostFormValue("contact"), SourceURL: r.PostFormValue("source_url"),
		Params: r.PostFormValue("params"), Eligibility: r.PostFormValue("eligibility"), Amount: r.PostFormValue("amount"),
		Tests: r.PostFormValue("tests")}
	v, res, err := s.saveDraft(r.Context(), p, in)
	if err != nil {
		var he *httpError
		if errors.As(err, &he) && he.status == http.StatusUnprocessableEntity {
			// Back to the editor with what the author typed and where it is wrong.
			ev := s.newEditorView(p, in)
			ev.Existing = r.PostFormValue("existing") == "true"
			ev.Check, ev.Error = res, he.msg
			s.page(w, r, p, http.StatusUnprocessableEntity, "editor", "编写政策", ev)
			return
		}
		s.failErr(w, r, err)
		return
	}
	redirect(w, r, versionPath(v.PolicyID, v.Version), "saved")
}

func (s *Server) apiDraftPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	var in draftInput
	if !s.readJSON(w, r, &in) {
		return
	}
	v, res, err := s.saveDraft(r.Context(), p, in)
	if err != nil {
		var he *httpError
		if errors.As(err, &he) && he.status == http.StatusUnprocessableEntity && len(res.Problems) > 0 {
			writeJSON(w, he.status, map[string]any{"error": map[string]string{"code": "invalid_content", "message": he.msg}, "check": res})
			return
		}
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, v)
}

func versionPath(id string, v int) string {
	return "/policies/" + url.PathEscape(id) + "/versions/" + strconv.Itoa(v)
}

// step is one lifecycle transition on a version.
type step func(ctx context.Context, p *Principal, id string, version int, reason string) error

func (s *Server) submitStep(ctx context.Context, p *Principal, id string, v int, _ string) error {
	_, err := policies.Submit(ctx, s.opts.DB, id, v, actorOf(p), s.vocab())
	return err
}

func (s *Server) approveStep(ctx context.Context, p *Principal, id string, v int, reason string) error {
	_, err := policies.Review(ctx, s.opts.DB, id, v, actorOf(p), true, reason)
	return err
}

func (s *Server) rejectStep(ctx context.Context, p *Principal, id string, v int, reason string) error {
	if strings.TrimSpace(reason) == "" {
		return badRequest("退回须写明理由，告诉起草人要改什么")
	}
	_, err := policies.Review(ctx, s.opts.DB, id, v, actorOf(p), false, reason)
	return err
}

func (s *Server) publishStep(ctx context.Context, p *Principal, id string, v int, _ string) error {
	asOf, err := s.evalDate(ctx)
	if err != nil {
		return err
	}
	_, err = policies.Publish(ctx, s.opts.DB, id, v, actorOf(p), asOf, s.vocab())
	return err
}

// stepPost runs a transition from a form and returns to the version page.
func (s *Server) stepPost(st step, msg string) handler {
	return func(w http.ResponseWriter, r *http.Request, p *Principal) {
		id, v, err := pathVersion(r)
		if err == nil {
			err = lifecycleError(st(r.Context(), p, id, v, r.PostFormValue("reason")))
		}
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		redirect(w, r, versionPath(id, v), msg)
	}
}

// reasonInput is the body of a lifecycle call.
type reasonInput struct {
	Reason string `json:"reason"`
}

// apiStep runs a transition from the API and answers with the version as it is now.
func (s *Server) apiStep(st step) handler {
	return func(w http.ResponseWriter, r *http.Request, p *Principal) {
		id, v, err := pathVersion(r)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		var in reasonInput
		if r.ContentLength > 0 {
			if !s.readJSON(w, r, &in) {
				return
			}
		}
		if err := lifecycleError(st(r.Context(), p, id, v, in.Reason)); err != nil {
			s.failErr(w, r, err)
			return
		}
		row, err := store.VersionOf(r.Context(), s.opts.DB, id, v)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, row)
	}
}

func (s *Server) retire(ctx context.Context, p *Principal, id, reason string) (policies.RetireResult, error) {
	if !policyIDPattern.MatchString(id) {
		return policies.RetireResult{}, badRequest("政策编号 %q 无效", id)
	}
	if strings.TrimSpace(reason) == "" {
		return policies.RetireResult{}, badRequest("下线须写明理由（如：政策到期、被新文件替代）")
	}
	res, err := policies.Retire(ctx, s.opts.DB, id, actorOf(p), reason)
	return res, lifecycleError(err)
}

func (s *Server) retirePost(w http.ResponseWriter, r *http.Request, p *Principal) {
	if _, err := s.retire(r.Context(), p, r.PathValue("id"), r.PostFormValue("reason")); err != nil {
		s.failErr(w, r, err)
		return
	}
	redirect(w, r, "/policies/"+url.PathEscape(r.PathValue("id")), "retired")
}

func (s *Server) apiRetire(w http.ResponseWriter, r *http.Request, p *Principal) {
	var in reasonInput
	if !s.readJSON(w, r, &in) {
		return
	}
	res, err := s.retire(r.Context(), p, r.PathValue("id"), in.Reason)
	s.answer(w, r, res, err)
}

// versionDetail is a version with what a reviewer needs: the definition, its test results, and
// the changes against the published version.
type versionDetail struct {
	Version   store.PolicyVersion   `json:"version"`
	Def       *rules.Definition     `json:"definition"`
	Tests     []testOutcome         `json:"tests"`
	Diff      *policies.VersionDiff `json:"diff_from_published,omitempty"`
	Reviews   []store.PolicyReview  `json:"reviews"`
	Published int                   `json:"published_version"`
	Retired   bool                  `json:"retired"`

	CanSubmit, CanReview, CanPublish, CanPreview, CanEdit, CanRetire bool `json:"-"`
}

func (v versionDetail) StateLabel() string { return stateLabels[v.Version.State] }

// readVersion reads the version the request's path names: what versionPage and apiVersion show.
func (s *Server) readVersion(r *http.Request, p *Principal) (versionDetail, error) {
	var d versionDetail
	id, version, err := pathVersion(r)
	if err != nil {
		return d, err
	}
	ctx := r.Context()
	if d.Version, err = store.VersionOf(ctx, s.opts.DB, id, version); err != nil {
		return d, lifecycleError(fmt.Errorf("policy %s version %d: %w", id, version, policies.ErrNotFound))
	}
	pol, err := store.PolicyByID(ctx, s.opts.DB, id)
	if err != nil {
		return d, err
	}
	d.Published, d.Retired = pol.PublishedVersion, pol.Retired
	def, err := rules.FromCanonical([]byte(d.Version.Source))
	if err != nil {
		return d, err
	}
	d.Def = def
	if cp, err := def.Compile(s.vocab()); err == nil {
		for _, t := range cp.RunTests() {
			d.Tests = append(d.Tests, testOutcome{Name: t.Name, Passed: t.Passed, Problem: t.Problem})
		}
	}
	if pol.PublishedVersion > 0 && pol.PublishedVersion != version {
		diff, err := policies.Diff(ctx, s.opts.DB, id, pol.PublishedVersion, version)
		if err != nil {
			return d, lifecycleError(err)
		}
		d.Diff = &diff
	}
	if d.Reviews, err = store.ReviewsOf(ctx, s.opts.DB, id, version); err != nil {
		return d, err
	}
	own := p.Can(PermPolicyAuthor) && p.Department == d.Version.Department
	notMine := d.Version.Author != p.Name
	d.CanSubmit = own && d.Version.State == store.VersionDraft
	d.CanEdit = own
	d.CanReview = p.Can(PermPolicyReview) && notMine && d.Version.State == store.VersionInReview
	d.CanPublish = p.Can(PermPolicyReview) && notMine && d.Version.State == store.VersionApproved
	d.CanRetire = p.Can(PermPolicyReview) && d.Version.State == store.VersionPublished && !pol.Retired
	d.CanPreview = own || p.Can(PermPolicyReview)
	return d, nil
}

func (s *Server) versionPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	d, err := s.readVersion(r, p)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, p, "version", fmt.Sprintf("%s 第 %d 版", d.Def.Title, d.Version.Version), d)
}

func (s *Server) apiVersion(w http.ResponseWriter, r *http.Request, p *Principal) {
	d, err := s.readVersion(r, p)
	s.answer(w, r, d, err)
}

// preview runs the publish preview of a version on the registry as of the evaluation date. Its
// sample firms are firm data: an author sees previews of the own department only, and every
// preview is audited.
func (s *Server) preview(r *http.Request, p *Principal) (rules.PreviewReport, error) {
	id, v, err := pathVersion(r)
	if err != nil {
		return rules.PreviewReport{}, err
	}
	row, err := store.VersionOf(r.Context(), s.opts.DB, id, v)
	if err != nil {
		return rules.PreviewReport{}, lifecycleError(fmt.Errorf("policy %s version %d: %w", id, v, policies.ErrNotFound))
	}
	if !p.Can(PermPolicyReview) && p.Department != row.Department {
		return rules.PreviewReport{}, forbidden("只能预览本部门（%s）的政策", p.Department)
	}
	asOf, err := s.evalDate(r.Context())
	if err != nil {
		return rules.PreviewReport{}, err
	}
	rep, err := policies.PreviewVersion(r.Context(), s.opts.DB, id, v, asOf, 10, s.vocab())
	if err != nil {
		return rep, lifecycleError(err)
	}
	return rep, s.audit(r, p, audit.PolicyPreview, id, map[string]any{"version": v, "new": rep.New, "kept": rep.Kept, "dropped": rep.Dropped})
}

func (s *Server) previewPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	rep, err := s.preview(r, p)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	for i, g := range rep.ByRegion {
		if name, ok := cityNames[g.Key]; ok {
			rep.ByRegion[i].Key = name + "（" + g.Key + "）"
		}
	}
	s.render(w, r, p, "preview", "发布前预览："+rep.Title, rep)
}

func (s *Server) apiPreview(w http.ResponseWriter, r *http.Request, p *Principal) {
	rep, err := s.preview(r, p)
	s.answer(w, r, rep, err)
}

// queueRow is a version waiting for a reviewer.
type queueRow struct{ store.QueuedVersion }

func (q queueRow) StateLabel() string { return stateLabels[q.State] }

func (s *Server) reviewQueue(ctx context.Context) ([]queueRow, error) {
	queued, err := store.ReviewQueue(ctx, s.opts.DB)
	rows := make([]queueRow, len(queued))
	for i, q := range queued {
		rows[i].QueuedVersion = q
	}
	return rows, err
}

func (s *Server) reviewPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	rows, err := s.reviewQueue(r.Context())
	s.show(w, r, p, err, "review", "待审核", rows)
}

func (s *Server) apiReviewQueue(w http.ResponseWriter, r *http.Request, p *Principal) {
	rows, err := s.reviewQueue(r.Context())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	items := make([]store.PolicyVersion, len(rows))
	for i, q := range rows {
		items[i] = q.PolicyVersion
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}
