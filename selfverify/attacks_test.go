package selfverify

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// eachEnv runs fn on a fresh environment on SQLite and, when
// QSHIELD_TEST_POSTGRES is set, on PostgreSQL.
func eachEnv(t *testing.T, fn func(t *testing.T, e *env)) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) { fn(t, newEnv(t, db, ecqv.P256())) })
}

// tamperAPI wraps an operator and lets a test rewrite its answers (a
// man-in-the-middle or a rogue operator).
type tamperAPI struct {
	OperatorAPI
	register func(*RegisterResponse)
	withdraw func(*SignedToken)
}

func (a tamperAPI) Register(ctx context.Context, req RegisterRequest) (*RegisterResponse, error) {
	r, err := a.OperatorAPI.Register(ctx, req)
	if err == nil && a.register != nil {
		a.register(r)
	}
	return r, err
}

func (a tamperAPI) Withdraw(ctx context.Context, req WithdrawRequest) (*SignedToken, error) {
	r, err := a.OperatorAPI.Withdraw(ctx, req)
	if err == nil && a.withdraw != nil {
		a.withdraw(r)
	}
	return r, err
}

// --- Impersonation, phase by phase ---

func TestImpersonationRegistration(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		e.account("acct.dave", "user", 0)
		code, err := e.op.Enroll(e.ctx, "dave", RoleUser, "acct.dave")
		if err != nil {
			t.Fatal(err)
		}
		// Wrong code, or a code for another role: refused and audited.
		if _, err := Register(e.ctx, e.op.Local(), nil, "dave", RoleUser, "0000"); !errors.Is(err, ErrBadEnrollment) {
			t.Fatalf("bad code: %v", err)
		}
		if !e.audit.has("selfverify.register", "denied") {
			t.Fatal("refused registration not audited")
		}
		// A man in the middle replaces P_X: the client's check d·G = e·P + Q_N fails.
		evil := randKey(t, e.curve)
		forged := tamperAPI{OperatorAPI: e.op.Local(), register: func(r *RegisterResponse) { r.P = evil.Public().Bytes() }}
		if _, err := Register(e.ctx, forged, nil, "dave", RoleUser, code); !errors.Is(err, ecqv.ErrInvalidResponse) {
			t.Fatalf("forged P_X: %v", err)
		}
		// The code is now used: a second registration (e.g. by the MITM) fails.
		if _, err := Register(e.ctx, e.op.Local(), nil, "dave", RoleUser, code); !errors.Is(err, ErrBadEnrollment) {
			t.Fatalf("code reuse: %v", err)
		}
		// Forged r.
		e.account("acct.erin", "user", 0)
		code, _ = e.op.Enroll(e.ctx, "erin", RoleUser, "acct.erin")
		forgedR := tamperAPI{OperatorAPI: e.op.Local(), register: func(r *RegisterResponse) { r.R[31] ^= 1 }}
		if _, err := Register(e.ctx, forgedR, nil, "erin", RoleUser, code); !errors.Is(err, ecqv.ErrInvalidResponse) {
			t.Fatalf("forged r: %v", err)
		}
	})
}

func TestImpersonationWithdraw(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		// Eve has her own registration and signs a withdrawal in alice's name.
		eve := e.user("eve")
		req, _, err := eve.WithdrawRequest(500, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		req.User = "alice"
		req.Sig, _ = eve.cred.Key.Sign(rand.Reader, req.signingBytes())
		if _, err := e.op.Withdraw(e.ctx, *req); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("withdraw signed by another key: %v", err)
		}
		// Eve uses a forged P_X for "alice" whose key she "knows": no such key
		// verifies either — the operator uses the registered P_alice.
		if e.balance("acct.alice") != 10_000 {
			t.Fatal("money moved")
		}
		if !e.audit.has("selfverify.withdraw", "denied") {
			t.Fatal("refusal not audited")
		}
		// A token not signed by N (a fake operator) is refused by the phone.
		rogue := randKey(t, e.curve)
		fake := tamperAPI{OperatorAPI: e.op.Local(), withdraw: func(st *SignedToken) {
			st.Token.Limit = 10
			st.Sig, _ = rogue.Sign(rand.Reader, st.Token.signingBytes())
		}}
		alice.api = fake
		if _, err := alice.Withdraw(e.ctx, 10, time.Hour); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("token with a forged operator signature: %v", err)
		}
	})
}

