package admin

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/policypush/policypush/core/audit"

	"github.com/policypush/policypush/notify"
	"github.com/policypush/policypush/store"
)

// The failed-delivery log, resend and a delivery's timeline come from notify.Ops; the console
// narrows them to the principal's scope and records who looked and who resent.

func (s *Server) ops() notify.Ops {
	return notify.Ops{DB: s.opts.DB, SubjectPrefix: s.opts.SubjectPrefix, Now: s.opts.Now}
}

type deliveryFilter struct {
	State   string // dead, failed, undelivered or unknown; empty: all four
	Channel string
	page
}

var failedStates = []string{store.DeliveryDead, store.DeliveryFailed, store.DeliveryUndelivered, store.DeliveryUnknown}

func parseDeliveryFilter(q url.Values) (deliveryFilter, error) {
	f := deliveryFilter{State: q.Get("state"), Channel: q.Get("channel")}
	switch {
	case f.State != "" && !slices.Contains(failedStates, f.State):
		return f, badRequest("参数 state=%q 无效：dead（已放弃）、failed（重试中）、undelivered（未送达）或 unknown（结果未知）", f.State)
	case f.Channel != "" && f.Channel != notify.ChannelWeChat && f.Channel != notify.ChannelSMS:
		return f, badRequest("参数 channel=%q 无效：wechat 或 sms", f.Channel)
	}
	var err error
	f.page, err = parsePage(q)
	return f, err
}

func (f deliveryFilter) values() url.Values {
	v := url.Values{}
	if f.State != "" {
		v.Set("state", f.State)
	}
	if f.Channel != "" {
		v.Set("channel", f.Channel)
	}
	return v
}

type deliveryList struct {
	Items []notify.FailedDelivery `json:"items"`
	listPage
	Filter    deliveryFilter `json:"-"`
	CanResend bool           `json:"-"`
}

// listDeliveries reads one page of the failed-delivery log (keyset on updated_at, id; see page.go)
// filtered by the request's query: the page's ids here, in the principal's scope, the lines from
// notify.Ops. The page and the API list call it alike.
func (s *Server) listDeliveries(r *http.Request, p *Principal) (deliveryList, error) {
	f, err := parseDeliveryFilter(r.URL.Query())
	if err != nil {
		return deliveryList{}, err
	}
	ctx := r.Context()
	out := deliveryList{listPage: listPage{PerPage: f.PerPage}, Filter: f, CanResend: p.Can(PermResend)}
	states := failedStates
	if f.State != "" {
		states = []string{f.State}
	}
	sf := store.FailedDeliveryFilter{Scope: p.firmScope(), States: states, Channel: f.Channel}
	total, err := store.CountFailedDeliveries(ctx, s.opts.DB, sf, store.CountCap)
	if err != nil {
		return out, err
	}
	w, err := store.FailedDeliveryKeys(ctx, s.opts.DB, sf, f.page)
	if err != nil {
		return out, err
	}
	if len(w.Keys) > 0 {
		out.Items, _, err = s.ops().Failed(ctx, notify.FailedQuery{Channel: f.Channel, States: states, IDs: w.IDs(), Limit: len(w.Keys)})
		if err != nil {
			return out, err
		}
	}
	out.paged(newPager(r.URL.Path, f.values(), f.page, w, total))
	return out, s.audit(r, p, audit.DeliveryList, "deliveries", map[string]any{"state": f.State, "channel": f.Channel, "rows": len(out.Items)})
}

// timeline reads one delivery's timeline if its firm is in the principal's scope.
func (s *Server) timeline(r *http.Request, p *Principal) (notify.Timeline, error) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		return notify.Timeline{}, badRequest("投递编号 %q 无效", r.PathValue("id"))
	}
	t, err := s.ops().Timeline(r.Context(), id)
	if errors.Is(err, notify.ErrNoDelivery) {
		return t, notFound("没有编号为 %d 的投递", id)
	}
	if err != nil {
		return t, err
	}
	if _, err := s.loadFirm(r.Context(), p, t.CreditCode); err != nil {
		return notify.Timeline{}, notFound("没有编号为 %d 的投递，或它不在您的查看范围内", id)
	}
	return t, s.audit(r, p, audit.DeliveryView, strconv.FormatUint(id, 10), map[string]any{"credit_code": t.CreditCode})
}

type timelineView struct {
	notify.Timeline
	CanResend bool
}

func (s *Server) deliveryPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	t, err := s.timeline(r, p)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, p, "delivery", "投递 "+strconv.FormatUint(t.ID, 10), timelineView{t, p.Can(PermResend)})
}

func (s *Server) apiDelivery(w http.ResponseWriter, r *http.Request, p *Principal) {
	t, err := s.timeline(r, p)
	s.answer(w, r, t, err)
}

// resend queues a new attempt of dead or failing deliveries (notify.Ops.Resend) and audits it.
func (s *Server) resend(r *http.Request, p *Principal, ids []uint64) ([]notify.ResendResult, error) {
	if len(ids) == 0 || len(ids) > 500 {
		return nil, badRequest("一次重新发送 1–500 条投递")
	}
	res, err := s.ops().Resend(r.Context(), ids, p.Name)
	if err != nil {
		return res, err
	}
	ok := 0
	for _, x := range res {
		if x.OK {
			ok++
		}
	}
	return res, s.audit(r, p, audit.DeliveryResend, "deliveries", map[string]any{"ids": ids, "queued": ok})
}

func (s *Server) resendPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		s.failErr(w, r, badRequest("投递编号 %q 无效", r.PathValue("id")))
		return
	}
	res, err := s.resend(r, p, []uint64{id})
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	if !res[0].OK {
		s.fail(w, r, http.StatusConflict, "未重新发送："+res[0].Reason, nil)
		return
	}
	redirect(w, r, "/deliveries/"+strconv.FormatUint(id, 10), "resent")
}

// resendInput lists the deliveries to send again.
type resendInput struct {
	IDs []uint64 `json:"ids"`
}

func (s *Server) apiResend(w http.ResponseWriter, r *http.Request, p *Principal) {
	var in resendInput
	if !s.readJSON(w, r, &in) {
		return
	}
	res, err := s.resend(r, p, in.IDs)
	s.answer(w, r, map[string]any{"results": res}, err)
}
