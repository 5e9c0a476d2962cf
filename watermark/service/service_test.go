package service

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/internal/testclock"
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

// claim stamps t shares of code in the slot of at, as a prompt scanner would.
func claim(s *Service, code watermark.Code, rec watermark.Record, amount int64, at time.Time) watermark.Claim {
	var st []watermark.Stamp
	for i := 1; i <= s.Params.Threshold; i++ {
		st = append(st, watermark.NewStamp(code.SlotKey, rec.Handle, byte(i), watermark.SlotAt(at)))
	}
	return watermark.Claim{Handle: rec.Handle, Token: code.Token, Stamps: st, Amount: amount}
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
		s, led, clk := setup(t, db)
		code, rec, err := s.Issue(ctx, "payer", 5_00)
		if err != nil {
			t.Fatal(err)
		}
		loop, err := watermark.NewLoop(code.Token, code.SlotKey, s.Params, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := trial.Pay(ctx, loop, trial.WithDisplay(camsim.CloseScan(), s.Params), rand.New(rand.NewPCG(1, 2)), 3*time.Second, trial.Clock{Start: clk.Now()})
		clk.Add(res.Submitted.Sub(clk.Now()))
		if err != nil || !res.OK {
			t.Fatalf("close scan did not reconstruct the token: %+v %v", res, err)
		}
		if res.Handle != rec.Handle {
			t.Fatalf("scanned handle %s, issued %s", res.Handle, rec.Handle)
		}
		if _, err := s.Pay(ctx, "scanner-1", "shop", res.Claim(250), "CNY", "k1"); err != nil {
			t.Fatal(err)
		}
		if balance(t, led, "shop") != 250 || balance(t, led, "payer") != 750 {
			t.Fatal("wrong balances after payment")
		}
		// The scanner's retry gets the first result; anyone else's reuse is refused.
		if _, err := s.Pay(ctx, "scanner-1", "shop", res.Claim(250), "CNY", "k1"); err != nil {
			t.Fatalf("idempotent retry: %v", err)
		}
		if _, err := s.Pay(ctx, "scanner-2", "shop", res.Claim(250), "CNY", "k2"); !errors.Is(err, watermark.ErrUsed) {
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
		code, rec, err := s.Issue(ctx, "payer", 100)
		if err != nil {
			t.Fatal(err)
		}
		// A thief who read only T1 guesses T0: refused, and the code survives.
		guess := claim(s, code, rec, 100, clk.Now())
		guess.Token = append([]byte(nil), code.Token...)
		guess.Token[0] ^= 1
		if _, err := s.Pay(ctx, "thief", "shop", guess, "CNY", "x"); !errors.Is(err, watermark.ErrWrongToken) {
			t.Fatalf("wrong token: %v", err)
		}
		// A bad request from the merchant does not burn the payer's code.
		if _, err := s.Pay(ctx, "scanner", "euro-shop", claim(s, code, rec, 100, clk.Now()), "EUR", "y"); !errors.Is(err, ledger.ErrCurrencyMismatch) {
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
				if _, err := s.Pay(ctx, "scanner", "shop", claim(s, code, rec, 100, clk.Now()), "CNY", "c"+string(rune('a'+i))); err == nil {
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
		c1, rec1, err := s.Issue(ctx, "payer", 100)
		if err != nil {
			t.Fatal(err)
		}
		clk.Add(61 * time.Second)
		if _, err := s.Pay(ctx, "scanner", "shop", claim(s, c1, rec1, 100, clk.Now()), "CNY", "e"); !errors.Is(err, watermark.ErrExpired) {
			t.Fatalf("expired: %v", err)
		}
		// Unknown handle.
		unknown := claim(s, c1, rec1, 100, clk.Now())
		unknown.Handle = "QSW1:AAAAAAAAAAAAAAAAAAAAAAAAAA"
		if _, err := s.Pay(ctx, "scanner", "shop", unknown, "CNY", "u"); err == nil {
			t.Fatal("unknown handle accepted")
		}
		// Insufficient funds burns the code (as wallets do).
		c2, rec2, _ := s.Issue(ctx, "payer", 2_000_000)
		if _, err := s.Pay(ctx, "scanner", "shop", claim(s, c2, rec2, 1_000_000, clk.Now()), "CNY", "big"); !errors.Is(err, ErrRefused) {
			t.Fatalf("overdraft: %v", err)
		}
		if _, err := s.Pay(ctx, "scanner", "shop", claim(s, c2, rec2, 10, clk.Now()), "CNY", "small"); !errors.Is(err, watermark.ErrUsed) {
			t.Fatalf("after a refusal the code must be burned: %v", err)
		}
		if balance(t, led, "payer") != 900 {
			t.Fatalf("payer %d, want 900", balance(t, led, "payer"))
		}
	})
}

// TestOverLimitRefused (issue 12, item 5): the scanner cannot charge more
// than the payer's limit for the code; the refusal moves no money and does
// not consume the code, so the right amount still pays.
func TestOverLimitRefused(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		s, led, clk := setup(t, db)
		code, rec, err := s.Issue(ctx, "payer", 3_00)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Store().Lookup(ctx, rec.Handle); got.Limit != 3_00 {
			t.Fatalf("stored limit %d", got.Limit)
		}
		if _, err := s.Pay(ctx, "scanner", "shop", claim(s, code, rec, 3_01, clk.Now()), "CNY", "over"); !errors.Is(err, watermark.ErrOverLimit) {
			t.Fatalf("over the limit: %v", err)
		}
		if balance(t, led, "payer") != 1000 {
			t.Fatal("money moved on a refused charge")
		}
		if _, err := s.Pay(ctx, "scanner", "shop", claim(s, code, rec, 3_00, clk.Now()), "CNY", "ok"); err != nil {
			t.Fatalf("at the limit: %v", err)
		}
		if _, _, err := s.Issue(ctx, "payer", 0); err == nil {
			t.Fatal("code without a limit issued")
		}
	})
}

