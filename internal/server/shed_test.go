package server_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/internal/metrics"
	"github.com/qshield/qshield/internal/server"
)

// TestLoadShedding: beyond MaxInFlight requests wait at most QueueTimeout
// and at most MaxQueue of them wait; the rest are answered 503 overloaded
// with Retry-After (overload was never shed: latency grew without bound).
// Probes are never shed.
func TestLoadShedding(t *testing.T) {
	m := metrics.New()
	s, err := server.New(server.Config{InsecureHTTP: true, MaxInFlight: 1, MaxQueue: 1, QueueTimeout: 500 * time.Millisecond, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	s.Handle("GET /slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		w.WriteHeader(204)
	}))
	h := s.Handler()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); do(h, "GET", "/slow", "", "", "") }()
	<-started // the only slot is taken

	// One request may queue: it times out after QueueTimeout.
	queued := make(chan int, 1)
	go func() {
		start := time.Now()
		rec := do(h, "GET", "/slow", "", "", "")
		if rec.Code == 503 && time.Since(start) < 450*time.Millisecond {
			t.Errorf("queued request shed after %v, before the queue timeout", time.Since(start))
		}
		queued <- rec.Code
	}()
	// Wait until it is in the queue (a fixed sleep lost the race under the
	// race detector on a loaded machine: both requests timed out queued).
	for deadline := time.Now().Add(5 * time.Second); s.Queued() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the second request never queued")
		}
		time.Sleep(time.Millisecond)
	}
	// The queue is full: shed at once.
	rec := do(h, "GET", "/slow", "", "", "")
	var p httpx.Problem
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" || json.Unmarshal(rec.Body.Bytes(), &p) != nil || p.Code != "overloaded" {
		t.Fatalf("over the queue: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	if code := <-queued; code != 503 {
		t.Fatalf("queued request: %d, want 503 after the queue timeout", code)
	}
	if rec := do(h, "GET", "/healthz", "", "", ""); rec.Code != 200 {
		t.Fatalf("/healthz shed: %d", rec.Code)
	}
	rec = do(h, "GET", "/metrics", "", "", "")
	if !strings.Contains(rec.Body.String(), `qshield_http_shed_total{reason="queue_full"} 1`) || !strings.Contains(rec.Body.String(), `qshield_http_shed_total{reason="queue_timeout"} 1`) {
		t.Fatalf("shed counters missing:\n%s", rec.Body)
	}
	close(release)
	wg.Wait()
	// Capacity is back.
	if rec := do(h, "GET", "/slow", "", "", ""); rec.Code != 204 {
		t.Fatalf("after the load: %d", rec.Code)
	}
}

// TestStreamsThroughMiddleware: a server-sent event stream finds an
// http.Flusher through the middleware (the always-on access-log wrapper hid
// it, breaking the console's live feeds) and is neither shed nor cut at the
// request deadline.
func TestStreamsThroughMiddleware(t *testing.T) {
	s, err := server.New(server.Config{InsecureHTTP: true, MaxInFlight: 1, RequestTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("GET /events", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fl, ok := w.(http.Flusher)
		if !ok {
			http.Error(w, "streaming unsupported", 500)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl.Flush()
		select {
		case <-r.Context().Done():
			http.Error(w, "cut", 500)
		case <-time.After(150 * time.Millisecond):
			w.Write([]byte("data: ok\n\n"))
		}
	}))
	h := s.Handler()
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ { // two streams with one in-flight slot
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := httptest.NewRequest("GET", "/events", nil)
			r.Header.Set("Accept", "text/event-stream")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != 200 || !strings.Contains(rec.Body.String(), "data: ok") {
				t.Errorf("stream: %d %q", rec.Code, rec.Body)
			}
		}()
	}
	wg.Wait()
}
