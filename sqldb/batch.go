package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Batcher is a group committer: it runs concurrent jobs in as few durable
// transactions as possible. On SQLite, where every commit is an fsync and
// writers are serialised anyway, one goroutine takes whatever jobs are
// waiting (up to MaxBatch), runs each inside its own SAVEPOINT of one
// transaction — a job that fails is rolled back alone — commits once, and
// only then reports each job's result. A job is therefore acknowledged only
// after it is on disk, and many jobs share one fsync. On PostgreSQL, which
// commits concurrent transactions in parallel, Do simply runs the job in its
// own transaction (InTx).
//
// Jobs run in the order they were taken and see the effects of earlier jobs
// of the same batch. A job must have no effects outside the transaction: if
// the commit fails with a transient error the whole batch runs again.
//
// A caller that decides a whole batch itself (set-based statements instead
// of a savepoint per job) uses the queue under Batcher, GroupCommitter.
type Batcher struct {
	db *DB
	g  *GroupCommitter[*batchJob] // nil on PostgreSQL
}

type batchJob struct {
	ctx context.Context
	fn  func(*sql.Tx) error
	err error
}

// ErrBatcherClosed is returned by Do after Close.
var ErrBatcherClosed = errors.New("sqldb: batcher closed")

// NewBatcher starts a group committer on db (maxBatch ≤ 0 means 256).
func (db *DB) NewBatcher(maxBatch int) *Batcher {
	if maxBatch <= 0 {
		maxBatch = 256
	}
	b := &Batcher{db: db}
	if db.Dialect == SQLite {
		b.g = NewGroupCommitter(1, maxBatch, b.run)
	}
	return b
}

// Do runs fn in a transaction shared with other concurrent jobs and returns
// fn's error, or the commit's. It returns only once the outcome is durable.
func (b *Batcher) Do(ctx context.Context, fn func(*sql.Tx) error) error {
	if b.g == nil {
		return b.db.InTx(ctx, fn)
	}
	j := &batchJob{ctx: ctx, fn: fn}
	if err := b.g.Do(ctx, j); err != nil {
		return err
	}
	return j.err
}

// Close stops the committer after the batch in progress.
func (b *Batcher) Close() error {
	if b.g != nil {
		b.g.Close()
	}
	return nil
}

// run runs batch in one transaction, a savepoint per job, and sets each
// job's outcome (all the commit's error if the commit failed).
func (b *Batcher) run(batch []*batchJob) {
	results := make([]error, len(batch))
	err := b.db.InTx(context.Background(), func(tx *sql.Tx) error {
		for i, j := range batch {
			if err := j.ctx.Err(); err != nil {
				results[i] = err
				continue
			}
			if _, err := tx.Exec("SAVEPOINT job"); err != nil {
				return fmt.Errorf("sqldb: savepoint: %w", err)
			}
			results[i] = j.fn(tx)
			if results[i] != nil {
				if _, err := tx.Exec("ROLLBACK TO SAVEPOINT job"); err != nil {
					// SQLite rolls the whole transaction back by itself on
					// some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM):
					// the savepoint is gone; report the job's cause.
					return fmt.Errorf("sqldb: batch rolled back after a job failed: %w (rollback to savepoint: %v)", results[i], err)
				}
			}
			if _, err := tx.Exec("RELEASE SAVEPOINT job"); err != nil {
				return fmt.Errorf("sqldb: release savepoint: %w", err)
			}
		}
		return nil
	})
	for i, j := range batch {
		if err != nil {
			j.err = err
		} else {
			j.err = results[i]
		}
	}
}

// GroupCommitter is the queue and the loop of a group committer whose
// batches are run by the caller's function: Do hands a job to the workers
// and waits; each worker takes whatever jobs are waiting (up to maxBatch),
// in the order they were queued, calls run with them, and only then lets
// their Do calls return. run decides and writes the whole batch (typically
// in one transaction, with BatchContext) and sets each job's outcome in the
// job itself, so J is typically a pointer to a struct with result fields.
//
// Batcher runs one on SQLite; qmsp's payments run their own, deciding a
// batch with a few set-based statements.
type GroupCommitter[J any] struct {
	run      func(batch []J)
	maxBatch int
	jobs     chan groupItem[J]
	stop     chan struct{}
	exited   chan struct{} // closed once every worker has returned
	wg       sync.WaitGroup
	once     sync.Once
}

