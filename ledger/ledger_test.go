package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/qshield/qshield/internal/testclock"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func openLedger(t *testing.T, db *sqldb.DB, opts ...ledger.Option) *ledger.Ledger {
	t.Helper()
	l, err := ledger.Open(context.Background(), db, append([]ledger.Option{ledger.WithSweepInterval(0)}, opts...)...)
	if err != nil {
		t.Fatalf("open ledger: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// auditedLedger opens a ledger that audits every money movement in alog.
func auditedLedger(t *testing.T, db *sqldb.DB, opts ...ledger.Option) (*ledger.Ledger, *audit.Log) {
	t.Helper()
	alog, err := audit.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return openLedger(t, db, append(opts, ledger.WithAudit(alog))...), alog
}

// mustReconcile fails unless every transfer and account is audited exactly once.
func mustReconcile(t *testing.T, l *ledger.Ledger, alog *audit.Log) ledger.ReconcileReport {
	t.Helper()
	rep, err := l.Reconcile(context.Background(), alog)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		t.Fatalf("reconcile: %d transfers, %d money records: %v", rep.Transfers, rep.MoneyRecords, rep.Problems)
	}
	if v, err := alog.Verify(context.Background()); err != nil || !v.OK {
		t.Fatalf("audit verify: %+v %v", v, err)
	}
	return rep
}

// fixture creates a system issuer and n funded user accounts in CNY.
func fixture(t *testing.T, l *ledger.Ledger, n int, fund int64) []string {
	t.Helper()
	ctx := context.Background()
	mustAccount(t, l, ledger.NewAccount{ID: "sys", Owner: "issuer", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true})
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("u%02d", i)
		mustAccount(t, l, ledger.NewAccount{ID: ids[i], Owner: "user", Kind: ledger.KindUser, Currency: "CNY"})
		if fund > 0 {
			if _, err := l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "fund-" + ids[i], From: "sys", To: ids[i], Amount: fund, Currency: "CNY"}); err != nil {
				t.Fatalf("fund %s: %v", ids[i], err)
			}
		}
	}
	return ids
}

func mustAccount(t *testing.T, l *ledger.Ledger, na ledger.NewAccount) ledger.Account {
	t.Helper()
	a, err := l.CreateAccount(context.Background(), na)
	if err != nil {
		t.Fatalf("create account %s: %v", na.ID, err)
	}
	return a
}

func balance(t *testing.T, l *ledger.Ledger, id string) ledger.Account {
	t.Helper()
	a, err := l.Account(context.Background(), id)
	if err != nil {
		t.Fatalf("account %s: %v", id, err)
	}
	return a
}

// snapshot returns every account's balances and the transfer count.
func snapshot(t *testing.T, l *ledger.Ledger) map[string]ledger.Account {
	t.Helper()
	accs, err := l.Accounts(context.Background(), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]ledger.Account, len(accs))
	for _, a := range accs {
		m[a.ID] = a
	}
	return m
}

