package scenario

import (
	"bytes"
	"context"
	"testing"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestBioQR(t *testing.T) {
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
		steps, err := BioQR(ctx, BioQRDeps{DB: db, CA: ca, Ledger: led, Audit: &bioqr.MemoryAuditor{}})
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
