package keycharge

import (
	"context"
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestDemo(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	log, err := audit.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	steps, err := Demo(context.Background(), DemoDeps{DB: db, CA: newCA(t, db, "platform"), Audit: log, Dir: t.TempDir()})
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
