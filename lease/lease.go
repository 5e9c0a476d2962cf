// Package lease elects, among processes sharing one qshield database, a
// single holder of each named duty (a QKD link end, a key manager's sync,
// a sweeper), with a fencing token.
//
// A lease is a row (duty, holder, token, expires_at) in the table
// qshield_leases. A process takes a duty with one atomic upsert that
// succeeds only if the row is absent, expired, or already its own; taking
// over from another holder increments the token, renewing keeps it. The
// holder renews every TTL/3 and gives the duty up (cancels the work's
// context) as soon as a renewal fails or the lease would expire before the
// next renewal could land, so two holders never both believe they hold it
// for longer than the clock skew between them. Work that writes shared state
// fences itself: it passes its token to [Elector.Fence] inside its
// transaction, which fails once a newer holder exists, so a paused old
// holder that wakes up cannot write.
//
// Expiry uses each process's wall clock: keep the nodes' clocks in sync
// (NTP) and the TTL well above the skew. When the holder dies, another
// process takes the duty within TTL + TTL/3.
//
// [Lock] is the lighter tool for a short check-then-act that must happen
// once across nodes starting together (issue the one admin credential,
// certify the one settlement unit): a PostgreSQL advisory lock held for the
// duration of the step.
package lease

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/qshield/qshield/sqldb"
)

var migrations = []sqldb.Migration{{Version: 1, SQL: `
CREATE TABLE qshield_leases (
	duty       TEXT PRIMARY KEY,
	holder     TEXT NOT NULL,
	token      BIGINT NOT NULL,
	expires_at BIGINT NOT NULL
)`}}

// ErrFenced means the token is no longer the duty's current one.
var ErrFenced = errors.New("lease: fenced off (another holder took the duty)")

// DefaultTTL is the lease duration when none is given.
const DefaultTTL = 6 * time.Second

// Elector competes for one duty on behalf of one process.
type Elector struct {
	db     *sqldb.DB
	duty   string
	holder string
	ttl    time.Duration
	now    func() time.Time
	log    *slog.Logger
	// OnChange, when set, is called with true when the duty is taken and
	// false when it is lost or given up (metrics).
	OnChange func(held bool)
}

// New migrates the lease table and returns an elector for duty; holder
// names this process (a random name when empty); ttl ≤ 0 means DefaultTTL.
func New(ctx context.Context, db *sqldb.DB, duty, holder string, ttl time.Duration, log *slog.Logger) (*Elector, error) {
	if err := db.Migrate(ctx, "lease", migrations); err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	if holder == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		holder = hex.EncodeToString(b[:])
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Elector{db: db, duty: duty, holder: holder, ttl: ttl, now: time.Now, log: log}, nil
}

// Holder is this process's name.
func (e *Elector) Holder() string { return e.holder }

// TryAcquire takes or renews the duty. It returns the fencing token and
// whether this process holds the duty now.
func (e *Elector) TryAcquire(ctx context.Context) (int64, bool, error) {
	now := e.now()
	var holder string
	var token int64
	err := e.db.Retry(ctx, func() error {
		err := e.db.QueryRowContext(ctx, e.db.Rebind(`INSERT INTO qshield_leases (duty, holder, token, expires_at) VALUES (?, ?, 1, ?)
			ON CONFLICT (duty) DO UPDATE SET
				token = CASE WHEN qshield_leases.holder = excluded.holder THEN qshield_leases.token ELSE qshield_leases.token + 1 END,
				holder = excluded.holder, expires_at = excluded.expires_at
			WHERE qshield_leases.holder = excluded.holder OR qshield_leases.expires_at < ?
			RETURNING holder, token`), e.duty, e.holder, now.Add(e.ttl).UnixNano(), now.UnixNano()).Scan(&holder, &token)
		if errors.Is(err, sql.ErrNoRows) {
			holder = ""
			return nil
		}
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("lease: acquire %s: %w", e.duty, err)
	}
	return token, holder == e.holder, nil
}

// Release gives the duty up if this process holds it with token, so that
// another process need not wait for the expiry.
func (e *Elector) Release(ctx context.Context, token int64) error {
	_, err := e.db.ExecContext(ctx, e.db.Rebind(`UPDATE qshield_leases SET expires_at = 0 WHERE duty = ? AND holder = ? AND token = ?`), e.duty, e.holder, token)
	if err != nil {
		return fmt.Errorf("lease: release %s: %w", e.duty, err)
	}
	return nil
}

// Fence fails with ErrFenced unless token is still the duty's current
// token held by this process; call it inside the transaction that writes
// on the duty's behalf (on PostgreSQL it also locks the lease row until
// commit, so a takeover waits for the write).
func (e *Elector) Fence(ctx context.Context, tx *sql.Tx, token int64) error {
	q := `SELECT token FROM qshield_leases WHERE duty = ? AND holder = ?`
	if e.db.Dialect == sqldb.Postgres {
		q += ` FOR SHARE`
	}
	var cur int64
	err := tx.QueryRowContext(ctx, e.db.Rebind(q), e.duty, e.holder).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && cur != token) {
		return ErrFenced
	}
	if err != nil {
		return fmt.Errorf("lease: fence %s: %w", e.duty, err)
	}
	return nil
}

// Run competes for the duty until ctx ends. While this process holds it,
// work runs with a context that is cancelled when the lease is lost; when
// work returns (or fails) the duty is released and competed for again
// after a pause. Run returns ctx's error.
func (e *Elector) Run(ctx context.Context, work func(ctx context.Context, token int64) error) error {
	every := e.ttl / 3
	for {
		token, held, err := e.TryAcquire(ctx)
		if err != nil {
			e.log.Warn("lease: cannot reach the database", "duty", e.duty, "err", err)
		}
		if held {
			e.hold(ctx, token, work)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// hold runs work while renewing the lease.
func (e *Elector) hold(ctx context.Context, token int64, work func(context.Context, int64) error) {
	e.log.Info("lease: duty taken", "duty", e.duty, "holder", e.holder, "token", token)
	if e.OnChange != nil {
		e.OnChange(true)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- work(wctx, token) }()
	every := e.ttl / 3
	valid := e.now().Add(e.ttl)
	for {
		select {
		case err := <-done:
			cancel()
			if err != nil && ctx.Err() == nil {
				e.log.Warn("lease: duty's work failed; giving the duty up", "duty", e.duty, "err", err)
			}
			e.giveUp(token)
			return
		case <-time.After(every):
		}
		rctx, rcancel := context.WithTimeout(ctx, every)
		t, held, err := e.TryAcquire(rctx)
		rcancel()
		switch {
		case err == nil && held && t == token:
			valid = e.now().Add(e.ttl)
			continue
		case err != nil && e.now().Add(every).Before(valid):
			// The database did not answer, but the lease is still ours
			// for longer than one renewal period: keep going.
			e.log.Warn("lease: renewal failed", "duty", e.duty, "err", err)
			continue
		}
		e.log.Warn("lease: duty lost", "duty", e.duty, "holder", e.holder, "err", err)
		cancel()
		<-done
		e.giveUp(token)
		return
	}
}

func (e *Elector) giveUp(token int64) {
	// Report the duty given up before releasing it, so that this node never
	// reports holding a duty another node has taken.
	if e.OnChange != nil {
		e.OnChange(false)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = e.Release(ctx, token)
}
