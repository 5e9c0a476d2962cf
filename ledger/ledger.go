package ledger

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/sqldb"
)

// Limits on amounts and balances. A transfer moves at most MaxAmount; no
// balance or pending total may leave ±MaxBalance, so a single update can
// never overflow int64 (MaxBalance + MaxAmount < 2^63).
const (
	MaxAmount  int64 = 1_000_000_000_000_000     // 1e15 minor units per transfer
	MaxBalance int64 = 1_000_000_000_000_000_000 // |balance|, |pending| ≤ 1e18
)

// More errors returned by the ledger.
var (
	ErrClosed        = errors.New("ledger: closed")
	ErrInvalidCursor = errors.New("ledger: invalid history cursor")
	ErrInvalidExpiry = errors.New("ledger: invalid expiry")
	ErrInvalidKey    = errors.New("ledger: invalid idempotency key")
	ErrInvalidMemo   = errors.New("ledger: invalid memo")
)

// DefaultExpiry is how long a pending transfer lives when ExpiresAt is zero.
const DefaultExpiry = 24 * time.Hour

// Option configures a Ledger.
type Option func(*options)

type options struct {
	log           *slog.Logger
	now           func() time.Time
	sweep         time.Duration
	maxBatch      int
	window        time.Duration
	checkpoint    time.Duration
	defaultExpiry time.Duration
	audit         audit.Recorder
	pgBatchers    int
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithClock sets the clock used for timestamps and expiry (tests).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithSweepInterval sets how often expired pending transfers are voided in the
// background (default 1 minute; 0 or negative disables the sweeper).
func WithSweepInterval(d time.Duration) Option { return func(o *options) { o.sweep = d } }

// WithMaxBatch bounds how many requests one SQLite group commit holds (default 512).
func WithMaxBatch(n int) Option { return func(o *options) { o.maxBatch = n } }

// WithGroupCommitWindow bounds how long the SQLite group committer waits for
// more requests to join a batch (default 2 ms; 0 never waits). It only waits
// when the previous batch held more than one request, i.e. under concurrency,
// and stops as soon as no request arrived for an eighth of the window. Waiting
// lets the clients acknowledged by one commit join the next batch instead of
// forming alternating half-size batches, each paying an fsync.
func WithGroupCommitWindow(d time.Duration) Option { return func(o *options) { o.window = d } }

// WithCheckpointInterval makes a background goroutine checkpoint the SQLite
// WAL every d (default 100 ms) instead of the group committer doing it inline
// every 1000 pages, which would stall every request of that batch behind the
// copy and the database fsync. 0 or negative keeps SQLite's automatic
// checkpoints. It has no effect on PostgreSQL.
func WithCheckpointInterval(d time.Duration) Option { return func(o *options) { o.checkpoint = d } }

// WithPostgresBatchers sets how many PostgreSQL batchers decide concurrent
// transfers together (default 1; 0 or negative: none, every transfer is its
// own transaction). Each takes every transfer waiting (up to the maximum
// batch) and writes them in one transaction, so transfers on the same hot
// accounts share one lock acquisition and one commit instead of queueing on
// the rows one by one. A lone transfer keeps the one-round-trip path. It has
// no effect on SQLite, whose group committer always batches.
//
// One is the default because two batches in flight at once usually name a
// hot account in common: the second then waits for the first's row locks and
// commit, having been formed early and small, so every commit carries fewer
// transfers. Alternated runs at 8 clients (BENCHMARKS.md, issue 16 item 1):
// with 10 accounts one batcher gave 89–107% of pgbench's TPS, two 84–91%,
// four 74–80%; at 64 clients both one and two gave 3–10× pgbench's.
func WithPostgresBatchers(n int) Option { return func(o *options) { o.pgBatchers = n } }

// WithDefaultExpiry sets the lifetime of pending transfers without ExpiresAt.
func WithDefaultExpiry(d time.Duration) Option { return func(o *options) { o.defaultExpiry = d } }

// Ledger is a double-entry ledger stored in a database. It is safe for
// concurrent use; several Ledgers (processes) may share a database.
type Ledger struct {
	db   *sqldb.DB
	opts options
	q    queries
	bsql batchSQL

	// SQLite group commit.
	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt // prepared statements (SQLite only)
	reqs   chan *writeReq
	pgReqs chan *xfer // PostgreSQL transfer batches (nil: none)
	// pgInflight counts the PostgreSQL transfers in progress.
	pgInflight atomic.Int64
	done       chan struct{}
	wg         sync.WaitGroup
	closeOne   sync.Once
}

type writeReq struct {
	ctx context.Context
	op  func(ctx context.Context, tx *sql.Tx) error
	// xfer, when set, is the transfer op runs: the group committer decides
	// consecutive transfers of a batch together (see batch.go) and runs op
	// only when it falls back to one transfer at a time.
	xfer *xfer
	done chan error
}

// Open applies the ledger's migrations to db and starts its background
// goroutines (the SQLite group committer and the expiry sweeper). Close stops
// them; it does not close db.
func Open(ctx context.Context, db *sqldb.DB, opts ...Option) (*Ledger, error) {
	o := options{log: slog.Default(), now: time.Now, sweep: time.Minute, maxBatch: 512, window: 2 * time.Millisecond, checkpoint: 100 * time.Millisecond, defaultExpiry: DefaultExpiry, pgBatchers: 1}
	for _, f := range opts {
		f(&o)
	}
	if o.maxBatch < 1 {
		o.maxBatch = 1
	}
	if o.defaultExpiry <= 0 {
		o.defaultExpiry = DefaultExpiry
	}
	if db == nil {
		return nil, errors.New("ledger: nil database")
	}
	if err := db.Migrate(ctx, "ledger", migrations); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	l := &Ledger{db: db, opts: o, q: newQueries(db), bsql: newBatchSQL(), done: make(chan struct{})}
	if db.Dialect == sqldb.SQLite {
		conn, err := db.Conn(ctx)
		if err != nil {
			return nil, fmt.Errorf("ledger: reserve writer connection: %w", err)
		}
		if err := l.configureWriter(ctx, conn); err != nil {
			conn.Close()
			return nil, err
		}
		if o.checkpoint > 0 {
			l.wg.Add(1)
			go l.checkpointer(o.checkpoint)
		}
		l.reqs = make(chan *writeReq)
		l.stmts = make(map[string]*sql.Stmt)
		l.wg.Add(1)
		go l.writer(conn)
	}
	if db.Dialect == sqldb.Postgres && o.pgBatchers > 0 {
		if _, ok := o.audit.(bulkSQLAppender); o.audit == nil || ok {
			l.pgReqs = make(chan *xfer)
			for range o.pgBatchers {
				l.wg.Add(1)
				go l.pgWorker()
			}
		}
	}
	if o.sweep > 0 {
		l.wg.Add(1)
		go l.sweeper(o.sweep)
	}
	return l, nil
}

// Close stops the background goroutines. Requests in flight finish; later ones
// fail with ErrClosed. It does not close the database.
func (l *Ledger) Close() error {
	l.closeOne.Do(func() { close(l.done) })
	l.wg.Wait()
	l.stmtMu.Lock()
	defer l.stmtMu.Unlock()
	for q, st := range l.stmts {
		st.Close()
		delete(l.stmts, q)
	}
	return nil
}

// txStmt returns q prepared for tx, or nil when statements are not cached.
// On SQLite, preparing is a large part of a statement's cost, and the group
// committer runs every write on one connection, so each statement is prepared
// once; PostgreSQL's driver caches prepared statements itself.
func (l *Ledger) txStmt(ctx context.Context, tx *sql.Tx, q string) (*sql.Stmt, error) {
	if l.stmts == nil {
		return nil, nil
	}
	l.stmtMu.Lock()
	st, ok := l.stmts[q]
	if !ok {
		var err error
		if st, err = l.db.PrepareContext(ctx, q); err != nil {
			l.stmtMu.Unlock()
			return nil, err
		}
		l.stmts[q] = st
	}
	l.stmtMu.Unlock()
	return tx.StmtContext(ctx, st), nil
}

func (l *Ledger) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	st, err := l.txStmt(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return tx.ExecContext(ctx, q, args...)
	}
	return st.ExecContext(ctx, args...)
}

