// Package sandbox runs local stand-ins for the WeChat official-account API, Tencent Cloud SMS and
// Aliyun SMS that the real SDK clients can talk to. They record what they accept, remember delivery
// ids the way WeChat's client_msg_id does, and inject faults on demand, so the notification engine's
// retry, fallback and "nothing sent twice" behaviour can be checked end to end without the internet.
package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/policypush/policypush/internal/stage"
)

// Provider names, as used in Options, SetFaults, Counts and Record.Provider.
const (
	ProviderWeChat  = "wechat"
	ProviderTencent = "tencent"
	ProviderAliyun  = "aliyun"
)

// CodeHTTP5xx as a fault code makes the provider answer HTTP 503 instead of an API error.
const CodeHTTP5xx = "5xx"

// hangLimit bounds how long a simulated timeout holds a request when the client never gives up.
const hangLimit = 30 * time.Second

// Faults describes the trouble one provider simulates. Only send requests are affected; WeChat
// token requests always succeed.
type Faults struct {
	ErrorRate   float64       // 0..1 share of send requests answered with an error
	Codes       []string      // codes to draw injected errors from; default: the provider's "system busy" code
	Latency     time.Duration // added to every send
	TimeoutRate float64       // share of sends that hang until the client gives up (at most 30 s)
	Seed        int64         // makes the fault sequence repeatable
}

// Options configures Start.
type Options struct {
	Addr string // listen address; default "127.0.0.1:0"
	// Dir holds wechat.jsonl and sms.jsonl. Records already there are loaded, so delivery ids stay
	// deduplicated across restarts. Empty keeps everything in memory.
	Dir                     string
	WeChat, Tencent, Aliyun Faults
	// ExpireTokenEvery makes every Nth WeChat send answer 40001 and revoke the token it carried, so
	// the client must fetch a new one. 0 never does.
	ExpireTokenEvery int
	// Receipts, when its URLs are set, makes the sandbox report on every message it accepts the way
	// the providers do (WeChat TEMPLATESENDJOBFINISH event, Tencent and Aliyun status reports).
	Receipts ReceiptOptions
}

// Server is a running sandbox. One listener serves all three providers: WeChat by its /cgi-bin/
// paths, Tencent by the X-TC-Action header, Aliyun by the RPC Action parameter.
type Server struct {
	ln    net.Listener
	http  *http.Server
	store *store
	stop  chan struct{} // closed by Close to release hanging handlers

	// Close waits for handlers itself: http.Server.Shutdown cannot be relied on to, as it gives up
	// on connections the client dialed but never used only after 5 s.
	handlersMu sync.Mutex
	closing    bool
	handlers   sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
	served    chan error
	serveOnce sync.Once
	serving   bool // Serve was started (under handlersMu)

	faultsMu sync.Mutex
	faults   map[string]*faultState

	wx     wechatState
	nextID atomic.Int64

	receipts *reporter
}

type faultState struct {
	f   Faults
	rng *mrand.Rand
}

var defaultCodes = map[string]string{
	ProviderWeChat:  "-1",
	ProviderTencent: "InternalError",
	ProviderAliyun:  "isp.SYSTEM_ERROR",
}

// Start listens on o.Addr and serves until Close is called or ctx ends (New, then Run in the
// background).
func Start(ctx context.Context, o Options) (*Server, error) {
	s, err := New(o)
	if err != nil {
		return nil, err
	}
	s.serve()
	go func() { _ = s.Run(ctx) }() // ends with ctx or Close; Close's error is the owner's to fetch
	return s, nil
}

// New opens the records in o.Dir and listens on o.Addr; Run serves.
func New(o Options) (*Server, error) {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	st, err := openStore(o.Dir)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("sandbox: listen: %w", err), st.close())
	}
	s := &Server{
		ln:     ln,
		store:  st,
		stop:   make(chan struct{}),
		served: make(chan error, 1),
		faults: map[string]*faultState{},
		wx:     wechatState{tokens: map[string]bool{}, expireEvery: o.ExpireTokenEvery},
	}
	// Provider ids must stay unique across restarts on the same Dir: continue after the largest one
	// on file, or from the clock when that is further on.
	s.nextID.Store(max(time.Now().UnixMicro(), st.maxID))
	s.SetFaults(ProviderWeChat, o.WeChat)
	s.SetFaults(ProviderTencent, o.Tencent)
	s.SetFaults(ProviderAliyun, o.Aliyun)
	s.receipts = newReporter(o.Receipts, s.stop)
	s.http = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// serve starts serving once (Start serves before it returns, Run when it has not).
