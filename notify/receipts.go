package notify

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/silenceper/wechat/v2/officialaccount/message"
	"github.com/silenceper/wechat/v2/util"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/store"
)

// Paths at which the console mounts the receipt handlers; the sandbox posts its reports there.
const (
	WeChatCallbackPath = "/wechat/callback"
	TencentReceiptPath = "/receipts/sms/tencent"
	AliyunReceiptPath  = "/receipts/sms/aliyun"
)

// maxReceiptBody bounds a report request; providers batch at most a few hundred reports.
const maxReceiptBody = 1 << 20

// ReceiptConfig configures the receipt handlers.
type ReceiptConfig struct {
	DB            *gorm.DB
	SubjectPrefix string // for the SMS fallback of a WeChat message the user blocked
	// WeChat server configuration (公众号 基本配置 → 服务器配置): the token signs every callback;
	// with an EncodingAESKey, safe mode (encrypt_type=aes) messages are decrypted for AppID.
	Token, EncodingAESKey, AppID string
	// MaxSkew rejects WeChat callbacks whose timestamp is further from now (replays); default 5m.
	MaxSkew time.Duration
	// SMSToken must be the token= query parameter of SMS report URLs (the providers do not sign
	// their reports); empty refuses every SMS report.
	SMSToken string
	// FallbackToSMS queues an SMS for the matches of a WeChat message reported as not delivered
	// (the user blocked the account).
	FallbackToSMS bool
	Log           *slog.Logger
	Now           func() time.Time
}

func (c ReceiptConfig) now() time.Time {
	if c.Now != nil {
		return c.Now().UTC()
	}
	return time.Now().UTC()
}

func (c ReceiptConfig) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c.Log
}

// Receipt is one provider status report.
type Receipt struct {
	Provider   string
	ProviderID string // WeChat msgid, Tencent SerialNo (sid), Aliyun BizId
	DeliveryID uint64 // when the provider echoes it (Aliyun out_id); 0 otherwise
	Recipient  string // phone or openid, only hashed for the dedupe key
	Delivered  bool
	Code       string
	Detail     string
	ReportedAt time.Time
}

// ReceiptSummary counts what RecordReceipts did.
type ReceiptSummary struct {
	Recorded, Duplicates, Unmatched int
}

// RecordReceipts stores reports once per (provider, message, recipient) and moves the delivery
// along its timeline: sent → delivered, or sent → undelivered (a WeChat one then falls back to SMS
// when configured). A report that arrives before its delivery is recorded as sent is kept and
// linked later.
func RecordReceipts(ctx context.Context, c ReceiptConfig, rs []Receipt) (ReceiptSummary, error) {
	var sum ReceiptSummary
	now := c.now()
	err := c.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		sum = ReceiptSummary{}
		for _, r := range rs {
			row := store.DeliveryReceipt{Provider: r.Provider, ProviderID: r.ProviderID, RecipientHash: recipientHash(r.Recipient),
				Delivered: r.Delivered, Code: clip(r.Code, 64), Detail: clip(r.Detail, 200), ReportedAt: r.ReportedAt.UTC(), ReceivedAt: now}
			d, err := findDelivery(tx, r)
			if err != nil {
				return err
			}
			if d != nil {
				row.DeliveryID = d.ID
			}
			// Look first: MySQL reports a row affected for an ignored duplicate. Two copies racing
			// past the look are harmless: the conflict clause keeps one row and applying twice
			// changes nothing the second time.
			var seen int64
			if err := tx.Model(&store.DeliveryReceipt{}).Where("provider = ? AND provider_id = ? AND recipient_hash = ?",
				row.Provider, row.ProviderID, row.RecipientHash).Count(&seen).Error; err != nil {
				return fmt.Errorf("look up receipt: %w", err)
			}
			if seen > 0 {
				sum.Duplicates++
				receiptsTotal.WithLabelValues(r.Provider, "duplicate").Inc()
				continue
			}
			// stored as applied when it is applied below: one statement less per report
			row.Applied = d != nil && reportable(d.State)
			if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&row).Error; err != nil {
				return fmt.Errorf("record receipt: %w", err)
			}
			if d == nil {
				sum.Unmatched++
				receiptsTotal.WithLabelValues(r.Provider, "unmatched").Inc()
				continue
			}
			if err := applyReceipt(tx, c, d, row, now); err != nil {
				return err
			}
			sum.Recorded++
		}
		return nil
	})
	if err != nil {
		return sum, err
	}
	// After the commit: a report stored unmatched because its send was not yet recorded is applied
	// here or by the notifier's own post-commit pass, whichever is later. Such reports are rare, so
	// one read outside a transaction looks for them; only when it finds some does a transaction
	// apply them (every report paid for that transaction before).
	waiting, err := waitingReceipts(c.DB.WithContext(ctx), nil, now)
	if err != nil || len(waiting) == 0 {
		return sum, err
	}
	err = c.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error { return applyWaiting(tx, c, nil, now) })
	return sum, err
}

