package scenario

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/selfverify"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestSelfVerify(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo sleeps about 3.5 s")
	}
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	ctx := context.Background()
	led, err := ledger.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	al, err := audit.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	// The operator served over HTTPS, as in `qshield serve`.
	key, err := selfverify.LoadOrCreateOperatorKey(ctx, db, ecqv.P256(), nil)
	if err != nil {
		t.Fatal(err)
	}
	op, err := selfverify.NewOperator(ctx, db, selfverify.OperatorConfig{Key: key, Ledger: led, Audit: al})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	srv := httptest.NewTLSServer(op.Handler())
	defer srv.Close()
	rows, err := SelfVerify(ctx, SelfVerifyDeps{DB: db, Ledger: led, Audit: al, OperatorURL: srv.URL, HTTPClient: srv.Client()})
	for _, r := range rows {
		t.Logf("%-50s %-8s %s", r.Step, r.Outcome, r.Detail)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 20 {
		t.Fatalf("only %d rows", len(rows))
	}
}
