package keycharge

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/keycharge/device"
)

// Key pools. The seed's platform "obtains the QK from the QK manager,
// re-codes and stores it"; a charger likewise holds key from its "original
// QK device". Fetching over ETSI 014 during the charge makes the user wait
// for both KMEs. So a charger may prefetch: it fetches keys (enc_keys) into
// a local pool and announces their IDs (PoolKeys); the platform fetches the
// same keys (dec_keys) and keeps them sealed, state "pooled", owned by that
// charger and usable by nobody. A charge commit then finds its keys in the
// platform's pool (any not found are fetched from the KME as before), checks
// the hash and assigns them to the device in the commit transaction, so a
// charge runs at the speed of the device's disk and AEAD.

// MaxPoolBatch bounds the key IDs of one PoolKeys call.
const MaxPoolBatch = 4096

// PoolRequest announces prefetched key IDs.
type PoolRequest struct {
	MasterSAE string   `json:"master_sae"`
	KeyIDs    []string `json:"key_ids"`
}

// PoolStatus is a charger's pool on the platform.
type PoolStatus struct {
	Keys  int   `json:"keys"`
	Bytes int64 `json:"bytes"`
}

// PoolKeys fetches the announced keys from the QSSC's KME and keeps them,
// sealed, in the calling charger's pool.
func (q *QKMP) PoolKeys(ctx context.Context, p Principal, req PoolRequest) (*PoolStatus, error) {
	if !q.isCharger(p) {
		q.auditDenied(ctx, p, "keycharge.pool.fetch", "", ErrForbidden)
		return nil, ErrForbidden
	}
	if len(req.KeyIDs) == 0 || len(req.KeyIDs) > MaxPoolBatch || strings.TrimSpace(req.MasterSAE) == "" || len(req.MasterSAE) > 128 {
		return nil, fmt.Errorf("%w: pool needs master_sae and 1..%d key_ids", ErrInvalid, MaxPoolBatch)
	}
	seen := map[string]bool{}
	for _, id := range req.KeyIDs {
		if !device.ValidKeyID(id) || seen[id] {
			return nil, fmt.Errorf("%w: key ID %q invalid or repeated", ErrInvalid, id)
		}
		seen[id] = true
	}
	if q.cfg.QSSC == nil {
		return nil, ErrNoKME
	}
	extracted := q.now()
	keys, err := q.fetch(ctx, req.MasterSAE, req.KeyIDs)
	if err != nil {
		return nil, err
	}
	sealed := make([][]byte, len(keys))
	digests := make([][]byte, len(keys))
	lens := make([]int, len(keys))
	var total int64
	for i, k := range keys {
		if sealed[i], err = q.seal.seal(req.KeyIDs[i], k); err != nil {
			return nil, err
		}
		digests[i], lens[i] = device.KeyDigest(k), len(k)
		total += int64(len(k))
		clear(k)
	}
	coded := q.now()
	err = q.db.InTx(ctx, func(tx *sql.Tx) error {
		const chunk = 64
		for i := 0; i < len(keys); i += chunk {
			end := min(i+chunk, len(keys))
			qs := `INSERT INTO keycharge_keys (key_id, serial, charge_id, seq, length, state, sealed, extracted_at, coded_at, distributed_at, owner, digest) VALUES ` +
				strings.TrimSuffix(strings.Repeat("(?, '', '', 0, ?, 'pooled', ?, ?, ?, 0, ?, ?),", end-i), ",")
			args := make([]any, 0, 7*(end-i))
			for j := i; j < end; j++ {
				args = append(args, req.KeyIDs[j], lens[j], sealed[j], extracted, coded, p.Name, digests[j])
			}
			if _, err := tx.ExecContext(ctx, q.db.Rebind(qs), args...); err != nil {
				return fmt.Errorf("keycharge: pool keys: %w", err)
			}
		}
		err := q.cfg.Audit.RecordTx(ctx, tx, audit.Entry{Actor: actorName(p), Event: "keycharge.pool.fetch", Outcome: audit.OutcomeSuccess, Origin: "qkmp", Resource: p.Name,
			Details: map[string]string{"keys": fmt.Sprint(len(keys)), "bytes": fmt.Sprint(total), "master_sae": req.MasterSAE}})
		return err
	})
	if err != nil {
		return nil, err
	}
	return q.poolStatus(ctx, p.Name)
}