func findDelivery(tx *gorm.DB, r Receipt) (*store.Delivery, error) {
	var ds []store.Delivery
	q := tx.Limit(1)
	switch {
	case r.DeliveryID != 0:
		q = q.Where("id = ?", r.DeliveryID)
	case r.ProviderID != "":
		q = q.Where("provider = ? AND provider_id = ?", r.Provider, r.ProviderID)
	default:
		return nil, nil
	}
	if err := q.Find(&ds).Error; err != nil {
		return nil, fmt.Errorf("find delivery of receipt: %w", err)
	}
	if len(ds) == 0 {
		return nil, nil
	}
	return &ds[0], nil
}

// applyReceipt moves a delivery forward; a late or repeated report never moves it back. A report on
// a delivery not yet recorded as sent waits (Applied false) for applyWaiting.
func applyReceipt(tx *gorm.DB, c ReceiptConfig, d *store.Delivery, r store.DeliveryReceipt, now time.Time) error {
	if !reportable(d.State) {
		return nil
	}
	if !r.Applied || r.DeliveryID != d.ID { // a new report was stored applied, with its delivery
		if err := tx.Model(&store.DeliveryReceipt{}).Where("id = ?", r.ID).Updates(map[string]any{"applied": true, "delivery_id": d.ID}).Error; err != nil {
			return fmt.Errorf("mark receipt applied: %w", err)
		}
	}
	t := tr(receiptTransition(r.Delivered))
	vars := map[string]any{"delivered_at": r.ReportedAt}
	if !r.Delivered {
		vars = map[string]any{"last_code": r.Code, "last_error": clip(r.Detail, 480)}
	}
	rows, err := apply(tx, change{tr: t, ids: []uint64{d.ID}, vars: vars, channel: d.Channel, code: r.Code}, now)
	if err != nil {
		return fmt.Errorf("apply receipt to delivery %d: %w", d.ID, err)
	}
	receiptsTotal.WithLabelValues(r.Provider, t.Event).Inc()
	if rows == 0 {
		return nil
	}
	ev := t.event(d.ID, now, r.Provider, r.Code, r.Detail)
	if err := tx.Create(&ev).Error; err != nil {
		return fmt.Errorf("record receipt event: %w", err)
	}
	if r.Delivered || d.Channel != ChannelWeChat || !c.FallbackToSMS {
		return nil
	}
	var items []store.DeliveryItem
	if err := tx.Where("delivery_id = ? AND state = ''", d.ID).Find(&items).Error; err != nil {
		return fmt.Errorf("load items: %w", err)
	}
	if len(items) == 0 {
		return nil
	}
	jobs := make([]store.Outbox, len(items))
	for i, it := range items {
		jobs[i] = newOutboxJob(c.SubjectPrefix, bus.NoticeJob{MatchID: it.MatchID, Channel: ChannelSMS, Fallback: true, Kind: it.Kind, Ref: it.Ref}, nil, now)
	}
	if err := endItems(tx, ItemTrFallback, d.ID, d.Channel, nil, store.ItemFallback, clip("wechat report: "+r.Code, 200)); err != nil {
		return fmt.Errorf("mark fallback items: %w", err)
	}
	if err := tx.Create(&jobs).Error; err != nil {
		return fmt.Errorf("queue SMS fallback: %w", err)
	}
	return tx.Create(&store.DeliveryEvent{DeliveryID: d.ID, At: now, Kind: store.EventFallback, Code: r.Code,
		Detail: fmt.Sprintf("not delivered on WeChat; %d match(es) queued for SMS", len(items))}).Error
}

// applyWaiting applies the reports of the last day that overtook the record of their send: those
// of the given deliveries (the notifier calls it right after recording them sent), or any (the
// receipt handlers call it on every report).
func applyWaiting(tx *gorm.DB, c ReceiptConfig, deliveryIDs []uint64, now time.Time) error {
	rows, err := waitingReceipts(tx, deliveryIDs, now)
	if err != nil {
		return err
	}
	for _, r := range rows {
		d, err := findDelivery(tx, Receipt{Provider: r.Provider, ProviderID: r.ProviderID, DeliveryID: r.DeliveryID})
		if err != nil {
			return err
		}
		if d == nil {
			continue
		}
		if err := applyReceipt(tx, c, d, r, now); err != nil {
			return err
		}
	}
	return nil
}

