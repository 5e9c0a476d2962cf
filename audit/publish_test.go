package audit

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// countSink counts the checkpoints published to it.
type countSink struct{ n atomic.Int64 }

func (s *countSink) Publish(context.Context, []byte) error { s.n.Add(1); return nil }

// TestPublisherMinInterval: a log growing by more than Every records at
// every poll gets a checkpoint once per MinInterval, not once per poll.
// (The bounds leave a wide margin: 1 s of appends with a 5 ms poll would
// publish about 200 checkpoints without the limit, at most 6 with it.)
func TestPublisherMinInterval(t *testing.T) {
	signer, _ := testKeys(t)
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		l := emptyLog(t, db)
		sink := &countSink{}
		pub := &Publisher{Log: l, Signer: signer, Every: 1, Poll: 5 * time.Millisecond, MinInterval: 250 * time.Millisecond, Sinks: []Sink{sink}}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = pub.Run(ctx) }()
		start := time.Now()
		for time.Since(start) < time.Second {
			appendN(t, l, 1, "alice")
			time.Sleep(time.Millisecond)
		}
		cancel()
		<-done
		elapsed := time.Since(start)
		n := sink.n.Load()
		if max := int64(elapsed/(250*time.Millisecond)) + 2; n < 2 || n > max {
			t.Fatalf("%d checkpoints in %v with a 250 ms minimum interval, want 2..%d", n, elapsed, max)
		}
	})
}
