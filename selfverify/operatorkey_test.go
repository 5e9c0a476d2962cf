package selfverify

import (
	"bytes"
	"context"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestOperatorKeySealed: d_N is never stored in clear when a sealer is given,
// a wrong or missing key cannot open it, and a key stored in clear by an
// earlier version is sealed on load.
func TestOperatorKeySealed(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		seal, _ := pki.RawKey(bytes.Repeat([]byte{3}, 32))
		other, _ := pki.RawKey(bytes.Repeat([]byte{4}, 32))
		k, err := LoadOrCreateOperatorKey(ctx, db, ecqv.P256(), seal)
		if err != nil {
			t.Fatal(err)
		}
		var stored string
		if err := db.QueryRowContext(ctx, `SELECT d FROM sv_operator_key WHERE id = 1`).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(stored, sealedPrefix) || strings.Contains(stored, hex.EncodeToString(k.Bytes())) {
			t.Fatalf("operator key stored in clear: %q", stored)
		}
		again, err := LoadOrCreateOperatorKey(ctx, db, ecqv.P256(), seal)
		if err != nil || !bytes.Equal(again.Bytes(), k.Bytes()) {
			t.Fatalf("reload: %v", err)
		}
		if _, err := LoadOrCreateOperatorKey(ctx, db, ecqv.P256(), other); err == nil {
			t.Fatal("opened with the wrong key")
		}
		if _, err := LoadOrCreateOperatorKey(ctx, db, ecqv.P256(), nil); err == nil {
			t.Fatal("opened a sealed key without a key")
		}
		// A key stored in clear (earlier version) is sealed on load.
		if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE sv_operator_key SET d = ? WHERE id = 1`), hex.EncodeToString(k.Bytes())); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateOperatorKey(ctx, db, ecqv.P256(), seal); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, `SELECT d FROM sv_operator_key WHERE id = 1`).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(stored, sealedPrefix) {
			t.Fatal("clear key was not resealed")
		}
	})
}
