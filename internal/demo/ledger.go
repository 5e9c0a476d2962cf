package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/money"
)

// newKey returns a fresh idempotency key (or name) starting with prefix.
func newKey(prefix string) string { return prefix + "-" + suffix() }

// suffix returns 12 random hex digits, making each demo run's names unique
// in a database that earlier runs also used.
func suffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Ledger is the platform scenario: accounts, a funded payment, a refused
// overdraft, an idempotent replay, a conflicting key, a hold posted in part.
func Ledger() Scenario {
	return Scenario{Name: "ledger", Run: func(ctx context.Context, env *Env) ([]Row, error) {
		var rows []Row
		c := env.Client
		sfx := suffix()
		bank, alice, shop := "demo-bank-"+sfx, "demo-alice-"+sfx, "demo-shop-"+sfx
		for _, a := range []server.AccountRequest{
			{ID: bank, Owner: "qshield", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true},
			{ID: alice, Owner: "alice", Kind: ledger.KindUser, Currency: "CNY"},
			{ID: shop, Owner: "supermarket", Kind: ledger.KindMerchant, Currency: "CNY"},
		} {
			_, err := c.CreateAccount(ctx, a)
			if err := Expect(&rows, "open account "+a.ID, err, "", string(a.Kind)+", "+a.Currency); err != nil {
				return rows, err
			}
		}
		_, _, err := c.Transfer(ctx, newKey("fund"), server.TransferRequest{From: bank, To: alice, Amount: 100_00, Currency: "CNY", Memo: "top-up"})
		if err := Expect(&rows, "fund alice with 100.00 CNY", err, "", "bank → alice over HTTPS"); err != nil {
			return rows, err
		}
		payKey := newKey("pay")
		pay := server.TransferRequest{From: alice, To: shop, Amount: 25_50, Currency: "CNY", Memo: "groceries"}
		t1, _, err := c.Transfer(ctx, payKey, pay)
		if err := Expect(&rows, "alice pays the shop 25.50", err, "", ""); err != nil {
			return rows, err
		}
		t2, replayed, err := c.Transfer(ctx, payKey, pay)
		if err == nil && (!replayed || t2.ID != t1.ID) {
			err = fmt.Errorf("replay created a new transfer %s (first %s)", t2.ID, t1.ID)
		}
		if err := Expect(&rows, "replay the same Idempotency-Key", err, "", "same transfer returned, no second debit"); err != nil {
			return rows, err
		}
		conflict := pay
		conflict.Amount = 99_00
		_, _, err = c.Transfer(ctx, payKey, conflict)
		if err := Expect(&rows, "reuse the key with another amount", err, "idempotency_conflict", ""); err != nil {
			return rows, err
		}
		_, _, err = c.Transfer(ctx, newKey("over"), server.TransferRequest{From: alice, To: shop, Amount: 1000_00, Currency: "CNY"})
		if err := Expect(&rows, "overdraft of 1000.00", err, "insufficient_funds", ""); err != nil {
			return rows, err
		}
		_, _, err = c.Transfer(ctx, newKey("eur"), server.TransferRequest{From: alice, To: shop, Amount: 1_00, Currency: "EUR"})
		if err := Expect(&rows, "pay in the wrong currency", err, "currency_mismatch", ""); err != nil {
			return rows, err
		}
		_, _, err = c.Transfer(ctx, newKey("neg"), server.TransferRequest{From: alice, To: shop, Amount: -5, Currency: "CNY"})
		if err := Expect(&rows, "negative amount", err, "invalid_amount", ""); err != nil {
			return rows, err
		}
		hold, _, err := c.Transfer(ctx, newKey("hold"), server.TransferRequest{From: alice, To: shop, Amount: 30_00, Currency: "CNY", Pending: true, Memo: "fuel pre-authorisation"})
		if err := Expect(&rows, "hold 30.00 (two-phase)", err, "", "pending until posted or voided"); err != nil {
			return rows, err
		}
		_, err = c.Post(ctx, newKey("post"), hold.ID, 18_20)
		if err := Expect(&rows, "post 18.20 of the hold", err, "", "the remaining 11.80 is released"); err != nil {
			return rows, err
		}
		a, err := c.Account(ctx, alice)
		if err == nil && a.Balance != 100_00-25_50-18_20 {
			err = fmt.Errorf("alice's balance is %d, want %d", a.Balance, 100_00-25_50-18_20)
		}
		if err := Expect(&rows, "alice's balance", err, "", money.Format(a.Balance, a.Currency)); err != nil {
			return rows, err
		}
		h, err := c.History(ctx, alice, "", 10)
		if err == nil && len(h.Transfers) != 3 {
			err = fmt.Errorf("history has %d transfers, want 3", len(h.Transfers))
		}
		return rows, Expect(&rows, "alice's history", err, "", fmt.Sprintf("%d transfers, newest first", len(h.Transfers)))
	}}
}
