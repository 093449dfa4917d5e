package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"gorm.io/gorm"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// matchFilter is what the matched-firms list filters on. Every value is validated; the
// principal's scope is applied on top, and a filter that names another scope is refused.
type matchFilter struct {
	PolicyID string `json:"policy_id,omitempty"`
	ParkID   string `json:"park_id,omitempty"`
	Region   string `json:"region,omitempty"`   // region code prefix
	Industry string `json:"industry,omitempty"` // GB/T 4754 prefix: C, 39, C39
	Size     string `json:"size,omitempty"`     // large, medium, small, micro
	Notify   string `json:"notify,omitempty"`   // pending, sent, delivered, failed
	Response string `json:"response,omitempty"` // confirm, object, none
	Q        string `json:"q,omitempty"`        // name contains, or credit code prefix
	page
}

// notify states of a match over all its channels, best first.
var notifyStates = []string{"delivered", "sent", "failed", "pending"}

var notifyLabels = map[string]string{"delivered": "已送达", "sent": "已发送", "failed": "发送失败", "pending": "待通知"}

var (
	policyIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	industryPattern = regexp.MustCompile(`^[A-Za-z]?[0-9]{0,4}$`)
	codePattern     = regexp.MustCompile(`^[0-9A-Z]{18}$`)
	// codePrefixPattern is a search for the start of a credit code.
	codePrefixPattern = regexp.MustCompile(`^[0-9][0-9A-Z]{3,16}$`)
)

// filterParams are the query parameters of the matched-firms list, for the OpenAPI document.
var filterParams = []string{"policy_id", "park_id", "region", "industry", "size", "notify", "response", "q", "page", "per_page", "after", "before"}

func parseMatchFilter(q url.Values, p *Principal) (matchFilter, error) {
	f := matchFilter{
		PolicyID: strings.TrimSpace(q.Get("policy_id")), ParkID: strings.TrimSpace(q.Get("park_id")),
		Region: strings.TrimSpace(q.Get("region")), Industry: strings.ToUpper(strings.TrimSpace(q.Get("industry"))),
		Size: q.Get("size"), Notify: q.Get("notify"), Response: q.Get("response"), Q: strings.TrimSpace(q.Get("q")),
	}
	switch {
	case f.PolicyID != "" && !policyIDPattern.MatchString(f.PolicyID):
		return f, badRequest("参数 policy_id=%q 无效：政策编号为字母、数字、_ . 或 -", f.PolicyID)
	case f.ParkID != "" && !parkPattern.MatchString(f.ParkID):
		return f, badRequest("参数 park_id=%q 无效：园区编号为字母、数字、_ 或 -（如 SIP）", f.ParkID)
	case f.Region != "" && !regionPattern.MatchString(f.Region):
		return f, badRequest("参数 region=%q 无效：须为 2–6 位行政区划代码前缀（如 3205）", f.Region)
	case f.Industry != "" && !industryPattern.MatchString(f.Industry):
		return f, badRequest("参数 industry=%q 无效：须为行业门类字母和/或 2–4 位代码前缀（如 C、39、H62）", f.Industry)
	case f.Size != "" && !sizeTierOK(f.Size):
		return f, badRequest("参数 size=%q 无效：可选 %s", f.Size, strings.Join(sizeTiers, ", "))
	case f.Notify != "" && !slices.Contains(notifyStates, f.Notify):
		return f, badRequest("参数 notify=%q 无效：可选 %s", f.Notify, strings.Join(notifyStates, ", "))
	case f.Response != "" && f.Response != store.ResponseConfirm && f.Response != store.ResponseObject && f.Response != "none":
		return f, badRequest("参数 response=%q 无效：可选 confirm, object, none", f.Response)
	case len([]rune(f.Q)) > 100:
		return f, badRequest("参数 q 太长：最多 100 字")
	}
	// A filter naming another scope is refused outright rather than silently returning nothing,
	// so the caller knows the answer is "not yours", not "none".
	if p.ParkID != "" && f.ParkID != "" && f.ParkID != p.ParkID {
		return f, forbidden("您只能查看园区 %s 的企业，无权查看园区 %s", p.ParkID, f.ParkID)
	}
	if p.RegionPrefix != "" && f.Region != "" && !strings.HasPrefix(f.Region, p.RegionPrefix) {
		return f, forbidden("您只能查看行政区划 %s 开头的企业，无权查看 %s", p.RegionPrefix, f.Region)
	}
	var err error
	f.page, err = parsePage(q)
	return f, err
}

