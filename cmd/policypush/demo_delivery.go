package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/policypush/policypush/config"
	"github.com/policypush/policypush/notify"
	"github.com/policypush/policypush/store"
)

// The demo's delivery settings: a short digest window so that a firm's several matches visibly
// arrive as one message, and quiet hours that start now, so that the SMS notices visibly wait for
// their end (in production quiet hours are 22:00–08:00).

func addDemoDeliveryFlags(cmd *cobra.Command) {
	cmd.Flags().Duration("digest-window", 5*time.Second, "digest window of the demo (notify.digest_window is 10m)")
	cmd.Flags().Duration("quiet-for", 20*time.Second, "SMS quiet hours of the demo: from the start of delivery for this long (0: none)")
}

// demoDelivery applies the demo's delivery flags to the config, just before the pipeline starts.
func demoDelivery(cmd *cobra.Command, cfg *config.Config) {
	window, _ := cmd.Flags().GetDuration("digest-window")
	quiet, _ := cmd.Flags().GetDuration("quiet-for")
	cfg.Notify.DigestWindow = window
	// Pacing would spread a firm's second digest over minutes; the demo shows digests instead.
	cfg.Notify.Throttle = config.Throttle{}
	cfg.Notify.QuietHours.Channels = nil
	if quiet > 0 {
		now := time.Now().In(cfg.Location())
		cfg.Notify.QuietHours = config.QuietHours{Start: now.Format("15:04:05"), End: now.Add(quiet).Format("15:04:05"),
			Channels: []string{notify.ChannelSMS}}
		fmt.Printf("演示：短信静默时段 %s–%s（生产默认 22:00–08:00），期间的短信排队，结束后发送；摘要窗口 %s\n",
			cfg.Notify.QuietHours.Start, cfg.Notify.QuietHours.End, window)
	}
}

// printDemoDelivery shows what the demo's sandbox records contain: digests, fallbacks to SMS,
// SMS held by quiet hours, and the receipts that came back.
func printDemoDelivery(ctx context.Context, w io.Writer, a *app) {
	if a.db == nil {
		return
	}
	time.Sleep(2 * a.cfg.Sandbox.Receipts.Delay) // let the last receipts arrive
	db := a.db.WithContext(ctx)
	var digests, digested, fallbacks, quiet, delivered, undelivered int64
	db.Model(&store.Delivery{}).Where("items > 1 AND state IN ?", acceptedStates).Count(&digests)
	db.Model(&store.Delivery{}).Where("items > 1 AND state IN ?", acceptedStates).Select("COALESCE(SUM(items), 0)").Scan(&digested)
	db.Model(&store.DeliveryItem{}).Where("state = ?", store.ItemFallback).Distinct("credit_code").Count(&fallbacks)
	db.Model(&store.DeliveryEvent{}).Where("kind = ? AND code = ?", store.EventDeferred, "quiet_hours").Count(&quiet)
	db.Model(&store.Delivery{}).Where("state = ?", store.DeliveryDelivered).Count(&delivered)
	db.Model(&store.Delivery{}).Where("state = ?", store.DeliveryUndelivered).Count(&undelivered)
	fmt.Fprintf(w, "摘要：%d 条消息合并通知了 %d 项匹配（一家企业窗口内的多项政策合为一条）\n", digests, digested)
	fmt.Fprintf(w, "回退：%d 家企业微信无法送达（未关注或未绑定），改发短信\n", fallbacks)
	fmt.Fprintf(w, "静默时段：%d 条短信在静默时段内排队，结束后发送\n", quiet)
	fmt.Fprintf(w, "回执：已送达 %d，未送达 %d（沙箱回执，见 policypush deliveries show ID）\n", delivered, undelivered)
	var sample store.Delivery
	if db.Where("items > 2 AND state IN ?", acceptedStates).Order("id").Limit(1).Find(&sample).Error == nil && sample.ID != 0 {
		fmt.Fprintf(w, "示例：policypush --data-dir %s deliveries show %d\n", a.cfg.DataDir, sample.ID)
	}
}

var acceptedStates = []string{store.DeliverySent, store.DeliveryDelivered, store.DeliveryUndelivered}
