package kme

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/seal"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// legacySeal is the at-rest format before package seal: nonce || AES-GCM
// under an HMAC-derived key with additional data "qshield-kme-unit\0KME\0unit".
func legacySeal(t *testing.T, s *sealer, kmeID, unitID string, plain []byte) []byte {
	t.Helper()
	out := make([]byte, 12, 12+len(plain)+16)
	if _, err := rand.Read(out); err != nil {
		t.Fatal(err)
	}
	return s.legacy.Seal(out, out, plain, legacyAD(kmeID, unitID))
}

// TestResealLegacyUnits: units written in the legacy format are read, and
// rewritten in package seal's format when the KME starts; a corrupt unit is
// left alone and still refused.
func TestResealLegacyUnits(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, nil)
		ctx := context.Background()
		keys := qkd.RandomKeys(5, 32)
		if err := e.p.A.Deposit(ctx, keys); err != nil {
			t.Fatal(err)
		}
		cfg := e.p.A.Config()
		cfg.MasterKey = testMaster
		s, err := newSealer(cfg.MasterKey)
		if err != nil {
			t.Fatal(err)
		}
		plain := map[string][]byte{}
		for _, k := range keys {
			plain[k.ID] = k.Bytes
			if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE kme_keys SET key_enc = ? WHERE kme_id = ? AND key_id = ?`),
				legacySeal(t, s, cfg.KMEID, k.ID, k.Bytes), cfg.KMEID, k.ID); err != nil {
				t.Fatal(err)
			}
		}
		// Legacy units open.
		var enc []byte
		if err := db.QueryRowContext(ctx, db.Rebind(`SELECT key_enc FROM kme_keys WHERE kme_id = ? AND key_id = ?`), cfg.KMEID, keys[0].ID).Scan(&enc); err != nil {
			t.Fatal(err)
		}
		if p, err := s.open(cfg.KMEID, keys[0].ID, enc); err != nil || !bytes.Equal(p, keys[0].Bytes) {
			t.Fatalf("legacy unit: %v", err)
		}
		// One unit is corrupt.
		if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE kme_keys SET key_enc = ? WHERE kme_id = ? AND key_id = ?`), []byte("garbage that opens in no format"), cfg.KMEID, keys[4].ID); err != nil {
			t.Fatal(err)
		}
		k2, err := New(ctx, db, cfg) // the master key is consumed: cfg is not reused

		if err != nil {
			t.Fatalf("restart over legacy units: %v", err)
		}
		k2.Close()
		n, err := reseal(ctx, db, cfg.KMEID, s)
		if err != nil || n != 0 {
			t.Fatalf("second reseal rewrote %d units (%v), want 0", n, err)
		}
		rs, err := db.QueryContext(ctx, db.Rebind(`SELECT key_id, key_enc FROM kme_keys WHERE kme_id = ?`), cfg.KMEID)
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		resealed := 0
		for rs.Next() {
			var id string
			var b []byte
			if err := rs.Scan(&id, &b); err != nil {
				t.Fatal(err)
			}
			if id == keys[4].ID {
				if _, err := s.open(cfg.KMEID, id, b); err == nil {
					t.Fatal("corrupt unit opens")
				}
				continue
			}
			p, err := s.s.Open(b, cfg.KMEID, id)
			if err != nil || !seal.IsSealed(b) {
				t.Fatalf("unit %s not in the current format after restart: %v", id, err)
			}
			if !bytes.Equal(p, plain[id]) {
				t.Fatalf("unit %s changed", id)
			}
			if _, err := s.s.Open(b, cfg.KMEID, keys[4].ID); err == nil {
				t.Fatal("a unit opens as another unit")
			}
			resealed++
		}
		if resealed != 4 {
			t.Fatalf("%d units resealed, want 4", resealed)
		}
	})
}
