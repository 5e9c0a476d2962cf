package keycharge

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/qshield/qshield/keycharge/device"
	"github.com/qshield/qshield/seal"
	"github.com/qshield/qshield/sqldb"
)

// sealer encrypts stored key material with package seal (purpose
// "keycharge key", identity the key ID — the table's primary key — so a
// sealed key moved to another row fails to open; the row's serial column
// says whose key it is). It still opens keys written by the sealer before it
// (AES-256-GCM under HKDF-SHA256(master, "keycharge keys v1"), additional
// data "qkmp key v1\x00" || len || key ID); reseal rewrites them at Open.
type sealer struct {
	s      *seal.Sealer
	legacy cipher.AEAD
}

func newSealer(master []byte) (*sealer, error) {
	if len(master) != 32 {
		return nil, fmt.Errorf("%w: master key must be 32 bytes, got %d", ErrInvalid, len(master))
	}
	ns, err := seal.New(master, "keycharge key")
	if err != nil {
		return nil, err
	}
	k, err := hkdf.Key(sha256.New, master, nil, "keycharge keys v1", 32)
	if err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &sealer{s: ns, legacy: g}, nil
}

func legacyKeyAD(keyID string) []byte {
	b := []byte("qkmp key v1\x00")
	b = binary.BigEndian.AppendUint16(b, uint16(len(keyID)))
	return append(b, keyID...)
}

func (s *sealer) seal(keyID string, key []byte) ([]byte, error) {
	return s.s.Seal(key, keyID)
}

func (s *sealer) open(keyID string, sealed []byte) ([]byte, error) {
	k, _, err := s.openAny(keyID, sealed)
	return k, err
}

// openAny opens the current format or, failing that, the legacy one (a
// legacy record starts with the current header by chance once in 2^32).
func (s *sealer) openAny(keyID string, sealed []byte) (key []byte, legacy bool, err error) {
	if seal.IsSealed(sealed) {
		if k, err := s.s.Open(sealed, keyID); err == nil {
			return k, false, nil
		}
	}
	if len(sealed) < 12+16 {
		return nil, false, fmt.Errorf("keycharge: stored key %s truncated", keyID)
	}
	k, err := s.legacy.Open(nil, sealed[:12], sealed[12:], legacyKeyAD(keyID))
	if err != nil {
		return nil, false, fmt.Errorf("keycharge: stored key %s failed authentication", keyID)
	}
	return k, true, nil
}

// reseal rewrites stored keys still in the legacy format in the current
// one, a batch per transaction, and returns how many it rewrote. A key that
// opens in neither format is left as it is (it fails when used, as before).
func reseal(ctx context.Context, db *sqldb.DB, s *sealer) (int, error) {
	const batch = 512
	total, after := 0, ""
	for {
		type row struct {
			id     string
			sealed []byte
		}
		var rows []row
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			rows = rows[:0]
			rs, err := tx.QueryContext(ctx, db.Rebind(`SELECT key_id, sealed FROM keycharge_keys WHERE key_id > ? ORDER BY key_id LIMIT ?`), after, batch)
			if err != nil {
				return err
			}
			for rs.Next() {
				var r row
				if err := rs.Scan(&r.id, &r.sealed); err != nil {
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
				k, legacy, err := s.openAny(r.id, r.sealed)
				if err != nil || !legacy {
					clear(k)
					continue
				}
				b, err := s.seal(r.id, k)
				clear(k)
				if err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, db.Rebind(`UPDATE keycharge_keys SET sealed = ? WHERE key_id = ?`), b, r.id); err != nil {
					return err
				}
				total++
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("keycharge: reseal stored keys: %w", err)
		}
		if len(rows) < batch {
			return total, nil
		}
		after = rows[len(rows)-1].id
	}
}

// KeyRecord is a stored key's life (no key bytes).
type KeyRecord struct {
	KeyID       string     `json:"key_id"`
	Charge      string     `json:"charge"`
	Seq         int        `json:"seq"`
	Length      int        `json:"length"`
	Used        int        `json:"used"`
	State       string     `json:"state"`
	Extracted   time.Time  `json:"extracted"`
	Coded       time.Time  `json:"coded"`
	Distributed time.Time  `json:"distributed"`
	LastUsed    *time.Time `json:"last_used,omitempty"`
	Frozen      *time.Time `json:"frozen,omitempty"`
	Restored    *time.Time `json:"restored,omitempty"`
	Destroyed   *time.Time `json:"destroyed,omitempty"`
}

func optTime(n int64) *time.Time {
	if n == 0 {
		return nil
	}
	t := time.Unix(0, n).UTC()
	return &t
}

// Keys lists a device's stored keys with their life (administrators).
func (q *QKMP) Keys(ctx context.Context, p Principal, serial string, limit int) ([]KeyRecord, error) {
	if !q.isAdmin(p) {
		return nil, ErrForbidden
	}
	if limit <= 0 || limit > 100000 {
		limit = 1000
	}
	rows, err := q.db.QueryContext(ctx, q.db.Rebind(`SELECT key_id, charge_id, seq, length, used, state, extracted_at, coded_at, distributed_at, last_used_at, frozen_at, restored_at, destroyed_at
		FROM keycharge_keys WHERE serial = ? ORDER BY distributed_at, charge_id, seq LIMIT ?`), serial, limit)
	if err != nil {
		return nil, fmt.Errorf("keycharge: list keys: %w", err)
	}
	defer rows.Close()
	var out []KeyRecord
	for rows.Next() {
		var k KeyRecord
		var ex, co, di, lu, fr, re, de int64
		if err := rows.Scan(&k.KeyID, &k.Charge, &k.Seq, &k.Length, &k.Used, &k.State, &ex, &co, &di, &lu, &fr, &re, &de); err != nil {
			return nil, fmt.Errorf("keycharge: list keys: %w", err)
		}
		k.Extracted, k.Coded, k.Distributed = time.Unix(0, ex).UTC(), time.Unix(0, co).UTC(), time.Unix(0, di).UTC()
		k.LastUsed, k.Frozen, k.Restored, k.Destroyed = optTime(lu), optTime(fr), optTime(re), optTime(de)
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeviceDigest is device.Device.Digest computed over the platform's copy of
// the device's non-destroyed keys: equal digests mean both hold the same
// keys with the same usage.
func (q *QKMP) DeviceDigest(ctx context.Context, serial string) ([]byte, error) {
	rows, err := q.db.QueryContext(ctx, q.db.Rebind(`SELECT key_id, used, sealed FROM keycharge_keys WHERE serial = ? AND state <> 'destroyed' ORDER BY key_id`), serial)
	if err != nil {
		return nil, fmt.Errorf("keycharge: digest: %w", err)
	}
	defer rows.Close()
	type rec struct {
		id     string
		used   int
		sealed []byte
	}
	var recs []rec
	for rows.Next() {
		var r rec
		if err := rows.Scan(&r.id, &r.used, &r.sealed); err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Go's string order equals the byte order the device sorts by; SQL
	// collations may differ, so sort here.
	sortRecs(recs, func(r rec) string { return r.id })
	dg := device.NewDigest()
	for _, r := range recs {
		k, err := q.seal.open(r.id, r.sealed)
		if err != nil {
			return nil, err
		}
		dg.Add(r.id, r.used, k)
	}
	return dg.Sum(), nil
}
