package service

import (
	"context"
	"errors"
	"github.com/qshield/qshield/internal/testclock"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/camsim"
	"github.com/qshield/qshield/watermark/trial"
)

func setup(t *testing.T, db *sqldb.DB) (*Service, *ledger.Ledger, *testclock.Clock) {
	t.Helper()
	ctx := context.Background()
	led, err := ledger.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	for _, a := range []ledger.NewAccount{
		{ID: "bank", Owner: "bank", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true},
		{ID: "payer", Owner: "payer", Kind: ledger.KindUser, Currency: "CNY"},
		{ID: "shop", Owner: "shop", Kind: ledger.KindMerchant, Currency: "CNY"},
		{ID: "euro-shop", Owner: "shop", Kind: ledger.KindMerchant, Currency: "EUR"},
	} {
		if _, err := led.CreateAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := led.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "f", From: "bank", To: "payer", Amount: 1000, Currency: "CNY"}); err != nil {
		t.Fatal(err)
	}
	clk := testclock.New(time.Now())
	s, err := New(ctx, Config{DB: db, Ledger: led, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, led, clk
}

func balance(t *testing.T, led *ledger.Ledger, id string) int64 {
	a, err := led.Account(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a.Balance
}

// TestScanAndPay: a payer's loop, captured through the close-scan camera
// profile, is reconstructed by the scanner and pays exactly once.
func TestScanAndPay(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		s, led, _ := setup(t, db)
		t0, rec, err := s.Issue(ctx, "payer")
		if err != nil {
			t.Fatal(err)
		}
		loop, err := watermark.NewLoop(t0, s.Params, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := trial.Pay(ctx, loop, trial.WithDisplay(camsim.CloseScan(), s.Params), rand.New(rand.NewPCG(1, 2)), 3*time.Second)
		if err != nil || !res.OK {
			t.Fatalf("close scan did not reconstruct the token: %+v %v", res, err)
		}
		if res.Handle != rec.Handle {
			t.Fatalf("scanned handle %s, issued %s", res.Handle, rec.Handle)
		}
		if _, err := s.Pay(ctx, "scanner-1", "shop", res.Handle, res.Token, 250, "CNY", "k1"); err != nil {
			t.Fatal(err)
		}
		if balance(t, led, "shop") != 250 || balance(t, led, "payer") != 750 {
			t.Fatal("wrong balances after payment")
		}
		// The scanner's retry gets the first result; anyone else's reuse is refused.
		if _, err := s.Pay(ctx, "scanner-1", "shop", res.Handle, res.Token, 250, "CNY", "k1"); err != nil {
			t.Fatalf("idempotent retry: %v", err)
		}
		if _, err := s.Pay(ctx, "scanner-2", "shop", res.Handle, res.Token, 250, "CNY", "k2"); !errors.Is(err, watermark.ErrUsed) {
			t.Fatalf("second use: want ErrUsed, got %v", err)
		}
		if balance(t, led, "shop") != 250 {
			t.Fatal("money moved twice")
		}
	})
}

func TestRefusals(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		s, led, clk := setup(t, db)
		t0, rec, err := s.Issue(ctx, "payer")
		if err != nil {
			t.Fatal(err)
		}
		// A thief who read only T1 guesses T0: refused, and the code survives.
		guess := append([]byte(nil), t0...)
		guess[0] ^= 1
		if _, err := s.Pay(ctx, "thief", "shop", rec.Handle, guess, 100, "CNY", "x"); !errors.Is(err, watermark.ErrWrongToken) {
			t.Fatalf("wrong token: %v", err)
		}
		// A bad request from the merchant does not burn the payer's code.
		if _, err := s.Pay(ctx, "scanner", "euro-shop", rec.Handle, t0, 100, "EUR", "y"); !errors.Is(err, ledger.ErrCurrencyMismatch) {
			t.Fatalf("currency mismatch: %v", err)
		}
		// Concurrent redemptions: exactly one pays.
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				if _, err := s.Pay(ctx, "scanner", "shop", rec.Handle, t0, 100, "CNY", "c"+string(rune('a'+i))); err == nil {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			}(i)
		}
		wg.Wait()
		if ok != 1 || balance(t, led, "shop") != 100 {
			t.Fatalf("%d concurrent redemptions paid (shop %d)", ok, balance(t, led, "shop"))
		}
		// Expired.
		t1, rec1, err := s.Issue(ctx, "payer")
		if err != nil {
			t.Fatal(err)
		}
		clk.Add(61 * time.Second)
		if _, err := s.Pay(ctx, "scanner", "shop", rec1.Handle, t1, 100, "CNY", "e"); !errors.Is(err, watermark.ErrExpired) {
			t.Fatalf("expired: %v", err)
		}
		// Unknown handle.
		if _, err := s.Pay(ctx, "scanner", "shop", "QSW1:AAAAAAAAAAAAAAAAAAAAAAAAAA", t1, 100, "CNY", "u"); err == nil {
			t.Fatal("unknown handle accepted")
		}
		// Insufficient funds burns the code (as wallets do).
		t2, rec2, _ := s.Issue(ctx, "payer")
		if _, err := s.Pay(ctx, "scanner", "shop", rec2.Handle, t2, 1_000_000, "CNY", "big"); !errors.Is(err, ErrRefused) {
			t.Fatalf("overdraft: %v", err)
		}
		if _, err := s.Pay(ctx, "scanner", "shop", rec2.Handle, t2, 10, "CNY", "small"); !errors.Is(err, watermark.ErrUsed) {
			t.Fatalf("after a refusal the code must be burned: %v", err)
		}
		if balance(t, led, "payer") != 900 {
			t.Fatalf("payer %d, want 900", balance(t, led, "payer"))
		}
	})
}
