package bioqr

import (
	"testing"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestDemoSteps(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(t, db)
		for _, dir := range []string{sharedData, ""} {
			steps, err := DemoSteps(f.ctx, DemoDeps{DB: db, CA: f.ca, Ledger: f.led, Audit: f.audit, DataDir: dir})
			for _, s := range steps {
				t.Logf("%-70s %-28s %s", s.Step, s.Outcome, s.Detail)
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(steps) < 17 {
				t.Fatalf("%d steps", len(steps))
			}
		}
	})
}