func TestAccounts(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := openLedger(t, db)
		a := mustAccount(t, l, ledger.NewAccount{ID: "alice", Owner: "Alice", Kind: ledger.KindUser, Currency: "EUR"})
		if a.ID != "alice" || a.Balance != 0 || a.Kind != ledger.KindUser || a.Currency != "EUR" || a.AllowNegative || a.CreatedAt.IsZero() {
			t.Fatalf("created account %+v", a)
		}
		if _, err := l.CreateAccount(ctx, ledger.NewAccount{ID: "alice", Owner: "Alice", Kind: ledger.KindUser, Currency: "EUR"}); !errors.Is(err, ledger.ErrAccountExists) {
			t.Fatalf("duplicate create: %v", err)
		}
		got, err := l.EnsureAccount(ctx, ledger.NewAccount{ID: "alice", Owner: "Alice", Kind: ledger.KindUser, Currency: "EUR"})
		if err != nil || got.ID != "alice" {
			t.Fatalf("ensure identical: %+v %v", got, err)
		}
		if _, err := l.EnsureAccount(ctx, ledger.NewAccount{ID: "alice", Owner: "Alice", Kind: ledger.KindUser, Currency: "USD"}); !errors.Is(err, ledger.ErrAccountExists) {
			t.Fatalf("ensure different: %v", err)
		}
		if _, err := l.EnsureAccount(ctx, ledger.NewAccount{Owner: "x", Kind: ledger.KindUser, Currency: "USD"}); !errors.Is(err, ledger.ErrInvalidAccount) {
			t.Fatalf("ensure without ID: %v", err)
		}
		gen := mustAccount(t, l, ledger.NewAccount{Owner: "Bob", Kind: ledger.KindMerchant, Currency: "EUR"})
		if !ledger.ValidAccountID(gen.ID) {
			t.Fatalf("generated ID %q", gen.ID)
		}
		bad := []ledger.NewAccount{
			{ID: "has space", Kind: ledger.KindUser, Currency: "EUR"},
			{ID: string(make([]byte, 65)), Kind: ledger.KindUser, Currency: "EUR"},
			{ID: "ok1", Kind: "bank", Currency: "EUR"},
			{ID: "ok2", Kind: ledger.KindUser, Currency: "eur"},
			{ID: "ok3", Kind: ledger.KindUser, Currency: "EURO"},
			{ID: "ok4", Owner: "a\x00b", Kind: ledger.KindUser, Currency: "EUR"},
			{ID: "ok5", Owner: "\xff", Kind: ledger.KindUser, Currency: "EUR"},
		}
		for _, na := range bad {
			if _, err := l.CreateAccount(ctx, na); !errors.Is(err, ledger.ErrInvalidAccount) {
				t.Errorf("create %+v: want ErrInvalidAccount, got %v", na, err)
			}
		}
		if _, err := l.Account(ctx, "nobody"); !errors.Is(err, ledger.ErrAccountNotFound) {
			t.Fatalf("unknown account: %v", err)
		}
		for i := 0; i < 5; i++ {
			mustAccount(t, l, ledger.NewAccount{ID: fmt.Sprintf("p%d", i), Kind: ledger.KindUser, Currency: "EUR"})
		}
		var all []string
		after := ""
		for {
			page, err := l.Accounts(ctx, after, 3)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, a := range page {
				all = append(all, a.ID)
			}
			after = page[len(page)-1].ID
		}
		if len(all) != 7 {
			t.Fatalf("paged %d accounts: %v", len(all), all)
		}
		for i := 1; i < len(all); i++ {
			if all[i-1] >= all[i] {
				t.Fatalf("accounts not in ID order: %v", all)
			}
		}
	})
}

