package stage

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// HTTP serves a handler on an address as a stage: the console (admin.Server behind the delivery
// routes). NewHTTP listens at once, so the address is known before Run.
type HTTP struct {
	name  string
	ln    net.Listener
	srv   *http.Server
	grace time.Duration

	mu      sync.Mutex
	running bool
	closed  bool
}

// NewHTTP listens on addr ("127.0.0.1:0" picks a port) and serves the handler that handler makes
// for the address it got (the console tells the sandbox where to send its reports).
func NewHTTP(name, addr string, handler func(addr string) http.Handler) (*HTTP, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	got := ln.Addr().String()
	return &HTTP{name: name, ln: ln, grace: 5 * time.Second,
		srv: &http.Server{Addr: got, Handler: handler(got), ReadHeaderTimeout: 10 * time.Second}}, nil
}

// Addr is the address it listens on.
func (s *HTTP) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then shuts down (requests in flight get up to 5 s) and returns once
// the server and its handlers are done, including a handler's own background work (a handler
// with a Wait method is waited for).
func (s *HTTP) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.closed || s.running {
		s.mu.Unlock()
		return errors.New(s.name + ": already run or closed")
	}
	s.running = true
	s.mu.Unlock()
	served := make(chan error, 1)
	go func() { served <- s.srv.Serve(s.ln) }()
	select {
	case err := <-served: // the listener failed
		return fmt.Errorf("%s: %w", s.name, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.grace)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if err != nil {
		_ = s.srv.Close()
	}
	// work the handler does beside its requests (the console's last-use updates) ends too
	if w, ok := s.srv.Handler.(interface{ Wait() }); ok {
		w.Wait()
	}
	if serr := <-served; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", s.name, serr)
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: shutdown: %w", s.name, err)
	}
	return nil
}

// Ready is OK while it listens.
func (s *HTTP) Ready(context.Context) Check {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Check{Name: s.name, Status: "closed", Down: true}
	}
	return OK(s.name, map[string]string{"addr": s.Addr()})
}

// Close releases the listener of a server that never ran; after Run it has nothing left to do.
func (s *HTTP) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if !s.running {
		return s.ln.Close()
	}
	return nil
}
