// Package testclock is the one test clock of qshield's tests: a clock that
// moves only when the test moves it (or, with a step, by a fixed amount on
// every reading). Components take a `Now func() time.Time`; tests pass
// (*Clock).Now. It is safe for concurrent use.
package testclock

import (
	"sync"
	"time"
)

// Clock is a manual clock.
type Clock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

// New returns a clock reading t.
func New(t time.Time) *Clock { return &Clock{t: t} }

// Stepping returns a clock reading t first and step later on every reading
// after (deterministic, strictly increasing timestamps).
func Stepping(t time.Time, step time.Duration) *Clock { return &Clock{t: t, step: step} }

// Now returns the clock's time (and advances it by the step, if any).
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = c.t.Add(c.step)
	return t
}

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Set sets the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