func TestTransferValidation(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l, alog := auditedLedger(t, db)
		fixture(t, l, 2, 1000)
		mustAccount(t, l, ledger.NewAccount{ID: "eur", Kind: ledger.KindUser, Currency: "EUR"})
		mustAccount(t, l, ledger.NewAccount{ID: "poor", Kind: ledger.KindUser, Currency: "CNY"})
		ok := ledger.TransferRequest{IdempotencyKey: "k", From: "u00", To: "u01", Amount: 10, Currency: "CNY"}
		with := func(f func(*ledger.TransferRequest)) ledger.TransferRequest { r := ok; f(&r); return r }
		cases := []struct {
			name string
			req  ledger.TransferRequest
			want error
		}{
			{"zero", with(func(r *ledger.TransferRequest) { r.Amount = 0 }), ledger.ErrInvalidAmount},
			{"negative", with(func(r *ledger.TransferRequest) { r.Amount = -5 }), ledger.ErrInvalidAmount},
			{"min int", with(func(r *ledger.TransferRequest) { r.Amount = math.MinInt64 }), ledger.ErrInvalidAmount},
			{"over max", with(func(r *ledger.TransferRequest) { r.Amount = ledger.MaxAmount + 1 }), ledger.ErrInvalidAmount},
			{"max int", with(func(r *ledger.TransferRequest) { r.Amount = math.MaxInt64 }), ledger.ErrInvalidAmount},
			{"overflow issuer", with(func(r *ledger.TransferRequest) { r.From, r.Amount = "sys", ledger.MaxAmount }), nil}, // fine once; see below
			{"currency differs from both", with(func(r *ledger.TransferRequest) { r.Currency = "USD" }), ledger.ErrCurrencyMismatch},
			{"currency differs from to", with(func(r *ledger.TransferRequest) { r.To = "eur" }), ledger.ErrCurrencyMismatch},
			{"currency differs from from", with(func(r *ledger.TransferRequest) { r.From, r.To, r.Currency = "eur", "u01", "EUR" }), ledger.ErrCurrencyMismatch},
			{"bad currency", with(func(r *ledger.TransferRequest) { r.Currency = "cny" }), ledger.ErrCurrencyMismatch},
			{"unknown from", with(func(r *ledger.TransferRequest) { r.From = "ghost" }), ledger.ErrAccountNotFound},
			{"unknown to", with(func(r *ledger.TransferRequest) { r.To = "ghost" }), ledger.ErrAccountNotFound},
			{"same account", with(func(r *ledger.TransferRequest) { r.To = r.From }), ledger.ErrSameAccount},
			{"bad from ID", with(func(r *ledger.TransferRequest) { r.From = "a b" }), ledger.ErrInvalidAccount},
			{"empty to ID", with(func(r *ledger.TransferRequest) { r.To = "" }), ledger.ErrInvalidAccount},
			{"no key", with(func(r *ledger.TransferRequest) { r.IdempotencyKey = "" }), ledger.ErrMissingIdempotency},
			{"bad key", with(func(r *ledger.TransferRequest) { r.IdempotencyKey = "a\nb" }), ledger.ErrInvalidKey},
			{"bad memo", with(func(r *ledger.TransferRequest) { r.Memo = "\xff" }), ledger.ErrInvalidMemo},
			{"insufficient", with(func(r *ledger.TransferRequest) { r.From, r.To = "poor", "u00" }), ledger.ErrInsufficientFunds},
			{"more than balance", with(func(r *ledger.TransferRequest) { r.Amount = 1001 }), ledger.ErrInsufficientFunds},
			{"expiry on posted", with(func(r *ledger.TransferRequest) { r.ExpiresAt = time.Now().Add(time.Hour) }), ledger.ErrInvalidExpiry},
			{"expiry in past", with(func(r *ledger.TransferRequest) { r.Pending, r.ExpiresAt = true, time.Now().Add(-time.Hour) }), ledger.ErrInvalidExpiry},
		}
		for _, c := range cases {
			if c.want == nil {
				continue
			}
			t.Run(c.name, func(t *testing.T) {
				before := snapshot(t, l)
				_, err := l.Transfer(ctx, c.req)
				if !errors.Is(err, c.want) {
					t.Fatalf("want %v, got %v", c.want, err)
				}
				after := snapshot(t, l)
				for id, a := range before {
					if after[id] != a {
						t.Fatalf("refused transfer changed %s: %+v → %+v", id, a, after[id])
					}
				}
				if _, err := l.TransferByKey(ctx, "k"); !errors.Is(err, ledger.ErrTransferNotFound) {
					t.Fatalf("refused transfer recorded: %v", err)
				}
			})
		}
		// Balances cannot be pushed past MaxBalance even through allowed transfers.
		mustAccount(t, l, ledger.NewAccount{ID: "whale", Kind: ledger.KindUser, Currency: "CNY"})
		var err error
		for i := 0; err == nil && i < 2000; i++ {
			_, err = l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: fmt.Sprintf("w%d", i), From: "sys", To: "whale", Amount: ledger.MaxAmount, Currency: "CNY"})
		}
		if !errors.Is(err, ledger.ErrInvalidAmount) {
			t.Fatalf("balance overflow: want ErrInvalidAmount, got %v", err)
		}
		if w := balance(t, l, "whale"); w.Balance > ledger.MaxBalance || w.Balance <= 0 {
			t.Fatalf("whale balance %d", w.Balance)
		}
		if sum, err := l.TotalBalance(ctx, "CNY"); err != nil || sum != 0 {
			t.Fatalf("total %d %v", sum, err)
		}
		mustReconcile(t, l, alog)
	})
}

