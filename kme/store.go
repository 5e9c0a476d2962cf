package kme

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/qshield/qshield/seal"
	"github.com/qshield/qshield/sqldb"
)

// component is the name the kme tables are migrated under.
const component = "kme"

var migrations = []sqldb.Migration{{
	Version: 1,
	SQLite: `
CREATE TABLE kme_keys (
	kme_id      TEXT    NOT NULL,
	key_id      TEXT    NOT NULL,
	seq         INTEGER NOT NULL,
	key_enc     BLOB    NOT NULL,
	state       INTEGER NOT NULL,
	group_id    TEXT,
	part        INTEGER,
	size_bits   INTEGER,
	master_sae  TEXT,
	slave_sae   TEXT,
	created_at  INTEGER NOT NULL,
	reserved_at INTEGER,
	PRIMARY KEY (kme_id, seq)
) WITHOUT ROWID;
CREATE TABLE kme_meta (
	kme_id     TEXT PRIMARY KEY,
	key_check  BLOB NOT NULL,
	created_at TEXT NOT NULL
)`,
	Postgres: `
CREATE TABLE kme_keys (
	kme_id      TEXT    NOT NULL,
	key_id      TEXT    NOT NULL,
	seq         BIGINT  NOT NULL,
	key_enc     BYTEA   NOT NULL,
	state       INTEGER NOT NULL,
	group_id    TEXT,
	part        INTEGER,
	size_bits   INTEGER,
	master_sae  TEXT,
	slave_sae   TEXT,
	created_at  BIGINT  NOT NULL,
	reserved_at BIGINT,
	PRIMARY KEY (kme_id, seq)
);
CREATE TABLE kme_meta (
	kme_id     TEXT PRIMARY KEY,
	key_check  BYTEA NOT NULL,
	created_at TEXT NOT NULL
)`,
}, {
	// Version 2: units of any length (carve.go). bits is the length of a
	// row's key material; rows written before are filled in at start-up
	// from their plaintext (fillBits).
	Version:  2,
	SQLite:   `ALTER TABLE kme_keys ADD COLUMN bits INTEGER`,
	Postgres: `ALTER TABLE kme_keys ADD COLUMN bits INTEGER`,
}, {
	// Version 3 (SQLite only): kme_keys becomes an ordinary rowid table
	// with its primary key as a separate index. In a WITHOUT ROWID table
	// the whole row is the b-tree key, so a 64-kbit segment (8 KiB sealed)
	// spilled into overflow pages inside the key itself, and every seek
	// that compared against such a row — interior cells included — read
	// all its overflow pages: a DELETE of 128 small reserved keys cost
	// milliseconds. PostgreSQL's heap tables keep the index separate
	// already.
	Version: 3,
	SQLite: `
CREATE TABLE kme_keys_v3 (
	kme_id      TEXT    NOT NULL,
	key_id      TEXT    NOT NULL,
	seq         INTEGER NOT NULL,
	key_enc     BLOB    NOT NULL,
	state       INTEGER NOT NULL,
	group_id    TEXT,
	part        INTEGER,
	size_bits   INTEGER,
	master_sae  TEXT,
	slave_sae   TEXT,
	created_at  INTEGER NOT NULL,
	reserved_at INTEGER,
	bits        INTEGER,
	PRIMARY KEY (kme_id, seq)
);
INSERT INTO kme_keys_v3 (kme_id, key_id, seq, key_enc, state, group_id, part, size_bits, master_sae, slave_sae, created_at, reserved_at, bits)
	SELECT kme_id, key_id, seq, key_enc, state, group_id, part, size_bits, master_sae, slave_sae, created_at, reserved_at, bits FROM kme_keys;
DROP TABLE kme_keys;
ALTER TABLE kme_keys_v3 RENAME TO kme_keys`,
	Postgres: `SELECT 1`,
}}

// Unit states in kme_keys.state.
const (
	stateAvailable = 0 // in the pool, not yet assigned
	stateReserved  = 1 // assigned to (master, slave); waiting for the slave SAE
	// delivered to the slave SAE, kept sealed for a repeated dec_keys by it
	// until Config.RedeliverWithin has passed (reserved_at: delivery time)
	stateDelivered = 2
)

// sealer encrypts key units at rest with package seal (purpose "kme unit",
// identity KME ID and unit ID, so rows cannot be swapped). It still opens
// units written by the sealer before it (AES-256-GCM under an HMAC-derived
// key, additional data "qshield-kme-unit\x00KME\x00unit"): reseal rewrites
// them at start-up.
type sealer struct {
	s      *seal.Sealer
	legacy cipher.AEAD
	check  []byte
}