func (f matchFilter) values() url.Values {
	v := url.Values{}
	for k, val := range map[string]string{"policy_id": f.PolicyID, "park_id": f.ParkID, "region": f.Region,
		"industry": f.Industry, "size": f.Size, "notify": f.Notify, "response": f.Response, "q": f.Q} {
		if val != "" {
			v.Set(k, val)
		}
	}
	return v
}

// audited is the filter as the audit log records it.
func (f matchFilter) audited() map[string]any {
	out := map[string]any{}
	for k, v := range f.values() {
		out[k] = v[0]
	}
	return out
}

// storeFilter is the filter as the store's queries take it, in the principal's scope. A search
// is read as a whole credit code, the start of one (codes begin with a digit; names of only digits
// and capitals are not a thing: a range on the code index, not a scan of every name), or text of
// a name.
func (f matchFilter) storeFilter(p *Principal) store.MatchFilter {
	sf := store.MatchFilter{Scope: p.firmScope(), PolicyID: f.PolicyID, ParkID: f.ParkID, Region: f.Region,
		Industry: f.Industry, Notify: f.Notify, Response: f.Response}
	switch q := f.Q; {
	case q == "":
	case codePattern.MatchString(strings.ToUpper(q)):
		sf.CreditCode = strings.ToUpper(q)
	case codePrefixPattern.MatchString(q):
		sf.CodePrefix = q
	default:
		sf.Text = q
	}
	return sf
}

// matchRow is one line of the matched-firms list and export: the store's row, sized, its phone
// masked for the principal.
type matchRow struct {
	store.MatchRow
	Size string `json:"size"`
}

func (m matchRow) SizeLabel() string     { return rules.SizeLabels[m.Size] }
func (m matchRow) NotifyLabel() string   { return notifyLabels[m.Notify] }
func (m matchRow) ResponseLabel() string { return stateLabels[m.responseKey()] }
func (m matchRow) responseKey() string {
	if m.Response == "" {
		return "none"
	}
	return m.Response
}

type matchList struct {
	Filter matchFilter `json:"filter"`
	Items  []matchRow  `json:"items"`
	listPage
	Policies []store.PolicyTitle `json:"-"`
	Options  filterLabels        `json:"-"`
	// ExportXLSX and ExportCSV export what the filter shows.
	ExportXLSX string `json:"-"`
	ExportCSV  string `json:"-"`
	Scope      string `json:"scope"`
}

// filterLabels are the choices of the list's filter form.
type filterLabels struct {
	Sizes, Notify, Responses []option
}

type option struct{ Value, Label string }

var listOptions = func() filterLabels {
	var l filterLabels
	for _, t := range sizeTiers {
		l.Sizes = append(l.Sizes, option{t, rules.SizeLabels[t]})
	}
	for _, n := range notifyStates {
		l.Notify = append(l.Notify, option{n, notifyLabels[n]})
	}
	l.Responses = []option{{"confirm", "已确认"}, {"object", "有异议"}, {"none", "未回复"}}
	return l
}()