func TestTransferAndIdempotency(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l, alog := auditedLedger(t, db)
		fixture(t, l, 2, 1000)
		req := ledger.TransferRequest{IdempotencyKey: "pay-1", From: "u00", To: "u01", Amount: 250, Currency: "CNY", Memo: "coffee"}
		t1, err := l.Transfer(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if t1.State != ledger.StatePosted || t1.Amount != 250 || t1.From != "u00" || t1.Memo != "coffee" {
			t.Fatalf("transfer %+v", t1)
		}
		if a, b := balance(t, l, "u00"), balance(t, l, "u01"); a.Balance != 750 || b.Balance != 1250 {
			t.Fatalf("balances %d %d", a.Balance, b.Balance)
		}
		t2, err := l.Transfer(ctx, req)
		if err != nil || t2.ID != t1.ID {
			t.Fatalf("replay: %+v %v", t2, err)
		}
		if a := balance(t, l, "u00"); a.Balance != 750 {
			t.Fatalf("replay moved money: %d", a.Balance)
		}
		for name, f := range map[string]func(*ledger.TransferRequest){
			"amount":   func(r *ledger.TransferRequest) { r.Amount = 251 },
			"to":       func(r *ledger.TransferRequest) { r.From, r.To = "u01", "u00" },
			"memo":     func(r *ledger.TransferRequest) { r.Memo = "tea" },
			"pending":  func(r *ledger.TransferRequest) { r.Pending = true },
			"currency": func(r *ledger.TransferRequest) { r.Currency = "EUR" },
		} {
			r := req
			f(&r)
			if _, err := l.Transfer(ctx, r); !errors.Is(err, ledger.ErrIdempotencyConflict) && !(name == "currency" && errors.Is(err, ledger.ErrCurrencyMismatch)) {
				t.Errorf("changed %s: want ErrIdempotencyConflict, got %v", name, err)
			}
		}
		// A replay succeeds even when the same request would now be refused.
		drain := ledger.TransferRequest{IdempotencyKey: "drain", From: "u00", To: "u01", Amount: 750, Currency: "CNY"}
		if _, err := l.Transfer(ctx, drain); err != nil {
			t.Fatal(err)
		}
		if got, err := l.Transfer(ctx, drain); err != nil || got.Amount != 750 {
			t.Fatalf("replay of a draining transfer: %+v %v", got, err)
		}
		if got, err := l.TransferByKey(ctx, "pay-1"); err != nil || got.ID != t1.ID {
			t.Fatalf("by key: %+v %v", got, err)
		}
		if got, err := l.GetTransfer(ctx, t1.ID); err != nil || got.IdempotencyKey != "pay-1" || !got.CreatedAt.Equal(t1.CreatedAt) {
			t.Fatalf("get: %+v %v (want %+v)", got, err, t1)
		}
		if _, err := l.GetTransfer(ctx, "tr_nope"); !errors.Is(err, ledger.ErrTransferNotFound) {
			t.Fatalf("unknown transfer: %v", err)
		}
		if sum, err := l.TotalBalance(ctx, "CNY"); err != nil || sum != 0 {
			t.Fatalf("total %d %v", sum, err)
		}
		mustReconcile(t, l, alog)
	})
}

func TestConcurrentSameKey(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l, alog := auditedLedger(t, db)
		fixture(t, l, 2, 1000)
		for round := 0; round < 5; round++ {
			req := ledger.TransferRequest{IdempotencyKey: fmt.Sprintf("same-%d", round), From: "u00", To: "u01", Amount: 7, Currency: "CNY"}
			const n = 16
			ids := make([]string, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tr, err := l.Transfer(ctx, req)
					ids[i], errs[i] = tr.ID, err
				}()
			}
			wg.Wait()
			for i := range ids {
				if errs[i] != nil || ids[i] != ids[0] {
					t.Fatalf("round %d request %d: %s %v (first %s)", round, i, ids[i], errs[i], ids[0])
				}
			}
		}
		if a := balance(t, l, "u00"); a.Balance != 1000-5*7 {
			t.Fatalf("balance %d: a duplicate was applied", a.Balance)
		}
		page, _, err := l.History(ctx, "u00", "", 100)
		if err != nil || len(page) != 6 { // 5 + funding
			t.Fatalf("history has %d transfers (%v)", len(page), err)
		}
		mustReconcile(t, l, alog)
	})
}

