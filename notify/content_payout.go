package notify

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/store"
)

// FieldLimit is how many characters one field of a WeChat template message shows since
// 2023-05-04 (longer values are cut with an ellipsis). Every short content field is written to fit.
const FieldLimit = 20

// Content fields a template can map its keys to (wechat.templates, sms.templates).
var ContentFields = map[string]func(n *Notice) string{
	"firm":     func(n *Notice) string { return fit(n.FirmName, FieldLimit) },
	"title":    func(n *Notice) string { return fit(n.PolicyTitle, FieldLimit) },
	"summary":  func(n *Notice) string { return n.Summary },
	"amount":   func(n *Notice) string { return orDefault(n.Amount, defaultAmount) },
	"deadline": func(n *Notice) string { return fit(orDefault(n.Deadline, defaultDeadline), FieldLimit) },
	"date":     func(n *Notice) string { return n.Date },
	"status":   func(n *Notice) string { return n.Status },
	"action":   func(n *Notice) string { return n.Action },
	"reason":   func(n *Notice) string { return fit(n.Reason, FieldLimit) },
	"url":      func(n *Notice) string { return n.URL },
}

// Texts of each kind: the status it reports and what the firm should do.
var kindTexts = map[string]struct{ status, action string }{
	bus.NoticeMatched:    {"无需申请即可享受", "点击详情查看并确认"},
	bus.NoticePublicized: {"已列入拨付公示", "如有异议请在公示期内提出"},
	bus.NoticePaid:       {"已拨付到账", "请查收，欢迎评价服务"},
	bus.NoticeFailed:     {"拨付未成功", "请核对账户后联系经办部门"},
}

// fit cuts s to n characters, ending with an ellipsis when it had to cut.
func fit(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// summarize fills the short fields of a notice: one policy says its title; several say how many
// and the total ("4项政策合计22,171.26元"), never a list of titles in one field.
func summarize(n *Notice, kind string, titles []string, sum float64, amounts int) {
	n.Kind = kind
	n.Status, n.Action = kindTexts[kind].status, kindTexts[kind].action
	if len(titles) == 1 {
		n.Summary = fit(titles[0], FieldLimit)
		return
	}
	n.Summary = fmt.Sprintf("%d项政策", len(titles))
	if amounts > 0 {
		n.Summary += "合计" + FormatAmount(&sum)
	}
	n.Summary = fit(n.Summary, FieldLimit)
}

// payoutContent renders the claimed deliveries that announce a payout step: the amount of the
// payout lines (not the match's estimate), the 公示's last day, the payment date or the bank's
// reason. Match notices were rendered by composeNotice already.
func (n *Notifier) payoutContent(ctx context.Context, cands []*candidate) error {
	var refs []uint64
	for _, c := range cands {
		if c.d.Kind == "" || c.revoked {
			continue
		}
		for _, it := range c.items {
			refs = append(refs, it.Ref)
		}
	}
	if len(refs) == 0 {
		return nil
	}
	db := n.db.WithContext(ctx)
	var lines []store.PayoutLine
	if err := db.Where("id IN ?", dedupe(refs)).Find(&lines).Error; err != nil {
		return fmt.Errorf("load payout lines: %w", err)
	}
	byLine := make(map[uint64]*store.PayoutLine, len(lines))
	var bids []uint64
	for i := range lines {
		byLine[lines[i].ID] = &lines[i]
		bids = append(bids, lines[i].BatchID)
	}
	var batches []store.PayoutBatch
	if len(bids) > 0 {
		if err := db.Where("id IN ?", dedupe(bids)).Find(&batches).Error; err != nil {
			return fmt.Errorf("load payout batches: %w", err)
		}
	}
	byBatch := make(map[uint64]*store.PayoutBatch, len(batches))
	for i := range batches {
		byBatch[batches[i].ID] = &batches[i]
	}
	loc := n.opts.QuietHours.Location
	if loc == nil {
		loc = time.UTC
	}
	for _, c := range cands {
		if c.d.Kind == "" || c.revoked {
			continue
		}
		var titles []string
		var sum float64
		var date time.Time
		for _, it := range c.items {
			l := byLine[it.Ref]
			if l == nil {
				return fmt.Errorf("delivery %d: payout line %d not found", c.d.ID, it.Ref)
			}
			b := byBatch[l.BatchID]
			if b == nil {
				return fmt.Errorf("delivery %d: payout batch %d not found", c.d.ID, l.BatchID)
			}
			titles = append(titles, b.PolicyTitle)
			sum += float64(l.AmountFen) / 100
			var d time.Time
			switch c.d.Kind {
			case bus.NoticePublicized:
				if b.PublicizeUntil != nil {
					d = b.PublicizeUntil.Add(-time.Second) // the 公示's last day
				}
			case bus.NoticePaid:
				if l.PaidAt != nil {
					d = *l.PaidAt
				}
			case bus.NoticeFailed:
				d = l.UpdatedAt
				c.notice.Reason = l.Reason
			}
			if !d.IsZero() && (date.IsZero() || d.Before(date)) {
				date = d
			}
		}
		c.notice.PolicyTitle = listTitles(titles)
		if len(titles) == 1 {
			c.notice.Amount = FormatAmount(&sum)
		} else {
			c.notice.Amount = "合计" + FormatAmount(&sum)
		}
		summarize(&c.notice, c.d.Kind, titles, sum, len(titles))
		if !date.IsZero() {
			c.notice.Date = date.In(loc).Format("2006-01-02")
			c.notice.Deadline = c.notice.Date
		}
	}
	return nil
}
