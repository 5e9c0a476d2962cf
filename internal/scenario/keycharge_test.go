package scenario

import (
	"bytes"
	"context"
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestKeyCharge(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	log, err := audit.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := pki.RawKey(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.OpenOrCreateCA(context.Background(), db, "platform", pki.Options{}, enc)
	if err != nil {
		t.Fatal(err)
	}
	steps, err := KeyCharge(context.Background(), KeyChargeDeps{DB: db, CA: ca, Audit: log, Dir: t.TempDir()})
	for _, s := range steps {
		t.Logf("%-55s %-8s %s", s.Step, s.Outcome, s.Detail)
	}
	if err != nil {
		t.Fatal(err)
	}
	var refused int
	for _, s := range steps {
		if s.Outcome == "refused" {
			refused++
		}
	}
	if refused < 9 {
		t.Fatalf("only %d refusals", refused)
	}
}