func TestImpersonationPayment(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		v := e.vendor("shop")
		st := mustWithdraw(t, u, 1000)
		info := v.Info()
		qV, _ := u.vendorKey(info)
		w := u.Wallet()
		secret := w.Tokens[0].Secret

		// 1. A token whose W was raised after N signed it.
		raised := *st
		raised.Token.Limit = 1_000_000
		m, _, _, err := FirstPaymentMessage(e.curve, qV, "shop", raised, keyOf(t, secret), "tea", 120, e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.OpenPayment(e.ctx, *m); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("tampered token: %v", err)
		}
		// 2. Eve copied the signed token (e.g. a dishonest vendor saw it) but
		// does not have t: she signs with her own key.
		eveT := randKey(t, e.curve)
		m, _, _, _ = FirstPaymentMessage(e.curve, qV, "shop", *st, eveT, "tea", 120, e.clock.Now())
		if _, err := v.OpenPayment(e.ctx, *m); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("stolen token without t: %v", err)
		}
		// 3. An impostor vendor claims ID "shop" but publishes its own point P_E
		// (it registered legitimately as "eve-shop"). U rebuilds Q from ("shop",
		// P_E); the impostor knows no key for it and cannot read the payment.
		eveCred := e.register("eve-shop", RoleVendor)
		impostor := &Vendor{db: e.db, cfg: v.cfg, cred: &Credentials{ID: "shop", Role: RoleVendor, Currency: "CNY",
			Key: eveCred.Key, P: eveCred.P, QN: eveCred.QN}, kvn: v.kvn, catalog: v.catalog}
		if _, err := u.Pay(e.ctx, impostor.Local(), "tea"); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("impostor vendor: %v", err)
		}
		if ts, _ := e.op.TokenStatus(e.ctx, st.Token.Serial); ts.Reserved != 0 {
			t.Fatalf("impostor reserved money: %+v", ts)
		}
		// The honest vendor still works with the same token.
		mustPay(t, u, v.Local(), "tea")
	})
}

func TestImpersonationDeposit(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		v := e.vendor("shop")
		eve := e.vendor("eve-shop")
		st := mustWithdraw(t, u, 1000)
		rc := mustPay(t, u, v.Local(), "tea")
		item := DepositItem{Serial: st.Token.Serial, Ref: rc.Ref, Item: "tea", Amount: 120}
		// Eve signs a deposit in shop's name with her key.
		req := DepositRequest{Vendor: "shop", Timestamp: ms(e.clock.Now()), Nonce: "00112233445566778899aabbccddeeff", Items: []DepositItem{item}}
		req.Sig, _ = eve.cred.Key.Sign(rand.Reader, req.signingBytes())
		if _, err := e.op.Deposit(e.ctx, req); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("deposit with a forged signature: %v", err)
		}
		// Eve deposits shop's payment as her own: the reservation is shop's.
		req.Vendor = "eve-shop"
		req.Sig, _ = eve.cred.Key.Sign(rand.Reader, req.signingBytes())
		if _, err := e.op.Deposit(e.ctx, req); !errors.Is(err, ErrUnknownPayment) {
			t.Fatalf("deposit of another vendor's payment: %v", err)
		}
		// A reservation with a forged MAC (not under K_VN).
		rr := ReserveRequest{Vendor: "shop", Serial: st.Token.Serial, Ref: "ffeeddccbbaa99887766554433221100", Amount: 500, MAC: make([]byte, 32)}
		if _, err := e.op.Reserve(e.ctx, rr); !errors.Is(err, ErrBadMAC) {
			t.Fatalf("reservation with a forged MAC: %v", err)
		}
		// A confirmation answer not under K_UN (Eve agrees on alice's behalf).
		dep, err := v.Deposit(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		ans := ConfirmAnswer{ID: dep.Confirmations[0].ID, Serial: st.Token.Serial, Agree: true, Total: 120}
		ans.MAC = mac(e.curve, make([]byte, 32), ans.macBytes())
		if _, err := e.op.Confirm(e.ctx, ans); !errors.Is(err, ErrBadMAC) {
			t.Fatalf("forged confirmation: %v", err)
		}
		if e.balance("acct.shop") != 0 {
			t.Fatal("money moved on a forged confirmation")
		}
	})
}

// --- Overspending ---