func (q *QKMP) poolStatus(ctx context.Context, owner string) (*PoolStatus, error) {
	var st PoolStatus
	err := q.db.QueryRowContext(ctx, q.db.Rebind(`SELECT COUNT(*), COALESCE(SUM(length), 0) FROM keycharge_keys WHERE owner = ? AND state = 'pooled'`), owner).Scan(&st.Keys, &st.Bytes)
	if err != nil {
		return nil, fmt.Errorf("keycharge: pool status: %w", err)
	}
	return &st, nil
}

// ResetPool destroys the calling charger's pooled keys (a charger restarting
// has lost its local pool).
func (q *QKMP) ResetPool(ctx context.Context, p Principal) (*PoolStatus, error) {
	if !q.isCharger(p) {
		return nil, ErrForbidden
	}
	var n int64
	err := q.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, q.db.Rebind(`UPDATE keycharge_keys SET state = 'destroyed', sealed = NULL, destroyed_at = ? WHERE owner = ? AND state = 'pooled'`), q.now(), p.Name)
		if err != nil {
			return fmt.Errorf("keycharge: reset pool: %w", err)
		}
		n, _ = res.RowsAffected()
		err = q.cfg.Audit.RecordTx(ctx, tx, audit.Entry{Actor: actorName(p), Event: "keycharge.pool.reset", Outcome: audit.OutcomeSuccess, Origin: "qkmp", Resource: p.Name,
			Details: map[string]string{"keys_destroyed": fmt.Sprint(n)}})
		return err
	})
	if err != nil {
		return nil, err
	}
	return q.poolStatus(ctx, p.Name)
}

// pooledKey is a pooled key's length and digest.
type pooledKey struct {
	length int
	digest []byte
}

// pooled returns the length and digest of the owner's pooled keys among ids.
func (q *QKMP) pooled(ctx context.Context, owner string, ids []string) (map[string]pooledKey, error) {
	out := map[string]pooledKey{}
	const chunk = 500
	for i := 0; i < len(ids); i += chunk {
		part := ids[i:min(i+chunk, len(ids))]
		args := []any{owner}
		for _, id := range part {
			args = append(args, id)
		}
		rows, err := q.db.QueryContext(ctx, q.db.Rebind(`SELECT key_id, length, digest FROM keycharge_keys WHERE owner = ? AND state = 'pooled' AND key_id IN (`+
			strings.TrimSuffix(strings.Repeat("?,", len(part)), ",")+`)`), args...)
		if err != nil {
			return nil, fmt.Errorf("keycharge: read pool: %w", err)
		}
		for rows.Next() {
			var id string
			var pk pooledKey
			if err := rows.Scan(&id, &pk.length, &pk.digest); err != nil {
				rows.Close()
				return nil, err
			}
			if len(pk.digest) == 32 {
				out[id] = pk
			}
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (q *QKMP) destroyPooledTx(ctx context.Context, tx *sql.Tx, owner string, ids []string) error {
	now := q.now()
	const chunk = 500
	for i := 0; i < len(ids); i += chunk {
		part := ids[i:min(i+chunk, len(ids))]
		args := []any{now, owner}
		for _, id := range part {
			args = append(args, id)
		}
		if _, err := tx.ExecContext(ctx, q.db.Rebind(`UPDATE keycharge_keys SET state = 'destroyed', sealed = NULL, destroyed_at = ? WHERE owner = ? AND state = 'pooled' AND key_id IN (`+
			strings.TrimSuffix(strings.Repeat("?,", len(part)), ",")+`)`), args...); err != nil {
			return fmt.Errorf("keycharge: destroy pooled keys: %w", err)
		}
	}
	return nil
}