func TestTwoPhase(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		clk := testclock.New(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
		l, alog := auditedLedger(t, db, ledger.WithClock(clk.Now))
		fixture(t, l, 2, 1000)
		pend := func(key string, amount int64, exp time.Time) ledger.Transfer {
			t.Helper()
			tr, err := l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: key, From: "u00", To: "u01", Amount: amount, Currency: "CNY", Pending: true, ExpiresAt: exp})
			if err != nil {
				t.Fatalf("pending %s: %v", key, err)
			}
			if tr.State != ledger.StatePending || tr.ExpiresAt.IsZero() {
				t.Fatalf("pending transfer %+v", tr)
			}
			return tr
		}
		check := func(id string, bal, pd, pc int64) {
			t.Helper()
			a := balance(t, l, id)
			if a.Balance != bal || a.PendingDebit != pd || a.PendingCredit != pc {
				t.Fatalf("%s: balance %d pending -%d +%d, want %d -%d +%d", id, a.Balance, a.PendingDebit, a.PendingCredit, bal, pd, pc)
			}
		}
		// Full post.
		p1 := pend("p1", 300, time.Time{})
		if !p1.ExpiresAt.Equal(clk.Now().Add(ledger.DefaultExpiry)) {
			t.Fatalf("default expiry %v", p1.ExpiresAt)
		}
		check("u00", 1000, 300, 0)
		check("u01", 1000, 0, 300)
		// Reserved money cannot be spent twice.
		if _, err := l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "over", From: "u00", To: "u01", Amount: 701, Currency: "CNY"}); !errors.Is(err, ledger.ErrInsufficientFunds) {
			t.Fatalf("spend reserved money: %v", err)
		}
		if _, err := l.Post(ctx, p1.ID, 301); !errors.Is(err, ledger.ErrInvalidAmount) {
			t.Fatalf("post more than reserved: %v", err)
		}
		if _, err := l.Post(ctx, p1.ID, -1); !errors.Is(err, ledger.ErrInvalidAmount) {
			t.Fatalf("post negative: %v", err)
		}
		got, err := l.Post(ctx, p1.ID, 0)
		if err != nil || got.State != ledger.StatePosted || got.PostedAmount != 300 || got.ResolvedAt.IsZero() {
			t.Fatalf("post: %+v %v", got, err)
		}
		check("u00", 700, 0, 0)
		check("u01", 1300, 0, 0)
		if again, err := l.Post(ctx, p1.ID, 0); err != nil || again.ID != p1.ID {
			t.Fatalf("repeat post: %v", err)
		}
		if _, err := l.Void(ctx, p1.ID); !errors.Is(err, ledger.ErrNotPending) {
			t.Fatalf("void posted: %v", err)
		}
		check("u00", 700, 0, 0)
		// Partial capture.
		p2 := pend("p2", 200, time.Time{})
		got, err = l.Post(ctx, p2.ID, 50)
		if err != nil || got.PostedAmount != 50 || got.Amount != 200 {
			t.Fatalf("partial post: %+v %v", got, err)
		}
		check("u00", 650, 0, 0)
		check("u01", 1350, 0, 0)
		if _, err := l.Post(ctx, p2.ID, 60); !errors.Is(err, ledger.ErrNotPending) {
			t.Fatalf("second partial post: %v", err)
		}
		// Void.
		p3 := pend("p3", 100, time.Time{})
		got, err = l.Void(ctx, p3.ID)
		if err != nil || got.State != ledger.StateVoided {
			t.Fatalf("void: %+v %v", got, err)
		}
		check("u00", 650, 0, 0)
		if _, err := l.Post(ctx, p3.ID, 0); !errors.Is(err, ledger.ErrNotPending) {
			t.Fatalf("post voided: %v", err)
		}
		if _, err := l.Void(ctx, p3.ID); err != nil {
			t.Fatalf("repeat void: %v", err)
		}
		// Expiry: lazily on Post.
		p4 := pend("p4", 100, clk.Now().Add(time.Minute))
		clk.Add(2 * time.Minute)
		if _, err := l.Post(ctx, p4.ID, 0); !errors.Is(err, ledger.ErrExpired) {
			t.Fatalf("post expired: %v", err)
		}
		if tr, err := l.GetTransfer(ctx, p4.ID); err != nil || tr.State != ledger.StateExpired {
			t.Fatalf("expired transfer: %+v %v", tr, err)
		}
		check("u00", 650, 0, 0)
		if _, err := l.Post(ctx, p4.ID, 0); !errors.Is(err, ledger.ErrExpired) {
			t.Fatalf("post expired again: %v", err)
		}
		if _, err := l.Void(ctx, p4.ID); !errors.Is(err, ledger.ErrExpired) {
			t.Fatalf("void expired: %v", err)
		}
		// Expiry: by the sweeper call.
		p5 := pend("p5", 100, clk.Now().Add(time.Minute))
		p6 := pend("p6", 100, clk.Now().Add(time.Hour))
		n, err := l.ExpirePending(ctx, clk.Now().Add(2*time.Minute))
		if err != nil || n != 1 {
			t.Fatalf("expire: %d %v", n, err)
		}
		if tr, _ := l.GetTransfer(ctx, p5.ID); tr.State != ledger.StateExpired {
			t.Fatalf("p5 %s", tr.State)
		}
		if tr, _ := l.GetTransfer(ctx, p6.ID); tr.State != ledger.StatePending {
			t.Fatalf("p6 %s", tr.State)
		}
		check("u00", 650, 100, 0)
		// Expiry: lazily when the reservation blocks a transfer.
		clk.Add(2 * time.Hour)
		if _, err := l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "all", From: "u00", To: "u01", Amount: 650, Currency: "CNY"}); err != nil {
			t.Fatalf("transfer blocked by an expired reservation: %v", err)
		}
		if tr, _ := l.GetTransfer(ctx, p6.ID); tr.State != ledger.StateExpired {
			t.Fatalf("p6 %s", tr.State)
		}
		check("u00", 0, 0, 0)
		check("u01", 2000, 0, 0)
		if _, err := l.Post(ctx, "tr_missing", 0); !errors.Is(err, ledger.ErrTransferNotFound) {
			t.Fatalf("post unknown: %v", err)
		}
		if sum, err := l.TotalBalance(ctx, "CNY"); err != nil || sum != 0 {
			t.Fatalf("total %d %v", sum, err)
		}
		mustReconcile(t, l, alog)
	})
}