func TestOverspendSingleVendor(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		v := e.vendor("shop")
		mustWithdraw(t, u, 700)
		mustPay(t, u, v.Local(), "book") // 600
		// The honest client refuses itself; a malicious one sends anyway.
		if _, err := u.Pay(e.ctx, v.Local(), "cake"); !errors.Is(err, ErrOverspend) {
			t.Fatalf("client-side: %v", err)
		}
		w := u.Wallet()
		s := w.Sessions[0]
		k := NextKey(e.curve, s.Key)
		m, _ := NextPaymentMessage(e.curve, k, s.Session, 2, "cake", 250, e.clock.Now())
		if _, err := v.NextPayment(e.ctx, *m); !errors.Is(err, ErrOverspend) {
			t.Fatalf("vendor accepted a payment beyond W: %v", err)
		}
	})
}

// TestOverspendTwoVendors: a malicious phone sends two first payments of 600
// with a token of W = 1000 to two vendors at the same time. Each vendor on its
// own sees 600 ≤ W; the operator's reservation must refuse one of them.
func TestOverspendTwoVendors(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := newEnv(t, db, ecqv.P256())
		u := e.user("alice")
		v1, v2 := e.vendor("shop-1"), e.vendor("shop-2")
		for round := 0; round < 5; round++ {
			st := mustWithdraw(t, u, 1000)
			secret := u.Wallet().Tokens[round].Secret
			var msgs []*OpenPayment
			for _, v := range []*Vendor{v1, v2} {
				qV, _ := u.vendorKey(v.Info())
				m, _, _, err := FirstPaymentMessage(e.curve, qV, v.ID(), *st, keyOf(t, secret), "book", 600, e.clock.Now())
				if err != nil {
					t.Fatal(err)
				}
				msgs = append(msgs, m)
			}
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, v := range []*Vendor{v1, v2} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = v.OpenPayment(e.ctx, *msgs[i])
				}()
			}
			wg.Wait()
			ok := 0
			for _, err := range errs {
				if err == nil {
					ok++
				} else if !errors.Is(err, ErrOverspend) {
					t.Fatalf("unexpected error: %v", err)
				}
			}
			if ok != 1 {
				t.Fatalf("round %d: %d of two concurrent 600-payments on W=1000 accepted", round, ok)
			}
			ts, _ := e.op.TokenStatus(e.ctx, st.Token.Serial)
			if ts.Reserved != 600 {
				t.Fatalf("reserved %d", ts.Reserved)
			}
		}
		if !e.audit.has("selfverify.reserve", "denied") {
			t.Fatal("overspend refusal not audited")
		}
	})
}

// --- Double deposit ---

func TestDoubleDeposit(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		v := e.vendor("shop")
		st := mustWithdraw(t, u, 1000)
		rc := mustPay(t, u, v.Local(), "cake")
		items := []DepositItem{{Serial: st.Token.Serial, Ref: rc.Ref, Item: "cake", Amount: 250}}
		sign := func(nonce string) DepositRequest {
			r := DepositRequest{Vendor: "shop", Timestamp: ms(e.clock.Now()), Nonce: nonce, Items: items}
			r.Sig, _ = v.cred.Key.Sign(rand.Reader, r.signingBytes())
			return r
		}
		first := sign("0000000000000000000000000000000a")
		d1, err := e.op.Deposit(e.ctx, first)
		if err != nil {
			t.Fatal(err)
		}
		// The identical request again (a network retry) is the same deposit.
		d2, err := e.op.Deposit(e.ctx, first)
		if err != nil || d2.ID != d1.ID {
			t.Fatalf("retry: %v %+v", err, d2)
		}
		// The same payment in a new signed deposit is refused...
		if _, err := e.op.Deposit(e.ctx, sign("0000000000000000000000000000000b")); !errors.Is(err, ErrDoubleDeposit) {
			t.Fatalf("second deposit: %v", err)
		}
		// ...also once settled, and twice in one batch.
		if _, err := u.Confirm(e.ctx, st.Token.Serial, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := e.op.Deposit(e.ctx, sign("0000000000000000000000000000000c")); !errors.Is(err, ErrDoubleDeposit) {
			t.Fatalf("deposit after settlement: %v", err)
		}
		items = append(items, items[0])
		if _, err := e.op.Deposit(e.ctx, sign("0000000000000000000000000000000d")); !errors.Is(err, ErrDoubleDeposit) {
			t.Fatalf("duplicate in one batch: %v", err)
		}
		if got := e.balance("acct.shop"); got != 250 {
			t.Fatalf("vendor balance %d, want 250", got)
		}
	})
}

