package ledger_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestTransfersTx: a batch inside the caller's transaction gets, transfer
// by transfer, the outcome TransferTx would have given one after the other
// (acceptance, overdraft against the balance the earlier ones left, replay
// of a stored key and of a key earlier in the batch, conflict, invalid
// request); refusals write nothing; the accepted transfers are audited with
// their own actors; a rolled-back transaction keeps nothing.
func TestTransfersTx(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		al, err := audit.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		l, err := ledger.Open(ctx, db, ledger.WithAudit(al))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		for _, a := range []ledger.NewAccount{
			{ID: "sys", Owner: "s", Kind: ledger.KindSystem, Currency: "EUR", AllowNegative: true},
			{ID: "u", Owner: "u", Kind: ledger.KindUser, Currency: "EUR"},
			{ID: "v", Owner: "v", Kind: ledger.KindUser, Currency: "EUR"},
		} {
			if _, err := l.CreateAccount(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
		first, err := l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "stored", From: "sys", To: "u", Amount: 100, Currency: "EUR"})
		if err != nil {
			t.Fatal(err)
		}
		req := func(key, from, to string, amt int64) ledger.TransferRequest {
			return ledger.TransferRequest{IdempotencyKey: key, From: from, To: to, Amount: amt, Currency: "EUR"}
		}
		ts := []ledger.TxTransfer{
			{Ctx: audit.WithActor(ctx, "phone-1"), Request: req("p1", "u", "v", 60)}, // accepted: u 40
			{Request: req("p2", "u", "v", 50)},                                       // overdraft after p1
			{Request: req("stored", "sys", "u", 100)},                                // replay of the stored transfer
			{Request: req("stored", "sys", "u", 99)},                                 // conflict with it
			{Request: req("p1", "u", "v", 60)},                                       // replay of p1 in the batch
			{Request: req("p3", "u", "nobody", 1)},                                   // missing account
			{Request: req("p4", "u", "v", 0)},                                        // invalid amount
			{Ctx: audit.WithActor(ctx, "phone-2"), Request: req("p5", "u", "v", 40)}, // accepted: u 0
		}
		boom := errors.New("caller's later statement failed")
		for _, rollback := range []bool{true, false} {
			err := db.InTx(ctx, func(tx *sql.Tx) error {
				if err := l.TransfersTx(ctx, tx, ts); err != nil {
					return err
				}
				if rollback {
					return boom
				}
				return nil
			})
			if rollback {
				if !errors.Is(err, boom) {
					t.Fatal(err)
				}
				if _, err := l.TransferByKey(ctx, "p1"); !errors.Is(err, ledger.ErrTransferNotFound) {
					t.Fatalf("rolled-back batch visible: %v", err)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		wantErr := []error{nil, ledger.ErrInsufficientFunds, nil, ledger.ErrIdempotencyConflict, nil, ledger.ErrAccountNotFound, ledger.ErrInvalidAmount, nil}
		for i, w := range wantErr {
			if got := ts[i].Err; (w == nil) != (got == nil) || (w != nil && !errors.Is(got, w)) {
				t.Errorf("transfer %d (%s): %v, want %v", i, ts[i].Request.IdempotencyKey, got, w)
			}
		}
		if ts[2].Transfer.ID != first.ID {
			t.Errorf("replay of the stored key: %s, want %s", ts[2].Transfer.ID, first.ID)
		}
		if ts[4].Transfer.ID != ts[0].Transfer.ID || ts[0].Transfer.ID == "" {
			t.Errorf("replay in the batch: %q, want %q", ts[4].Transfer.ID, ts[0].Transfer.ID)
		}
		for _, c := range []struct {
			id   string
			want int64
		}{{"u", 0}, {"v", 100}, {"sys", -100}} {
			if a, err := l.Account(ctx, c.id); err != nil || a.Balance != c.want {
				t.Errorf("%s: balance %d (%v), want %d", c.id, a.Balance, err, c.want)
			}
		}
		for key, actor := range map[string]string{"p1": "phone-1", "p5": "phone-2"} {
			tr, err := l.TransferByKey(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			recs, err := searchTransfer(ctx, al, tr.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != 1 || recs[0].Actor != actor {
				t.Errorf("audit records of %s: %+v, want one by %s", key, recs, actor)
			}
		}
	})
}

// searchTransfer returns the audit records of transfer id (waiting for
// PostgreSQL's queue to be integrated).
func searchTransfer(ctx context.Context, al *audit.Log, id string) ([]audit.Record, error) {
	if _, err := al.Integrate(ctx); err != nil {
		return nil, err
	}
	return al.Search(ctx, audit.Query{Event: ledger.EventTransfer, Resource: id})
}
