//go:build !wasm

package selfverify

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/qshield/qshield/sqldb"
)

// committer runs the write transactions of the payment hot path (the
// operator's reservations, the vendor's payment records). On PostgreSQL it is
// db.InTx: concurrent commits already share WAL flushes. SQLite has one writer
// and, with synchronous=FULL, one fsync per commit, which would cap payments
// at the disk's fsync rate; there a single goroutine takes every request
// waiting at that moment, runs each in a SAVEPOINT of one transaction (a
// failed request is rolled back to its savepoint alone), commits once and only
// then answers each request — group commit, as the ledger does.
type committer struct {
	db   *sqldb.DB
	reqs chan *commitReq
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

type commitReq struct {
	ctx  context.Context
	fn   func(*sql.Tx) error
	done chan error
}

var errClosed = errors.New("selfverify: service closed")

const maxBatch = 256

// groupPostgres also groups PostgreSQL commits (measured: see BENCHMARKS.md).
var groupPostgres = true

func newCommitter(db *sqldb.DB) *committer {
	c := &committer{db: db, stop: make(chan struct{})}
	if db.Dialect == sqldb.SQLite || groupPostgres {
		c.reqs = make(chan *commitReq)
		c.wg.Add(1)
		go c.loop()
	}
	return c
}

// run executes fn in a transaction. fn may be run more than once (retries)
// and must have no effect outside the transaction.
func (c *committer) run(ctx context.Context, fn func(*sql.Tx) error) error {
	if c.reqs == nil {
		return c.db.InTx(ctx, fn)
	}
	r := &commitReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case c.reqs <- r:
	case <-c.stop:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-r.done
}

func (c *committer) close() {
	c.once.Do(func() { close(c.stop) })
	c.wg.Wait()
}

func (c *committer) loop() {
	defer c.wg.Done()
	for {
		var first *commitReq
		select {
		case first = <-c.reqs:
		case <-c.stop:
			return
		}
		batch := []*commitReq{first}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-c.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		errs := make([]error, len(batch))
		err := c.db.InTx(context.Background(), func(tx *sql.Tx) error {
			for i, r := range batch {
				errs[i] = nil
				if err := r.ctx.Err(); err != nil {
					errs[i] = err
					continue
				}
				if _, err := tx.Exec("SAVEPOINT sv_req"); err != nil {
					return err
				}
				if err := r.fn(tx); err != nil {
					errs[i] = err
					if _, err := tx.Exec("ROLLBACK TO SAVEPOINT sv_req"); err != nil {
						return err
					}
				}
				if _, err := tx.Exec("RELEASE SAVEPOINT sv_req"); err != nil {
					return err
				}
			}
			return nil
		})
		for i, r := range batch {
			if err != nil {
				r.done <- fmt.Errorf("selfverify: group commit: %w", err)
			} else {
				r.done <- errs[i]
			}
		}
	}
}
