package notify

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// QuietHours is a daily window in which some channels send nothing (no SMS at night). Notices that
// fall due inside it wait until it ends; they are queued, never dropped.
type QuietHours struct {
	Start, End time.Duration // since local midnight; Start > End spans midnight; Start == End is off
	Channels   []string
	Location   *time.Location
}

// ParseQuietHours reads "HH:MM" (or "HH:MM:SS") bounds in loc.
func ParseQuietHours(start, end string, channels []string, loc *time.Location) (QuietHours, error) {
	s, err := timeOfDay(start)
	if err != nil {
		return QuietHours{}, fmt.Errorf("quiet hours start: %w", err)
	}
	e, err := timeOfDay(end)
	if err != nil {
		return QuietHours{}, fmt.Errorf("quiet hours end: %w", err)
	}
	if loc == nil {
		loc = time.UTC
	}
	return QuietHours{Start: s, End: e, Channels: channels, Location: loc}, nil
}

func timeOfDay(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	layout := "15:04"
	if strings.Count(s, ":") == 2 {
		layout = "15:04:05"
	}
	t, err := time.Parse(layout, s)
	if err != nil {
		return 0, fmt.Errorf("%q is not HH:MM (24-hour clock)", s)
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute + time.Duration(t.Second())*time.Second, nil
}

// Until reports whether channel must stay quiet at t, and until when.
func (q QuietHours) Until(channel string, t time.Time) (time.Time, bool) {
	if q.Start == q.End || !slices.Contains(q.Channels, channel) {
		return time.Time{}, false
	}
	loc := q.Location
	if loc == nil {
		loc = time.UTC
	}
	lt := t.In(loc)
	midnight := time.Date(lt.Year(), lt.Month(), lt.Day(), 0, 0, 0, 0, loc)
	now := lt.Sub(midnight)
	inside := false
	if q.Start < q.End {
		inside = now >= q.Start && now < q.End
	} else {
		inside = now >= q.Start || now < q.End
	}
	if !inside {
		return time.Time{}, false
	}
	end := midnight.Add(q.End)
	if !end.After(lt) {
		end = midnight.AddDate(0, 0, 1).Add(q.End)
	}
	return end.UTC(), true
}

// Throttle keeps the engine's own pace per firm and channel, below the providers' per-number caps
// (Tencent: one message per 30 s and ten a day to the same number; Aliyun: one a minute, ten a
// day), so the provider never has to refuse a notice. 0 turns a limit off.
type Throttle struct {
	MinInterval time.Duration // between two messages to the same firm on a channel
	PerDay      int           // messages to the same firm on a channel within 24 hours
}

// next says when a firm that was last sent to at last and had count messages in the last 24 hours
// (the oldest at first) may get the next one; zero when at once.
func (th Throttle) next(now time.Time, count int, first, last *time.Time) time.Time {
	var at time.Time
	if th.PerDay > 0 && count >= th.PerDay && first != nil {
		at = first.Add(24 * time.Hour)
	}
	if th.MinInterval > 0 && last != nil {
		if t := last.Add(th.MinInterval); t.After(at) {
			at = t
		}
	}
	if !at.After(now) {
		return time.Time{}
	}
	return at
}
