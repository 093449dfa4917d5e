package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// A database made before payout notices (narrow notice keys) is widened on start, keeping its rows,
// so a match's payout notice can be queued next to its match notice.
func TestWidenNoticeKeys(t *testing.T) {
	tdb := testenv.OpenDB(t)
	db := tdb.DB
	now := time.Now().UTC()
	if err := db.Create(&store.DeliveryItem{MatchID: 1, Channel: "sms", DeliveryID: 5, CreditCode: "X", PolicyID: "p", QueuedAt: now}).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Create(&store.Delivery{MatchID: 1, Channel: "sms", Recipient: "138", CreditCode: "X", PolicyID: "p", State: "sent"}).Error; err != nil {
		t.Fatal(err)
	}
	// Narrow the keys back to what the old schema had.
	var stmts []string
	if tdb.Driver == "mysql" {
		stmts = []string{"ALTER TABLE delivery_items DROP PRIMARY KEY, ADD PRIMARY KEY (match_id, channel)",
			"ALTER TABLE deliveries DROP INDEX ux_delivery, ADD UNIQUE INDEX ux_delivery (match_id, channel, recipient)"}
	} else {
		stmts = []string{"ALTER TABLE delivery_items RENAME TO old_items", "DROP INDEX IF EXISTS idx_delivery_items_delivery_id",
			`CREATE TABLE delivery_items (match_id integer, channel text, kind text DEFAULT '', ref integer DEFAULT 0, delivery_id integer NOT NULL DEFAULT 0,
				credit_code text NOT NULL, policy_id text NOT NULL, state text NOT NULL DEFAULT '', note text NOT NULL DEFAULT '',
				fallback numeric NOT NULL DEFAULT false, queued_at datetime NOT NULL, PRIMARY KEY (match_id, channel))`,
			"INSERT INTO delivery_items SELECT * FROM old_items", "DROP TABLE old_items",
			"DROP INDEX ux_delivery", "CREATE UNIQUE INDEX ux_delivery ON deliveries (match_id, channel, recipient)"}
	}
	for _, s := range stmts {
		if err := db.Exec(s).Error; err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if err := db.Create(&store.DeliveryItem{MatchID: 1, Channel: "sms", Kind: "paid", Ref: 9, CreditCode: "X", PolicyID: "p", QueuedAt: now}).Error; err == nil {
		t.Fatal("the narrowed key accepted a second item of the match: the test does not reproduce the old schema")
	}
	for range 2 { // the second run finds nothing to do
		if err := store.Migrate(context.Background(), db); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Create(&store.DeliveryItem{MatchID: 1, Channel: "sms", Kind: "paid", Ref: 9, CreditCode: "X", PolicyID: "p", QueuedAt: now}).Error; err != nil {
		t.Fatalf("payout item next to the match item: %v", err)
	}
	if err := db.Create(&store.Delivery{MatchID: 1, Channel: "sms", Recipient: "138", CreditCode: "X", PolicyID: "p", State: "queued", Kind: "paid", Ref: 9}).Error; err != nil {
		t.Fatalf("payout delivery next to the match delivery: %v", err)
	}
	if err := db.Create(&store.DeliveryItem{MatchID: 1, Channel: "sms", Kind: "paid", Ref: 9, CreditCode: "X", PolicyID: "p", QueuedAt: now}).Error; err == nil {
		t.Fatal("the widened key accepted the same payout item twice")
	}
	var items []store.DeliveryItem
	db.Where("match_id = 1").Order("kind").Find(&items)
	if len(items) != 2 || items[0].DeliveryID != 5 {
		t.Fatalf("rows after widening: %+v", items)
	}
}
