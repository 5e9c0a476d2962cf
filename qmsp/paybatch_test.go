package qmsp

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// addBob registers a second payer, 43, on phone-bob with balance.
func (e *env) addBob(balance int64) *Phone {
	e.t.Helper()
	ctx := context.Background()
	if _, err := e.led.CreateAccount(ctx, ledger.NewAccount{ID: "bob", Owner: "bob", Kind: ledger.KindUser, Currency: "CNY"}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.led.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "fund-bob", From: "bank", To: "bob", Amount: balance, Currency: "CNY"}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.pps.RegisterPayer(ctx, 43, "bob", "phone-bob"); err != nil {
		e.t.Fatal(err)
	}
	return &Phone{Payer: 43, Platform: LocalPPS{PPS: e.pps, Peer: "phone-bob"}}
}

// nextCodes returns the gateway's next n codes (moving past each).
func nextCodes(t *testing.T, g *Gateway, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = code(t, g)
		if err := g.Advance(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

type batchPay struct {
	phone, idem string
	req         *PaymentRequest
}

func build(t *testing.T, ph *Phone, c string, amount int64) *PaymentRequest {
	t.Helper()
	req, _, err := ph.BuildPayment(c, amount, 156)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func (e *env) claim(ref string) (state, transferID string) {
	e.t.Helper()
	var keyID string
	var unit int
	if _, err := fmt.Sscanf(ref, "%36s/%d", &keyID, &unit); err != nil {
		e.t.Fatal(err)
	}
	err := e.db.QueryRowContext(context.Background(), e.db.Rebind(`SELECT state, transfer_id FROM qmsp_payments WHERE key_id = ? AND unit = ?`), keyID, unit).Scan(&state, &transferID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ""
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return state, transferID
}

func refOf(t *testing.T, c string) string {
	var d Display
	if err := d.UnmarshalText([]byte(c)); err != nil {
		t.Fatal(err)
	}
	return d.Ref.String()
}

// TestPaymentBatchOutcomes decides one batch holding every kind of payment
// and checks each outcome against what it would be alone: good payments
// pay; a replay of a unit claimed earlier in the batch, or before it, is
// ErrKeyUsed; the same client's retry in the batch gets the first receipt
// and moves no money; a payment the ledger refuses burns its unit and
// moves nothing while the payment after it from the same account pays; a
// phone paying with another's payer number is refused without burning the
// unit. A later retry of the refused payment gets the refusal back, even
// once the money is there.
func TestPaymentBatchOutcomes(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := newEnv(t, db, 200)
		g := e.gateway("GW-1")
		ctx := context.Background()
		alice, bob := e.phone(), e.addBob(300)
		cs := nextCodes(t, g, 6)
		if _, err := bob.Pay(ctx, cs[5], 10, 156); err != nil { // c5 is spent before the batch
			t.Fatal(err)
		}
		a0, b0, m0 := e.balance("alice"), e.balance("bob"), e.balance("market")

		retry := build(t, alice, cs[1], 200)
		pays := []batchPay{
			{"phone-alice", "a0", build(t, alice, cs[0], 100)}, // pays
			{"phone-alice", "a1", retry},                       // pays
			{"phone-bob", "b0", build(t, bob, cs[0], 100)},     // unit claimed earlier in the batch
			{"phone-alice", "a1", retry},                       // the same client's retry: first receipt
			{"phone-bob", "b2", build(t, bob, cs[2], 500)},     // refused by the ledger (bob has 300)
			{"phone-bob", "b3", build(t, bob, cs[3], 100)},     // pays
			{"phone-alice", "x4", build(t, bob, cs[4], 100)},   // bob's payer number on alice's phone
			{"phone-alice", "a5", build(t, alice, cs[5], 100)}, // unit claimed before the batch
		}
		want := []error{nil, nil, ErrKeyUsed, nil, ErrRefused, nil, ErrUnknownPayer, ErrKeyUsed}
		jobs := make([]*payJob, len(pays))
		for i, bp := range pays {
			j, err := e.pps.verify(ctx, bp.phone, bp.idem, *bp.req)
			if err != nil {
				t.Fatalf("payment %d does not verify: %v", i, err)
			}
			j.ctx = ctx
			jobs[i] = j
		}
		e.pps.runPayBatch(jobs)
		for i, j := range jobs {
			if w := want[i]; (w == nil) != (j.err == nil) || (w != nil && !errors.Is(j.err, w)) {
				t.Errorf("payment %d: %v, want %v", i, j.err, w)
			}
			if (j.err == nil) != (j.rc != nil) {
				t.Errorf("payment %d: receipt %+v with error %v", i, j.rc, j.err)
			}
		}
		if jobs[1].rc == nil || jobs[3].rc == nil || jobs[1].rc.TransferID != jobs[3].rc.TransferID {
			t.Fatalf("retry in the batch: receipts %+v and %+v, want the same transfer", jobs[1].rc, jobs[3].rc)
		}
		if a, b, m := e.balance("alice"), e.balance("bob"), e.balance("market"); a != a0-300 || b != b0-100 || m != m0+400 {
			t.Fatalf("balances alice %d bob %d market %d, want %d %d %d", a, b, m, a0-300, b0-100, m0+400)
		}
		for i, w := range []string{"paid", "paid", "refused", "paid", "", "paid"} {
			st, tr := e.claim(refOf(t, cs[i]))
			if st != w || (st == "paid") != (tr != "") {
				t.Errorf("unit of code %d: claim %q transfer %q, want %q", i, st, tr, w)
			}
		}
		if st, tr := e.claim(refOf(t, cs[0])); tr != jobs[0].rc.TransferID || st != "paid" {
			t.Errorf("claim of code 0 records transfer %s, receipt %s", tr, jobs[0].rc.TransferID)
		}
		// The unit of the refused binding was not burned: bob pays with it.
		if _, err := bob.Pay(ctx, cs[4], 50, 156); err != nil {
			t.Fatalf("bob with the code refused on alice's phone: %v", err)
		}
		// The refused payment's retry gets the refusal, even with money there.
		if _, err := e.led.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "fund-bob-2", From: "bank", To: "bob", Amount: 1000, Currency: "CNY"}); err != nil {
			t.Fatal(err)
		}
		b1 := e.balance("bob")
		if _, err := e.pps.Pay(ctx, "phone-bob", "b2", *pays[4].req); !errors.Is(err, ErrRefused) {
			t.Fatalf("retry of the refused payment: %v, want %v", err, ErrRefused)
		}
		if e.balance("bob") != b1 {
			t.Fatal("the retry of a refused payment moved money")
		}
		if st, _ := e.claim(refOf(t, cs[2])); st != "refused" {
			t.Fatalf("refused claim became %q", st)
		}
	})
}