// readMatchPage reads one page of the list (keyset, see page.go) and the total, counted up to
// store.CountCap+1.
func (s *Server) readMatchPage(ctx context.Context, p *Principal, f matchFilter) ([]matchRow, store.Window, int64, error) {
	var w store.Window
	asOf, err := s.evalDate(ctx)
	if err != nil {
		return nil, w, 0, err
	}
	sf, err := store.FirmsNamed(ctx, s.opts.DB, f.storeFilter(p))
	if err != nil {
		return nil, w, 0, err
	}
	var total int64
	switch {
	case f.Size == "" && !store.SortsScope(s.opts.DB, sf):
		// the count beside the page's keys: neither waits for the other
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() (err error) { total, err = store.CountMatches(gctx, s.opts.DB, sf, store.CountCap); return })
		g.Go(func() (err error) { w, err = store.MatchKeys(gctx, s.opts.DB, sf, f.page); return })
		if err := g.Wait(); err != nil {
			return nil, w, 0, err
		}
	case f.Size == "":
		if total, err = store.CountMatches(ctx, s.opts.DB, sf, store.CountCap); err != nil {
			return nil, w, 0, err
		}
		release, err := s.heavyPage(ctx, sf, total)
		if err != nil {
			return nil, w, 0, err
		}
		w, err = store.MatchKeys(ctx, s.opts.DB, sf, f.page)
		release()
		if err != nil {
			return nil, w, 0, err
		}
	default:
		keys, err := s.sizeFilteredKeys(ctx, sf, f.Size, asOf)
		if err != nil {
			return nil, w, 0, err
		}
		total = int64(len(keys))
		if w, err = store.WindowOf(keys, f.page); err != nil {
			return nil, w, 0, err
		}
	}
	found, err := store.MatchRows(ctx, s.opts.DB, sf, w.IDs())
	if err != nil {
		return nil, w, 0, err
	}
	var rows []matchRow
	if len(w.Keys) > 0 { // an empty page is null, as it always was
		rows = make([]matchRow, 0, len(found))
	}
	for _, m := range found {
		rows = append(rows, s.finishRow(m, p, asOf))
	}
	return rows, w, total, nil
}

// A list page whose plan sorts every match of its scope (store.SortsScope) costs the database
// CPU in proportion to the scope: at 1,000,000 firms × 1,000 policies a park holds 1.4 million
// matches and a city 6.6 million, and each such page ran its whole deadline (5 s of a core) before
// it was stopped. Twenty of them at once left the database no CPU for anything else: sessions by
// primary key took 2.6 s, every dashboard timed out (docs/console.md). heavyPage lets at most
// heavyPages of them run at once; the others wait for a turn within their own deadline, so a
// crowd of large lists costs at most that many cores and the other pages keep theirs.
const (
	heavyPages = 2
	heavyScope = 200_000 // matches in scope from which a sorted page waits for a turn
)

// heavyPage waits, when the page is heavy, for a turn and returns the function that gives it
// back; otherwise it returns at once. What counts is the scope's matches without the filter's
// policy, notice or text conditions (the sort reads every match of the park or city to apply
// them): total, the list's own count, when the filter has none.
func (s *Server) heavyPage(ctx context.Context, f store.MatchFilter, total int64) (release func(), err error) {
	none := func() {}
	if !store.SortsScope(s.opts.DB, f) {
		return none, nil
	}
	inScope, scope := total, store.MatchFilter{Scope: f.Scope, ParkID: f.ParkID, Region: f.Region}
	if !reflect.DeepEqual(f, scope) {
		if inScope, err = store.CountMatches(ctx, s.opts.DB, scope, store.CountCap); err != nil {
			return none, err
		}
	}
	if inScope < s.heavyMatches {
		return none, nil
	}
	select {
	case s.heavy <- struct{}{}:
		return func() { <-s.heavy }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for a turn among the large lists (%d matches in scope): %w", inScope, ctx.Err())
	}
}

// finishRow sizes a row and masks its phone for the principal.
func (s *Server) finishRow(m store.MatchRow, p *Principal, asOf time.Time) matchRow {
	r := matchRow{MatchRow: m, Size: sizeOf(m.IndustryCode, m.Employees, m.AnnualRevenue, m.TotalAssets, asOf)}
	if !p.seesContact(&store.Enterprise{ParkID: r.ParkID}) {
		r.ContactPhone = MaskPhone(r.ContactPhone)
	}
	return r
}

// listMatches reads one page of the list filtered by the request's query and records the read in
// the audit log. The page and the API list call it alike.
func (s *Server) listMatches(r *http.Request, p *Principal) (matchList, error) {
	f, err := parseMatchFilter(r.URL.Query(), p)
	if err != nil {
		return matchList{}, err
	}
	ctx := r.Context()
	out := matchList{Filter: f, listPage: listPage{PerPage: f.PerPage}, Options: listOptions, Scope: p.ScopeLabel()}
	// the filter form's policies are the page's (the API's answer has no form), read beside the page
	titles := make(chan error, 1)
	if strings.HasPrefix(r.URL.Path, "/api/") {
		titles <- nil
	} else {
		go func() {
			var err error
			out.Policies, err = store.PolicyTitles(ctx, s.opts.DB, store.PoliciesPublished)
			titles <- err
		}()
	}
	items, w, total, err := s.readMatchPage(ctx, p, f)
	if terr := <-titles; err == nil {
		err = terr
	}
	if err != nil {
		return out, err
	}
	out.Items = items
	out.paged(newPager(r.URL.Path, f.values(), f.page, w, total))
	exp := f.values()
	exp.Set("format", "xlsx")
	out.ExportXLSX = "/firms/export?" + exp.Encode()
	exp.Set("format", "csv")
	out.ExportCSV = "/firms/export?" + exp.Encode()
	detail := f.audited()
	detail["page"], detail["rows"] = out.Page, len(out.Items)
	return out, s.audit(r, p, audit.FirmList, "matches", detail)
}