// --- Replay ---

func TestReplayPayment(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		v := e.vendor("shop")
		st := mustWithdraw(t, u, 5000)
		rec := &recordingVendor{VendorAPI: v.Local()}
		mustPay(t, u, rec, "tea")
		mustPay(t, u, rec, "pen")
		mustPay(t, u, rec, "pen")
		reserved := func() int64 { s, _ := e.op.TokenStatus(e.ctx, st.Token.Serial); return s.Reserved }
		before := reserved()
		// Replaying the first payment (same A) is refused.
		if _, err := v.OpenPayment(e.ctx, rec.open[0]); !errors.Is(err, ErrReplay) {
			t.Fatalf("replayed first payment: %v", err)
		}
		// Replaying an older chained payment is refused.
		if _, err := v.NextPayment(e.ctx, rec.next[0]); !errors.Is(err, ErrReplay) {
			t.Fatalf("replayed payment 2: %v", err)
		}
		// The last message again (a network retry) returns the same receipt, no charge.
		r, err := v.NextPayment(e.ctx, rec.next[1])
		if err != nil || r.Seq != 3 {
			t.Fatalf("retry of the last payment: %v", err)
		}
		// An old ciphertext relabelled with a fresh sequence number fails to decrypt.
		m := rec.next[0]
		m.Seq = 9
		if _, err := v.NextPayment(e.ctx, m); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("relabelled replay: %v", err)
		}
		if reserved() != before {
			t.Fatalf("replays charged the token: %d → %d", before, reserved())
		}
	})
}

type recordingVendor struct {
	VendorAPI
	open []OpenPayment
	next []NextPayment
}

func (r *recordingVendor) OpenPayment(ctx context.Context, m OpenPayment) (*PaymentResponse, error) {
	r.open = append(r.open, m)
	return r.VendorAPI.OpenPayment(ctx, m)
}

func (r *recordingVendor) NextPayment(ctx context.Context, m NextPayment) (*PaymentResponse, error) {
	r.next = append(r.next, m)
	return r.VendorAPI.NextPayment(ctx, m)
}

func TestReplayWithdraw(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		req, tk, err := u.WithdrawRequest(300, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		st, err := u.CompleteWithdraw(e.ctx, req, tk)
		if err != nil {
			t.Fatal(err)
		}
		// Within the window the identical request is idempotent: same token, one debit.
		st2, err := e.op.Withdraw(e.ctx, *req)
		if err != nil || st2.Token.Serial != st.Token.Serial {
			t.Fatalf("identical retry: %v", err)
		}
		// The same nonce with other (re-signed) parameters is a replay.
		other := *req
		other.Amount = 301
		other.Sig, _ = u.cred.Key.Sign(rand.Reader, other.signingBytes())
		if _, err := e.op.Withdraw(e.ctx, other); !errors.Is(err, ErrReplay) {
			t.Fatalf("nonce reuse: %v", err)
		}
		// Later, the captured request is stale.
		e.clock.Add(10 * time.Minute)
		if _, err := e.op.Withdraw(e.ctx, *req); !errors.Is(err, ErrStale) {
			t.Fatalf("stale replay: %v", err)
		}
		// A request with a stale timestamp but a fresh nonce is stale as well.
		old, _, _ := u.WithdrawRequest(100, time.Hour)
		e.clock.Add(5 * time.Minute)
		if _, err := e.op.Withdraw(e.ctx, *old); !errors.Is(err, ErrStale) {
			t.Fatalf("stale request: %v", err)
		}
		if got := e.balance("acct.alice"); got != 9700 {
			t.Fatalf("balance %d, want 9700 (one withdrawal)", got)
		}
	})
}

// --- Deposit without the user's agreement ---

