package selfverify

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
)

// DemoStep is one row of the demo: what was done, what happened, details.
type DemoStep struct {
	Step    string `json:"step"`
	Outcome string `json:"outcome"`
	Detail  string `json:"detail"`
}

// DemoConfig configures Demo.
type DemoConfig struct {
	// DB is the platform database; the demo's operator uses its selfverify
	// tables and key (created when missing). Required.
	DB *sqldb.DB
	// Ledger is the platform ledger. Required.
	Ledger *ledger.Ledger
	// Audit receives the audit events (may be nil).
	Audit audit.Recorder
	// OperatorURL, when set, is the running server's base URL: user and vendor
	// then talk to the operator over HTTPS with HTTPClient (which carries the
	// TLS trust). When empty they use an in-process operator.
	OperatorURL string
	HTTPClient  *http.Client
	// Curve is P-256 (default) or SM2; it must match the stored operator key.
	Curve *ecqv.Curve
	// KeySeal opens the stored operator key (the platform's sealer); nil
	// for a database whose key is stored in clear.
	KeySeal KeySealer
}

// Demo runs the scheme end to end — registration, withdrawal, three
// payments, a deposit confirmed by the user, the refund of the rest of W —
// and then each attack of issue 6, which must be refused. The vendor is served
// over HTTPS from an in-process TLS server. The time-dependent steps (a user
// who does not answer, an expired token) use a 2-second confirmation window
// and a 1-second token, so the demo sleeps about 3.5 s. It returns the rows
// and an error as soon as any step does not behave as the scheme requires.
func Demo(ctx context.Context, cfg DemoConfig) ([]DemoStep, error) {
	if cfg.DB == nil || cfg.Ledger == nil {
		return nil, errors.New("selfverify demo: needs a database and a ledger")
	}
	if cfg.Curve == nil {
		cfg.Curve = ecqv.P256()
	}
	d := &demo{ctx: ctx, cfg: cfg}
	err := d.run()
	return d.rows, err
}

type demo struct {
	ctx      context.Context
	cfg      DemoConfig
	rows     []DemoStep
	op       *Operator
	recorded *demoRecorder
	api      OperatorAPI
	tag      string
	curve    *ecqv.Curve
}

func (d *demo) ok(step, detail string, a ...any) {
	d.rows = append(d.rows, DemoStep{Step: step, Outcome: "ok", Detail: fmt.Sprintf(detail, a...)})
}

// refused records an attack step: err must wrap want.
func (d *demo) refused(step string, err error, want ...error) error {
	for _, w := range want {
		if errors.Is(err, w) {
			d.rows = append(d.rows, DemoStep{Step: step, Outcome: "refused", Detail: err.Error()})
			return nil
		}
	}
	d.rows = append(d.rows, DemoStep{Step: step, Outcome: "NOT REFUSED", Detail: fmt.Sprint(err)})
	return fmt.Errorf("selfverify demo: %s: want refusal (%v), got %v", step, want, err)
}

func (d *demo) fail(step string, err error) error {
	d.rows = append(d.rows, DemoStep{Step: step, Outcome: "FAILED", Detail: err.Error()})
	return fmt.Errorf("selfverify demo: %s: %w", step, err)
}

func (d *demo) balance(id string) int64 {
	a, err := d.cfg.Ledger.Account(d.ctx, id)
	if err != nil {
		return -1
	}
	return a.Balance
}

const demoIssuer = "selfverify.demo.issuer"

func (d *demo) account(id string, kind ledger.Kind, amount int64) error {
	if _, err := d.cfg.Ledger.CreateAccount(d.ctx, ledger.NewAccount{ID: id, Owner: id, Kind: kind, Currency: "CNY"}); err != nil {
		return err
	}
	if amount > 0 {
		_, err := d.cfg.Ledger.Transfer(d.ctx, ledger.TransferRequest{IdempotencyKey: "selfverify-demo-fund-" + id, From: demoIssuer, To: id, Amount: amount, Currency: "CNY", Memo: "demo funding"})
		return err
	}
	return nil
}

