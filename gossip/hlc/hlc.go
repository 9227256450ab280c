// Package hlc is a hybrid logical clock: timestamps that follow physical time
// when clocks agree but never go backwards and always order an event after
// every event it has seen, whatever the local wall clock says. Gossip records
// are versioned with it instead of with wall time.
package hlc

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Timestamp is a hybrid logical clock reading: the largest physical time seen
// (Unix nanoseconds) and a logical counter that orders events within it.
type Timestamp struct {
	Wall    int64  `json:"wall"`
	Logical uint32 `json:"logical"`
}

// Less reports whether t orders before u.
func (t Timestamp) Less(u Timestamp) bool {
	return t.Wall < u.Wall || (t.Wall == u.Wall && t.Logical < u.Logical)
}

// IsZero reports whether t is the zero timestamp.
func (t Timestamp) IsZero() bool { return t.Wall == 0 && t.Logical == 0 }

// Time returns the physical part as a time.Time.
func (t Timestamp) Time() time.Time { return time.Unix(0, t.Wall) }

func (t Timestamp) String() string {
	return fmt.Sprintf("%s+%d", t.Time().UTC().Format(time.RFC3339Nano), t.Logical)
}

// ErrAhead is returned by Update when a remote timestamp is further ahead of
// the local physical clock than the clock's maximum offset.
var ErrAhead = errors.New("remote clock is ahead beyond the maximum offset")

// Clock is a hybrid logical clock. Its zero value is not usable; call New.
type Clock struct {
	now       func() time.Time
	maxOffset time.Duration

	mu   sync.Mutex // guards last
	last Timestamp
}

// New returns a clock reading physical time from now (time.Now when nil).
// Update refuses remote timestamps more than maxOffset ahead of now; zero
// disables that check.
func New(now func() time.Time, maxOffset time.Duration) *Clock {
	if now == nil {
		now = time.Now
	}
	return &Clock{now: now, maxOffset: maxOffset}
}

// Physical returns the clock's physical time source reading.
func (c *Clock) Physical() time.Time { return c.now() }

// MaxOffset returns the configured maximum offset.
func (c *Clock) MaxOffset() time.Duration { return c.maxOffset }

// Now returns a timestamp for a local event, greater than every timestamp
// returned or observed before.
func (c *Clock) Now() Timestamp {
	pt := c.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	if pt > c.last.Wall {
		c.last = Timestamp{Wall: pt}
	} else {
		c.last.Logical++
		if c.last.Logical == 0 { // counter wrapped: move the wall part on
			c.last.Wall++
		}
	}
	return c.last
}

// Check reports ErrAhead when remote is further ahead of the local physical
// clock than the maximum offset, without changing the clock.
func (c *Clock) Check(remote Timestamp) error {
	if c.maxOffset <= 0 {
		return nil
	}
	pt := c.now()
	if ahead := remote.Time().Sub(pt); ahead > c.maxOffset {
		return fmt.Errorf("%w: %s ahead (max %s)", ErrAhead, ahead.Round(time.Millisecond), c.maxOffset)
	}
	return nil
}

// Update folds a received timestamp into the clock so that every later Now
// orders after it. It refuses (ErrAhead) a timestamp too far in the future,
// so one node with a wrong clock cannot drag every clock forward.
func (c *Clock) Update(remote Timestamp) error {
	if err := c.Check(remote); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last.Less(remote) {
		c.last = remote
	}
	return nil
}

// Last returns the latest timestamp issued or observed.
func (c *Clock) Last() Timestamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}