func TestDepositRefusedByUser(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		v := e.vendor("shop")
		st := mustWithdraw(t, u, 1000)
		mustPay(t, u, v.Local(), "tea")
		if _, err := v.Deposit(e.ctx); err != nil {
			t.Fatal(err)
		}
		res, err := u.Confirm(e.ctx, st.Token.Serial, func(ConfirmationDetails, bool) bool { return false })
		if err != nil {
			t.Fatal(err)
		}
		if res[0].State != StateRefused || e.balance("acct.shop") != 0 {
			t.Fatalf("refusal: %+v, vendor %d", res, e.balance("acct.shop"))
		}
		if !e.audit.has("selfverify.deposit.refused_by_user", "denied") {
			t.Fatal("refusal not audited")
		}
		// Changing one's mind is not possible.
		if _, err := u.Confirm(e.ctx, st.Token.Serial, nil); err != nil {
			t.Fatal(err) // nothing pending any more
		}
		// Closing returns all of W: the refused payment is not paid.
		cs, err := u.Close(e.ctx, st.Token.Serial)
		if err != nil || cs.Refunded != 1000 || e.balance("acct.alice") != 10_000 {
			t.Fatalf("close %+v %v balance %d", cs, err, e.balance("acct.alice"))
		}
	})
}

// TestDepositUnknownPaymentRefused: a vendor that inflates a batch with a
// payment the user never made gets the whole confirmation refused by the
// phone (AgreeIfKnown).
func TestDepositUnknownPaymentRefused(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		v := e.vendor("shop")
		st := mustWithdraw(t, u, 1000)
		mustPay(t, u, v.Local(), "tea")
		// The vendor reserves an extra 250 it never sold (it has K_VN).
		if err := v.reserve(e.ctx, st.Token.Serial, "0123456789abcdef0123456789abcdef", 250); err != nil {
			t.Fatal(err)
		}
		if _, err := v.db.ExecContext(e.ctx, v.db.Rebind(`INSERT INTO sv_vendor_payments (ref, vendor, session, serial, seq, item, price, created_at) VALUES ('0123456789abcdef0123456789abcdef', 'shop', 'x', ?, 99, 'cake', 250, 0)`), st.Token.Serial); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Deposit(e.ctx); err != nil {
			t.Fatal(err)
		}
		res, err := u.Confirm(e.ctx, st.Token.Serial, nil)
		if err != nil || res[0].State != StateRefused {
			t.Fatalf("inflated deposit: %+v %v", res, err)
		}
		if e.balance("acct.shop") != 0 {
			t.Fatal("vendor paid for an invented payment")
		}
	})
}

func TestDepositNoAnswer(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		v := e.vendor("shop")
		st := mustWithdraw(t, u, 1000)
		mustPay(t, u, v.Local(), "tea")
		dep, err := v.Deposit(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Add(6 * time.Minute) // confirm window is 5 min
		if err := e.op.Sweep(e.ctx); err != nil {
			t.Fatal(err)
		}
		ds, _ := e.op.DepositStatus(e.ctx, dep.ID)
		if ds.Confirmations[0].State != StateExpired || e.balance("acct.shop") != 0 {
			t.Fatalf("unanswered deposit: %+v", ds)
		}
		if !e.audit.has("selfverify.deposit.unconfirmed", "denied") {
			t.Fatal("timeout not audited")
		}
		// A late agreement is refused: the phone sees nothing pending, and a
		// replayed/late answer is past the deadline.
		wt := u.Wallet().Tokens[0]
		ans := ConfirmAnswer{ID: dep.Confirmations[0].ID, Serial: st.Token.Serial, Agree: true, Total: 120}
		ans.MAC = mac(e.curve, wt.KUN, ans.macBytes())
		if _, err := e.op.Confirm(e.ctx, ans); !errors.Is(err, ErrDecided) && !errors.Is(err, ErrDeadline) {
			t.Fatalf("late answer: %v", err)
		}
		if e.balance("acct.shop") != 0 {
			t.Fatal("money moved after the deadline")
		}
	})
}

// TestDepositDeadlineWithoutSweep: an answer after the deadline is refused even
// if the sweeper has not run yet.
func TestDepositDeadlineWithoutSweep(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		v := e.vendor("shop")
		st := mustWithdraw(t, u, 1000)
		mustPay(t, u, v.Local(), "tea")
		dep, _ := v.Deposit(e.ctx)
		e.clock.Add(6 * time.Minute)
		wt := u.Wallet().Tokens[0]
		ans := ConfirmAnswer{ID: dep.Confirmations[0].ID, Serial: st.Token.Serial, Agree: true, Total: 120}
		ans.MAC = mac(e.curve, wt.KUN, ans.macBytes())
		if _, err := e.op.Confirm(e.ctx, ans); !errors.Is(err, ErrDeadline) {
			t.Fatalf("late answer: %v", err)
		}
		if e.balance("acct.shop") != 0 {
			t.Fatal("money moved after the deadline")
		}
	})
}

