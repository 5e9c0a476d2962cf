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
type Batcher struct {
	db       *DB
	maxBatch int
	jobs     chan *batchJob
	stop     chan struct{}
	exited   chan struct{} // closed when the loop has returned
	wg       sync.WaitGroup
	once     sync.Once
}

type batchJob struct {
	ctx  context.Context
	fn   func(*sql.Tx) error
	done chan error
}

// ErrBatcherClosed is returned by Do after Close.
var ErrBatcherClosed = errors.New("sqldb: batcher closed")

// NewBatcher starts a group committer on db (maxBatch ≤ 0 means 256).
func (db *DB) NewBatcher(maxBatch int) *Batcher {
	if maxBatch <= 0 {
		maxBatch = 256
	}
	b := &Batcher{db: db, maxBatch: maxBatch, jobs: make(chan *batchJob, maxBatch), stop: make(chan struct{}), exited: make(chan struct{})}
	if db.Dialect == SQLite {
		b.wg.Add(1)
		go b.loop()
	} else {
		close(b.exited)
	}
	return b
}

// Do runs fn in a transaction shared with other concurrent jobs and returns
// fn's error, or the commit's. It returns only once the outcome is durable.
func (b *Batcher) Do(ctx context.Context, fn func(*sql.Tx) error) error {
	if b.db.Dialect != SQLite {
		return b.db.InTx(ctx, fn)
	}
	j := &batchJob{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case b.jobs <- j:
	case <-b.stop:
		return ErrBatcherClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-j.done:
		return err
	case <-b.exited:
		// The loop finished the batch in hand before it returned: a job it
		// took has its result; one it never took (the send above can win
		// the race with Close) is never run.
		select {
		case err := <-j.done:
			return err
		default:
			return ErrBatcherClosed
		}
	}
}

// Close stops the committer after the batch in progress.
func (b *Batcher) Close() error {
	b.once.Do(func() { close(b.stop) })
	b.wg.Wait()
	return nil
}

func (b *Batcher) loop() {
	defer b.wg.Done()
	defer close(b.exited)
	batch := make([]*batchJob, 0, b.maxBatch)
	for {
		batch = batch[:0]
		select {
		case j := <-b.jobs:
			batch = append(batch, j)
		case <-b.stop:
			b.drainClosed()
			return
		}
	fill:
		for len(batch) < b.maxBatch {
			select {
			case j := <-b.jobs:
				batch = append(batch, j)
			default:
				break fill
			}
		}
		b.run(batch)
	}
}

func (b *Batcher) drainClosed() {
	for {
		select {
		case j := <-b.jobs:
			j.done <- ErrBatcherClosed
		default:
			return
		}
	}
}

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
			j.done <- err
		} else {
			j.done <- results[i]
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
