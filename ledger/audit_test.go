package ledger_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

var errTrailDown = errors.New("audit trail down")

// failingRecorder fails every append.
type failingRecorder struct{}

func (failingRecorder) RecordTx(context.Context, *sql.Tx, audit.Entry) error { return errTrailDown }
func (failingRecorder) Record(context.Context, audit.Entry) error            { return errTrailDown }

// TestAuditFailureMovesNoMoney: when the audit record cannot be written, the
// transfer, the account creation and the post fail and change nothing —
// money never moves unaudited.
func TestAuditFailureMovesNoMoney(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		good, alog := auditedLedger(t, db)
		fixture(t, good, 2, 100)
		p, err := good.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "p", From: "u00", To: "u01", Amount: 10, Currency: "CNY", Pending: true})
		if err != nil {
			t.Fatal(err)
		}
		good.Close()
		bad := openLedger(t, db, ledger.WithAudit(failingRecorder{}))
		before := snapshot(t, bad)
		if _, err := bad.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "x", From: "u00", To: "u01", Amount: 5, Currency: "CNY"}); !errors.Is(err, errTrailDown) {
			t.Fatalf("transfer with the trail down: %v", err)
		}
		if _, err := bad.CreateAccount(ctx, ledger.NewAccount{ID: "new", Owner: "o", Kind: ledger.KindUser, Currency: "CNY"}); !errors.Is(err, errTrailDown) {
			t.Fatalf("account with the trail down: %v", err)
		}
		if _, err := bad.Post(ctx, p.ID, 0); !errors.Is(err, errTrailDown) {
			t.Fatalf("post with the trail down: %v", err)
		}
		if after := snapshot(t, bad); len(after) != len(before) || after["u00"] != before["u00"] || after["u01"] != before["u01"] {
			t.Fatalf("state changed: %v → %v", before, after)
		}
		if _, err := bad.TransferByKey(ctx, "x"); !errors.Is(err, ledger.ErrTransferNotFound) {
			t.Fatalf("unaudited transfer stored: %v", err)
		}
		good2 := openLedger(t, db, ledger.WithAudit(alog))
		mustReconcile(t, good2, alog)
	})
}

// TestAuditStorageFailureMovesNoMoney: a batch of transfers, audited in one
// write (a pack on SQLite, queued rows on PostgreSQL), fails and moves
// nothing when that write fails; with the table back it commits, each
// transfer audited once.
func TestAuditStorageFailureMovesNoMoney(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l, alog := auditedLedger(t, db)
		fixture(t, l, 2, 1000)
		table := "audit_packs"
		if db.Dialect == sqldb.Postgres {
			table = "audit_queue"
		}
		rename := func(from, to string) {
			t.Helper()
			if _, err := db.ExecContext(ctx, `ALTER TABLE `+from+` RENAME TO `+to); err != nil {
				t.Fatal(err)
			}
		}
		batch := func(prefix string) error {
			return db.InTx(ctx, func(tx *sql.Tx) error {
				ts := make([]ledger.TxTransfer, 4)
				for i := range ts {
					ts[i] = ledger.TxTransfer{Ctx: ctx, Request: ledger.TransferRequest{IdempotencyKey: fmt.Sprintf("%s%d", prefix, i), From: "u00", To: "u01", Amount: 1, Currency: "CNY"}}
				}
				if err := l.TransfersTx(ctx, tx, ts); err != nil {
					return err
				}
				for _, tr := range ts {
					if tr.Err != nil {
						return tr.Err
					}
				}
				return nil
			})
		}
		before := snapshot(t, l)
		rename(table, table+"_away")
		err := batch("down")
		rename(table+"_away", table)
		if err == nil {
			t.Fatalf("a batch of transfers committed with %s gone", table)
		}
		if after := snapshot(t, l); after["u00"] != before["u00"] || after["u01"] != before["u01"] {
			t.Fatalf("balances moved without their audit records: %v → %v", before, after)
		}
		if err := batch("up"); err != nil {
			t.Fatalf("with the trail back: %v", err)
		}
		if rep := mustReconcile(t, l, alog); rep.Transfers != 4+2 {
			t.Fatalf("reconcile saw %d transfers, want the fixture's 2 and the batch's 4", rep.Transfers)
		}
	})
}
