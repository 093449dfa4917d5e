package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/policypush/policypush/internal/testenv"
)

// serve, run in this process on the embedded (or the test's) NATS with the sandbox providers, is
// ready on /readyz and /readyz/delivery, and once its context ends it returns only after every
// goroutine it started — console, relay, notifiers, reconciliation, matcher, sandbox, embedded NATS —
// has stopped.
func TestServeStopsEveryGoroutineItStarted(t *testing.T) {
	before := goleak.IgnoreCurrent()
	dir := t.TempDir()
	sfx := testenv.Suffix()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // fault_test.go
	for k, v := range map[string]string{
		"POLICYPUSH_CONFIG": os.DevNull, "POLICYPUSH_DATABASE_DRIVER": "sqlite", "POLICYPUSH_DATABASE_DSN": "",
		"POLICYPUSH_NATS_URL": testenv.NATSURL(t), "POLICYPUSH_NATS_STREAM": "PPLIFE_" + sfx,
		"POLICYPUSH_NATS_SUBJECT_PREFIX": "pplife" + sfx, "POLICYPUSH_HTTP_ADDR": addr,
		"POLICYPUSH_SANDBOX_ENABLED": "true", "POLICYPUSH_WECHAT_ENABLED": "true", "POLICYPUSH_SMS_ENABLED": "true",
		"POLICYPUSH_SANDBOX_RECEIPTS_ENABLED": "true",
	} {
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		root := rootCmd()
		root.SetArgs([]string{"--data-dir", filepath.Join(dir, "data"), "serve"})
		done <- root.ExecuteContext(ctx)
	}()

	for _, path := range []string{"/readyz", "/readyz/delivery"} {
		var body map[string]any
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get("http://" + addr + path)
			if err == nil {
				body = nil
				_ = json.NewDecoder(resp.Body).Decode(&body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case err := <-done:
				t.Fatalf("serve returned before %s was ready: %v", path, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready in 30s: %v %v", path, err, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if body["database"] != "ok" || body["nats"] != "ok" {
			t.Fatalf("%s = %v, want database and nats ok", path, body)
		}
		if path == "/readyz/delivery" && body["notifier"] != "ok" {
			t.Fatalf("%s = %v, want the notifier's consumers bound", path, body)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return within 30s of its context ending")
	}
	if url := testenv.NATSURL(t); url != "" {
		t.Cleanup(func() { deleteStreams(t, url, "PPLIFE_"+sfx) })
	}
	// Idle keep-alive connections of this test's own HTTP client are not serve's.
	http.DefaultClient.CloseIdleConnections()
	goleak.VerifyNone(t, before)
}

// deleteStreams removes a test's streams from an external NATS.
func deleteStreams(t *testing.T, url, stream string) {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Logf("delete streams: %v", err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range []string{stream, stream + "_REGISTRY", stream + "_MATCH"} {
		_ = js.DeleteStream(ctx, s)
	}
}