func (d *demo) enroll(id, role string, kind ledger.Kind, funds int64) (*Credentials, error) {
	acct := "acct." + id
	if err := d.account(acct, kind, funds); err != nil {
		return nil, err
	}
	code, err := d.op.Enroll(d.ctx, id, role, acct)
	if err != nil {
		return nil, err
	}
	return Register(d.ctx, d.api, d.op.key.Public(), id, role, code)
}

func (d *demo) run() error {
	ctx := d.ctx
	var err error
	d.curve = d.cfg.Curve
	key, err := LoadOrCreateOperatorKey(ctx, d.cfg.DB, d.curve, d.cfg.KeySeal)
	if err != nil {
		return d.fail("operator key", err)
	}
	d.op, err = NewOperator(ctx, d.cfg.DB, OperatorConfig{Key: key, Ledger: d.cfg.Ledger, Audit: d.cfg.Audit,
		ConfirmWindow: 2 * time.Second})
	if err != nil {
		return d.fail("operator", err)
	}
	defer d.op.Close()
	d.api = d.op.Local()
	if d.cfg.OperatorURL != "" {
		if d.api, err = NewOperatorClient(d.cfg.OperatorURL, d.cfg.HTTPClient); err != nil {
			return d.fail("operator client", err)
		}
	}
	if d.tag, err = randomHex(3); err != nil {
		return err
	}
	if _, err := d.cfg.Ledger.EnsureAccount(ctx, ledger.NewAccount{ID: demoIssuer, Owner: "demo", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true}); err != nil {
		return d.fail("issuer account", err)
	}

	// --- Registration ---
	uid, vid, v2id := "alice-"+d.tag, "teashop-"+d.tag, "bakery-"+d.tag
	ucred, err := d.enroll(uid, RoleUser, ledger.KindUser, 10_000)
	if err != nil {
		return d.fail("register user", err)
	}
	d.ok("register user U", "%s: P_U=%x…, d_U·G = e·P_U + Q_N checked, no certificate", uid, ucred.P.Bytes()[:8])
	vcred, err := d.enroll(vid, RoleVendor, ledger.KindMerchant, 0)
	if err != nil {
		return d.fail("register vendor", err)
	}
	v2cred, err := d.enroll(v2id, RoleVendor, ledger.KindMerchant, 0)
	if err != nil {
		return d.fail("register vendor", err)
	}
	d.ok("register vendors V1, V2", "%s, %s", vid, v2id)
	v1, vc1, stop1, err := d.vendor(vcred)
	if err != nil {
		return d.fail("start vendor", err)
	}
	defer stop1()
	v2, vc2, stop2, err := d.vendor(v2cred)
	if err != nil {
		return d.fail("start vendor", err)
	}
	defer stop2()
	u, err := OpenUser(NewWallet(ucred), d.api)
	if err != nil {
		return d.fail("open wallet", err)
	}

	// --- Withdrawing ---
	st, err := u.Withdraw(ctx, 1000, time.Hour)
	if err != nil {
		return d.fail("withdraw", err)
	}
	d.ok("withdraw W=1000", "token %s signed by N; escrow holds W; user balance %d; K_UN derived", st.Token.Serial[:12], d.balance("acct."+uid))

	// --- Paying ---
	d.recorded = &demoRecorder{VendorAPI: vc1}
	for _, item := range []string{"tea", "cake", "tea"} {
		rc, err := u.Pay(ctx, d.recorded, item)
		if err != nil {
			return d.fail("pay "+item, err)
		}
		how := "K_UV from ephemeral A and Q_V"
		if rc.Seq > 1 {
			how = fmt.Sprintf("K_%d = H(K_%d)", rc.Seq, rc.Seq-1)
		}
		d.ok("pay "+item, "seq %d (%s), spent at vendor %d ≤ W", rc.Seq, how, rc.SpentAtVendor)
	}

	// --- Depositing ---
	dep, err := v1.Deposit(ctx)
	if err != nil {
		return d.fail("deposit", err)
	}
	d.ok("vendor deposits (signed d_V)", "%d payment(s), %d awaiting the user's confirmation; vendor balance %d", 3, len(dep.Confirmations), d.balance("acct."+vid))
	cs, err := u.Confirm(ctx, st.Token.Serial, nil)
	if err != nil || len(cs) != 1 || cs[0].State != StateSettled {
		return d.fail("user confirms", fmt.Errorf("%v %+v", err, cs))
	}
	d.ok("user confirms under K_UN", "escrow → vendor %d; vendor balance %d", cs[0].Amount, d.balance("acct."+vid))
	ts, err := u.Close(ctx, st.Token.Serial)
	if err != nil || ts.State != "refunded" {
		return d.fail("close token", fmt.Errorf("%v %+v", err, ts))
	}
	d.ok("close token", "rest of W (%d) back to the user; user balance %d", ts.Refunded, d.balance("acct."+uid))

	// --- Attacks ---
	return d.attacks(u, v1, v2, vc1, vc2)
}

