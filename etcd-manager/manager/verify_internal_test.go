package manager

import (
	"strings"
	"testing"
	"time"
)

// TestNextVerifyAt: the schedule counts from the later of the newest
// recorded verification and this term's last attempt; off at 0.
func TestNextVerifyAt(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	for _, c := range []struct {
		name              string
		recorded, attempt time.Time
		interval          time.Duration
		want              time.Time
		on                bool
	}{
		{"nothing yet: now", time.Time{}, time.Time{}, day, now, true},
		{"recorded by an earlier leader", now.Add(-time.Hour), time.Time{}, day, now.Add(23 * time.Hour), true},
		{"this term's failed attempt is later", now.Add(-2 * day), now.Add(-time.Minute), day, now.Add(day - time.Minute), true},
		{"overdue", now.Add(-3 * day), time.Time{}, day, now.Add(-2 * day), true},
		{"off", now, now, 0, time.Time{}, false},
	} {
		got, on := nextVerifyAt(c.recorded, c.attempt, c.interval, now)
		if !got.Equal(c.want) || on != c.on {
			t.Errorf("%s: %s %t, want %s %t", c.name, got, on, c.want, c.on)
		}
	}
}

// TestRequestVerifyNotLeader: without a verify goroutine (not the
// leader) a request is refused, not queued.
func TestRequestVerifyNotLeader(t *testing.T) {
	m := &Manager{}
	if err := m.requestVerify("after restore x"); err == nil || !strings.Contains(err.Error(), "not the leader") {
		t.Fatalf("requestVerify without a term: %v", err)
	}
}