func TestHistoryPagination(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := openLedger(t, db)
		fixture(t, l, 3, 1000)
		var want []string // newest first, for u00
		for i := 0; i < 23; i++ {
			from, to := "u00", "u01"
			switch i % 3 {
			case 1:
				from, to = "u01", "u00"
			case 2:
				from, to = "u01", "u02" // not u00's
			}
			tr, err := l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: fmt.Sprintf("h%d", i), From: from, To: to, Amount: 1, Currency: "CNY"})
			if err != nil {
				t.Fatal(err)
			}
			if from == "u00" || to == "u00" {
				want = append([]string{tr.ID}, want...)
			}
		}
		want = append(want, mustKey(t, l, "fund-u00"))
		var got []string
		cursor := ""
		pages := 0
		for {
			page, next, err := l.History(ctx, "u00", cursor, 4)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, tr := range page {
				got = append(got, tr.ID)
			}
			// A transfer made between pages must not shift later pages.
			if pages == 2 {
				if _, err := l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "late", From: "u01", To: "u00", Amount: 1, Currency: "CNY"}); err != nil {
					t.Fatal(err)
				}
			}
			if next == "" {
				break
			}
			cursor = next
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("history\n got %v\nwant %v", got, want)
		}
		if pages != (len(want)+3)/4 {
			t.Fatalf("%d pages for %d transfers", pages, len(want))
		}
		for _, c := range []string{"garbage!", "AAAA", "AQAAAAAAAAAA"} {
			if _, _, err := l.History(ctx, "u00", c, 4); !errors.Is(err, ledger.ErrInvalidCursor) {
				t.Errorf("cursor %q: %v", c, err)
			}
		}
		if _, _, err := l.History(ctx, "ghost", "", 4); !errors.Is(err, ledger.ErrAccountNotFound) {
			t.Fatalf("history of unknown account: %v", err)
		}
	})
}

func mustKey(t *testing.T, l *ledger.Ledger, key string) string {
	t.Helper()
	tr, err := l.TransferByKey(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tr.ID
}

// TestBank runs random concurrent transfers while readers check the invariants.
func TestBank(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) { bank(t, db) })
}

// TestBankManyBatchers is TestBank with three PostgreSQL batchers (the
// default is one), whose batches lock overlapping accounts at the same time:
// several nodes on one database do the same.
func TestBankManyBatchers(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		if db.Dialect != sqldb.Postgres {
			t.Skip("batchers are PostgreSQL's")
		}
		bank(t, db, ledger.WithPostgresBatchers(3))
	})
}

