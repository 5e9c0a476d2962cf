package experiments

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/selfverify"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
)

// svCosts are the self-verified scheme's primitive and per-payment costs
// measured on this machine (one goroutine, best of 10 runs), through the
// scheme's public message layer (selfverify.FirstPaymentMessage,
// OpenFirstPayment, NextPaymentMessage, OpenNextPayment, SealReceipt,
// OpenReceipt).
type svCosts struct {
	Curve string
	// Hash is one chain step K_j = H(K_{j−1}) (the seed's T_hash).
	Hash time.Duration
	// Mul is one variable-base point multiplication (ECDH; the seed's T_mul).
	Mul time.Duration
	// BaseMul is one fixed-base multiplication k·G.
	BaseMul time.Duration
	// Sign and Verify are one ECDSA (P-256) or SM2 signature and verification.
	Sign, Verify time.Duration
	// Reconstruct is Q_X = e·P_X + Q_N.
	Reconstruct time.Duration
	// LaterUser is a later payment's cryptography on the phone: one hash
	// step, seal the request, open the receipt. LaterVendor is V's side:
	// hash step, open, seal the receipt.
	LaterUser, LaterVendor time.Duration
	// FirstUser is building a first payment (a·G, a·Q_V, HKDF, signature
	// with t, seal); FirstVendor is V's cryptography for it (d_V·A, HKDF,
	// open, verify N's token signature and the holder's signature, seal).
	FirstUser, FirstVendor time.Duration
}

// measure returns the best per-operation time of f over 10 runs of about
// budget/10 each. Time is the CPU time of the measuring thread where the OS
// provides it (Linux), else wall time; the minimum over runs is the estimator
// least disturbed by other load on a shared machine.
func measure(budget time.Duration, f func() error) (time.Duration, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := f(); err != nil {
		return 0, err
	}
	clock := func() time.Duration {
		if c, ok := threadCPU(); ok {
			return c
		}
		return time.Duration(time.Now().UnixNano())
	}
	best := time.Duration(1<<63 - 1)
	for run := 0; run < 10; run++ {
		n := 0
		wall := time.Now()
		start := clock()
		for time.Since(wall) < budget/10 || n < 3 {
			if err := f(); err != nil {
				return 0, err
			}
			n++
		}
		if d := (clock() - start) / time.Duration(n); d < best && d > 0 {
			best = d
		}
	}
	return best, nil
}