// TestConcurrentPaymentsOneBatch: phones pay at once, among them a replay of
// one code and a code with a bad tag; they are decided in one batch
// (checked through the batch hook), exactly the good ones pay, each code
// once, and the balances are exact.
func TestConcurrentPaymentsOneBatch(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := newEnv(t, db, 200)
		g := e.gateway("GW-1")
		ctx := context.Background()
		alice := e.phone()
		const n = 10
		cs := nextCodes(t, g, n)
		a0, m0 := e.balance("alice"), e.balance("market")

		type attempt struct {
			idem string
			req  *PaymentRequest
			want error
		}
		var atts []attempt
		for i, c := range cs {
			req := build(t, alice, c, int64(100+i))
			atts = append(atts, attempt{fmt.Sprintf("k%d", i), req, nil})
		}
		// A replay of code 0 (another payment on the same unit) and a
		// forged tag on code 1: neither may pay, nor stop the genuine ones.
		replay := build(t, alice, cs[0], 999)
		bad := *build(t, alice, cs[1], 999)
		bad.Tag = append([]byte(nil), bad.Tag...)
		bad.Tag[0] ^= 1
		atts = append(atts, attempt{"replay", replay, ErrKeyUsed}, attempt{"bad", &bad, ErrAuth})

		// The committer's first batch waits until every other payment that
		// verifies (all but the bad tag) is queued behind it, so that they
		// all share the second. (On PostgreSQL several committers take
		// batches side by side: there only the outcomes are checked.)
		var mu sync.Mutex
		var sizes []int
		hook := func(size int) {
			mu.Lock()
			first := len(sizes) == 0
			sizes = append(sizes, size)
			mu.Unlock()
			if first {
				deadline := time.Now().Add(10 * time.Second)
				for e.pps.payc.Queued() < n+1-size && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
			}
		}
		if db.Dialect == sqldb.SQLite {
			e.pps.batchHook = hook
		}
		errs := make([]error, len(atts))
		var wg sync.WaitGroup
		for i, a := range atts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = e.pps.Pay(ctx, "phone-alice", a.idem, *a.req)
			}()
		}
		wg.Wait()
		e.pps.batchHook = nil
		paid := int64(0)
		for i, a := range atts[:n] {
			if i == 0 && errors.Is(errs[i], ErrKeyUsed) && errs[n] == nil {
				// The replay reached the committer first: it took the unit.
				paid += 999
				continue
			}
			if errs[i] != nil {
				t.Errorf("payment %d: %v", i, errs[i])
				continue
			}
			paid += amountOf(t, e, a.req)
		}
		if errs[n] != nil && !errors.Is(errs[n], ErrKeyUsed) {
			t.Errorf("replay: %v, want %v", errs[n], ErrKeyUsed)
		}
		if (errs[0] == nil) == (errs[n] == nil) {
			t.Errorf("code 0 and its replay: %v and %v, want exactly one to pay", errs[0], errs[n])
		}
		if !errors.Is(errs[n+1], ErrAuth) {
			t.Errorf("bad tag: %v, want %v", errs[n+1], ErrAuth)
		}
		if a, m := e.balance("alice"), e.balance("market"); a != a0-paid || m != m0+paid {
			t.Fatalf("alice %d market %d, want %d %d", a, m, a0-paid, m0+paid)
		}
		var claims int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM qmsp_payments WHERE state = 'paid'`).Scan(&claims); err != nil || claims != n {
			t.Fatalf("%d paid claims (%v), want %d", claims, err, n)
		}
		mu.Lock()
		defer mu.Unlock()
		if db.Dialect == sqldb.SQLite && (len(sizes) != 2 || sizes[0]+sizes[1] != n+1) {
			// n+1: the bad tag never reaches the committer.
			t.Fatalf("batch sizes %v, want the %d payments that verified in two batches", sizes, n+1)
		}
	})
}

// amountOf is the amount r pays.
func amountOf(t *testing.T, e *env, r *PaymentRequest) int64 {
	t.Helper()
	j, err := e.pps.verify(context.Background(), "", "", *r)
	if err != nil {
		t.Fatal(err)
	}
	return j.m.Amount
}

// payerFailingAudit fails the audit record of one payer's payment.
type payerFailingAudit struct {
	audit.Recorder
	payer string
}

func (f payerFailingAudit) RecordTx(ctx context.Context, tx *sql.Tx, e audit.Entry) error {
	if e.Details["payer"] == f.payer {
		return errAuditDown
	}
	return f.Recorder.RecordTx(ctx, tx, e)
}

// TestPaymentBatchFailureIsolated: when one payment of a batch cannot be
// written (its audit record fails), the batch runs again one payment at a
// time: that payment fails and changes nothing, the others pay.
func TestPaymentBatchFailureIsolated(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := newEnv(t, db, 200)
		g := e.gateway("GW-1")
		ctx := context.Background()
		alice, bob := e.phone(), e.addBob(300)
		cs := nextCodes(t, g, 3)
		a0, b0, m0 := e.balance("alice"), e.balance("bob"), e.balance("market")
		working := e.pps.cfg.Audit
		e.pps.cfg.Audit = payerFailingAudit{working, "43"}
		defer func() { e.pps.cfg.Audit = working }()
		pays := []batchPay{
			{"phone-alice", "a0", build(t, alice, cs[0], 100)},
			{"phone-bob", "b1", build(t, bob, cs[1], 100)},
			{"phone-alice", "a2", build(t, alice, cs[2], 100)},
		}
		jobs := make([]*payJob, len(pays))
		for i, bp := range pays {
			j, err := e.pps.verify(ctx, bp.phone, bp.idem, *bp.req)
			if err != nil {
				t.Fatal(err)
			}
			j.ctx = ctx
			jobs[i] = j
		}
		e.pps.runPayBatch(jobs)
		if jobs[0].err != nil || jobs[2].err != nil || !errors.Is(jobs[1].err, errAuditDown) {
			t.Fatalf("outcomes %v / %v / %v, want nil / %v / nil", jobs[0].err, jobs[1].err, jobs[2].err, errAuditDown)
		}
		if a, b, m := e.balance("alice"), e.balance("bob"), e.balance("market"); a != a0-200 || b != b0 || m != m0+200 {
			t.Fatalf("alice %d bob %d market %d, want %d %d %d", a, b, m, a0-200, b0, m0+200)
		}
		if st, _ := e.claim(refOf(t, cs[1])); st != "" {
			t.Fatalf("the failed payment's unit is claimed (%q)", st)
		}
	})
}

// TestPayAfterClose: a payment after Close fails at once, changing
// nothing, instead of waiting for a committer that is gone.
func TestPayAfterClose(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := newEnv(t, db, 100)
	g := e.gateway("GW-1")
	cs := nextCodes(t, g, 2)
	if _, err := e.phone().Pay(context.Background(), cs[0], 100, 156); err != nil {
		t.Fatal(err) // the key batch is fetched and stored
	}
	c := cs[1]
	a0 := e.balance("alice")
	e.pps.Close()
	done := make(chan error, 1)
	go func() { _, err := e.phone().Pay(context.Background(), c, 100, 156); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, sqldb.ErrBatcherClosed) {
			t.Fatalf("payment after Close: %v, want %v", err, sqldb.ErrBatcherClosed)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("payment after Close still waiting after 10 s")
	}
	if e.balance("alice") != a0 {
		t.Fatal("money moved")
	}
}

// TestPGPayBatchIndexPlans: the payment batch's list lookups of gateways and
// payers use their indexes whatever the tables' statistics say
// (sqldb.IndexPlans): a generic plan cached while the tables were small
// would stay a sequential scan as payers enrol (the ledger's batches ran at a
// fifth of their speed so, see TestPGBatchIndexPlans). The batches run on one
// connection held by the test, so their prepared statements are the ones it
// shows.
func TestPGPayBatchIndexPlans(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		if db.Dialect != sqldb.Postgres {
			t.Skip("PostgreSQL's plan cache")
		}
		e := newEnv(t, db, 200)
		g := e.gateway("GW-1")
		ctx := context.Background()
		alice := e.phone()
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Statistics of young tables, as autovacuum would take them: without
		// any, the planner assumes a larger table and picks the index anyway.
		if _, err := conn.ExecContext(ctx, `ANALYZE qmsp_pps_gateways, qmsp_pps_payers`); err != nil {
			t.Fatal(err)
		}
		const batches = 8
		for i, c := range nextCodes(t, g, batches) {
			j, err := e.pps.verify(ctx, "phone-alice", fmt.Sprintf("ip%d", i), *build(t, alice, c, 1))
			if err != nil {
				t.Fatal(err)
			}
			j.ctx = ctx
			tx, err := conn.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.pps.decidePayments(ctx, tx, []*payJob{j}); err != nil || j.err != nil {
				t.Fatalf("payment %d: %v, %v", i, err, j.err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct{ like, arg string }{
			{"%FROM qmsp_pps_gateways WHERE gi = ANY%", "{GW-1,GW-2}"},
			{"%FROM qmsp_pps_payers WHERE payer = ANY%", "{1,2}"},
		} {
			plan, runs := sqldbtest.CachedPlan(t, conn, tc.like, tc.arg)
			if runs != batches {
				t.Fatalf("%q ran %d times on the test's connection, want %d", tc.like, runs, batches)
			}
			if strings.Contains(plan, "Seq Scan") || !strings.Contains(plan, "Index") {
				t.Errorf("%q: cached generic plan\n%s\nwant an index scan", tc.like, plan)
			}
		}
	})
}
