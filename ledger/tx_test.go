package ledger_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestTransferTx(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l, err := ledger.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		for _, a := range []ledger.NewAccount{
			{ID: "sys", Owner: "s", Kind: ledger.KindSystem, Currency: "EUR", AllowNegative: true},
			{ID: "u", Owner: "u", Kind: ledger.KindUser, Currency: "EUR"},
		} {
			if _, err := l.CreateAccount(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
		boom := errors.New("scheme refused after the transfer")
		// Rolled back with the caller's transaction: nothing happened.
		err = db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := l.TransferTx(ctx, tx, ledger.TransferRequest{IdempotencyKey: "a", From: "sys", To: "u", Amount: 50, Currency: "EUR"}); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		if _, err := l.TransferByKey(ctx, "a"); !errors.Is(err, ledger.ErrTransferNotFound) {
			t.Fatalf("rolled-back transfer visible: %v", err)
		}
		if a, _ := l.Account(ctx, "u"); a.Balance != 0 {
			t.Fatalf("balance %d after rollback", a.Balance)
		}
		// Committed together with the caller's change.
		err = db.InTx(ctx, func(tx *sql.Tx) error {
			_, err := l.TransferTx(ctx, tx, ledger.TransferRequest{IdempotencyKey: "a", From: "sys", To: "u", Amount: 50, Currency: "EUR"})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if a, _ := l.Account(ctx, "u"); a.Balance != 50 {
			t.Fatalf("balance %d, want 50", a.Balance)
		}
		// A refusal writes nothing and leaves the transaction usable.
		err = db.InTx(ctx, func(tx *sql.Tx) error {
			_, err := l.TransferTx(ctx, tx, ledger.TransferRequest{IdempotencyKey: "b", From: "u", To: "sys", Amount: 51, Currency: "EUR"})
			if !errors.Is(err, ledger.ErrInsufficientFunds) {
				t.Errorf("overdraft: %v", err)
			}
			_, err = l.TransferTx(ctx, tx, ledger.TransferRequest{IdempotencyKey: "c", From: "u", To: "sys", Amount: 20, Currency: "EUR"})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if a, _ := l.Account(ctx, "u"); a.Balance != 30 {
			t.Fatalf("balance %d, want 30", a.Balance)
		}
	})
}
