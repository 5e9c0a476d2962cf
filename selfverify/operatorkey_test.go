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

// TestOperatorKeyLegacyResealed: an operator key sealed in pki's legacy
// QSK1 format (the raw-key vector of pki/testdata/qsk1.json, whose plaintext
// is the P-256 scalar 0x0102…20) loads and is stored again in the current
// format.
func TestOperatorKeyLegacyResealed(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		if _, err := LoadOrCreateOperatorKey(ctx, db, ecqv.P256(), nil); err != nil {
			t.Fatal(err)
		}
		legacy := "51534b3102b565f1577abceea4713a4e4e834254248b748a66f78a69ff66373a12c574213592bfc66149a481703bbe645014d4dcf1c958420265155eab0f640b2abc5f30fc7df39ad96c90faa4"
		if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE sv_operator_key SET d = ? WHERE id = 1`), sealedPrefix+legacy); err != nil {
			t.Fatal(err)
		}
		seal, _ := pki.RawKey([]byte("0123456789abcdef0123456789abcdef"))
		want := make([]byte, 32)
		for i := range want {
			want[i] = byte(i + 1)
		}
		for i := range 2 {
			k, err := LoadOrCreateOperatorKey(ctx, db, ecqv.P256(), seal)
			if err != nil || !bytes.Equal(k.Bytes(), want) {
				t.Fatalf("load %d: %v", i, err)
			}
			var stored string
			if err := db.QueryRowContext(ctx, `SELECT d FROM sv_operator_key WHERE id = 1`).Scan(&stored); err != nil {
				t.Fatal(err)
			}
			b, err := hex.DecodeString(strings.TrimPrefix(stored, sealedPrefix))
			if err != nil || pki.IsLegacySealed(b) || !strings.HasPrefix(string(b), "QSK2") {
				t.Fatalf("load %d: stored %.12s…, want a QSK2 blob", i, stored)
			}
		}
	})
}
