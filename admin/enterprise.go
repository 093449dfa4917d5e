package admin

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/notify"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// The enterprise page: a firm opens it from the link in its notice (no password; the signed link
// is the credential and names the one firm it opens). It says in plain words what the firm gets,
// why, by when, and lets it confirm (意愿确认, with a commitment), object, or unsubscribe from a
// channel. Everything it shows and changes is scoped to the link's credit code.

// Commitment is the text a firm agrees to when it confirms.
const Commitment = "本单位承诺：上述信息真实、准确、完整，本单位符合该政策的享受条件，同意按政策规定享受并接受核查；" +
	"如有虚报、隐瞒，愿退回已享受的资金并承担相应法律责任。"

type enterpriseView struct {
	Token      string             `json:"-"`
	Firm       enterpriseFirm     `json:"firm"`
	Focus      *enterpriseMatch   `json:"focus"` // the policy of the notice the link came from
	Others     []enterpriseMatch  `json:"others"`
	Channels   []enterpriseChanel `json:"channels"`
	Commitment string             `json:"commitment"`
	Expires    time.Time          `json:"link_expires"`
	Payouts    []firmPayoutView   `json:"payouts"` // the firm's lines in publicized payout batches (payouts.go)
}

type enterpriseFirm struct {
	Name        string `json:"name"`
	CreditCode  string `json:"credit_code"`
	PhoneMasked string `json:"contact_phone"`
	WeChatBound bool   `json:"wechat_bound"`
}

type enterpriseMatch struct {
	PolicyID       string     `json:"policy_id"`
	Title          string     `json:"title"`
	DocNo          string     `json:"doc_no"`
	Department     string     `json:"department"`
	Summary        string     `json:"summary"`
	Interpretation string     `json:"interpretation"`
	Deadline       string     `json:"deadline"`
	Contact        string     `json:"contact"`
	Amount         string     `json:"amount"`
	Active         bool       `json:"active"` // the firm qualifies now
	Response       string     `json:"response"`
	ResponseAt     *time.Time `json:"response_at"`
	Reason         string     `json:"objection_reason,omitempty"`
	Why            *explained `json:"why,omitempty"` // why the firm qualifies, condition by condition
	Token          string     `json:"-"`             // for the forms of the page
	Commitment     string     `json:"-"`
}

func (m enterpriseMatch) ResponseLabel() string { return stateLabels[m.Response] }

type enterpriseChanel struct {
	Channel  string `json:"channel"`
	Label    string `json:"label"`
	OptedOut bool   `json:"opted_out"`
	Token    string `json:"-"`
}

// linkFirm verifies the link and loads its firm.
func (s *Server) linkFirm(ctx context.Context, token string) (linkClaims, *store.Enterprise, error) {
	c, err := verifyLink(s.opts.LinkSecret, token, s.now())
	if errors.Is(err, errLinkExpired) {
		return c, nil, &httpError{http.StatusGone, err.Error()}
	}
	if err != nil {
		return c, nil, &httpError{http.StatusForbidden, err.Error()}
	}
	e, err := store.FirmByCode(ctx, s.opts.DB, c.CreditCode)
	if errors.Is(err, store.ErrNotFound) {
		return c, nil, notFound("链接对应的企业不在名录中，请联系政策咨询电话")
	}
	if err != nil {
		return c, nil, err
	}
	return c, &e, nil
}

// enterpriseView reads what the firm may see: its own matches, answers and channel choices.
func (s *Server) enterpriseView(ctx context.Context, token string, c linkClaims, e *store.Enterprise) (enterpriseView, error) {
	v := enterpriseView{Token: token, Commitment: Commitment, Expires: c.Expires,
		Firm: enterpriseFirm{Name: e.Name, CreditCode: e.CreditCode, PhoneMasked: MaskPhone(e.ContactPhone), WeChatBound: e.WechatOpenID != ""}}
	// Current matches, plus the link's own policy even when the firm no longer qualifies for it
	// (so the page can say so instead of showing nothing).
	ms, err := store.EnterpriseMatches(ctx, s.opts.DB, e.CreditCode, c.PolicyID)
	if err != nil {
		return v, err
	}
	answers, err := store.FirmResponses(ctx, s.opts.DB, e.CreditCode)
	if err != nil {
		return v, err
	}
	seen := map[string]bool{}
	for _, m := range ms {
		if seen[m.PolicyID] {
			continue // the newest row of each policy (active first by order of matching)
		}
		if m.State != store.MatchActive && slices.ContainsFunc(ms, func(o store.Match) bool {
			return o.PolicyID == m.PolicyID && o.State == store.MatchActive
		}) {
			continue
		}
		seen[m.PolicyID] = true
		em, err := s.enterpriseMatch(ctx, &m, answers)
		if err != nil {
			return v, err
		}
		em.Token, em.Commitment = token, Commitment
		if m.PolicyID == c.PolicyID {
			v.Focus = &em
		} else if em.Active {
			v.Others = append(v.Others, em)
		}
	}
	if v.Payouts, err = s.firmPayouts(ctx, token, e.CreditCode); err != nil {
		return v, err
	}
	outs, err := store.FirmOptOuts(ctx, s.opts.DB, e.CreditCode)
	if err != nil {
		return v, err
	}
	for _, ch := range []string{notify.ChannelWeChat, notify.ChannelSMS} {
		v.Channels = append(v.Channels, enterpriseChanel{Channel: ch, Label: channelLabels[ch], OptedOut: slices.Contains(outs, ch), Token: token})
	}
	return v, nil
}

