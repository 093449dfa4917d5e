package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// The notice tables as they were before payout notices: narrow keys, no kind or ref (and the
// console's firm-and-policy index, which databases of that time may already have).
type narrowItem struct {
	MatchID    uint64    `gorm:"primaryKey;autoIncrement:false"`
	Channel    string    `gorm:"primaryKey;size:16"`
	DeliveryID uint64    `gorm:"not null;default:0;index"`
	CreditCode string    `gorm:"size:18;not null;index:ix_item_firm_policy,priority:1"`
	PolicyID   string    `gorm:"size:64;not null;index:ix_item_firm_policy,priority:2"`
	State      string    `gorm:"size:16;not null;default:''"`
	Note       string    `gorm:"size:200;not null;default:''"`
	Fallback   bool      `gorm:"not null;default:false"`
	QueuedAt   time.Time `gorm:"not null"`
}

func (narrowItem) TableName() string { return "delivery_items" }

type narrowDelivery struct {
	ID         uint64 `gorm:"primaryKey;autoIncrement"`
	MatchID    uint64 `gorm:"not null;uniqueIndex:ux_delivery,priority:1"`
	Channel    string `gorm:"size:16;not null;uniqueIndex:ux_delivery,priority:2"`
	Recipient  string `gorm:"size:64;not null;uniqueIndex:ux_delivery,priority:3"`
	CreditCode string `gorm:"size:18;not null"`
	PolicyID   string `gorm:"size:64;not null"`
	State      string `gorm:"size:16;not null"`
}

func (narrowDelivery) TableName() string { return "deliveries" }

// A database made before payout notices is brought to the wider notice keys on start, keeping its
// rows, so a match's payout notice can be queued next to its match notice.
func TestWidenNoticeKeys(t *testing.T) {
	db := testenv.OpenDB(t).DB
	m := db.Migrator()
	if err := m.DropTable(&store.DeliveryItem{}, &store.Delivery{}); err != nil {
		t.Fatal(err)
	}
	if err := m.CreateTable(&narrowItem{}, &narrowDelivery{}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if err := db.Create(&narrowItem{MatchID: 1, Channel: "sms", DeliveryID: 5, CreditCode: "X", PolicyID: "p", QueuedAt: now}).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Create(&narrowDelivery{MatchID: 1, Channel: "sms", Recipient: "138", CreditCode: "X", PolicyID: "p", State: "sent"}).Error; err != nil {
		t.Fatal(err)
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
	if err := db.Create(&store.Delivery{MatchID: 1, Channel: "sms", Recipient: "138", CreditCode: "X", PolicyID: "p", State: "queued", Kind: "paid", Ref: 9}).Error; err == nil {
		t.Fatal("the widened index accepted the same payout delivery twice")
	}
	var items []store.DeliveryItem
	db.Where("match_id = 1").Order("kind").Find(&items)
	if len(items) != 2 || items[0].DeliveryID != 5 || items[0].Kind != "" {
		t.Fatalf("rows after widening: %+v", items)
	}
}
