package admin

import (
	"context"
	"errors"
	"fmt"
	"github.com/policypush/policypush/store"
	"net/http"
	"strings"
	"time"
)

// Every GET page and API request runs under Options.QueryTimeout (config console.query_timeout):
// its context, which every query takes (WithContext(r.Context())), ends at the deadline or when
// the client goes away, whichever comes first. MySQL then kills the statement; on SQLite the store
// interrupts it (store/interrupt.go). Either way the connection is back in the pool at once, so a
// heavy page can never starve the relay, the notifier or the receipts. The request answers 503
// with code "timeout" and a message in Chinese; a client that went away gets nothing (nobody
// reads it) and a log line.
//
// Exports and the policy preview are excepted from the deadline (not from the cancellation):
// they stream or evaluate for as long as the client waits. Unsafe methods are too: a write is
// short, and cutting a registry change or a payout run in the middle helps nobody.

// withDeadline is the context of a request to rt.
func (s *Server) withDeadline(rt route, r *http.Request) (*http.Request, context.CancelFunc) {
	if rt.unsafe() || strings.HasSuffix(rt.path, "/export") || strings.HasSuffix(rt.path, "/preview") {
		return r, func() {}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.QueryTimeout)
	return r.WithContext(ctx), cancel
}

// timedOut rewrites the answer to a request whose context ended: a query that failed because of
// the deadline is not "the database is unreachable".
func (s *Server) timedOut(r *http.Request, status int, msg string, cause error) (int, string, string, bool) {
	if status < 500 {
		return status, msg, "", false
	}
	switch err := r.Context().Err(); {
	case errors.Is(err, context.DeadlineExceeded), store.IsStatementTimeout(cause):
		// the server's own limit (store.BoundStatements) may stop the statement a moment before
		// the request's context ends: the same timeout
		return http.StatusServiceUnavailable, fmt.Sprintf("查询超时：本次请求超过 %s仍未完成，已取消。请缩小筛选范围（政策、区划、园区）后重试，或稍后再试",
			roundDuration(s.opts.QueryTimeout)), "timeout", true
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "请求已取消（客户端已断开）", "canceled", true
	}
	return status, msg, "", false
}

// roundDuration says a duration in Chinese: 5 秒, 1.5 秒, 2 分钟.
func roundDuration(d time.Duration) string {
	switch {
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%d 分钟", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%d 秒", d/time.Second)
	}
	return fmt.Sprintf("%.1f 秒", d.Seconds())
}