type groupItem[J any] struct {
	job  J
	done chan error // nil once run returned; ErrBatcherClosed for a job never run
}

// NewGroupCommitter starts workers (at least one) goroutines that run the
// batches with run; maxBatch ≤ 0 means 256. Several workers suit a database
// that commits concurrent transactions in parallel (PostgreSQL); on SQLite,
// which has one writer, one is enough.
func NewGroupCommitter[J any](workers, maxBatch int, run func(batch []J)) *GroupCommitter[J] {
	if maxBatch <= 0 {
		maxBatch = 256
	}
	g := &GroupCommitter[J]{run: run, maxBatch: maxBatch, jobs: make(chan groupItem[J], maxBatch), stop: make(chan struct{}), exited: make(chan struct{})}
	for range max(workers, 1) {
		g.wg.Add(1)
		go g.loop()
	}
	return g
}

// Do queues job and waits until run has returned with it in its batch: the
// job's outcome is then whatever run set in it, and Do returns nil. Once a
// worker took the job, Do waits for it even if ctx ends (an acknowledged
// job is a committed one). Before that, it returns ctx's error when ctx
// ends, and ErrBatcherClosed after Close; a job that error names was never
// run.
func (g *GroupCommitter[J]) Do(ctx context.Context, job J) error {
	done := make(chan error, 1)
	select {
	case g.jobs <- groupItem[J]{job: job, done: done}:
	case <-g.stop:
		return ErrBatcherClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-g.exited:
		// The workers finished the batches in hand before they returned: a
		// job they took has its result; one they never took (the send above
		// can win the race with Close) is never run.
		select {
		case err := <-done:
			return err
		default:
			return ErrBatcherClosed
		}
	}
}

// Queued returns the number of jobs waiting for a worker.
func (g *GroupCommitter[J]) Queued() int { return len(g.jobs) }

// Close stops the workers after the batches in progress; jobs still queued
// fail with ErrBatcherClosed.
func (g *GroupCommitter[J]) Close() {
	g.once.Do(func() {
		close(g.stop)
		g.wg.Wait()
		close(g.exited)
	})
}

func (g *GroupCommitter[J]) loop() {
	defer g.wg.Done()
	items := make([]groupItem[J], 0, g.maxBatch)
	batch := make([]J, 0, g.maxBatch)
	for {
		items = items[:0]
		select {
		case it := <-g.jobs:
			items = append(items, it)
		case <-g.stop:
			g.drainClosed()
			return
		}
	fill:
		for len(items) < g.maxBatch {
			select {
			case it := <-g.jobs:
				items = append(items, it)
			default:
				break fill
			}
		}
		batch = batch[:0]
		for _, it := range items {
			batch = append(batch, it.job)
		}
		g.run(batch)
		for _, it := range items {
			it.done <- nil
		}
		// Keep no job alive until the next batch overwrites it.
		clear(items)
		clear(batch)
	}
}

func (g *GroupCommitter[J]) drainClosed() {
	for {
		select {
		case it := <-g.jobs:
			it.done <- ErrBatcherClosed
		default:
			return
		}
	}
}

// BatchContext returns the context of a transaction shared by a batch of
// jobs, ctxOf(j) being the context of job j's caller. No single caller's
// context fits it (one caller giving up must not roll back the others), so
// it ends when the last of them would have stopped waiting, at the latest
// of their deadlines, and never if one of them has no deadline; a caller's
// cancellation does not end it. Until then the database's statement timeout
// bounds a frozen connection. The caller calls the CancelFunc once the
// transaction is over.
func BatchContext[J any](jobs []J, ctxOf func(J) context.Context) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, j := range jobs {
		d, ok := ctxOf(j).Deadline()
		if !ok {
			return context.WithCancel(context.Background())
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.Background(), latest)
}
