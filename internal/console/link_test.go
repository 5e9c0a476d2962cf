package console

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestLinkMonitorAndStream(t *testing.T) {
	m := NewLinkMonitor(nil, 256, 5)
	m.ObserveBlock(0.021, 8800)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx, 10*time.Millisecond) }()
	for len(m.Samples()) < 5 {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(30 * time.Millisecond)
	cancel()
	<-done
	s := m.Samples()
	if len(s) != 5 {
		t.Fatalf("window holds %d samples, want the last 5", len(s))
	}
	if last := s[len(s)-1]; last.QBER != 0.021 || last.KeyRate != 8800 {
		t.Fatalf("last sample %+v", last)
	}

	clk := newClock()
	c := newConsole(t, clk)
	c.cfg.Link = m
	ck, _ := signIn(t, c, "aud", RoleAuditor)
	w := request(c, http.MethodGet, "/console/qkd/stream", ck, "", nil)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "event: samples") || !strings.Contains(w.Body.String(), `"qber":0.021`) {
		t.Fatalf("stream: %d %q", w.Code, w.Body.String())
	}
}