const sealPurpose = "kme unit"

func newSealer(master []byte) (*sealer, error) {
	if len(master) != 32 {
		return nil, fmt.Errorf("%w: master key is %d bytes, want 32", ErrMasterKey, len(master))
	}
	s, err := seal.New(master, sealPurpose)
	if err != nil {
		return nil, fmt.Errorf("kme: %w", err)
	}
	blk, err := aes.NewCipher(hmacSHA256(master, []byte("qshield kme v1 unit encryption")))
	if err != nil {
		return nil, fmt.Errorf("kme: aes: %w", err)
	}
	legacy, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, fmt.Errorf("kme: gcm: %w", err)
	}
	return &sealer{s: s, legacy: legacy, check: hmacSHA256(master, []byte("qshield kme v1 key check"))}, nil
}

func hmacSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

func legacyAD(kmeID, unitID string) []byte {
	return []byte("qshield-kme-unit\x00" + kmeID + "\x00" + unitID)
}

func (s *sealer) seal(kmeID, unitID string, plain []byte) ([]byte, error) {
	b, err := s.s.Seal(plain, kmeID, unitID)
	if err != nil {
		return nil, fmt.Errorf("kme: %w", err)
	}
	return b, nil
}

// corruptError names the unit whose ciphertext failed authentication.
type corruptError struct{ unit string }

func (e *corruptError) Error() string {
	return fmt.Sprintf("%v: unit %s", ErrCorrupt, e.unit)
}
func (e *corruptError) Unwrap() error { return ErrCorrupt }

// open opens a unit in the current format or, failing that, the legacy one
// (a legacy record starts with the current header by chance once in 2^32).
func (s *sealer) open(kmeID, unitID string, sealed []byte) ([]byte, error) {
	p, _, err := s.openAny(kmeID, unitID, sealed)
	return p, err
}

func (s *sealer) openAny(kmeID, unitID string, sealed []byte) (p []byte, legacy bool, err error) {
	if seal.IsSealed(sealed) {
		if p, err := s.s.Open(sealed, kmeID, unitID); err == nil {
			return p, false, nil
		}
	}
	if len(sealed) < 12+s.legacy.Overhead() {
		return nil, false, &corruptError{unitID}
	}
	p, err = s.legacy.Open(nil, sealed[:12], sealed[12:], legacyAD(kmeID, unitID))
	if err != nil {
		return nil, false, &corruptError{unitID}
	}
	return p, true, nil
}

// reseal rewrites the units of kmeID still sealed in the legacy format in
// the current one, a batch per transaction (each row is re-read under the
// transaction, so a unit delivered meanwhile is simply gone). It returns how
// many units it rewrote. A unit that opens in neither format is left as it
// is: it is refused with ErrCorrupt when a key needs it, as before.
func reseal(ctx context.Context, db *sqldb.DB, kmeID string, s *sealer) (int, error) {
	const batch = 512
	total := 0
	after := int64(-1)
	for {
		type row struct {
			seq int64
			id  string
			enc []byte
		}
		var rows []row
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			rows = rows[:0]
			rs, err := tx.QueryContext(ctx, db.Rebind(`SELECT seq, key_id, key_enc FROM kme_keys WHERE kme_id = ? AND seq > ? ORDER BY seq LIMIT ?`), kmeID, after, batch)
			if err != nil {
				return err
			}
			for rs.Next() {
				var r row
				if err := rs.Scan(&r.seq, &r.id, &r.enc); err != nil {
					rs.Close()
					return err
				}
				rows = append(rows, r)
			}
			rs.Close()
			if err := rs.Err(); err != nil {
				return err
			}
			for _, r := range rows {
				p, legacy, err := s.openAny(kmeID, r.id, r.enc)
				if err != nil {
					continue // corrupt: left as it is, refused (ErrCorrupt) when asked for
				}
				if !legacy {
					clear(p)
					continue
				}
				enc, err := s.seal(kmeID, r.id, p)
				clear(p)
				if err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, db.Rebind(`UPDATE kme_keys SET key_enc = ? WHERE kme_id = ? AND seq = ?`), enc, kmeID, r.seq); err != nil {
					return err
				}
				total++
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("kme: reseal the pool of %s: %w", kmeID, err)
		}
		if len(rows) < batch {
			return total, nil
		}
		after = rows[len(rows)-1].seq
	}
}