func (l *Ledger) query(ctx context.Context, tx *sql.Tx, q string, args ...any) (*sql.Rows, error) {
	st, err := l.txStmt(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return tx.QueryContext(ctx, q, args...)
	}
	return st.QueryContext(ctx, args...)
}

// row is a *sql.Row or a preparation error.
type row struct {
	r   *sql.Row
	err error
}

func (r row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	return r.r.Scan(dest...)
}

func (l *Ledger) queryRow(ctx context.Context, tx *sql.Tx, q string, args ...any) row {
	st, err := l.txStmt(ctx, tx, q)
	if err != nil {
		return row{err: err}
	}
	if st == nil {
		return row{r: tx.QueryRowContext(ctx, q, args...)}
	}
	return row{r: st.QueryRowContext(ctx, args...)}
}

func (l *Ledger) now() time.Time { return l.opts.now().UTC() }

// write runs op in a write transaction and returns once it has committed (nil)
// or failed. op may run more than once (retries) and must have no effects
// outside tx; when it returns an error, its writes are undone.
func (l *Ledger) write(ctx context.Context, op func(ctx context.Context, tx *sql.Tx) error) error {
	return l.submit(ctx, op, nil)
}

// submit is write for a request that may be a transfer (x non-nil; op runs it alone).
func (l *Ledger) submit(ctx context.Context, op func(ctx context.Context, tx *sql.Tx) error, x *xfer) error {
	select {
	case <-l.done:
		return ErrClosed
	default:
	}
	if l.reqs == nil {
		return l.db.InTx(ctx, func(tx *sql.Tx) error { return op(ctx, tx) })
	}
	r := &writeReq{ctx: ctx, op: op, xfer: x, done: make(chan error, 1)}
	select {
	case l.reqs <- r:
	case <-l.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once the writer took the request it always answers; waiting for the
	// answer even when ctx ends keeps "acknowledged" meaning "committed".
	return <-r.done
}

// writerCacheKiB is the group committer's page cache. SQLite's default
// (2 MB a connection) holds the accounts and history-index pages of about
// 10⁴ accounts; with 10⁶ each transfer read most of its pages from the OS
// cache again. One connection's 64 MiB bounds the memory it costs.
const writerCacheKiB = 64 << 10

// configureWriter sets up the group committer's connection: no automatic
// WAL checkpoints when the checkpointer runs, statement journals in
// memory (a batch's multi-row statements each need one; on disk every page
// written to it was a system call), and a page cache of writerCacheKiB.
func (l *Ledger) configureWriter(ctx context.Context, conn *sql.Conn) error {
	pragmas := []string{"PRAGMA temp_store=MEMORY", fmt.Sprintf("PRAGMA cache_size=-%d", writerCacheKiB)}
	if l.opts.checkpoint > 0 {
		pragmas = append(pragmas, "PRAGMA wal_autocheckpoint=0")
	}
	for _, p := range pragmas {
		if _, err := conn.ExecContext(ctx, p); err != nil {
			return fmt.Errorf("ledger: configure writer connection (%s): %w", p, err)
		}
	}
	return nil
}

// writer is the SQLite group committer.
func (l *Ledger) writer(conn *sql.Conn) {
	defer l.wg.Done()
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	batch := make([]*writeReq, 0, l.opts.maxBatch)
	var timer *time.Timer
	last := 0
	for {
		batch = batch[:0]
		select {
		case r := <-l.reqs:
			batch = append(batch, r)
		case <-l.done:
			return
		}
	fill:
		for len(batch) < l.opts.maxBatch {
			select {
			case r := <-l.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		if last > 1 && l.opts.window > 0 && len(batch) < l.opts.maxBatch {
			quiet := max(l.opts.window/8, 20*time.Microsecond)
			deadline := time.Now().Add(l.opts.window)
			if timer == nil {
				timer = time.NewTimer(quiet)
			} else {
				timer.Reset(quiet)
			}
		linger:
			for len(batch) < l.opts.maxBatch {
				select {
				case r := <-l.reqs:
					batch = append(batch, r)
					if wait := min(quiet, time.Until(deadline)); wait > 0 {
						timer.Reset(wait)
					} else {
						break linger
					}
				case <-timer.C:
					break linger
				}
			}
			timer.Stop()
		}
		last = len(batch)
		var errs []error
		if conn == nil {
			// The previous connection broke: take a fresh one.
			c, err := l.db.Conn(context.Background())
			if err == nil {
				if err = l.configureWriter(context.Background(), c); err != nil {
					c.Close()
					c = nil
				}
			}
			if err != nil {
				err = fmt.Errorf("ledger: writer connection: %w", err)
				errs = make([]error, len(batch))
				for i := range errs {
					errs[i] = err
				}
			}
			conn = c
		}
		if conn != nil {
			errs = l.runBatch(conn, batch)
			if len(errs) > 0 && (errors.Is(errs[0], sql.ErrConnDone) || errors.Is(errs[0], driver.ErrBadConn)) {
				l.opts.log.Warn("ledger: writer connection lost; reconnecting", "err", errs[0])
				conn.Close()
				conn = nil
			}
		}
		for i, r := range batch {
			r.done <- errs[i]
		}
	}
}

// runBatch runs batch in one transaction, one savepoint per request, and
// returns each request's outcome (all failed if the commit failed).
func (l *Ledger) runBatch(conn *sql.Conn, batch []*writeReq) []error {
	errs := make([]error, len(batch))
	ctx := context.Background()
	backoff := time.Millisecond
	setBased := true
	for attempt := 0; ; attempt++ {
		err := l.tryBatch(ctx, conn, batch, errs, setBased)
		if err == nil {
			return errs
		}
		var be *batchError
		if errors.As(err, &be) && !sqldb.IsTransient(be.err) {
			// Decide the transfers one at a time instead (the reference path).
			l.opts.log.Warn("ledger: set-based batch failed; running its transfers one by one", "err", be.err)
			setBased = false
			continue
		}
		if !sqldb.IsTransient(err) || attempt >= 9 {
			err = fmt.Errorf("ledger: commit: %w", err)
			for i := range errs {
				errs[i] = err
			}
			return errs
		}
		time.Sleep(backoff)
		if backoff < 100*time.Millisecond {
			backoff *= 2
		}
	}
}

// batchError is a failure of a set-based transfer batch (see batch.go).
type batchError struct{ err error }

func (e *batchError) Error() string { return e.err.Error() }
func (e *batchError) Unwrap() error { return e.err }

func (l *Ledger) tryBatch(ctx context.Context, conn *sql.Conn, batch []*writeReq, errs []error, setBased bool) error {
	tx, err := conn.BeginTx(ctx, nil) // BEGIN IMMEDIATE (sqldb sets _txlock)
	if err != nil {
		return err
	}
	// The audit records of the batch's successful requests are appended in
	// one bulk write just before the commit (see deferredAudit).
	var entries []audit.Entry
	single := len(batch) == 1
	// Consecutive transfers are decided together (a run); the run is written
	// before any other request and at the end.
	var run []*xfer
	var runIdx []int
	flushRun := func() error {
		if len(run) == 0 {
			return nil
		}
		ents, err := l.runTransfersSQLite(ctx, tx, run)
		if err != nil {
			_ = tx.Rollback()
			return &batchError{err}
		}
		for k, x := range run {
			errs[runIdx[k]] = x.err
		}
		entries = append(entries, ents...)
		run, runIdx = run[:0], runIdx[:0]
		return nil
	}
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		if setBased && r.xfer != nil {
			run = append(run, r.xfer)
			runIdx = append(runIdx, i)
			continue
		}
		if err := flushRun(); err != nil {
			return err
		}
		oc := opContext{Context: ctx, values: r.ctx}
		if l.opts.audit != nil {
			oc.audit = new([]audit.Entry)
		}
		if single {
			errs[i] = runOp(oc, tx, r.op)
			if errs[i] != nil {
				_ = tx.Rollback()
				if sqldb.IsTransient(errs[i]) {
					return errs[i]
				}
				return nil
			}
			if oc.audit != nil {
				entries = append(entries, *oc.audit...)
			}
			continue
		}
		if _, err := l.exec(ctx, tx, "SAVEPOINT ledger_op"); err != nil {
			_ = tx.Rollback()
			return err
		}
		errs[i] = runOp(oc, tx, r.op)
		if errs[i] != nil {
			if sqldb.IsTransient(errs[i]) {
				_ = tx.Rollback()
				return errs[i]
			}
			if _, err := l.exec(ctx, tx, "ROLLBACK TO ledger_op"); err != nil {
				_ = tx.Rollback()
				return err
			}
		} else if oc.audit != nil {
			entries = append(entries, *oc.audit...)
		}
		if _, err := l.exec(ctx, tx, "RELEASE ledger_op"); err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	if err := flushRun(); err != nil {
		return err
	}
	if len(entries) > 0 {
		if err := l.recordAll(ctx, tx, entries); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("audit: %w", err)
		}
	}
	return tx.Commit()
}

// opContext runs a request's op with the batch's cancellation and the
// request's values (such as the audit actor, see audit.WithActor).
type opContext struct {
	context.Context
	values context.Context
	// audit collects the op's audit entries (nil without auditing): the
	// group committer appends those of the ops that succeeded in one bulk
	// write inside the batch's transaction, before it commits.
	audit *[]audit.Entry
}

// Value implements context.Context.
func (c opContext) Value(key any) any { return c.values.Value(key) }

// checkpointer copies the WAL into the database file in the background. A
// PASSIVE checkpoint never blocks the writer or readers; it copies what it can.
func (l *Ledger) checkpointer(every time.Duration) {
	defer l.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
			var busy, logFrames, done int64
			err := l.db.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logFrames, &done)
			if err != nil && !failing {
				l.opts.log.Warn("ledger: WAL checkpoint failed", "err", err)
			}
			failing = err != nil
		}
	}
}

// runOp runs op, turning a panic into an error so that one bad request
// cannot stop the group committer (its savepoint is rolled back).
func runOp(ctx context.Context, tx *sql.Tx, op func(context.Context, *sql.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("ledger: internal error in write: %v", p)
		}
	}()
	return op(ctx, tx)
}

func (l *Ledger) sweeper(every time.Duration) {
	defer l.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-l.done
		cancel()
	}()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
			n, err := l.ExpirePending(ctx, l.now())
			if err != nil && !errors.Is(err, ErrClosed) && ctx.Err() == nil {
				l.opts.log.Warn("ledger: expiry sweep failed", "err", err)
			} else if n > 0 {
				l.opts.log.Debug("ledger: expired pending transfers", "count", n)
			}
		}
	}
}