// firmDetail is a firm's page: profile, every match, the timeline of what was sent and answered,
// and follow-up notes.
type firmDetail struct {
	Firm     firmProfile          `json:"firm"`
	Matches  []firmMatch          `json:"matches"`
	Timeline []timelineEvent      `json:"timeline"`
	Notes    []store.FollowUpNote `json:"notes"`
	OptOuts  []string             `json:"opt_outs"`
	CanNote  bool                 `json:"-"`
	Policies []store.PolicyTitle  `json:"-"`
}

// firmProfile is the firm as staff may see it: contact data masked unless the principal may see it.
type firmProfile struct {
	CreditCode       string     `json:"credit_code"`
	Name             string     `json:"name"`
	RegionCode       string     `json:"region_code"`
	IndustryCode     string     `json:"industry_code"`
	ParkID           string     `json:"park_id"`
	Status           string     `json:"status"`
	StatusLabel      string     `json:"-"`
	Size             string     `json:"size"`
	SizeLabel        string     `json:"-"`
	Employees        int64      `json:"employees"`
	InsuredEmployees int64      `json:"insured_employees"`
	AnnualRevenue    float64    `json:"annual_revenue"`
	TaxCreditRating  string     `json:"tax_credit_rating"`
	RegisteredAt     *time.Time `json:"registered_at"`
	ContactPhone     string     `json:"contact_phone"`
	PhoneMasked      bool       `json:"contact_phone_masked"`
	WechatOpenID     string     `json:"wechat_openid"`
}

// firmMatch is one match of the firm with, when active, why the firm qualifies.
type firmMatch struct {
	store.FirmMatch
	Why *explained `json:"explanation,omitempty"`
}

func (m firmMatch) StateLabel() string { return stateLabels[m.State] }
func (m firmMatch) ResponseLabel() string {
	if m.Response == "" {
		return stateLabels["none"]
	}
	return stateLabels[m.Response]
}

// timelineEvent is one thing that happened to the firm, newest first.
type timelineEvent struct {
	At       time.Time `json:"at"`
	Kind     string    `json:"kind"` // matched, revoked, delivery, opened, response, note
	PolicyID string    `json:"policy_id"`
	Text     string    `json:"text"`
}

// loadFirm reads a firm the principal may see. A firm outside the scope is "not found": its
// existence is not revealed either.
func (s *Server) loadFirm(ctx context.Context, p *Principal, code string) (*store.Enterprise, error) {
	code = strings.ToUpper(strings.TrimSpace(code))
	if !codePattern.MatchString(code) {
		return nil, badRequest("统一社会信用代码 %q 格式不对：须为 18 位数字或大写字母", code)
	}
	e, err := store.FirmByCode(ctx, s.opts.DB, code)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !p.sees(&e)) {
		return nil, notFound("没有找到企业 %s，或它不在您的查看范围（%s）内", code, p.ScopeLabel())
	}
	return &e, err
}