// fillBits sets the length of the units of kmeID written before version 2
// from their plaintext (the fixed unit size of the time), a batch per
// transaction. A unit that opens in neither format gets 0 bits: it is never
// offered, and reconciliation removes the peer's copy.
func fillBits(ctx context.Context, db *sqldb.DB, kmeID string, s *sealer) (int, error) {
	const batch = 512
	total := 0
	for {
		n := 0
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			n = 0
			rs, err := tx.QueryContext(ctx, db.Rebind(`SELECT seq, key_id, key_enc FROM kme_keys WHERE kme_id = ? AND bits IS NULL ORDER BY seq LIMIT ?`), kmeID, batch)
			if err != nil {
				return err
			}
			type row struct {
				seq  int64
				bits int
			}
			var rows []row
			for rs.Next() {
				var seq int64
				var id string
				var enc []byte
				if err := rs.Scan(&seq, &id, &enc); err != nil {
					rs.Close()
					return err
				}
				bits := 0
				if p, err := s.open(kmeID, id, enc); err == nil {
					bits = 8 * len(p)
					clear(p)
				}
				rows = append(rows, row{seq, bits})
			}
			rs.Close()
			if err := rs.Err(); err != nil {
				return err
			}
			for _, r := range rows {
				if _, err := tx.ExecContext(ctx, db.Rebind(`UPDATE kme_keys SET bits = ? WHERE kme_id = ? AND seq = ?`), r.bits, kmeID, r.seq); err != nil {
					return err
				}
			}
			n = len(rows)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("kme: record unit lengths of %s: %w", kmeID, err)
		}
		total += n
		if n < batch {
			return total, nil
		}
	}
}

// checkMasterKey records the key check value of this KME on first use and
// compares it afterwards, so a wrong master key is a clear error at start-up
// rather than undecryptable keys later.
func checkMasterKey(ctx context.Context, db *sqldb.DB, kmeID string, s *sealer) error {
	return db.InTx(ctx, func(tx *sql.Tx) error {
		// Insert-if-absent, then compare: two nodes starting on an empty
		// database both get past this (a SELECT-then-INSERT let one of them
		// fail with a duplicate key on kme_meta_pkey).
		if _, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO kme_meta (kme_id, key_check, created_at) VALUES (?, ?, ?)
			ON CONFLICT (kme_id) DO NOTHING`), kmeID, s.check, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			return err
		}
		var got []byte
		if err := tx.QueryRowContext(ctx, db.Rebind(`SELECT key_check FROM kme_meta WHERE kme_id = ?`), kmeID).Scan(&got); err != nil {
			return err
		}
		if subtle.ConstantTimeCompare(got, s.check) != 1 {
			return fmt.Errorf("%w: the pool of KME %q was sealed with another master key", ErrMasterKey, kmeID)
		}
		return nil
	})
}

// nextSeq returns the next free sequence number of kmeID's units inside tx.
// On PostgreSQL a transaction-scoped advisory lock per KME serialises
// depositors until commit; SQLite transactions write one at a time anyway.
func nextSeq(ctx context.Context, db *sqldb.DB, tx *sql.Tx, kmeID string) (int64, error) {
	if db.Dialect == sqldb.Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('qshield kme_keys ' || $1))`, kmeID); err != nil {
			return 0, fmt.Errorf("kme: lock key sequence: %w", err)
		}
	}
	var max sql.NullInt64
	if err := tx.QueryRowContext(ctx, db.Rebind(`SELECT MAX(seq) FROM kme_keys WHERE kme_id = ?`), kmeID).Scan(&max); err != nil {
		return 0, fmt.Errorf("kme: read key sequence: %w", err)
	}
	return max.Int64 + 1, nil
}

// writer is a group committer: operations from concurrent requests are
// queued and applied by one goroutine, many per transaction, each inside its
// own savepoint so that one failing operation does not fail the others. A
// caller returns only once its operation is committed (on SQLite with
// synchronous=FULL: on disk), so durability costs one commit per batch, not
// one per request.
type writer struct {
	once   sync.Once
	mu     sync.RWMutex // held for reading while enqueuing; closed under it
	closed bool
	db     *sqldb.DB
	smu    sync.Mutex
	stmts  map[string]*sql.Stmt
	ops    chan *op
	stop   chan struct{}
	wg     sync.WaitGroup
}

type op struct {
	fn   func(ctx context.Context, tx *sql.Tx) error
	done chan error
}

const maxBatch = 64

