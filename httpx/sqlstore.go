//go:build !wasm

package httpx

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/qshield/qshield/sqldb"
)

var idempotencyMigrations = []sqldb.Migration{{Version: 1, SQL: `
CREATE TABLE httpx_idempotency (
	scope        TEXT NOT NULL,
	idem_key     TEXT NOT NULL,
	request_hash BYTEA NOT NULL,
	claim        BYTEA,
	locked_until BIGINT NOT NULL,
	status       INTEGER NOT NULL DEFAULT 0,
	content_type TEXT NOT NULL DEFAULT '',
	location     TEXT NOT NULL DEFAULT '',
	body         BYTEA,
	created_at   BIGINT NOT NULL,
	PRIMARY KEY (scope, idem_key)
);
CREATE INDEX httpx_idempotency_created ON httpx_idempotency (created_at)`}}

// SQLStore is an IdempotencyStore in a qshield database (table
// httpx_idempotency), shared by every node using that database. A claim is
// taken with an INSERT … ON CONFLICT DO NOTHING, so two nodes racing on one
// key get one claim; an expired claim is taken over with a compare-and-set
// on the claim token, which also fences the old holder's Complete.
//
// On SQLite every write goes through a group committer (sqldb.Batcher): a
// claim and a completion per request would otherwise cost two fsyncs each
// and, under hundreds of concurrent requests, a convoy on the write lock.
type SQLStore struct {
	db  *sqldb.DB
	b   *sqldb.Batcher
	ttl time.Duration
	now func() time.Time
	n   atomic.Uint64
}

// DefaultIdempotencyTTL is how long keys are remembered.
const DefaultIdempotencyTTL = 24 * time.Hour

// OpenSQLStore migrates and returns the store; ttl ≤ 0 means DefaultIdempotencyTTL.
func OpenSQLStore(ctx context.Context, db *sqldb.DB, ttl time.Duration) (*SQLStore, error) {
	if err := db.Migrate(ctx, "httpx_idempotency", idempotencyMigrations); err != nil {
		return nil, fmt.Errorf("httpx: idempotency store: %w", err)
	}
	if ttl <= 0 {
		ttl = DefaultIdempotencyTTL
	}
	return &SQLStore{db: db, b: db.NewBatcher(0), ttl: ttl, now: time.Now}, nil
}

// Close stops the store's group committer.
func (s *SQLStore) Close() error { return s.b.Close() }

func newToken() ([]byte, error) {
	t := make([]byte, 16)
	if _, err := rand.Read(t); err != nil {
		return nil, err
	}
	return t, nil
}

// Begin implements IdempotencyStore. The claim, the read of an existing
// record and a takeover run in one transaction.
func (s *SQLStore) Begin(ctx context.Context, scope, key string, hash []byte, lease time.Duration) (*StoredResponse, []byte, error) {
	if s.n.Add(1)%1024 == 0 {
		s.purge(ctx)
	}
	token, err := newToken()
	if err != nil {
		return nil, nil, err
	}
	var stored *StoredResponse
	var claim []byte
	err = s.b.Do(ctx, func(tx *sql.Tx) error {
		var err error
		stored, claim, err = s.begin(ctx, tx, scope, key, hash, lease, token)
		return err
	})
	if err != nil && !errors.Is(err, ErrIdempotencyConflict) && !errors.Is(err, ErrIdempotencyInProgress) {
		err = fmt.Errorf("claim key: %w", err)
	}
	return stored, claim, err
}

