package notify

import (
	"sync"
	"time"
)

// Failover configures the circuit breaker in front of each provider of a channel: after Threshold
// consecutive transient failures a provider is passed over for Cooldown, and the next one in
// priority order takes its notices. Only notices whose last attempt failed definitely move; one
// whose outcome is unknown stays with its provider until that provider has been asked.
type Failover struct {
	Threshold int
	Cooldown  time.Duration
}

// route is a channel and its providers in priority order.
type route struct {
	channel   string
	providers []*provider
}

// provider is one sender with its health: a breaker for transient failures and a pause for quota.
type provider struct {
	sender Sender

	mu          sync.Mutex
	failures    int       // consecutive transient failures
	openUntil   time.Time // breaker open: prefer the next provider until then
	pausedUntil time.Time // out of quota: send nothing until then
}

func (p *provider) name() string { return p.sender.Name() }

// pick chooses the provider for a new attempt: the first that is neither paused nor broken; if
// all that are not paused are broken, the first of those (a breaker only sets preference, it must
// not stall the channel); if every provider is paused, none, and when the first pause ends.
func (r *route) pick(now time.Time) (*provider, time.Time) {
	var fallback *provider
	var resume time.Time
	for _, p := range r.providers {
		p.mu.Lock()
		pausedUntil, openUntil := p.pausedUntil, p.openUntil
		p.mu.Unlock()
		switch {
		case now.Before(pausedUntil):
			if resume.IsZero() || pausedUntil.Before(resume) {
				resume = pausedUntil
			}
		case !now.Before(openUntil):
			return p, time.Time{}
		case fallback == nil:
			fallback = p
		}
	}
	if fallback != nil {
		return fallback, time.Time{}
	}
	return nil, resume
}

// byName finds the provider a delivery was last attempted with.
func (r *route) byName(name string) *provider {
	for _, p := range r.providers {
		if p.name() == name {
			return p
		}
	}
	return nil
}

// pausedUntilAt returns the end of a provider's quota pause, or zero when it is not paused.
func (p *provider) pausedUntilAt(now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Before(p.pausedUntil) {
		return p.pausedUntil
	}
	return time.Time{}
}

// observe feeds the outcome of an attempt to the breaker and the quota pause.
func (p *provider) observe(now time.Time, class ErrorClass, ok bool, f Failover, pause time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case ok:
		p.failures = 0
		p.openUntil = time.Time{}
	case class == Transient:
		p.failures++
		if f.Threshold > 0 && p.failures >= f.Threshold {
			p.openUntil = now.Add(f.Cooldown)
			p.failures = 0
		}
	case class == Quota:
		p.pausedUntil = now.Add(pause)
	}
	providerOpen.WithLabelValues(p.sender.Name()).Set(boolGauge(now.Before(p.openUntil)))
	providerPaused.WithLabelValues(p.sender.Name()).Set(boolGauge(now.Before(p.pausedUntil)))
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// ProviderHealth is what a provider's breaker and pause say right now.
type ProviderHealth struct {
	Channel     string     `json:"channel"`
	Provider    string     `json:"provider"`
	Failures    int        `json:"consecutive_failures"`
	OpenUntil   *time.Time `json:"circuit_open_until,omitempty"`
	PausedUntil *time.Time `json:"paused_until,omitempty"`
}

func (p *provider) health(channel string, now time.Time) ProviderHealth {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := ProviderHealth{Channel: channel, Provider: p.sender.Name(), Failures: p.failures}
	if now.Before(p.openUntil) {
		t := p.openUntil
		h.OpenUntil = &t
	}
	if now.Before(p.pausedUntil) {
		t := p.pausedUntil
		h.PausedUntil = &t
	}
	return h
}