// TestStaleSharesRefused: T0 with the stamps of frames shown more than the
// window before receipt (a recording replayed later) is refused without
// consuming the code; forged stamps are refused too.
func TestStaleSharesRefused(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		s, led, clk := setup(t, db)
		code, rec, err := s.Issue(ctx, "payer", 1_00)
		if err != nil {
			t.Fatal(err)
		}
		filmed := claim(s, code, rec, 1_00, clk.Now())
		clk.Add(4 * time.Second)
		if _, err := s.Pay(ctx, "scanner", "shop", filmed, "CNY", "late"); !errors.Is(err, watermark.ErrStale) {
			t.Fatalf("replayed 4 s later: %v", err)
		}
		forged := claim(s, code, rec, 1_00, clk.Now())
		forged.Stamps[0].Tag[1] ^= 0x40
		if _, err := s.Pay(ctx, "scanner", "shop", forged, "CNY", "forged"); !errors.Is(err, watermark.ErrBadStamp) {
			t.Fatalf("forged stamp: %v", err)
		}
		if balance(t, led, "payer") != 1000 {
			t.Fatal("money moved")
		}
		if _, err := s.Pay(ctx, "scanner", "shop", claim(s, code, rec, 1_00, clk.Now()), "CNY", "fresh"); err != nil {
			t.Fatalf("fresh claim: %v", err)
		}
	})
}