// bank runs concurrent random transfers between a few accounts while
// readers check that balances always sum to zero, then checks that every
// acknowledged transfer is stored once and audited once.
func bank(t *testing.T, db *sqldb.DB, opts ...ledger.Option) {
	ctx := context.Background()
	l, alog := auditedLedger(t, db, opts...)
	const nAcc, writers, perWriter, fund = 20, 16, 60, 100
	ids := fixture(t, l, nAcc, fund)
	var acked sync.Map // key → transfer ID
	var nAcked atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	readerErr := make(chan error, 4)
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				accs, err := l.Accounts(ctx, "", 1000)
				if err != nil {
					readerErr <- err
					return
				}
				var sum int64
				for _, a := range accs {
					sum += a.Balance
					if !a.AllowNegative && a.Available() < 0 {
						readerErr <- fmt.Errorf("protected account %s has available %d", a.ID, a.Available())
						return
					}
				}
				if sum != 0 {
					readerErr <- fmt.Errorf("balances sum to %d", sum)
					return
				}
				if tot, err := l.TotalBalance(ctx, "CNY"); err != nil || tot != 0 {
					readerErr <- fmt.Errorf("total balance %d (%v)", tot, err)
					return
				}
			}
		}()
	}
	var ww sync.WaitGroup
	var refused atomic.Int64
	for w := 0; w < writers; w++ {
		ww.Add(1)
		go func() {
			defer ww.Done()
			seed := uint64(w*7919 + 1)
			rnd := func(n int) int {
				seed ^= seed << 13
				seed ^= seed >> 7
				seed ^= seed << 17
				return int(seed % uint64(n))
			}
			for i := 0; i < perWriter; i++ {
				from, to := ids[rnd(nAcc)], ids[rnd(nAcc)]
				if from == to {
					continue
				}
				key := fmt.Sprintf("bank-%d-%d", w, i)
				tr, err := l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: key, From: from, To: to, Amount: int64(1 + rnd(60)), Currency: "CNY"})
				switch {
				case err == nil:
					acked.Store(key, tr.ID)
					nAcked.Add(1)
				case errors.Is(err, ledger.ErrInsufficientFunds):
					refused.Add(1)
				default:
					t.Errorf("transfer: %v", err)
					return
				}
			}
		}()
	}
	ww.Wait()
	close(stop)
	wg.Wait()
	close(readerErr)
	for err := range readerErr {
		t.Fatal(err)
	}
	if nAcked.Load() == 0 || refused.Load() == 0 {
		t.Logf("acked %d refused %d", nAcked.Load(), refused.Load())
	}
	// Every acknowledged transfer is present exactly once.
	total := 0
	seen := map[string]bool{}
	for _, id := range ids {
		cursor := ""
		for {
			page, next, err := l.History(ctx, id, cursor, 100)
			if err != nil {
				t.Fatal(err)
			}
			for _, tr := range page {
				if tr.From == id && tr.From != "sys" && !seen[tr.ID] {
					seen[tr.ID] = true
					total++
					want, ok := acked.Load(tr.IdempotencyKey)
					if !ok || want.(string) != tr.ID {
						t.Fatalf("transfer %s (%s) was not acknowledged", tr.ID, tr.IdempotencyKey)
					}
				}
			}
			if next == "" {
				break
			}
			cursor = next
		}
	}
	if int64(total) != nAcked.Load() {
		t.Fatalf("%d transfers stored, %d acknowledged", total, nAcked.Load())
	}
	acked.Range(func(k, v any) bool {
		tr, err := l.TransferByKey(ctx, k.(string))
		if err != nil || tr.ID != v.(string) {
			t.Fatalf("acknowledged %s missing: %v", k, err)
		}
		return true
	})
	var sum int64
	for _, a := range snapshot(t, l) {
		sum += a.Balance
	}
	if sum != 0 {
		t.Fatalf("final sum %d", sum)
	}
	t.Logf("%d acknowledged, %d refused for funds", nAcked.Load(), refused.Load())
	rep := mustReconcile(t, l, alog)
	if want := nAcked.Load() + int64(len(ids)); rep.Transfers != want {
		t.Fatalf("reconciled %d transfers, want %d", rep.Transfers, want)
	}
}

func TestRestart(t *testing.T) {
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			dsn := b.DSN(t)
			db1, err := sqldb.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			l1, err := ledger.Open(ctx, db1)
			if err != nil {
				t.Fatal(err)
			}
			fixture(t, l1, 3, 500)
			tr, err := l1.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "r1", From: "u00", To: "u01", Amount: 123, Currency: "CNY"})
			if err != nil {
				t.Fatal(err)
			}
			p, err := l1.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "r2", From: "u02", To: "u01", Amount: 77, Currency: "CNY", Pending: true})
			if err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, l1)
			l1.Close()
			if _, err := l1.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "r3", From: "u00", To: "u01", Amount: 1, Currency: "CNY"}); !errors.Is(err, ledger.ErrClosed) {
				t.Fatalf("transfer on a closed ledger: %v", err)
			}
			db1.Close()

			db2, err := sqldb.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db2.Close()
			l2 := openLedger(t, db2)
			after := snapshot(t, l2)
			if fmt.Sprint(before) != fmt.Sprint(after) {
				t.Fatalf("balances changed across restart:\n%v\n%v", before, after)
			}
			if got, err := l2.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "r1", From: "u00", To: "u01", Amount: 123, Currency: "CNY"}); err != nil || got.ID != tr.ID {
				t.Fatalf("replay after restart: %+v %v", got, err)
			}
			if got, err := l2.Post(ctx, p.ID, 0); err != nil || got.State != ledger.StatePosted {
				t.Fatalf("post after restart: %+v %v", got, err)
			}
			if a := balance(t, l2, "u01"); a.Balance != 500+123+77 {
				t.Fatalf("u01 balance %d", a.Balance)
			}
		})
	}
}