// waitingReceipts reads the reports of the last day not applied yet (at most 200), of the given
// deliveries or (nil) of any.
func waitingReceipts(db *gorm.DB, deliveryIDs []uint64, now time.Time) ([]store.DeliveryReceipt, error) {
	var rows []store.DeliveryReceipt
	q := db.Where("applied = ? AND received_at >= ?", false, now.Add(-24*time.Hour))
	if deliveryIDs != nil {
		// A report that overtook its send was stored before the delivery had its provider id, so it
		// is found by that id, not by delivery_id (which it could not know yet).
		var pids []string
		if err := db.Model(&store.Delivery{}).Where("id IN ? AND provider_id <> ''", deliveryIDs).
			Pluck("provider_id", &pids).Error; err != nil {
			return nil, fmt.Errorf("load provider ids: %w", err)
		}
		if len(pids) == 0 {
			return nil, nil
		}
		q = q.Where("(delivery_id IN ? OR provider_id IN ?)", deliveryIDs, pids)
	}
	if err := q.Order("id").Limit(200).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("load waiting receipts: %w", err)
	}
	return rows, nil
}

func recipientHash(r string) string {
	sum := sha256.Sum256([]byte(strings.TrimPrefix(strings.TrimPrefix(r, "+86"), "86")))
	return hex.EncodeToString(sum[:8])
}

// WeChatCallbackHandler serves the official account's server URL: the GET echostr check, and
// TEMPLATESENDJOBFINISH events recorded against the delivery by msgid. Every request must carry a
// valid signature and a timestamp within MaxSkew; safe mode (encrypt_type=aes) is decrypted with
// the EncodingAESKey. Other events are acknowledged and ignored.
func WeChatCallbackHandler(c ReceiptConfig) http.Handler {
	if c.MaxSkew <= 0 {
		c.MaxSkew = 5 * time.Minute
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ts, nonce := q.Get("timestamp"), q.Get("nonce")
		if c.Token == "" || !sameString(q.Get("signature"), util.Signature(c.Token, ts, nonce)) {
			http.Error(w, "invalid signature", http.StatusForbidden)
			return
		}
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || c.now().Sub(time.Unix(sec, 0)).Abs() > c.MaxSkew {
			http.Error(w, "stale or missing timestamp", http.StatusForbidden)
			return
		}
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, q.Get("echostr"))
			return
		}
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxReceiptBody))
		if err != nil {
			http.Error(w, "cannot read body", http.StatusBadRequest)
			return
		}
		if q.Get("encrypt_type") == "aes" {
			body, err = c.decryptWeChat(body, ts, nonce, q.Get("msg_signature"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
		}
		var msg message.MixMessage
		if err := xml.Unmarshal(body, &msg); err != nil {
			http.Error(w, "body is not a WeChat message", http.StatusBadRequest)
			return
		}
		if msg.Event == message.EventTemplateSendJobFinish {
			status := strings.TrimSpace(msg.Status)
			rec := Receipt{Provider: ChannelWeChat, ProviderID: strconv.FormatInt(msg.TemplateMsgID, 10),
				Recipient: string(msg.FromUserName), Delivered: status == "success", Code: status, Detail: status,
				ReportedAt: time.Unix(msg.CreateTime, 0)}
			if _, err := RecordReceipts(r.Context(), c, []Receipt{rec}); err != nil {
				receiptNotRecorded(r.Context(), c.log(), err, "record wechat receipt", "msgid", rec.ProviderID)
				http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable) // WeChat retries
				return
			}
		}
		_, _ = io.WriteString(w, "success")
	})
}

// receiptNotRecorded logs a receipt callback that could not be stored (the handler answers 503 and
// the provider sends it again): an error, unless the request itself ended first — the provider
// hung up or the process is stopping — which is expected and said at INFO.
func receiptNotRecorded(ctx context.Context, log *slog.Logger, err error, msg string, attrs ...any) {
	attrs = append(attrs, "err", err)
	if ctx.Err() != nil {
		log.Info(msg+": the request ended before it was stored; the provider sends it again", attrs...)
		return
	}
	log.Error(msg, attrs...)
}

func (c ReceiptConfig) decryptWeChat(body []byte, ts, nonce, msgSig string) ([]byte, error) {
	if c.EncodingAESKey == "" {
		return nil, errors.New("safe mode message but no EncodingAESKey configured")
	}
	var env message.EncryptedXMLMsg
	if err := xml.Unmarshal(body, &env); err != nil || env.EncryptedMsg == "" {
		return nil, errors.New("safe mode body has no Encrypt element")
	}
	if !sameString(msgSig, util.Signature(c.Token, ts, nonce, env.EncryptedMsg)) {
		return nil, errors.New("invalid msg_signature")
	}
	_, raw, err := util.DecryptMsg(c.AppID, env.EncryptedMsg, c.EncodingAESKey)
	if err != nil {
		return nil, errors.New("cannot decrypt message")
	}
	return raw, nil
}