func (s *Server) enterpriseMatch(ctx context.Context, m *store.Match, answers []store.EnterpriseResponse) (enterpriseMatch, error) {
	pv, err := store.VersionOf(ctx, s.opts.DB, m.PolicyID, m.PolicyVersion)
	if err != nil {
		return enterpriseMatch{}, err
	}
	def, err := rules.FromCanonical([]byte(pv.Source))
	if err != nil {
		return enterpriseMatch{}, err
	}
	em := enterpriseMatch{PolicyID: m.PolicyID, Title: def.Title, DocNo: def.DocNo, Department: def.Department,
		Summary: def.Summary, Interpretation: def.Interpretation, Deadline: def.Deadline, Contact: def.Contact,
		Active: m.State == store.MatchActive}
	if em.Active {
		em.Amount = notify.FormatAmount(m.Amount)
		why := s.explainMatch(ctx, m.ID, true)
		em.Why = &why
	}
	for _, a := range answers {
		if a.PolicyID == m.PolicyID {
			at := a.At
			em.Response, em.ResponseAt, em.Reason = a.Kind, &at, a.Reason
		}
	}
	return em, nil
}

func (s *Server) enterprisePage(w http.ResponseWriter, r *http.Request, p *Principal) {
	token := r.PathValue("token")
	c, e, err := s.linkFirm(r.Context(), token)
	if err != nil {
		s.enterpriseFail(w, r, err)
		return
	}
	if err := s.recordOpen(r.Context(), c); err != nil {
		s.enterpriseFail(w, r, err)
		return
	}
	v, err := s.enterpriseView(r.Context(), token, c, e)
	if err != nil {
		s.enterpriseFail(w, r, err)
		return
	}
	s.render(w, r, nil, "enterprise", "政策直达："+e.Name, v)
}

func (s *Server) apiEnterprise(w http.ResponseWriter, r *http.Request, p *Principal) {
	token := r.PathValue("token")
	c, e, err := s.linkFirm(r.Context(), token)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	if err := s.recordOpen(r.Context(), c); err != nil {
		s.failErr(w, r, err)
		return
	}
	v, err := s.enterpriseView(r.Context(), token, c, e)
	s.answer(w, r, v, err)
}

// enterpriseFail shows errors on the firm's (mobile) layout.
func (s *Server) enterpriseFail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, "系统繁忙，请稍后再试"
	var he *httpError
	if errors.As(err, &he) {
		status, msg = he.status, he.msg
	} else {
		s.opts.Log.Error("enterprise page", "err", err)
	}
	s.page(w, r, nil, status, "enterprise_error", "政策直达", map[string]any{"Message": msg})
}

// recordOpen counts a visit of the link (the "opened" step of the funnel).
func (s *Server) recordOpen(ctx context.Context, c linkClaims) error {
	if c.PolicyID == "" {
		return nil
	}
	return store.RecordLinkOpen(ctx, s.opts.DB, c.CreditCode, c.PolicyID, s.now())
}

// responseInput is a firm's answer.
type responseInput struct {
	PolicyID string `json:"policy_id"`
	Kind     string `json:"kind"`   // confirm or object
	Signer   string `json:"signer"` // who signs the commitment (confirm)
	Agree    bool   `json:"agree"`  // the commitment was read and accepted (confirm)
	Reason   string `json:"reason"` // why the firm objects (object)
}

func (in responseInput) validate() error {
	switch in.Kind {
	case store.ResponseConfirm:
		if !in.Agree {
			return badRequest("请阅读并勾选承诺后再确认")
		}
		if n := len([]rune(strings.TrimSpace(in.Signer))); n < 2 || n > 30 {
			return badRequest("请填写经办人姓名（2–30 字）")
		}
	case store.ResponseObject:
		if n := len([]rune(strings.TrimSpace(in.Reason))); n < 5 || n > 1000 {
			return badRequest("请写明异议理由（5–1000 字），例如哪项数据与实际不符")
		}
	default:
		return badRequest("kind 须为 confirm（确认享受）或 object（提出异议）")
	}
	return nil
}

