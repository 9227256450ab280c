package manager

import (
	"testing"
	"time"
)

func TestNextBackupAt(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	iv := 15 * time.Minute
	for _, tc := range []struct {
		name              string
		lastGood, lastTry time.Time
		interval          time.Duration
		want              time.Time
		wantOn            bool
	}{
		{"schedule off", t0, t0, 0, time.Time{}, false},
		{"nothing yet: now", time.Time{}, time.Time{}, iv, t0, true},
		{"after a failover: the earlier leader's backup counts", t0.Add(-10 * time.Minute), time.Time{}, iv, t0.Add(5 * time.Minute), true},
		{"overdue: now-ish (in the past)", t0.Add(-time.Hour), time.Time{}, iv, t0.Add(-45 * time.Minute), true},
		{"a failed attempt is retried an interval later", t0.Add(-time.Hour), t0.Add(-time.Minute), iv, t0.Add(14 * time.Minute), true},
		{"an attempt older than the last good one", t0.Add(-time.Minute), t0.Add(-2 * time.Minute), iv, t0.Add(14 * time.Minute), true},
	} {
		got, on := nextBackupAt(tc.lastGood, tc.lastTry, tc.interval, t0)
		if on != tc.wantOn || !got.Equal(tc.want) {
			t.Errorf("%s: got %s %v, want %s %v", tc.name, got, on, tc.want, tc.wantOn)
		}
	}
}

func TestFreshEnough(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	fresh := time.Minute
	for _, tc := range []struct {
		name                   string
		start, end, asked, now time.Time
		want                   bool
	}{
		{"never tried", time.Time{}, time.Time{}, time.Time{}, t0, false},
		{"running", t0.Add(-time.Second), time.Time{}, time.Time{}, t0, false},
		{"running again after an earlier one", t0.Add(-time.Second), t0.Add(-30 * time.Second), time.Time{}, t0, false},
		{"finished recently", t0.Add(-30 * time.Second), t0.Add(-20 * time.Second), time.Time{}, t0, true},
		{"finished long ago", t0.Add(-time.Hour), t0.Add(-time.Hour), time.Time{}, t0, false},
		{"the one asked for took longer than fresh", t0.Add(-5 * time.Minute), t0.Add(-time.Second), t0.Add(-6 * time.Minute), t0, true},
		{"an old one, asked for after it", t0.Add(-5 * time.Minute), t0.Add(-4 * time.Minute), t0.Add(-time.Second), t0, false},
	} {
		if got := freshEnough(tc.start, tc.end, tc.asked, tc.now, fresh); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
