package keycharge_test

import (
	"github.com/qshield/qshield/keycharge"
	"testing"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestCommitIsAtomic: the audit append of a charge commit fails after the
// keys were written in the commit's transaction (the audit table is
// renamed away, a fault the database itself produces); nothing of the charge
// is kept, and the device and the platform still agree. With the trail back
// the next charge commits once.
func TestCommitIsAtomic(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, 4)
		ctx := e.ctx
		dev := e.provision("SN-A1")
		rename := func(from, to string) {
			t.Helper()
			if _, err := db.ExecContext(ctx, `ALTER TABLE `+from+` RENAME TO `+to); err != nil {
				t.Fatal(err)
			}
		}
		c := e.charger(func(p string) error {
			if p == keycharge.FaultAfterStage {
				// In-transaction records go to audit_log (SQLite) or to
				// audit_queue, integrated later (PostgreSQL): take both away.
				rename("audit_log", "audit_log_away")
				rename("audit_queue", "audit_queue_away")
			}
			return nil
		})
		if _, err := c.Charge(ctx, dev, 200<<10); err == nil {
			t.Fatal("charge committed without its audit record")
		}
		rename("audit_log_away", "audit_log")
		rename("audit_queue_away", "audit_queue")
		var keys, committed int
		if err := db.QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM keycharge_keys WHERE serial = ?`), "SN-A1").Scan(&keys); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM keycharge_charges WHERE serial = ? AND state = 'committed'`), "SN-A1").Scan(&committed); err != nil {
			t.Fatal(err)
		}
		if keys != 0 || committed != 0 {
			t.Fatalf("%d keys stored and %d charges committed for a commit whose audit append failed", keys, committed)
		}
		good := e.charger(nil)
		if _, err := good.Recover(ctx, dev); err != nil {
			t.Fatal(err)
		}
		if _, err := good.Charge(ctx, dev, 100<<10); err != nil {
			t.Fatalf("charge with the trail back: %v", err)
		}
		e.consistent(dev)
		if dev.Remaining() != 104<<10 {
			t.Fatalf("device holds %d bytes, want %d", dev.Remaining(), 104<<10)
		}
		if rep, err := e.log.Verify(ctx); err != nil {
			t.Fatalf("audit chain: %+v %v", rep, err)
		}
	})
}
