package sqldb_test

import (
	"context"
	"testing"
	"time"

	"github.com/qshield/qshield/sqldb"
)

// TestBatchContext: a shared batch transaction lives until the last of its
// requests stops waiting, and no longer; one request without a deadline
// keeps it open. (Moved from ledger, whose batchContext it was.)
func TestBatchContext(t *testing.T) {
	base := time.Now().Add(time.Hour)
	withDeadline := func(d time.Time) context.Context {
		ctx, cancel := context.WithDeadline(context.Background(), d)
		t.Cleanup(cancel)
		return ctx
	}
	self := func(c context.Context) context.Context { return c }
	ctx, cancel := sqldb.BatchContext([]context.Context{withDeadline(base), withDeadline(base.Add(2 * time.Second)), withDeadline(base.Add(time.Second))}, self)
	defer cancel()
	if d, ok := ctx.Deadline(); !ok || !d.Equal(base.Add(2*time.Second)) {
		t.Fatalf("deadline %v %v, want the latest %v", d, ok, base.Add(2*time.Second))
	}
	ctx2, cancel2 := sqldb.BatchContext([]context.Context{withDeadline(base), context.Background()}, self)
	defer cancel2()
	if d, ok := ctx2.Deadline(); ok {
		t.Fatalf("deadline %v with a request that has none", d)
	}
	// One caller cancelling does not end the batch.
	c, cancelOne := context.WithCancel(context.Background())
	ctx3, cancel3 := sqldb.BatchContext([]context.Context{c, withDeadline(base)}, self)
	defer cancel3()
	cancelOne()
	if ctx3.Err() != nil {
		t.Fatal("the batch ended when one of its callers gave up")
	}
}
