package ledger

import (
	"context"
	"testing"
	"time"
)

// TestBatchContext: a shared batch transaction lives until the last of its
// requests stops waiting, and no longer; one request without a deadline
// keeps it open.
func TestBatchContext(t *testing.T) {
	base := time.Now().Add(time.Hour)
	withDeadline := func(d time.Time) *xfer {
		ctx, cancel := context.WithDeadline(context.Background(), d)
		t.Cleanup(cancel)
		return &xfer{ctx: ctx}
	}
	ctx, cancel := batchContext([]*xfer{withDeadline(base), withDeadline(base.Add(2 * time.Second)), withDeadline(base.Add(time.Second))})
	defer cancel()
	if d, ok := ctx.Deadline(); !ok || !d.Equal(base.Add(2*time.Second)) {
		t.Fatalf("deadline %v %v, want the latest %v", d, ok, base.Add(2*time.Second))
	}
	ctx2, cancel2 := batchContext([]*xfer{withDeadline(base), {ctx: context.Background()}})
	defer cancel2()
	if d, ok := ctx2.Deadline(); ok {
		t.Fatalf("deadline %v with a request that has none", d)
	}
	// One caller cancelling does not end the batch.
	c, cancelOne := context.WithCancel(context.Background())
	ctx3, cancel3 := batchContext([]*xfer{{ctx: c}, withDeadline(base)})
	defer cancel3()
	cancelOne()
	if ctx3.Err() != nil {
		t.Fatal("the batch ended when one of its callers gave up")
	}
}