func (s *Server) serve() {
	s.serveOnce.Do(func() {
		s.handlersMu.Lock()
		closing := s.closing
		s.serving = !closing
		s.handlersMu.Unlock()
		if !closing {
			go func() { s.served <- s.http.Serve(s.ln) }()
		}
	})
}

// Run serves until ctx ends or Close is called, then closes the server and returns Close's error.
func (s *Server) Run(ctx context.Context) error {
	s.serve()
	select {
	case <-ctx.Done():
	case <-s.stop:
	}
	return s.Close()
}

// Ready is OK while the sandbox serves.
func (s *Server) Ready(context.Context) stage.Check {
	s.handlersMu.Lock()
	defer s.handlersMu.Unlock()
	if s.closing {
		return stage.Check{Name: "sandbox", Status: "closed", Down: true}
	}
	return stage.OK("sandbox", map[string]any{"addr": s.HostPort(), "records": s.Counts()})
}

// URL is the base URL for the WeChat client, e.g. "http://127.0.0.1:PORT".
func (s *Server) URL() string { return "http://" + s.HostPort() }

// HostPort is the endpoint for the SMS SDKs, e.g. "127.0.0.1:PORT".
func (s *Server) HostPort() string { return s.ln.Addr().String() }

// Close stops the server, waiting briefly for requests in flight, and closes the record files.
// It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.handlersMu.Lock()
		s.closing = true
		s.handlersMu.Unlock()
		close(s.stop)

		var errs []error
		// Handlers end promptly once stop is closed, so the grace period only has to cover flushing
		// their responses; what remains after it are connections that never carried a request.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		if err := s.http.Shutdown(ctx); err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				errs = append(errs, fmt.Errorf("sandbox: shutdown: %w", err))
			}
			if err := s.http.Close(); err != nil {
				errs = append(errs, fmt.Errorf("sandbox: close connections: %w", err))
			}
		}
		if s.serving {
			if err := <-s.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs = append(errs, fmt.Errorf("sandbox: serve: %w", err))
			}
		} else {
			_ = s.ln.Close()
		}
		s.handlers.Wait()
		s.receipts.wait()
		errs = append(errs, s.store.close())
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// SetFaults replaces a provider's faults and restarts its random sequence from f.Seed.
func (s *Server) SetFaults(provider string, f Faults) {
	s.faultsMu.Lock()
	defer s.faultsMu.Unlock()
	f.Codes = append([]string(nil), f.Codes...)
	s.faults[provider] = &faultState{f: f, rng: mrand.New(mrand.NewSource(f.Seed))}
}

// Counts returns the number of accepted records per provider, including those loaded from Dir.
func (s *Server) Counts() map[string]int { return s.store.countsCopy() }

// fault is what to do to one send request.
type fault struct {
	latency time.Duration
	hang    bool
	code    string // injected error code; empty for none
}

func (s *Server) drawFault(provider string) fault {
	s.faultsMu.Lock()
	defer s.faultsMu.Unlock()
	fs := s.faults[provider]
	out := fault{latency: fs.f.Latency}
	if fs.f.TimeoutRate > 0 && fs.rng.Float64() < fs.f.TimeoutRate {
		out.hang = true
		return out
	}
	if fs.f.ErrorRate > 0 && fs.rng.Float64() < fs.f.ErrorRate {
		codes := fs.f.Codes
		if len(codes) == 0 {
			codes = []string{defaultCodes[provider]}
		}
		out.code = codes[fs.rng.Intn(len(codes))]
	}
	return out
}

// applyFault waits out latency and simulated hangs. It reports false when the request should get no
// meaningful answer (the client left, the sandbox is stopping, or the hang ran its course).
func (s *Server) applyFault(r *http.Request, f fault) bool {
	if f.latency > 0 && !s.sleep(r, f.latency) {
		return false
	}
	if f.hang {
		s.sleep(r, hangLimit)
		return false
	}
	return true
}

func (s *Server) sleep(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-s.stop:
	}
	return false
}

// ServeHTTP routes a request to the provider it is addressed to.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handlersMu.Lock()
	if s.closing {
		s.handlersMu.Unlock()
		http.Error(w, "sandbox: shutting down", http.StatusServiceUnavailable)
		return
	}
	s.handlers.Add(1)
	s.handlersMu.Unlock()
	defer s.handlers.Done()

	switch {
	case strings.HasPrefix(r.URL.Path, "/cgi-bin/"):
		s.serveWeChat(w, r)
	case r.Header.Get("X-TC-Action") != "":
		s.serveTencent(w, r)
	case r.URL.Query().Get("Action") != "" || r.Header.Get("x-acs-action") != "":
		s.serveAliyun(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) newID() int64 { return s.nextID.Add(1) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

func requestID() string {
	h := randomHex(16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client hung up; nothing left to tell it
}