func newWriter(db *sqldb.DB) *writer {
	w := &writer{db: db, ops: make(chan *op, 1024), stop: make(chan struct{})}
	w.wg.Add(1)
	go w.loop()
	return w
}

var errClosed = errors.New("kme: key manager closed")

// do runs fn in a batch transaction and waits for the commit.
func (w *writer) do(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	o := &op{fn: fn, done: make(chan error, 1)}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return errClosed
	}
	select {
	case w.ops <- o:
		w.mu.RUnlock()
	case <-ctx.Done():
		w.mu.RUnlock()
		return ctx.Err()
	}
	// Once queued, the operation will be applied or failed; wait for it even if
	// ctx ends, so the caller never mistakes a committed change for a failed one.
	return <-o.done
}

func (w *writer) close() {
	w.once.Do(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		close(w.stop)
	})
	w.wg.Wait()
	w.closeStmts()
}

func (w *writer) loop() {
	defer w.wg.Done()
	for {
		var first *op
		select {
		case first = <-w.ops:
		case <-w.stop:
			// Fail whatever is still queued.
			for {
				select {
				case o := <-w.ops:
					o.done <- errClosed
				default:
					return
				}
			}
		}
		batch := []*op{first}
	drain:
		for len(batch) < maxBatch {
			select {
			case o := <-w.ops:
				batch = append(batch, o)
			default:
				break drain
			}
		}
		w.apply(batch)
	}
}

// apply commits batch in one transaction. An operation that fails makes the
// transaction roll back; it is then reported and the others are applied
// again without it (operations have no effect outside the transaction, so
// running them again is safe — InTx relies on the same property).
func (w *writer) apply(batch []*op) {
	for len(batch) > 0 {
		failed, err := w.try(batch)
		if failed < 0 {
			for _, o := range batch {
				o.done <- err
			}
			return
		}
		batch[failed].done <- err
		batch = append(batch[:failed:failed], batch[failed+1:]...)
	}
}

// errOpFailed aborts a batch transaction because one operation failed.
var errOpFailed = errors.New("kme: operation failed")

// try runs batch in one transaction. It returns the index of the operation
// that failed and its error, or -1 and the transaction's outcome.
func (w *writer) try(batch []*op) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	failed, opErr := -1, error(nil)
	err := w.db.InTx(ctx, func(tx *sql.Tx) error {
		failed, opErr = -1, nil
		if w.db.Dialect == sqldb.SQLite {
			// Zero deleted key material in the pages a commit writes anyway
			// (FAST: no extra I/O; the ciphertexts are encrypted in any case).
			if _, err := tx.ExecContext(ctx, `PRAGMA secure_delete = FAST`); err != nil {
				return err
			}
		}
		for i, o := range batch {
			if err := o.fn(ctx, tx); err != nil {
				if sqldb.IsTransient(err) {
					return err
				}
				failed, opErr = i, err
				return errOpFailed
			}
		}
		return nil
	})
	if failed >= 0 {
		return failed, opErr
	}
	if err != nil {
		err = fmt.Errorf("kme: commit key pool batch: %w", err)
	}
	return -1, err
}

// placeholders returns "?, ?, …" with n marks.
func placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?, ", n-1) + "?"
}

// maxStmts bounds the prepared-statement cache (statements differ by the
// length of their IN lists).
const maxStmts = 4096

// stmt returns tx's version of the prepared statement for q, preparing and
// caching it on first use: the hot statements are parsed once, not on every
// request.
func (w *writer) stmt(ctx context.Context, tx *sql.Tx, q string) (*sql.Stmt, error) {
	w.smu.Lock()
	st := w.stmts[q]
	if st == nil && len(w.stmts) < maxStmts {
		var err error
		st, err = w.db.PrepareContext(ctx, q)
		if err != nil {
			w.smu.Unlock()
			return nil, err
		}
		if w.stmts == nil {
			w.stmts = make(map[string]*sql.Stmt)
		}
		w.stmts[q] = st
	}
	w.smu.Unlock()
	if st == nil {
		return tx.PrepareContext(ctx, q)
	}
	return tx.StmtContext(ctx, st), nil
}

func (w *writer) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	st, err := w.stmt(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (w *writer) query(ctx context.Context, tx *sql.Tx, q string, args ...any) (*sql.Rows, error) {
	st, err := w.stmt(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (w *writer) closeStmts() {
	w.smu.Lock()
	defer w.smu.Unlock()
	for _, st := range w.stmts {
		st.Close()
	}
	w.stmts = nil
}