func sameString(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// tencentReport is one entry of a Tencent Cloud SMS status callback.
type tencentReport struct {
	UserReceiveTime string `json:"user_receive_time"`
	NationCode      string `json:"nationcode"`
	Mobile          string `json:"mobile"`
	ReportStatus    string `json:"report_status"` // SUCCESS or FAIL
	ErrMsg          string `json:"errmsg"`
	Description     string `json:"description"`
	SID             string `json:"sid"` // SerialNo of the send
}

// aliyunReport is one entry of an Aliyun SmsReport push.
type aliyunReport struct {
	PhoneNumber string `json:"phone_number"`
	SendTime    string `json:"send_time"`
	ReportTime  string `json:"report_time"`
	Success     bool   `json:"success"`
	ErrCode     string `json:"err_code"`
	ErrMsg      string `json:"err_msg"`
	BizID       string `json:"biz_id"`
	OutID       string `json:"out_id"`
}

func (p tencentReport) receipt(now time.Time) Receipt {
	return Receipt{Provider: ProviderTencent, ProviderID: p.SID, Recipient: p.Mobile,
		Delivered: p.ReportStatus == "SUCCESS", Code: p.ErrMsg, Detail: p.Description,
		ReportedAt: providerTime(p.UserReceiveTime, now)}
}

func (p aliyunReport) receipt(now time.Time) Receipt {
	id, _ := strconv.ParseUint(p.OutID, 10, 64)
	return Receipt{Provider: ProviderAliyun, ProviderID: p.BizID, DeliveryID: id, Recipient: p.PhoneNumber,
		Delivered: p.Success, Code: p.ErrCode, Detail: p.ErrMsg, ReportedAt: providerTime(p.ReportTime, now)}
}

// receiptsOf reads a status push, a JSON array of one provider's reports, as receipts (now stands
// for a report time the provider left out).
func receiptsOf[R any](body []byte, now time.Time, receipt func(R, time.Time) Receipt) ([]Receipt, error) {
	var reports []R
	if err := json.Unmarshal(body, &reports); err != nil {
		return nil, err
	}
	var rs []Receipt
	for _, p := range reports {
		rs = append(rs, receipt(p, now))
	}
	return rs, nil
}

// providerTime reads the providers' "2006-01-02 15:04:05" times, which are Beijing time.
func providerTime(s string, fallback time.Time) time.Time {
	t, err := time.ParseInLocation("2006-01-02 15:04:05", s, aliyunDay)
	if err != nil {
		return fallback
	}
	return t
}

// SMSReceiptHandler serves the status report callback of an SMS provider (ProviderTencent or
// ProviderAliyun): a JSON array of reports, deduplicated on (message id, phone). The URL must carry
// token=SMSToken. It answers in the provider's own format so that it stops resending.
func SMSReceiptHandler(c ReceiptConfig, provider string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reply := func(status int, ok bool, msg string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			code := 0
			if !ok {
				code = 1
			}
			if provider == ProviderAliyun {
				_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "msg": msg})
			} else {
				_ = json.NewEncoder(w).Encode(map[string]any{"result": code, "errmsg": msg})
			}
		}
		if r.Method != http.MethodPost {
			reply(http.StatusMethodNotAllowed, false, "POST only")
			return
		}
		if c.SMSToken == "" || !sameString(r.URL.Query().Get("token"), c.SMSToken) {
			reply(http.StatusForbidden, false, "invalid token")
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxReceiptBody))
		if err != nil {
			reply(http.StatusBadRequest, false, "cannot read body")
			return
		}
		now := c.now()
		var rs []Receipt
		switch provider {
		case ProviderTencent:
			rs, err = receiptsOf(body, now, tencentReport.receipt)
		case ProviderAliyun:
			rs, err = receiptsOf(body, now, aliyunReport.receipt)
		default:
			reply(http.StatusNotFound, false, "unknown provider")
			return
		}
		if err != nil {
			reply(http.StatusBadRequest, false, "body is not a JSON array of reports")
			return
		}
		if _, err := RecordReceipts(r.Context(), c, rs); err != nil {
			receiptNotRecorded(r.Context(), c.log(), err, "record sms receipts", "provider", provider, "n", len(rs))
			reply(http.StatusServiceUnavailable, false, "temporarily unavailable")
			return
		}
		reply(http.StatusOK, true, "OK")
	})
}