func (s *Server) firmDetail(r *http.Request, p *Principal, code string) (firmDetail, error) {
	ctx := r.Context()
	e, err := s.loadFirm(ctx, p, code)
	if err != nil {
		return firmDetail{}, err
	}
	asOf, err := s.evalDate(ctx)
	if err != nil {
		return firmDetail{}, err
	}
	d := firmDetail{CanNote: p.Can(PermFirmNote)}
	d.Firm = firmProfile{CreditCode: e.CreditCode, Name: e.Name, RegionCode: e.RegionCode, IndustryCode: e.IndustryCode,
		ParkID: e.ParkID, Status: e.Status, Size: firmSize(e, asOf), Employees: e.Employees, InsuredEmployees: e.InsuredEmployees,
		AnnualRevenue: e.AnnualRevenue, TaxCreditRating: e.TaxCreditRating, RegisteredAt: e.RegisteredAt,
		ContactPhone: e.ContactPhone, WechatOpenID: MaskOpenID(e.WechatOpenID)}
	d.Firm.SizeLabel = rules.SizeLabels[d.Firm.Size]
	d.Firm.StatusLabel = firmStatusLabels[e.Status]
	if !p.seesContact(e) {
		d.Firm.ContactPhone, d.Firm.PhoneMasked = MaskPhone(e.ContactPhone), true
	}
	h, err := store.ReadFirmHistory(ctx, s.opts.DB, e.CreditCode)
	if err != nil {
		return d, err
	}
	d.Matches = make([]firmMatch, len(h.Matches))
	for i, m := range h.Matches {
		d.Matches[i].FirmMatch = m
	}
	d.Timeline, d.Notes, d.OptOuts = firmTimeline(h), h.Notes, h.OptOuts
	var active []int // the active matches, explained together
	var ids []uint64
	for i, m := range d.Matches {
		if m.State == store.MatchActive {
			active, ids = append(active, i), append(ids, m.MatchID)
		}
	}
	whys := s.explainMatches(ctx, ids, false)
	for k, i := range active {
		m := d.Matches[i]
		d.Matches[i].Why = &whys[k]
		if t := (store.PolicyTitle{ID: m.PolicyID, Title: m.Title}); !slices.Contains(d.Policies, t) {
			d.Policies = append(d.Policies, t)
		}
	}
	return d, s.audit(r, p, audit.FirmView, e.CreditCode, map[string]any{"matches": len(d.Matches), "phone_unmasked": !d.Firm.PhoneMasked})
}

// firmStatusLabels name the registration states (登记状态).
var firmStatusLabels = map[string]string{store.StatusActive: "存续（在业）", store.StatusRevoked: "吊销",
	store.StatusDeregistered: "注销", store.StatusMovedOut: "迁出"}

var channelLabels = map[string]string{"wechat": "微信", "sms": "短信"}

// firmTimeline merges matches, deliveries, link opens, answers and notes into one list.
func firmTimeline(h store.FirmHistory) []timelineEvent {
	var ev []timelineEvent
	titles := map[string]string{}
	for _, m := range h.Matches {
		titles[m.PolicyID] = m.Title
		ev = append(ev, timelineEvent{At: m.MatchedAt, Kind: "matched", PolicyID: m.PolicyID,
			Text: fmt.Sprintf("符合「%s」第 %d 版", m.Title, m.PolicyVersion)})
		if m.RevokedAt != nil && m.State == store.MatchRevoked {
			ev = append(ev, timelineEvent{At: *m.RevokedAt, Kind: "revoked", PolicyID: m.PolicyID,
				Text: fmt.Sprintf("不再符合「%s」", m.Title)})
		}
	}
	ev = append(ev, deliveryEvents(h, titles)...)
	for _, o := range h.Opens {
		ev = append(ev, timelineEvent{At: o.FirstAt, Kind: "opened", PolicyID: o.PolicyID,
			Text: fmt.Sprintf("企业打开了「%s」的通知链接（共 %d 次）", titles[o.PolicyID], o.Count)})
	}
	for _, rs := range h.Responses {
		text := fmt.Sprintf("企业确认享受「%s」，签署承诺（%s）", titles[rs.PolicyID], rs.Signer)
		if rs.Kind == store.ResponseObject {
			text = fmt.Sprintf("企业对「%s」提出异议：%s", titles[rs.PolicyID], rs.Reason)
		}
		ev = append(ev, timelineEvent{At: rs.At, Kind: "response", PolicyID: rs.PolicyID, Text: text})
	}
	slices.SortStableFunc(ev, func(a, b timelineEvent) int { return b.At.Compare(a.At) })
	return ev
}

