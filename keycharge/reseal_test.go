package keycharge_test

import (
	"bytes"
	"crypto/rand"
	"github.com/qshield/qshield/keycharge"
	"testing"

	"github.com/qshield/qshield/seal"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestResealLegacyKeys: stored keys in the format before package seal are
// read and rewritten in the current one; a second pass rewrites nothing.
func TestResealLegacyKeys(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, 1)
		ctx, s := e.ctx, e.lab.QKMP.Sealer()
		if _, err := e.charger(nil).Charge(ctx, e.provision("SN-R1"), 160<<10); err != nil {
			t.Fatal(err)
		}
		rs, err := db.QueryContext(ctx, `SELECT key_id, sealed FROM keycharge_keys ORDER BY key_id LIMIT 20`)
		if err != nil {
			t.Fatal(err)
		}
		plain := map[string][]byte{}
		for rs.Next() {
			var id string
			var b []byte
			if err := rs.Scan(&id, &b); err != nil {
				t.Fatal(err)
			}
			if plain[id], err = s.Open(id, b); err != nil {
				t.Fatal(err)
			}
		}
		rs.Close()
		if len(plain) != 20 {
			t.Fatalf("%d keys in the pool, want 20", len(plain))
		}
		for id, k := range plain {
			n := make([]byte, 12, 12+len(k)+16)
			rand.Read(n)
			old := s.LegacySeal(id, n, k)
			if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE keycharge_keys SET sealed = ? WHERE key_id = ?`), old, id); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Open(id, old); err != nil || !bytes.Equal(got, k) {
				t.Fatalf("legacy key %s does not open: %v", id, err)
			}
		}
		if n, err := keycharge.Reseal(ctx, db, s); err != nil || n != 20 {
			t.Fatalf("reseal rewrote %d keys (%v), want 20", n, err)
		}
		if n, err := keycharge.Reseal(ctx, db, s); err != nil || n != 0 {
			t.Fatalf("second reseal rewrote %d keys (%v), want 0", n, err)
		}
		for id, k := range plain {
			var b []byte
			if err := db.QueryRowContext(ctx, db.Rebind(`SELECT sealed FROM keycharge_keys WHERE key_id = ?`), id).Scan(&b); err != nil {
				t.Fatal(err)
			}
			got, err := s.Current().Open(b, id)
			if err != nil || !seal.IsSealed(b) || !bytes.Equal(got, k) {
				t.Fatalf("key %s after reseal: %v", id, err)
			}
		}
	})
}
