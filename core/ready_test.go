package core

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/policypush/policypush/internal/testenv"
)

type health struct{ err error }

func (h health) Healthy() error { return h.err }

func TestCheckReady(t *testing.T) {
	t.Parallel()
	db := testenv.OpenDB(t).DB
	ctx := context.Background()
	if r := CheckReady(ctx, db, nil); r != (Readiness{"ok", "not used by this process"}) || r.Status() != http.StatusOK {
		t.Errorf("db, no bus: %+v %d", r, r.Status())
	}
	if r := CheckReady(ctx, db, health{}); r != (Readiness{"ok", "ok"}) || r.Status() != http.StatusOK {
		t.Errorf("db, bus: %+v", r)
	}
	if r := CheckReady(ctx, db, health{errors.New("nats: no servers")}); r.NATS != "nats: no servers" || r.Status() != http.StatusServiceUnavailable {
		t.Errorf("bus down: %+v %d", r, r.Status())
	}
	if r := CheckReady(ctx, nil, nil); r.Database != "not opened" || r.Status() != http.StatusOK {
		t.Errorf("no db: %+v", r)
	}
	closed := testenv.OpenDB(t).DB
	sqlDB, _ := closed.DB()
	_ = sqlDB.Close()
	if r := CheckReady(ctx, closed, health{}); r.Database != "unreachable" || r.Status() != http.StatusServiceUnavailable {
		t.Errorf("db closed: %+v %d", r, r.Status())
	}
}