// TestScannerChallenges: with scanner challenges on, a claim pays only with
// shares bound to the challenge of the scanner that submits it: the same
// shares relayed to another scanner are refused without consuming the code
// (the live-relay theft of issue 18), unbound ones too, and the right scanner
// is then paid.
func TestScannerChallenges(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		_, led, clk := setup(t, db)
		if _, err := New(ctx, Config{DB: db, Ledger: led, Now: clk.Now, ChallengeMaster: make([]byte, 8)}); err == nil {
			t.Fatal("short challenge master accepted")
		}
		master := make([]byte, watermark.ChallengeKeyLen)
		master[0] = 7
		s, err := New(ctx, Config{DB: db, Ledger: led, Now: clk.Now, ChallengeMaster: master})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		code, rec, err := s.Issue(ctx, "payer", 5_00)
		if err != nil {
			t.Fatal(err)
		}
		k1, err := s.ChallengeKey("scanner-1")
		if err != nil {
			t.Fatal(err)
		}
		ch := watermark.ChallengeAt(k1, watermark.SlotAt(clk.Now()))
		c := watermark.Claim{Handle: rec.Handle, Token: code.Token, Amount: 100}
		for i := 1; i <= s.Params.Threshold; i++ {
			c.Stamps = append(c.Stamps, watermark.NewBoundStamp(code.SlotKey, rec.Handle, byte(i), ch))
		}
		// scanner-1 is not registered yet: nothing says where the stamps
		// were made, so they are only wrong.
		if _, err := s.Pay(ctx, "scanner-2", "shop", c, "CNY", "r1"); !errors.Is(err, watermark.ErrBadStamp) {
			t.Fatalf("relayed to scanner-2: %v, want ErrBadStamp", err)
		}
		// Registered, scanner-1 is named as where the code was shown: the
		// relay gets its own refusal (wrong_scanner), still without
		// consuming the code.
		for _, n := range []string{"scanner-1", "scanner-2"} {
			if err := s.Enrol(ctx, n, "scanner", "shop"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Pay(ctx, "scanner-2", "shop", c, "CNY", "r1"); !errors.Is(err, watermark.ErrWrongScanner) || errors.Is(err, watermark.ErrBadStamp) {
			t.Fatalf("relayed to scanner-2: %v, want ErrWrongScanner", err)
		}
		if p := ErrorCodes().Problem(fmt.Errorf("x: %w", watermark.ErrWrongScanner)); p.Code != "wrong_scanner" {
			t.Fatalf("ErrWrongScanner is written as %q", p.Code)
		}
		// Bound stamps whose tags are forged (no scanner's): bad_stamp.
		forged := watermark.Claim{Handle: c.Handle, Token: c.Token, Amount: c.Amount, Stamps: append([]watermark.Stamp(nil), c.Stamps...)}
		for i := range forged.Stamps {
			forged.Stamps[i].Tag[0] ^= 0x5a
		}
		if _, err := s.Pay(ctx, "scanner-2", "shop", forged, "CNY", "r3"); !errors.Is(err, watermark.ErrBadStamp) {
			t.Fatalf("forged bound stamps at scanner-2: %v, want ErrBadStamp", err)
		}
		if _, err := s.Pay(ctx, "scanner-2", "shop", claim(s, code, rec, 100, clk.Now()), "CNY", "r2"); !errors.Is(err, watermark.ErrUnbound) {
			t.Fatalf("unbound at scanner-2: %v, want ErrUnbound", err)
		}
		if balance(t, led, "shop") != 0 {
			t.Fatal("money moved on a refused claim")
		}
		if _, err := s.Pay(ctx, "scanner-1", "shop", c, "CNY", "ok"); err != nil {
			t.Fatalf("scanner-1: %v", err)
		}
		if balance(t, led, "shop") != 100 {
			t.Fatal("scanner-1 not paid")
		}
		// Challenges off: no key to hand out.
		off, err := New(ctx, Config{DB: db, Ledger: led, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		defer off.Close()
		if _, err := off.ChallengeKey("scanner-1"); !errors.Is(err, ErrChallengesOff) {
			t.Fatalf("challenge key with challenges off: %v", err)
		}
	})
}

// TestIssueVetsReadability: the service's issuer draws again when a code's
// own frames do not read back (watermark.ReadabilityCheck), so a payer is
// never handed one of the rare codes that cannot be paid from a clean
// screen. The first draw here is such a code.
func TestIssueVetsReadability(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		s, _, _ := setup(t, db)
		weak, good := "72c03dff9e0c49f341273397430083f8", "000102030405060708090a0b0c0d0e0f"
		key := "30313233343536373839616263646566"
		// The good code thrice, so that a false rejection of it (none in
		// 1,500 checks) cannot fail the test.
		draws, err := hex.DecodeString(weak + key + strings.Repeat(good+key, 3))
		if err != nil {
			t.Fatal(err)
		}
		s.issuer.Rand = bytes.NewReader(draws)
		code, _, err := s.Issue(context.Background(), "payer", 100)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(code.Token); got != good {
			t.Fatalf("issued %s, want the second draw %s", got, good)
		}
	})
}
