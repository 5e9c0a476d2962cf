package bioqr_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// Finding (#14, a crash window at the last stop): a settlement server
// certified by the CA whose unit file with the new certificate was never
// saved (the platform keeps the file in the database and stores it after
// NewSettlement; a node killed in between keeps the uncertified copy) could
// never start again: its subject was "already certified (revoke it first)".
// The CA's active certificate for the unit's own key is now replaced. With
// that look-up removed, the second NewSettlement fails with ErrExists.
func TestSettlementCertifiedButNotSaved(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ca, err := pki.OpenOrCreateCA(ctx, db, "platform", pki.Options{}, fastKey())
		if err != nil {
			t.Fatal(err)
		}
		led, err := ledger.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { led.Close() })
		dir := t.TempDir()
		path := filepath.Join(dir, "settlement.json")
		if _, err := bioqr.NewSecureUnit(path, bioqr.KindSettlement, pki.ECDSAP256, fastKey()); err != nil {
			t.Fatal(err)
		}
		saved, err := os.ReadFile(path) // the copy stored before certification
		if err != nil {
			t.Fatal(err)
		}
		open := func() (*bioqr.SecureUnit, *bioqr.Settlement, error) {
			u, err := bioqr.OpenSecureUnit(path, fastKey())
			if err != nil {
				t.Fatal(err)
			}
			st, err := bioqr.NewSettlement(ctx, bioqr.SettlementConfig{DB: db, CA: ca, Ledger: led, Unit: u})
			return u, st, err
		}
		u1, _, err := open()
		if err != nil {
			t.Fatal(err)
		}
		first := u1.Credential().Serial
		// The process dies before the certified copy is saved: the next
		// start finds the uncertified one.
		if err := os.WriteFile(path, saved, 0o600); err != nil {
			t.Fatal(err)
		}
		u2, _, err := open()
		if err != nil {
			t.Fatalf("restart with the uncertified copy: %v", err)
		}
		if c := u2.Credential(); c == nil || c.Serial.Cmp(first) == 0 {
			t.Fatalf("no new certificate after the restart (%v)", c)
		}
		if rev, err := ca.IsRevoked(ctx, first); err != nil || !rev {
			t.Fatalf("the replaced certificate is not revoked (%v, %v)", rev, err)
		}
		// Another key under the same subject is still refused.
		other := filepath.Join(dir, "other.json")
		ou, err := bioqr.NewSecureUnit(other, bioqr.KindSettlement, pki.ECDSAP256, fastKey())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bioqr.NewSettlement(ctx, bioqr.SettlementConfig{DB: db, CA: ca, Ledger: led, Unit: ou}); !errors.Is(err, bioqr.ErrExists) {
			t.Fatalf("another key under the settlement subject: %v, want ErrExists", err)
		}
	})
}