var eventLabels = map[string]string{
	store.EventQueued: "已排队", store.EventDeferred: "延后发送", store.EventSent: "已发送", store.EventFailed: "发送失败，将重试",
	store.EventInDoubt: "结果待确认", store.EventResolved: "确认已送出", store.EventDead: "发送失败，已放弃",
	store.EventSkipped: "未发送", store.EventFallback: "改发短信", store.EventResend: "重新发送", store.EventDelivered: "已送达",
	store.EventUndelivered: "未送达",
}

// deliveryEvents is the timeline of every message sent to the firm: one entry per event of each
// delivery (queued, sent, delivered, failed, resent…), naming the policies the message announced.
// A delivery without events (written before events were recorded) shows its current state.
func deliveryEvents(h store.FirmHistory, titles map[string]string) []timelineEvent {
	var out []timelineEvent
	for _, d := range h.Deliveries {
		var names []string
		for _, it := range h.Items {
			if it.DeliveryID == d.ID {
				names = append(names, titles[it.PolicyID])
			}
		}
		if len(names) == 0 {
			names = []string{titles[d.PolicyID]}
		}
		what := fmt.Sprintf("%s通知「%s」", channelLabels[d.Channel], strings.Join(names, "、"))
		n := 0
		for _, e := range h.Events {
			if e.DeliveryID != d.ID {
				continue
			}
			n++
			text := what + "：" + eventLabels[e.Kind]
			if e.Code != "" {
				text += "（" + e.Code + "）"
			}
			out = append(out, timelineEvent{At: e.At, Kind: "delivery", PolicyID: d.PolicyID, Text: text})
		}
		if n == 0 {
			text := what + "：" + stateLabels[d.State]
			if d.LastCode != "" {
				text += "（" + d.LastCode + "）"
			}
			out = append(out, timelineEvent{At: d.UpdatedAt, Kind: "delivery", PolicyID: d.PolicyID, Text: text})
		}
	}
	return out
}

func (s *Server) firmPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	d, err := s.firmDetail(r, p, r.PathValue("code"))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, p, "firm", d.Firm.Name, d)
}

func (s *Server) apiFirm(w http.ResponseWriter, r *http.Request, p *Principal) {
	d, err := s.firmDetail(r, p, r.PathValue("code"))
	s.answer(w, r, d, err)
}

// noteInput is a follow-up note to add.
type noteInput struct {
	Body     string `json:"body"`
	PolicyID string `json:"policy_id"`
}

func (n noteInput) validate() error {
	switch {
	case strings.TrimSpace(n.Body) == "":
		return badRequest("跟进记录内容不能为空")
	case len([]rune(n.Body)) > 2000:
		return badRequest("跟进记录最多 2000 字")
	case n.PolicyID != "" && !policyIDPattern.MatchString(n.PolicyID):
		return badRequest("policy_id=%q 无效", n.PolicyID)
	}
	return nil
}

func (s *Server) addNote(r *http.Request, p *Principal, code string, in noteInput) (store.FollowUpNote, error) {
	if err := in.validate(); err != nil {
		return store.FollowUpNote{}, err
	}
	e, err := s.loadFirm(r.Context(), p, code)
	if err != nil {
		return store.FollowUpNote{}, err
	}
	n := store.FollowUpNote{CreditCode: e.CreditCode, PolicyID: in.PolicyID, Author: p.Name, Body: strings.TrimSpace(in.Body), CreatedAt: s.now()}
	err = store.AddNote(r.Context(), s.opts.DB, &n, func(tx *gorm.DB) error {
		return writeAudit(tx, p.Name, audit.FirmNote, e.CreditCode, map[string]any{"note": n.ID, "policy_id": n.PolicyID})
	})
	return n, err
}

func (s *Server) notePost(w http.ResponseWriter, r *http.Request, p *Principal) {
	code := r.PathValue("code")
	if _, err := s.addNote(r, p, code, noteInput{Body: r.PostFormValue("body"), PolicyID: r.PostFormValue("policy_id")}); err != nil {
		s.failErr(w, r, err)
		return
	}
	redirect(w, r, "/firms/"+url.PathEscape(strings.ToUpper(code)), "note")
}

func (s *Server) apiNotePost(w http.ResponseWriter, r *http.Request, p *Principal) {
	var in noteInput
	if !s.readJSON(w, r, &in) {
		return
	}
	n, err := s.addNote(r, p, r.PathValue("code"), in)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, n)
}
