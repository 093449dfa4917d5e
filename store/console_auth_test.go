package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// SessionUser reads a session and its account in one statement, every column of both, and finds
// nothing for an unknown session or one whose account is gone.
func TestSessionUser(t *testing.T) {
	db := testenv.OpenDB(t).DB
	ctx := context.Background()
	at := time.Date(2026, 12, 7, 10, 30, 0, 0, time.UTC)
	u := store.User{Username: "zhang", PasswordHash: "$2a$hash", Role: "park_manager", Department: "园区办",
		ParkID: "SIP", RegionPrefix: "3205", CreatedAt: at}
	if err := db.Create(&u).Error; err != nil {
		t.Fatal(err)
	}
	other := store.User{Username: "li", PasswordHash: "$2a$other", Role: "admin", CreatedAt: at}
	if err := db.Create(&other).Error; err != nil {
		t.Fatal(err)
	}
	sess := store.Session{IDHash: "h1", UserID: u.ID, CSRFToken: "csrf1", CreatedAt: at,
		LastSeenAt: at.Add(time.Minute), ExpiresAt: at.Add(12 * time.Hour)}
	for _, s := range []store.Session{sess, {IDHash: "h2", UserID: other.ID, CSRFToken: "csrf2", CreatedAt: at,
		LastSeenAt: at, ExpiresAt: at.Add(time.Hour)}, {IDHash: "orphan", UserID: 999, CSRFToken: "x", CreatedAt: at,
		LastSeenAt: at, ExpiresAt: at.Add(time.Hour)}} {
		if err := store.CreateSession(ctx, db, &s); err != nil {
			t.Fatal(err)
		}
	}

	gotS, gotU, err := store.SessionUser(ctx, db, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if gotS.IDHash != sess.IDHash || gotS.UserID != u.ID || gotS.CSRFToken != sess.CSRFToken ||
		!gotS.CreatedAt.Equal(sess.CreatedAt) || !gotS.LastSeenAt.Equal(sess.LastSeenAt) || !gotS.ExpiresAt.Equal(sess.ExpiresAt) {
		t.Errorf("session: got %+v, want %+v", gotS, sess)
	}
	if gotU.ID != u.ID || gotU.Username != u.Username || gotU.PasswordHash != u.PasswordHash || gotU.Role != u.Role ||
		gotU.Department != u.Department || gotU.ParkID != u.ParkID || gotU.RegionPrefix != u.RegionPrefix || !gotU.CreatedAt.Equal(u.CreatedAt) {
		t.Errorf("user: got %+v, want %+v", gotU, u)
	}
	if _, gotU, err := store.SessionUser(ctx, db, "h2"); err != nil || gotU.ID != other.ID || gotU.Username != "li" {
		t.Errorf("second session: %+v, %v", gotU, err)
	}
	for _, hash := range []string{"unknown", "orphan"} {
		if _, _, err := store.SessionUser(ctx, db, hash); !errors.Is(err, gorm.ErrRecordNotFound) {
			t.Errorf("%s: got %v, want not found", hash, err)
		}
	}
}