// --- Expired token ---

func TestExpiredToken(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		v := e.vendor("shop")
		st := mustWithdraw(t, u, 1000)
		mustPay(t, u, v.Local(), "tea")
		e.clock.Add(61 * time.Minute)
		// At the vendor, first and later payments.
		info := v.Info()
		qV, _ := u.vendorKey(info)
		m, _, _, _ := FirstPaymentMessage(e.curve, qV, "shop", *st, keyOf(t, u.Wallet().Tokens[0].Secret), "tea", 120, e.clock.Now())
		if _, err := v.OpenPayment(e.ctx, *m); !errors.Is(err, ErrTokenExpired) {
			t.Fatalf("first payment with an expired token: %v", err)
		}
		s := u.Wallet().Sessions[0]
		nm, _ := NextPaymentMessage(e.curve, NextKey(e.curve, s.Key), s.Session, 2, "tea", 120, e.clock.Now())
		if _, err := v.NextPayment(e.ctx, *nm); !errors.Is(err, ErrTokenExpired) {
			t.Fatalf("later payment with an expired token: %v", err)
		}
		// And at the operator, should a vendor skip its own check.
		if err := v.reserve(e.ctx, st.Token.Serial, "abcdefabcdefabcdefabcdefabcdefab", 10); !errors.Is(err, ErrTokenExpired) {
			t.Fatalf("reservation on an expired token: %v", err)
		}
	})
}

// --- Tampered AEAD payloads ---

func TestTamperedAEAD(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		v := e.vendor("shop")
		st := mustWithdraw(t, u, 1000)
		qV, _ := u.vendorKey(v.Info())
		m, _, _, _ := FirstPaymentMessage(e.curve, qV, "shop", *st, keyOf(t, u.Wallet().Tokens[0].Secret), "tea", 120, e.clock.Now())
		for i := range []int{0, len(m.Ciphertext) / 2, len(m.Ciphertext) - 1} {
			bad := *m
			bad.Ciphertext = append([]byte(nil), m.Ciphertext...)
			bad.Ciphertext[[]int{0, len(m.Ciphertext) / 2, len(m.Ciphertext) - 1}[i]] ^= 0x40
			if _, err := v.OpenPayment(e.ctx, bad); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("tampered first payment (byte %d): %v", i, err)
			}
		}
		mustPay(t, u, v.Local(), "tea")
		s := u.Wallet().Sessions[0]
		nm, _ := NextPaymentMessage(e.curve, NextKey(e.curve, s.Key), s.Session, 2, "pen", 30, e.clock.Now())
		nm.Ciphertext[3] ^= 1
		if _, err := v.NextPayment(e.ctx, *nm); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("tampered later payment: %v", err)
		}
		// A tampered message changes nothing: the genuine seq 2 still works.
		rc := mustPay(t, u, v.Local(), "pen")
		if rc.Seq != 2 {
			t.Fatalf("seq %d", rc.Seq)
		}
		// A tampered receipt is refused by the phone.
		tamper := &tamperVendor{VendorAPI: v.Local()}
		if _, err := u.Pay(e.ctx, tamper, "pen"); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("tampered receipt: %v", err)
		}
		// A tampered confirmation request is refused by the phone.
		if _, err := v.Deposit(e.ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.ExecContext(e.ctx, `UPDATE sv_confirmations SET ciphertext = '00' || substr(ciphertext, 3)`); err != nil {
			t.Fatal(err)
		}
		if _, err := u.Confirm(e.ctx, st.Token.Serial, nil); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("tampered confirmation: %v", err)
		}
	})
}

type tamperVendor struct{ VendorAPI }

func (tv *tamperVendor) NextPayment(ctx context.Context, m NextPayment) (*PaymentResponse, error) {
	r, err := tv.VendorAPI.NextPayment(ctx, m)
	if err == nil {
		r.Ciphertext[0] ^= 1
	}
	return r, err
}

// lossyDeposit delivers the deposit to N but loses the answer.
type lossyDeposit struct{ OperatorAPI }

