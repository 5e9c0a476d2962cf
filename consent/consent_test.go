package consent_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/consent"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// accounts is the ledger's account read, over a fixed set.
type accounts map[string]ledger.Account

func (a accounts) Account(_ context.Context, id string) (ledger.Account, error) {
	acct, ok := a[id]
	if !ok {
		return ledger.Account{}, fmt.Errorf("%w: %s", ledger.ErrAccountNotFound, id)
	}
	return acct, nil
}

var testAccounts = accounts{
	"alice":  {ID: "alice", Kind: ledger.KindUser, Currency: "CNY"},
	"bob":    {ID: "bob", Kind: ledger.KindUser, Currency: "CNY"},
	"bank":   {ID: "bank", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true},
	"credit": {ID: "credit", Kind: ledger.KindUser, Currency: "CNY", AllowNegative: true},
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newStore(t *testing.T, db *sqldb.DB) (*consent.Store, *clock) {
	t.Helper()
	clk := &clock{t: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	s, err := consent.New(context.Background(), consent.Config{DB: db, Accounts: testAccounts, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

// TestSingleUse: a code binds one device to its own account once; a wrong,
// expired, other account's or used code is ErrConsent and changes nothing.
func TestSingleUse(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		s, clk := newStore(t, db)
		c, err := s.Issue(ctx, "admin", "alice")
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Code) != 16 || c.Account != "alice" || !c.Expires.Equal(clk.Now().Add(consent.CodeTTL)) {
			t.Fatalf("issued %+v", c)
		}
		for _, bad := range []struct {
			name          string
			account, code string
		}{
			{"another account's code", "bob", c.Code},
			{"a made-up code", "alice", "AAAAAAAAAAAAAAAA"},
			{"no code", "alice", ""},
		} {
			if err := s.Use(ctx, []string{bad.account}, []string{bad.code}, "phone-x"); !errors.Is(err, consent.ErrConsent) {
				t.Errorf("%s: %v, want ErrConsent", bad.name, err)
			}
		}
		if err := s.Use(ctx, []string{"alice", "bob"}, []string{c.Code}, "phone-x"); !errors.Is(err, consent.ErrConsent) {
			t.Errorf("two accounts, one code: %v", err)
		}
		// The code is still usable after all the refusals; typed in lower
		// case with spaces it is the same code.
		if err := s.Check(ctx, []string{"alice"}, []string{" " + strings.ToLower(c.Code) + " "}); err != nil {
			t.Fatalf("check after refusals: %v", err)
		}
		if err := s.Use(ctx, []string{"alice"}, []string{c.Code}, "phone-1"); err != nil {
			t.Fatal(err)
		}
		if err := s.Use(ctx, []string{"alice"}, []string{c.Code}, "phone-2"); !errors.Is(err, consent.ErrConsent) {
			t.Fatalf("second use: %v", err)
		}
		// Released by the device that used it, it can be used again; a
		// release by another device gives nothing back.
		if err := s.Release(ctx, []string{c.Code}, "phone-2"); err != nil {
			t.Fatal(err)
		}
		if err := s.Check(ctx, []string{"alice"}, []string{c.Code}); !errors.Is(err, consent.ErrConsent) {
			t.Fatalf("released by another device: %v", err)
		}
		if err := s.Release(ctx, []string{c.Code}, "phone-1"); err != nil {
			t.Fatal(err)
		}
		if err := s.Use(ctx, []string{"alice"}, []string{c.Code}, "phone-3"); err != nil {
			t.Fatalf("use after release: %v", err)
		}
		// Expiry.
		c2, err := s.Issue(ctx, "admin", "bob")
		if err != nil {
			t.Fatal(err)
		}
		clk.Add(consent.CodeTTL)
		if err := s.Use(ctx, []string{"bob"}, []string{c2.Code}, "phone-4"); !errors.Is(err, consent.ErrConsent) {
			t.Fatalf("expired code: %v", err)
		}
	})
}

// TestNotEligible: system, may-go-negative and unknown accounts never get a
// code, and cannot be bound with any code.
func TestNotEligible(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		s, _ := newStore(t, db)
		for _, id := range []string{"bank", "credit"} {
			if _, err := s.Issue(ctx, "admin", id); !errors.Is(err, consent.ErrAccountNotEligible) {
				t.Errorf("issue for %s: %v", id, err)
			}
			if err := s.Use(ctx, []string{id}, []string{"AAAAAAAAAAAAAAAA"}, "phone"); !errors.Is(err, consent.ErrAccountNotEligible) {
				t.Errorf("use for %s: %v", id, err)
			}
		}
		if _, err := s.Issue(ctx, "admin", "nobody"); !errors.Is(err, ledger.ErrAccountNotFound) {
			t.Errorf("issue for an unknown account: %v", err)
		}
	})
}

// TestConcurrentUse: of many enrolments racing on one code, exactly one wins.
func TestConcurrentUse(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		s, _ := newStore(t, db)
		c, err := s.Issue(ctx, "admin", "alice")
		if err != nil {
			t.Fatal(err)
		}
		const n = 8
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- db.InTx(ctx, func(tx *sql.Tx) error {
					return s.UseTx(ctx, tx, []string{"alice"}, []string{c.Code}, fmt.Sprintf("phone-%d", i))
				})
			}()
		}
		wg.Wait()
		close(errs)
		won := 0
		for err := range errs {
			switch {
			case err == nil:
				won++
			case errors.Is(err, consent.ErrConsent):
			default:
				// A serialisation failure the retrying transaction gave up on
				// is also a loss, never a second win.
				t.Logf("loser: %v", err)
			}
		}
		if won != 1 {
			t.Fatalf("%d enrolments used one code", won)
		}
	})
}
