package bus

import "time"

// SetEnsureRetry shortens the retry of EnsureStream and EnsureConsumer for a test.
func SetEnsureRetry(attempts int, delay time.Duration) (restore func()) {
	a, d := ensureAttempts, ensureDelay
	ensureAttempts, ensureDelay = attempts, delay
	return func() { ensureAttempts, ensureDelay = a, d }
}