func (l lossyDeposit) Deposit(ctx context.Context, req DepositRequest) (*DepositResponse, error) {
	if _, err := l.OperatorAPI.Deposit(ctx, req); err != nil {
		return nil, err
	}
	return nil, errors.New("connection reset by peer")
}

// TestDepositLostAnswer: the vendor's deposit reached N but the answer was
// lost; the next Deposit resends the same batch under the same nonce and gets
// the original deposit back — neither a double deposit nor a lost payment.
func TestDepositLostAnswer(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		v := e.vendor("shop")
		st := mustWithdraw(t, u, 1000)
		mustPay(t, u, v.Local(), "tea")
		mustPay(t, u, v.Local(), "pen")
		lossy := *v
		lossy.cfg.Operator = lossyDeposit{e.op.Local()}
		if _, err := lossy.Deposit(e.ctx); err == nil {
			t.Fatal("lost answer not reported")
		}
		e.clock.Add(time.Second)
		dep, err := v.Deposit(e.ctx)
		if err != nil {
			t.Fatalf("resend: %v", err)
		}
		if len(dep.Confirmations) != 1 || dep.Confirmations[0].Amount != 150 || len(dep.Rejected) != 0 {
			t.Fatalf("resent deposit %+v", dep)
		}
		if again, err := v.Deposit(e.ctx); err != nil || again != nil {
			t.Fatalf("nothing left to deposit: %+v %v", again, err)
		}
		if _, err := u.Confirm(e.ctx, st.Token.Serial, nil); err != nil {
			t.Fatal(err)
		}
		if got := e.balance("acct.shop"); got != 150 {
			t.Fatalf("vendor balance %d", got)
		}
	})
}

// TestDepositPartialRejection: one bad payment in a batch is rejected alone.
func TestDepositPartialRejection(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		v := e.vendor("shop")
		st := mustWithdraw(t, u, 1000)
		mustPay(t, u, v.Local(), "tea")
		// A payment the vendor invents without a reservation at N.
		if _, err := v.db.ExecContext(e.ctx, v.db.Rebind(`INSERT INTO sv_vendor_payments (ref, vendor, session, serial, seq, item, price, created_at) VALUES ('0123456789abcdef0123456789abcdef', 'shop', 'x', ?, 99, 'cake', 250, 0)`), st.Token.Serial); err != nil {
			t.Fatal(err)
		}
		dep, err := v.Deposit(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(dep.Rejected) != 1 || dep.Rejected[0].Code != "unknown_payment" || dep.Confirmations[0].Amount != 120 {
			t.Fatalf("deposit %+v", dep)
		}
		ps, _ := v.Payments(e.ctx, 10)
		states := map[string]string{}
		for _, p := range ps {
			states[p.Item] = p.DepositState
		}
		if states["cake"] != "rejected" || states["tea"] != StateAwaiting {
			t.Fatalf("vendor states %v", states)
		}
		if again, err := v.Deposit(e.ctx); err != nil || again != nil {
			t.Fatalf("rejected payment resent: %+v %v", again, err)
		}
		if !e.audit.has("selfverify.deposit.item", "denied") {
			t.Fatal("rejection not audited")
		}
	})
}

type downReserve struct{ OperatorAPI }

func (downReserve) Reserve(context.Context, ReserveRequest) (*ReserveResponse, error) {
	return nil, errors.New("operator unreachable")
}

// TestRefusedFirstPaymentReplay: a first payment refused because N was
// unreachable cannot be replayed once N is back (the user believes it failed).
func TestRefusedFirstPaymentReplay(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		u := e.user("alice")
		v := e.vendor("shop")
		st := mustWithdraw(t, u, 1000)
		qV, _ := u.vendorKey(v.Info())
		m, _, _, err := FirstPaymentMessage(e.curve, qV, "shop", *st, keyOf(t, u.Wallet().Tokens[0].Secret), "tea", 120, e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		down := *v
		down.cfg.Operator = downReserve{e.op.Local()}
		if _, err := down.OpenPayment(e.ctx, *m); err == nil {
			t.Fatal("payment accepted without a reservation")
		}
		if _, err := v.OpenPayment(e.ctx, *m); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay of a refused payment: %v", err)
		}
		if s, _ := e.op.TokenStatus(e.ctx, st.Token.Serial); s.Reserved != 0 {
			t.Fatalf("reserved %d", s.Reserved)
		}
	})
}
