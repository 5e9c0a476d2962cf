package scenario

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/fingerprint/fvc"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestBioQR runs the scenario on synthetic templates, and also on FVC2002
// DB1_B when QSHIELD_FINGERPRINT_DATA names it (a variable naming a path
// that holds nothing fails the test).
func TestBioQR(t *testing.T) {
	dirs := []string{""}
	dir, err := fvc.DataDir()
	switch {
	case err == nil:
		dirs = append(dirs, dir)
	case !errors.Is(err, fvc.ErrDataUnset):
		t.Fatal(err)
	}
	for _, data := range dirs {
		name := "synthetic"
		if data != "" {
			name = "FVC2002"
		}
		t.Run(name, func(t *testing.T) { testBioQR(t, data) })
	}
}

func testBioQR(t *testing.T, data string) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		enc, _ := pki.RawKey(bytes.Repeat([]byte{7}, 32))
		ca, err := pki.OpenOrCreateCA(ctx, db, "platform", pki.Options{}, enc)
		if err != nil {
			t.Fatal(err)
		}
		led, err := ledger.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer led.Close()
		steps, err := BioQR(ctx, BioQRDeps{DB: db, CA: ca, Ledger: led, Audit: &bioqr.MemoryAuditor{}, DataDir: data})
		for _, s := range steps {
			t.Logf("%-70s %-28s %s", s.Step, s.Outcome, s.Detail)
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(steps) < 17 {
			t.Fatalf("%d steps", len(steps))
		}
	})
}