// measureSVCosts measures svCosts on curve, spending about budget per item.
func measureSVCosts(curve *ecqv.Curve, budget time.Duration) (*svCosts, error) {
	if budget <= 0 {
		budget = 300 * time.Millisecond
	}
	c := &svCosts{Curve: curve.Name()}
	nk, err := curve.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	issuer := ecqv.NewIssuer(nk)
	req, sec, err := ecqv.NewRequest(curve, rand.Reader, "vendor-1")
	if err != nil {
		return nil, err
	}
	resp, err := issuer.Issue(rand.Reader, req)
	if err != nil {
		return nil, err
	}
	dV, err := ecqv.Complete(sec, resp, nk.Public())
	if err != nil {
		return nil, err
	}
	qV := dV.Public()
	k := make([]byte, selfverify.KeySize)
	msg := make([]byte, 64)
	var sig []byte
	steps := []struct {
		d *time.Duration
		f func() error
	}{
		{&c.Hash, func() error { k = selfverify.NextKey(curve, k); return nil }},
		{&c.Mul, func() error { _, err := dV.ECDH(nk.Public()); return err }},
		{&c.BaseMul, func() error { _, err := curve.GenerateKey(rand.Reader); return err }},
		{&c.Sign, func() error { var err error; sig, err = dV.Sign(rand.Reader, msg); return err }},
		{&c.Verify, func() error {
			if !qV.Verify(msg, sig) {
				return errors.New("verify failed")
			}
			return nil
		}},
		{&c.Reconstruct, func() error { _, err := ecqv.Reconstruct(curve, "vendor-1", resp.P, nk.Public()); return err }},
	}
	for _, s := range steps {
		if *s.d, err = measure(budget, s.f); err != nil {
			return nil, err
		}
	}

	// A later payment, both sides.
	session := "00112233445566778899aabbccddeeff"
	kU := make([]byte, selfverify.KeySize)
	seq := int64(2)
	now := time.Now()
	receipt := selfverify.Receipt{Session: session, Seq: seq, Ref: "00112233445566778899aabbccddeeff", Item: "tea", Price: 120, SpentAtVendor: 240, Goods: "goods:tea"}
	// Prepare one round so that both halves can be timed separately.
	kU = selfverify.NextKey(curve, kU)
	req2, err := selfverify.NextPaymentMessage(curve, kU, session, seq, "tea", 120, now)
	if err != nil {
		return nil, err
	}
	resp2, err := selfverify.SealReceipt(curve, kU, receipt)
	if err != nil {
		return nil, err
	}
	if c.LaterUser, err = measure(budget, func() error {
		k2 := selfverify.NextKey(curve, kU)
		if _, err := selfverify.NextPaymentMessage(curve, k2, session, seq, "tea", 120, now); err != nil {
			return err
		}
		_, err := selfverify.OpenReceipt(curve, kU, *resp2)
		return err
	}); err != nil {
		return nil, err
	}
	if c.LaterVendor, err = measure(budget, func() error {
		_ = selfverify.NextKey(curve, kU)
		if _, err := selfverify.OpenNextPayment(curve, kU, *req2); err != nil {
			return err
		}
		_, err := selfverify.SealReceipt(curve, kU, receipt)
		return err
	}); err != nil {
		return nil, err
	}

	// A first payment, both sides.
	tKey, err := curve.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	tok := selfverify.Token{Serial: "00112233445566778899aabbccddeeff", Curve: curve.Name(), Currency: "CNY", Limit: 1000,
		IssuedAt: now.UnixMilli(), ExpiresAt: now.Add(time.Hour).UnixMilli(), Key: tKey.Public().Bytes()}
	tsig, err := nk.Sign(rand.Reader, tok.SigningBytes())
	if err != nil {
		return nil, err
	}
	st := selfverify.SignedToken{Token: tok, Sig: tsig}
	var first *selfverify.OpenPayment
	if c.FirstUser, err = measure(budget, func() error {
		var err error
		first, _, _, err = selfverify.FirstPaymentMessage(curve, qV, "vendor-1", st, tKey, "tea", 120, now)
		return err
	}); err != nil {
		return nil, err
	}
	if c.FirstVendor, err = measure(budget, func() error {
		_, k1, session, err := selfverify.OpenFirstPayment(dV, nk.Public(), "vendor-1", *first)
		if err != nil {
			return err
		}
		rc := receipt
		rc.Session, rc.Seq = session, 1
		_, err = selfverify.SealReceipt(curve, k1, rc)
		return err
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// svThroughput is the result of measureSVThroughput.
type svThroughput struct {
	// CPUPerPayment is the process CPU time (phones, vendor, operator,
	// TLS, database driver together) per payment, where the OS reports it.
	CPUPerPayment time.Duration
	Payments      int64
	Refused       int64
	Elapsed       time.Duration
	PerSecond     float64
	Concurrency   int
	Backend       string
}

// measureSVThroughput runs the operator and a vendor as in-process TLS
// servers on db (vendor tables in the same database), gives each of
// concurrency phones a token and an open session, and then has them make
// later payments through the HTTPS API for duration: phone → V (decrypt,
// local check) → N (online reservation) → V stores → receipt. It returns the
// payments per second.
func measureSVThroughput(ctx context.Context, db *sqldb.DB, concurrency int, duration time.Duration, progress func(done int64)) (*svThroughput, error) {
	if concurrency < 1 {
		concurrency = 1
	}
	led, err := ledger.Open(ctx, db, ledger.WithSweepInterval(0))
	if err != nil {
		return nil, err
	}
	defer led.Close()
	curve := ecqv.P256()
	key, err := selfverify.LoadOrCreateOperatorKey(ctx, db, curve, nil)
	if err != nil {
		return nil, err
	}
	op, err := selfverify.NewOperator(ctx, db, selfverify.OperatorConfig{Key: key, Ledger: led})
	if err != nil {
		return nil, err
	}
	defer op.Close()
	opSrv := httptest.NewTLSServer(op.Handler())
	defer opSrv.Close()
	opClient, err := selfverify.NewOperatorClient(opSrv.URL, pooled(opSrv, concurrency))
	if err != nil {
		return nil, err
	}
	tag := randHex(4)
	if _, err := led.EnsureAccount(ctx, ledger.NewAccount{ID: "bench.issuer", Owner: "bench", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true}); err != nil {
		return nil, err
	}
	enroll := func(id, role string, kind ledger.Kind, funds int64) (*selfverify.Credentials, error) {
		acct := "acct." + id
		if _, err := led.CreateAccount(ctx, ledger.NewAccount{ID: acct, Owner: id, Kind: kind, Currency: "CNY"}); err != nil {
			return nil, err
		}
		if funds > 0 {
			if _, err := led.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "bench-fund-" + id, From: "bench.issuer", To: acct, Amount: funds, Currency: "CNY"}); err != nil {
				return nil, err
			}
		}
		code, err := op.Enroll(ctx, id, role, acct)
		if err != nil {
			return nil, err
		}
		return selfverify.Register(ctx, opClient, nil, id, role, code)
	}
	vcred, err := enroll("bench-shop-"+tag, selfverify.RoleVendor, ledger.KindMerchant, 0)
	if err != nil {
		return nil, err
	}
	if err := selfverify.SaveVendorCredentials(ctx, db, vcred); err != nil {
		return nil, err
	}
	v, err := selfverify.NewVendor(ctx, db, vcred, selfverify.VendorConfig{Operator: opClient, Catalog: []selfverify.Item{{ID: "pen", Price: 1}}})
	if err != nil {
		return nil, err
	}
	defer v.Close()
	vSrv := httptest.NewTLSServer(v.Handler())
	defer vSrv.Close()
	vc, err := selfverify.NewVendorClient(vSrv.URL, pooled(vSrv, concurrency))
	if err != nil {
		return nil, err
	}
	users := make([]*selfverify.User, concurrency)
	for i := range users {
		cred, err := enroll(fmt.Sprintf("bench-u%d-%s", i, tag), selfverify.RoleUser, ledger.KindUser, 1<<40)
		if err != nil {
			return nil, err
		}
		if users[i], err = selfverify.OpenUser(selfverify.NewWallet(cred), opClient); err != nil {
			return nil, err
		}
		if _, err := users[i].Withdraw(ctx, 1<<30, 0); err != nil {
			return nil, err
		}
		if _, err := users[i].Pay(ctx, vc, "pen"); err != nil {
			return nil, err
		}
	}
	var done, refused atomic.Int64
	var firstErr error
	var once sync.Once
	cpu0, haveCPU := processCPU()
	start := time.Now()
	deadline := start.Add(duration)
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if _, err := u.Pay(ctx, vc, "pen"); err != nil {
					refused.Add(1)
					once.Do(func() { firstErr = err })
					continue
				}
				if n := done.Add(1); progress != nil && n%256 == 0 {
					progress(n)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	cpu1, _ := processCPU()
	t := &svThroughput{Payments: done.Load(), Refused: refused.Load(), Elapsed: el, Concurrency: concurrency,
		PerSecond: float64(done.Load()) / el.Seconds(), Backend: db.Dialect.String()}
	if haveCPU && t.Payments > 0 {
		t.CPUPerPayment = (cpu1 - cpu0) / time.Duration(t.Payments)
	}
	if t.Refused > 0 {
		return t, fmt.Errorf("selfverify: %d payments failed during the run, first: %w", t.Refused, firstErr)
	}
	return t, nil
}

// pooled returns a client trusting srv that keeps enough idle connections for
// n concurrent callers (the default keeps 2 per host, which would make most
// requests pay a new TLS handshake).
func pooled(srv *httptest.Server, n int) *http.Client {
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = n + 8
	tr.MaxIdleConns = 2*n + 16
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}