// respond stores the firm's answer for a policy it currently qualifies for.
func (s *Server) respond(r *http.Request, token string, in responseInput) error {
	if err := in.validate(); err != nil {
		return err
	}
	c, e, err := s.linkFirm(r.Context(), token)
	if err != nil {
		return err
	}
	m, err := store.ActiveMatchOf(r.Context(), s.opts.DB, e.CreditCode, in.PolicyID)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("贵单位目前不在该政策的享受名单中，无需确认")
	}
	if err != nil {
		return err
	}
	a := store.EnterpriseResponse{MatchID: m.ID, CreditCode: e.CreditCode, PolicyID: m.PolicyID, PolicyVersion: m.PolicyVersion,
		Kind: in.Kind, At: s.now()}
	if in.Kind == store.ResponseConfirm {
		a.Commitment, a.Signer = Commitment, strings.TrimSpace(in.Signer)
	} else {
		a.Reason = strings.TrimSpace(in.Reason)
	}
	err = store.CreateResponse(r.Context(), s.opts.DB, &a, func(tx *gorm.DB) error {
		return writeAudit(tx, "enterprise:"+e.CreditCode, enterpriseAction(in.Kind), m.PolicyID,
			map[string]any{"match": m.ID, "version": m.PolicyVersion, "link_policy": c.PolicyID})
	})
	if store.IsUniqueViolation(err) {
		return conflict("贵单位已就该政策作出答复；如需更改，请联系 %s", "政策咨询电话")
	}
	return err
}

func (s *Server) enterpriseRespondPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	token := r.PathValue("token")
	in := responseInput{PolicyID: r.PostFormValue("policy_id"), Kind: r.PostFormValue("kind"), Signer: r.PostFormValue("signer"),
		Agree: r.PostFormValue("agree") == "on", Reason: r.PostFormValue("reason")}
	if err := s.respond(r, token, in); err != nil {
		s.enterpriseFail(w, r, err)
		return
	}
	msg := "confirmed"
	if in.Kind == store.ResponseObject {
		msg = "objected"
	}
	redirect(w, r, "/e/"+url.PathEscape(token), msg)
}

func (s *Server) apiEnterpriseRespond(w http.ResponseWriter, r *http.Request, p *Principal) {
	var in responseInput
	if !s.readJSON(w, r, &in) {
		return
	}
	if err := s.respond(r, r.PathValue("token"), in); err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"status": in.Kind})
}

// channelInput turns a channel off (退订) or back on.
type channelInput struct {
	Channel    string `json:"channel"`
	Subscribed bool   `json:"subscribed"`
}

func (s *Server) setChannel(r *http.Request, token string, in channelInput) error {
	if in.Channel != notify.ChannelWeChat && in.Channel != notify.ChannelSMS {
		return badRequest("channel 须为 wechat 或 sms")
	}
	_, e, err := s.linkFirm(r.Context(), token)
	if err != nil {
		return err
	}
	// notify owns what an opt-out means for sends; the console records who asked.
	ops := s.ops()
	action := audit.EnterpriseUnsubscribe
	if in.Subscribed {
		action = audit.EnterpriseResubscribe
		err = ops.Resubscribe(r.Context(), e.CreditCode, in.Channel)
	} else {
		err = ops.Unsubscribe(r.Context(), e.CreditCode, in.Channel, "link")
	}
	if err != nil {
		return err
	}
	return writeAudit(s.opts.DB.WithContext(r.Context()), "enterprise:"+e.CreditCode, action, in.Channel, nil)
}

func (s *Server) enterpriseChannelPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	token := r.PathValue("token")
	in := channelInput{Channel: r.PostFormValue("channel"), Subscribed: r.PostFormValue("subscribed") == "true"}
	if err := s.setChannel(r, token, in); err != nil {
		s.enterpriseFail(w, r, err)
		return
	}
	msg := "unsubscribed"
	if in.Subscribed {
		msg = "saved"
	}
	redirect(w, r, "/e/"+url.PathEscape(token), msg)
}

func (s *Server) apiEnterpriseChannel(w http.ResponseWriter, r *http.Request, p *Principal) {
	var in channelInput
	if !s.readJSON(w, r, &in) {
		return
	}
	if err := s.setChannel(r, r.PathValue("token"), in); err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, in)
}

// enterpriseAction is the audit action of a firm's answer (kind confirm or object).
func enterpriseAction(kind string) audit.Action {
	if kind == store.ResponseObject {
		return audit.EnterpriseObject
	}
	return audit.EnterpriseConfirm
}