func (s *SQLStore) begin(ctx context.Context, tx *sql.Tx, scope, key string, hash []byte, lease time.Duration, token []byte) (*StoredResponse, []byte, error) {
	now := s.now()
	until := now.Add(lease).UnixNano()
	res, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO httpx_idempotency (scope, idem_key, request_hash, claim, locked_until, created_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, idem_key) DO NOTHING`), scope, key, hash, token, until, now.UnixNano())
	if err != nil {
		return nil, nil, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, nil, err
	} else if n == 1 {
		return nil, token, nil
	}
	var (
		oldHash, oldClaim, body []byte
		locked, created         int64
		status                  int
		ctype, location         string
	)
	err = tx.QueryRowContext(ctx, s.db.Rebind(`SELECT request_hash, claim, locked_until, status, content_type, location, body, created_at
		FROM httpx_idempotency WHERE scope = ? AND idem_key = ?`), scope, key).
		Scan(&oldHash, &oldClaim, &locked, &status, &ctype, &location, &body, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, ErrIdempotencyInProgress // purged meanwhile: let the client retry
	}
	if err != nil {
		return nil, nil, err
	}
	if created < now.Add(-s.ttl).UnixNano() {
		// Forgotten: start afresh, unless another request did just that.
		res, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE httpx_idempotency SET request_hash = ?, claim = ?, locked_until = ?,
			status = 0, content_type = '', location = '', body = NULL, created_at = ?
			WHERE scope = ? AND idem_key = ? AND created_at = ?`), hash, token, until, now.UnixNano(), scope, key, created)
		return took(res, err, token)
	}
	if !equalHash(oldHash, hash) {
		return nil, nil, ErrIdempotencyConflict
	}
	if status != 0 {
		return &StoredResponse{Status: status, ContentType: ctype, Location: location, Body: body}, nil, nil
	}
	if locked > now.UnixNano() {
		return nil, nil, ErrIdempotencyInProgress
	}
	// The holder's lease expired (its node died or it never finished): take over.
	res, err = tx.ExecContext(ctx, s.db.Rebind(`UPDATE httpx_idempotency SET claim = ?, locked_until = ?
		WHERE scope = ? AND idem_key = ? AND status = 0 AND claim = ?`), token, until, scope, key, oldClaim)
	return took(res, err, token)
}

func took(res sql.Result, err error, token []byte) (*StoredResponse, []byte, error) {
	if err != nil {
		return nil, nil, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return nil, nil, err
	}
	if n != 1 {
		return nil, nil, ErrIdempotencyInProgress
	}
	return nil, token, nil
}

// Complete implements IdempotencyStore.
func (s *SQLStore) Complete(ctx context.Context, scope, key string, token []byte, r StoredResponse) error {
	body := r.Body
	if body == nil {
		body = []byte{}
	}
	err := s.b.Do(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE httpx_idempotency SET status = ?, content_type = ?, location = ?, body = ?, claim = NULL
			WHERE scope = ? AND idem_key = ? AND claim = ?`), r.Status, r.ContentType, r.Location, body, scope, key, token)
		return err
	})
	if err != nil {
		return fmt.Errorf("httpx: store idempotent response: %w", err)
	}
	return nil
}

// Extend implements IdempotencyStore.
func (s *SQLStore) Extend(ctx context.Context, scope, key string, token []byte, lease time.Duration) error {
	until := s.now().Add(lease).UnixNano()
	err := s.b.Do(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE httpx_idempotency SET locked_until = ? WHERE scope = ? AND idem_key = ? AND claim = ? AND status = 0`), until, scope, key, token)
		return err
	})
	if err != nil {
		return fmt.Errorf("httpx: extend idempotency claim: %w", err)
	}
	return nil
}

// Release implements IdempotencyStore.
func (s *SQLStore) Release(ctx context.Context, scope, key string, token []byte) error {
	err := s.b.Do(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM httpx_idempotency WHERE scope = ? AND idem_key = ? AND claim = ? AND status = 0`), scope, key, token)
		return err
	})
	if err != nil {
		return fmt.Errorf("httpx: release idempotency claim: %w", err)
	}
	return nil
}

// purge deletes keys older than the TTL (best effort).
func (s *SQLStore) purge(ctx context.Context) {
	cutoff := s.now().Add(-s.ttl).UnixNano()
	_ = s.b.Do(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM httpx_idempotency WHERE created_at < ? AND (status <> 0 OR locked_until < ?)`), cutoff, cutoff)
		return err
	})
}
