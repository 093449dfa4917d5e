// Package admin owns the console and the JSON API: server-rendered pages in Chinese for policy
// departments, park managers and enterprises, and /api/v1 for integrations. It may call every
// other package; nothing calls it. Handlers follow one shape: read params, validate, query, render.
package admin

import (
	"context"
	"embed"
	"encoding/json"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/notify"
)

//go:embed templates/*.html
var templateFS embed.FS

// Options are the console's dependencies. Bus may be nil.
type Options struct {
	DB  *gorm.DB
	Bus *bus.Bus
	// SandboxDir holds the sandbox providers' records; empty when no sandbox runs (production).
	SandboxDir string
	Log        *slog.Logger
	Location   *time.Location
}

// Server is the console's HTTP handler.
type Server struct {
	opts  Options
	mux   *http.ServeMux
	pages map[string]*template.Template
}

// New builds the handler.
func New(o Options) *Server {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Location == nil {
		o.Location = time.UTC
	}
	s := &Server{opts: o, mux: http.NewServeMux(), pages: map[string]*template.Template{}}
	funcs := template.FuncMap{
		"amount": notify.FormatAmount,
		"mask":   MaskPhone,
		"deref": func(f *float64) float64 {
			if f == nil {
				return 0
			}
			return *f
		},
		"date": func(t time.Time) string { return t.Format("2006-01-02") },
		"stateLabel": func(s string) string {
			if l, ok := stateLabels[s]; ok {
				return l
			}
			return s
		},
	}
	for _, name := range []string{"index", "policy", "park", "sandbox"} {
		s.pages[name] = template.Must(template.New("layout.html").Funcs(funcs).
			ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
	}
	s.routes()
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
	w.Header().Set("Referrer-Policy", "no-referrer")
	s.mux.ServeHTTP(w, r)
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET /{$}", s.index)
	s.mux.HandleFunc("GET /p/{id}", s.policyPage)
	s.mux.HandleFunc("GET /parks/{park}", s.parkPage)
	s.mux.HandleFunc("GET /sandbox", s.sandboxPage)
	s.mux.HandleFunc("GET /api/v1/status", s.apiStatus)
}

var stateLabels = map[string]string{
	"queued": "排队中", "sent": "已发送", "delivered": "已送达", "failed": "发送失败（重试中）",
	"dead": "发送失败", "skipped": "未发送", "": "待通知",
}

// MaskPhone keeps the first three and last four digits: 138****1234.
func MaskPhone(p string) string {
	r := []rune(p)
	if len(r) < 8 {
		if len(r) == 0 {
			return ""
		}
		return "****"
	}
	return string(r[:3]) + "****" + string(r[len(r)-4:])
}

func (s *Server) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := s.pages[name].Execute(w, data); err != nil {
		s.opts.Log.Error("render page", "page", name, "err", err)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) fail(w http.ResponseWriter, status int, msg string, err error) {
	if err != nil {
		s.opts.Log.Error(msg, "err", err)
	}
	http.Error(w, msg, status)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz reflects database and NATS connectivity.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"database": "ok", "nats": "ok"}
	status := http.StatusOK
	if sqlDB, err := s.opts.DB.DB(); err != nil || sqlDB.PingContext(ctx) != nil {
		checks["database"], status = "unreachable", http.StatusServiceUnavailable
	}
	if s.opts.Bus == nil {
		checks["nats"] = "not used by this process"
	} else if err := s.opts.Bus.Healthy(); err != nil {
		checks["nats"], status = err.Error(), http.StatusServiceUnavailable
	}
	writeJSON(w, status, checks)
}