// TestCheckConstraintBackstop shows the database refuses an overdraft even if
// the Go checks were bypassed.
func TestCheckConstraintBackstop(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := openLedger(t, db)
		fixture(t, l, 1, 10)
		if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE ledger_accounts SET balance = balance - 11 WHERE id = ?`), "u00"); err == nil {
			t.Fatal("database accepted a negative protected balance")
		}
		if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE ledger_accounts SET pending_debit = 11 WHERE id = ?`), "u00"); err == nil {
			t.Fatal("database accepted a reservation above the balance")
		}
		if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE ledger_accounts SET balance = balance - 11 WHERE id = ?`), "sys"); err != nil {
			t.Fatalf("system account may go negative: %v", err)
		}
	})
}

func TestAccountExpiresLazily(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		clk := testclock.New(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
		l := openLedger(t, db, ledger.WithClock(clk.Now))
		fixture(t, l, 2, 100)
		p, err := l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "p", From: "u00", To: "u01", Amount: 60, Currency: "CNY", Pending: true, ExpiresAt: clk.Now().Add(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if a := balance(t, l, "u00"); a.Available() != 40 {
			t.Fatalf("available %d", a.Available())
		}
		clk.Add(time.Second)
		if a := balance(t, l, "u00"); a.Available() != 100 || a.PendingDebit != 0 {
			t.Fatalf("after expiry: %+v", a)
		}
		if b := balance(t, l, "u01"); b.PendingCredit != 0 || b.Balance != 100 {
			t.Fatalf("after expiry: %+v", b)
		}
		if tr, err := l.TransferByKey(ctx, "p"); err != nil || tr.State != ledger.StateExpired || tr.ID != p.ID {
			t.Fatalf("expired transfer: %+v %v", tr, err)
		}
	})
}

// TestBankTwoPhase mixes pending transfers, posts (full and partial), voids
// and expiries under concurrency and checks the invariants throughout.
func TestBankTwoPhase(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l, alog := auditedLedger(t, db)
		const nAcc, writers, per = 8, 8, 40
		ids := fixture(t, l, nAcc, 200)
		stop := make(chan struct{})
		bad := make(chan error, 1)
		var rg sync.WaitGroup
		rg.Add(1)
		go func() {
			defer rg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				accs, err := l.Accounts(ctx, "", 1000)
				if err != nil {
					bad <- err
					return
				}
				var sum, pd, pc int64
				for _, a := range accs {
					sum += a.Balance
					pd += a.PendingDebit
					pc += a.PendingCredit
					if !a.AllowNegative && a.Available() < 0 {
						bad <- fmt.Errorf("%s available %d", a.ID, a.Available())
						return
					}
				}
				if sum != 0 || pd != pc {
					bad <- fmt.Errorf("sum %d, pending debits %d vs credits %d", sum, pd, pc)
					return
				}
			}
		}()
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < per; i++ {
					from, to := ids[(w+i)%nAcc], ids[(w*3+i*5+1)%nAcc]
					if from == to {
						continue
					}
					amt := int64(10 + (w*i)%50)
					p, err := l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: fmt.Sprintf("tp-%d-%d", w, i), From: from, To: to, Amount: amt, Currency: "CNY", Pending: true})
					if errors.Is(err, ledger.ErrInsufficientFunds) {
						continue
					}
					if err != nil {
						t.Errorf("pending: %v", err)
						return
					}
					switch i % 3 {
					case 0:
						_, err = l.Post(ctx, p.ID, 0)
					case 1:
						_, err = l.Post(ctx, p.ID, amt/2)
					default:
						_, err = l.Void(ctx, p.ID)
					}
					if err != nil {
						t.Errorf("resolve: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(stop)
		rg.Wait()
		select {
		case err := <-bad:
			t.Fatal(err)
		default:
		}
		for _, a := range snapshot(t, l) {
			if a.PendingDebit != 0 || a.PendingCredit != 0 {
				t.Fatalf("%s still has reservations: %+v", a.ID, a)
			}
		}
		if sum, err := l.TotalBalance(ctx, "CNY"); err != nil || sum != 0 {
			t.Fatalf("total %d %v", sum, err)
		}
		mustReconcile(t, l, alog)
	})
}
