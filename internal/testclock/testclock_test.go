package testclock

import (
	"sync"
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	c := New(t0)
	for i := 0; i < 2; i++ {
		if !c.Now().Equal(t0) {
			t.Fatal("a clock without a step moved by itself")
		}
	}
	c.Add(time.Minute)
	if got := c.Now(); !got.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after Add: %v", got)
	}
	c.Set(t0)
	if !c.Now().Equal(t0) {
		t.Fatal("Set")
	}
	s := Stepping(t0, time.Second)
	if a, b := s.Now(), s.Now(); !a.Equal(t0) || !b.Equal(t0.Add(time.Second)) {
		t.Fatalf("stepping: %v %v", a, b)
	}
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); s.Now() }()
	}
	wg.Wait()
	if got := s.Now(); !got.Equal(t0.Add(102 * time.Second)) {
		t.Fatalf("concurrent readings lost steps: %v", got)
	}
}