func (d *demo) vendor(cred *Credentials) (*Vendor, VendorAPI, func(), error) {
	if err := SaveVendorCredentials(d.ctx, d.cfg.DB, cred); err != nil {
		return nil, nil, nil, err
	}
	v, err := NewVendor(d.ctx, d.cfg.DB, cred, VendorConfig{Operator: d.api, Catalog: []Item{
		{ID: "tea", Description: "green tea", Price: 120}, {ID: "cake", Description: "cake", Price: 250}, {ID: "book", Description: "a book", Price: 600}}})
	if err != nil {
		return nil, nil, nil, err
	}
	srv := httptest.NewTLSServer(v.Handler())
	vc, err := NewVendorClient(srv.URL, srv.Client())
	stop := func() { srv.Close(); v.Close() }
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	return v, vc, stop, nil
}

func (d *demo) attacks(u *User, v1, v2 *Vendor, vc1, vc2 VendorAPI) error {
	ctx := d.ctx
	c := d.curve
	// Registration: a MITM replaces P_X.
	if err := d.account("acct.mallory-"+d.tag, ledger.KindUser, 0); err != nil {
		return d.fail("attack setup", err)
	}
	code, err := d.op.Enroll(ctx, "mallory-"+d.tag, RoleUser, "acct.mallory-"+d.tag)
	if err != nil {
		return d.fail("attack setup", err)
	}
	evil, _ := c.GenerateKey(rand.Reader)
	_, err = Register(ctx, demoTamper{OperatorAPI: d.api, p: evil.Public().Bytes()}, d.op.key.Public(), "mallory-"+d.tag, RoleUser, code)
	if e := d.refused("forged P_X at registration", err, ecqv.ErrInvalidResponse); e != nil {
		return e
	}
	// Withdraw in the user's name signed with another key.
	req, _, _ := u.WithdrawRequest(500, time.Hour)
	req.Sig, _ = evil.Sign(rand.Reader, req.signingBytes())
	_, err = d.api.Withdraw(ctx, *req)
	if e := d.refused("withdraw with a forged signature", err, ErrBadSignature); e != nil {
		return e
	}
	// Stale (replayed) withdrawal request.
	old, _ := OpenUser(u.Wallet(), d.api, WithClock(func() time.Time { return time.Now().Add(-10 * time.Minute) }))
	req, tk, _ := old.WithdrawRequest(500, time.Hour)
	_, err = old.CompleteWithdraw(ctx, req, tk)
	if e := d.refused("replayed withdrawal (stale timestamp)", err, ErrStale); e != nil {
		return e
	}

	st, err := u.Withdraw(ctx, 1000, time.Hour)
	if err != nil {
		return d.fail("withdraw for attacks", err)
	}
	w := u.Wallet()
	secret, err := c.NewPrivateKey(w.Tokens[len(w.Tokens)-1].Secret)
	if err != nil {
		return d.fail("token key", err)
	}
	q1, _ := u.vendorKey(v1.Info())
	// Forged token (W raised).
	raised := *st
	raised.Token.Limit = 1_000_000
	m, _, _, _ := FirstPaymentMessage(c, q1, v1.ID(), raised, secret, "tea", 120, time.Now())
	_, err = vc1.OpenPayment(ctx, *m)
	if e := d.refused("payment with a forged token (W raised)", err, ErrBadSignature); e != nil {
		return e
	}
	// Stolen token without its key t.
	m, _, _, _ = FirstPaymentMessage(c, q1, v1.ID(), *st, evil, "tea", 120, time.Now())
	_, err = vc1.OpenPayment(ctx, *m)
	if e := d.refused("payment with a stolen token (no t)", err, ErrBadSignature); e != nil {
		return e
	}
	// Impostor vendor: claims V1's ID with another point.
	imp := &Vendor{db: v2.db, cfg: v2.cfg, cred: &Credentials{ID: v1.ID(), Role: RoleVendor, Currency: "CNY", Key: v2.cred.Key, P: v2.cred.P, QN: v2.cred.QN}, kvn: v2.kvn, catalog: v2.catalog}
	_, err = u.Pay(ctx, imp.Local(), "tea")
	if e := d.refused("impostor vendor with a forged P_V", err, ErrDecrypt); e != nil {
		return e
	}
	// Concurrent overspend at two vendors: 600 + 600 on W = 1000.
	q2, _ := u.vendorKey(v2.Info())
	m1, _, _, _ := FirstPaymentMessage(c, q1, v1.ID(), *st, secret, "book", 600, time.Now())
	m2, _, _, _ := FirstPaymentMessage(c, q2, v2.ID(), *st, secret, "book", 600, time.Now())
	var wg sync.WaitGroup
	var e1, e2 error
	wg.Add(2)
	go func() { defer wg.Done(); _, e1 = vc1.OpenPayment(ctx, *m1) }()
	go func() { defer wg.Done(); _, e2 = vc2.OpenPayment(ctx, *m2) }()
	wg.Wait()
	winner, winnerAPI := v1, vc1
	switch {
	case e1 == nil && errors.Is(e2, ErrOverspend):
		d.rows = append(d.rows, DemoStep{Step: "concurrent 600 + 600 at two vendors, W=1000", Outcome: "refused", Detail: "V1 accepted, V2 refused by N: " + e2.Error()})
	case e2 == nil && errors.Is(e1, ErrOverspend):
		winner, winnerAPI = v2, vc2
		d.rows = append(d.rows, DemoStep{Step: "concurrent 600 + 600 at two vendors, W=1000", Outcome: "refused", Detail: "V2 accepted, V1 refused by N: " + e1.Error()})
	default:
		return d.fail("concurrent overspend", fmt.Errorf("V1: %v, V2: %v", e1, e2))
	}
	_ = winnerAPI
	// Tampered AEAD payload.
	m, _, _, _ = FirstPaymentMessage(c, q1, v1.ID(), *st, secret, "tea", 120, time.Now())
	m.Ciphertext[len(m.Ciphertext)/2] ^= 0x20
	_, err = vc1.OpenPayment(ctx, *m)
	if e := d.refused("tampered AEAD payload", err, ErrDecrypt); e != nil {
		return e
	}
	// Replayed payment message (the second payment of the happy path, after the third).
	if len(d.recorded.next) == 0 {
		return d.fail("replay", errors.New("no recorded payment"))
	}
	_, err = vc1.NextPayment(ctx, d.recorded.next[0])
	if e := d.refused("replayed payment message", err, ErrReplay); e != nil {
		return e
	}
	// Forged deposit signature.
	p1, _ := winner.Payments(ctx, 10)
	var items []DepositItem
	for _, p := range p1 {
		if p.DepositID == "" {
			items = append(items, DepositItem{Serial: p.Serial, Ref: p.Ref, Item: p.Item, Amount: p.Price})
		}
	}
	nonce, _ := randomHex(16)
	dr := DepositRequest{Vendor: winner.ID(), Timestamp: ms(time.Now()), Nonce: nonce, Items: items}
	dr.Sig, _ = evil.Sign(rand.Reader, dr.signingBytes())
	_, err = d.api.Deposit(ctx, dr)
	if e := d.refused("deposit with a forged vendor signature", err, ErrBadSignature); e != nil {
		return e
	}
	// Double deposit; the user refuses.
	first, err := winner.Deposit(ctx)
	if err != nil || first == nil {
		return d.fail("deposit", fmt.Errorf("%v", err))
	}
	pw, _ := winner.Payments(ctx, 1)
	nonce, _ = randomHex(16)
	dr = DepositRequest{Vendor: winner.ID(), Timestamp: ms(time.Now()), Nonce: nonce, Items: []DepositItem{{Serial: pw[0].Serial, Ref: pw[0].Ref, Item: pw[0].Item, Amount: pw[0].Price}}}
	dr.Sig, _ = winner.cred.Key.Sign(rand.Reader, dr.signingBytes())
	_, err = d.api.Deposit(ctx, dr)
	if e := d.refused("double deposit of the same payment", err, ErrDoubleDeposit); e != nil {
		return e
	}
	before := d.balance("acct." + winner.ID())
	cs, err := u.Confirm(ctx, st.Token.Serial, func(ConfirmationDetails, bool) bool { return false })
	if err != nil || len(cs) != 1 || cs[0].State != StateRefused || d.balance("acct."+winner.ID()) != before {
		return d.fail("user refuses", fmt.Errorf("%v %+v", err, cs))
	}
	d.rows = append(d.rows, DemoStep{Step: "deposit the user refuses", Outcome: "refused", Detail: "no money moved; refusal audited"})
	// Deposit the user does not answer.
	st2, err := u.Withdraw(ctx, 500, time.Hour)
	if err != nil {
		return d.fail("withdraw", err)
	}
	if _, err := u.Pay(ctx, vc2, "tea"); err != nil {
		return d.fail("pay", err)
	}
	// This deposit goes to the demo's own operator instance (same database),
	// whose confirmation window is 2 s, so the timeout happens during the demo.
	vShort := *v2
	vShort.cfg.Operator = d.op.Local()
	dep, err := vShort.Deposit(ctx)
	if err != nil || dep == nil {
		return d.fail("deposit", fmt.Errorf("%v", err))
	}
	time.Sleep(2100 * time.Millisecond)
	if err := d.op.Sweep(ctx); err != nil {
		return d.fail("sweep", err)
	}
	// The deposit's state is the vendor's: another vendor's signed look-up
	// (or an unsigned one) is refused, the vendor's own is answered.
	if _, err := d.api.DepositStatus(WithLookupKey(ctx, v1.cred.Key), dep.ID); httpx.ProblemCode(err) != "not_owner" {
		d.rows = append(d.rows, DemoStep{Step: "another vendor looks up the deposit", Outcome: "NOT REFUSED", Detail: fmt.Sprint(err)})
		return fmt.Errorf("selfverify demo: another vendor's deposit look-up: want not_owner, got %v", err)
	}
	d.rows = append(d.rows, DemoStep{Step: "another vendor looks up the deposit", Outcome: "refused", Detail: "403 not_owner: the look-up is not signed by the deposit's vendor"})
	ds, err := d.api.DepositStatus(WithLookupKey(ctx, v2.cred.Key), dep.ID)
	if err != nil || ds.Confirmations[0].State != StateExpired {
		return d.fail("unanswered deposit", fmt.Errorf("%v %+v", err, ds))
	}
	d.rows = append(d.rows, DemoStep{Step: "deposit the user does not answer in time", Outcome: "refused", Detail: "confirmation expired after 2 s; no money moved; audited"})
	_ = st2
	// Expired token.
	st3, err := u.Withdraw(ctx, 300, time.Second)
	if err != nil {
		return d.fail("withdraw", err)
	}
	time.Sleep(1100 * time.Millisecond)
	w = u.Wallet()
	t3, err := c.NewPrivateKey(w.Tokens[len(w.Tokens)-1].Secret)
	if err != nil {
		return d.fail("token key", err)
	}
	m, _, _, _ = FirstPaymentMessage(c, q1, v1.ID(), *st3, t3, "tea", 120, time.Now())
	_, err = vc1.OpenPayment(ctx, *m)
	return d.refused("payment with an expired token", err, ErrTokenExpired)
}

type demoTamper struct {
	OperatorAPI
	p []byte
}

func (t demoTamper) Register(ctx context.Context, req RegisterRequest) (*RegisterResponse, error) {
	r, err := t.OperatorAPI.Register(ctx, req)
	if err == nil {
		r.P = t.p
	}
	return r, err
}

type demoRecorder struct {
	VendorAPI
	next []NextPayment
}

func (r *demoRecorder) NextPayment(ctx context.Context, m NextPayment) (*PaymentResponse, error) {
	r.next = append(r.next, m)
	return r.VendorAPI.NextPayment(ctx, m)
}
