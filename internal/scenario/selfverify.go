package scenario

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/selfverify"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
)

// SelfVerifyDeps is what SelfVerify needs from the platform.
type SelfVerifyDeps struct {
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
	KeySeal selfverify.KeySealer
}

// SelfVerify runs seed 002 end to end — registration, withdrawal, three
// payments, a deposit confirmed by the user, the refund of the rest of W —
// and then each attack of issue 6, which must be refused. The vendor is served
// over HTTPS from an in-process TLS server. The time-dependent steps (a user
// who does not answer, an expired token) use a 2-second confirmation window
// and a 1-second token, so the demo sleeps about 3.5 s. It returns the rows
// and an error as soon as any step does not behave as the scheme requires.
func SelfVerify(ctx context.Context, cfg SelfVerifyDeps) ([]Step, error) {
	if cfg.DB == nil || cfg.Ledger == nil {
		return nil, errors.New("selfverify demo: needs a database and a ledger")
	}
	if cfg.Curve == nil {
		cfg.Curve = ecqv.P256()
	}
	d := &svDemo{ctx: ctx, cfg: cfg}
	err := d.run()
	return d.rows, err
}

type svDemo struct {
	ctx      context.Context
	cfg      SelfVerifyDeps
	rows     []Step
	op       *selfverify.Operator
	recorded *svRecorder
	api      selfverify.OperatorAPI
	tag      string
	curve    *ecqv.Curve
	key      *ecqv.PrivateKey                   // d_N, the operator's key
	creds    map[string]*selfverify.Credentials // vendor ID → its credentials
}

func (d *svDemo) ok(step, detail string, a ...any) {
	d.rows = append(d.rows, Step{Step: step, Outcome: "ok", Detail: fmt.Sprintf(detail, a...)})
}

// refused records an attack step: err must wrap want.
func (d *svDemo) refused(step string, err error, want ...error) error {
	for _, w := range want {
		if errors.Is(err, w) {
			d.rows = append(d.rows, Step{Step: step, Outcome: "refused", Detail: err.Error()})
			return nil
		}
	}
	d.rows = append(d.rows, Step{Step: step, Outcome: "NOT REFUSED", Detail: fmt.Sprint(err)})
	return fmt.Errorf("selfverify demo: %s: want refusal (%v), got %v", step, want, err)
}

func (d *svDemo) fail(step string, err error) error {
	d.rows = append(d.rows, Step{Step: step, Outcome: "FAILED", Detail: err.Error()})
	return fmt.Errorf("selfverify demo: %s: %w", step, err)
}

func (d *svDemo) balance(id string) int64 {
	a, err := d.cfg.Ledger.Account(d.ctx, id)
	if err != nil {
		return -1
	}
	return a.Balance
}

const demoIssuer = "selfverify.demo.issuer"

func (d *svDemo) account(id string, kind ledger.Kind, amount int64) error {
	if _, err := d.cfg.Ledger.CreateAccount(d.ctx, ledger.NewAccount{ID: id, Owner: id, Kind: kind, Currency: "CNY"}); err != nil {
		return err
	}
	if amount > 0 {
		_, err := d.cfg.Ledger.Transfer(d.ctx, ledger.TransferRequest{IdempotencyKey: "selfverify-demo-fund-" + id, From: demoIssuer, To: id, Amount: amount, Currency: "CNY", Memo: "demo funding"})
		return err
	}
	return nil
}

func (d *svDemo) enroll(id, role string, kind ledger.Kind, funds int64) (*selfverify.Credentials, error) {
	acct := "acct." + id
	if err := d.account(acct, kind, funds); err != nil {
		return nil, err
	}
	code, err := d.op.Enroll(d.ctx, id, role, acct)
	if err != nil {
		return nil, err
	}
	return selfverify.Register(d.ctx, d.api, d.key.Public(), id, role, code)
}

func (d *svDemo) run() error {
	ctx := d.ctx
	var err error
	d.curve = d.cfg.Curve
	d.key, err = selfverify.LoadOrCreateOperatorKey(ctx, d.cfg.DB, d.curve, d.cfg.KeySeal)
	if err != nil {
		return d.fail("operator key", err)
	}
	d.creds = map[string]*selfverify.Credentials{}
	d.op, err = selfverify.NewOperator(ctx, d.cfg.DB, selfverify.OperatorConfig{Key: d.key, Ledger: d.cfg.Ledger, Audit: d.cfg.Audit,
		ConfirmWindow: 2 * time.Second})
	if err != nil {
		return d.fail("operator", err)
	}
	defer d.op.Close()
	d.api = d.op.Local()
	if d.cfg.OperatorURL != "" {
		if d.api, err = selfverify.NewOperatorClient(d.cfg.OperatorURL, d.cfg.HTTPClient); err != nil {
			return d.fail("operator client", err)
		}
	}
	if d.tag, err = svRandomHex(3); err != nil {
		return err
	}
	if _, err := d.cfg.Ledger.EnsureAccount(ctx, ledger.NewAccount{ID: demoIssuer, Owner: "demo", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true}); err != nil {
		return d.fail("issuer account", err)
	}

	// --- Registration ---
	uid, vid, v2id := "alice-"+d.tag, "teashop-"+d.tag, "bakery-"+d.tag
	ucred, err := d.enroll(uid, selfverify.RoleUser, ledger.KindUser, 10_000)
	if err != nil {
		return d.fail("register user", err)
	}
	d.ok("register user U", "%s: P_U=%x…, d_U·G = e·P_U + Q_N checked, no certificate", uid, ucred.P.Bytes()[:8])
	vcred, err := d.enroll(vid, selfverify.RoleVendor, ledger.KindMerchant, 0)
	if err != nil {
		return d.fail("register vendor", err)
	}
	v2cred, err := d.enroll(v2id, selfverify.RoleVendor, ledger.KindMerchant, 0)
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
	u, err := selfverify.OpenUser(selfverify.NewWallet(ucred), d.api)
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
	d.recorded = &svRecorder{VendorAPI: vc1}
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
	if err != nil || len(cs) != 1 || cs[0].State != selfverify.StateSettled {
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

func (d *svDemo) vendor(cred *selfverify.Credentials) (*selfverify.Vendor, selfverify.VendorAPI, func(), error) {
	if err := selfverify.SaveVendorCredentials(d.ctx, d.cfg.DB, cred); err != nil {
		return nil, nil, nil, err
	}
	d.creds[cred.ID] = cred
	v, err := selfverify.NewVendor(d.ctx, d.cfg.DB, cred, selfverify.VendorConfig{Operator: d.api, Catalog: svCatalog()})
	if err != nil {
		return nil, nil, nil, err
	}
	srv := httptest.NewTLSServer(v.Handler())
	vc, err := selfverify.NewVendorClient(srv.URL, srv.Client())
	stop := func() { srv.Close(); v.Close() }
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	return v, vc, stop, nil
}

func svCatalog() []selfverify.Item {
	return []selfverify.Item{{ID: "tea", Description: "green tea", Price: 120}, {ID: "cake", Description: "cake", Price: 250}, {ID: "book", Description: "a book", Price: 600}}
}

// vendorKey rebuilds Q_V = e·P_V + Q_N from what the vendor publishes, as a
// phone does.
func (d *svDemo) vendorKey(info *selfverify.VendorInfo) (*ecqv.PublicKey, error) {
	p, err := d.curve.ParsePoint(info.P)
	if err != nil {
		return nil, err
	}
	return ecqv.Reconstruct(d.curve, info.ID, p, d.key.Public())
}

// svAttack is the state the attacks share: the user, the two vendors (and
// their HTTPS clients), a key nobody registered, and a fresh token with its
// key t and the vendors' rebuilt Q_V.
type svAttack struct {
	u        *selfverify.User
	v1, v2   *selfverify.Vendor
	vc1, vc2 selfverify.VendorAPI
	evil     *ecqv.PrivateKey
	st       *selfverify.SignedToken
	secret   *ecqv.PrivateKey
	q1, q2   *ecqv.PublicKey
	winner   *selfverify.Vendor // the vendor whose 600 was accepted
}

func (d *svDemo) attacks(u *selfverify.User, v1, v2 *selfverify.Vendor, vc1, vc2 selfverify.VendorAPI) error {
	a := &svAttack{u: u, v1: v1, v2: v2, vc1: vc1, vc2: vc2}
	var err error
	if a.evil, err = d.curve.GenerateKey(rand.Reader); err != nil {
		return d.fail("attack setup", err)
	}
	for _, phase := range []func(*svAttack) error{d.registrationAttacks, d.newToken, d.tokenAttacks, d.concurrentOverspend,
		d.messageAttacks, d.depositAttacks, d.unansweredDeposit, d.expiredToken} {
		if err := phase(a); err != nil {
			return err
		}
	}
	return nil
}

// registrationAttacks: a MITM replaces P_X at registration; a withdrawal
// signed with another key; a replayed (stale) withdrawal.
func (d *svDemo) registrationAttacks(a *svAttack) error {
	ctx := d.ctx
	if err := d.account("acct.mallory-"+d.tag, ledger.KindUser, 0); err != nil {
		return d.fail("attack setup", err)
	}
	code, err := d.op.Enroll(ctx, "mallory-"+d.tag, selfverify.RoleUser, "acct.mallory-"+d.tag)
	if err != nil {
		return d.fail("attack setup", err)
	}
	_, err = selfverify.Register(ctx, svTamper{OperatorAPI: d.api, p: a.evil.Public().Bytes()}, d.key.Public(), "mallory-"+d.tag, selfverify.RoleUser, code)
	if e := d.refused("forged P_X at registration", err, ecqv.ErrInvalidResponse); e != nil {
		return e
	}
	req, _, _ := a.u.WithdrawRequest(500, time.Hour)
	req.Sig, _ = a.evil.Sign(rand.Reader, req.SigningBytes())
	_, err = d.api.Withdraw(ctx, *req)
	if e := d.refused("withdraw with a forged signature", err, selfverify.ErrBadSignature); e != nil {
		return e
	}
	old, _ := selfverify.OpenUser(a.u.Wallet(), d.api, selfverify.WithClock(func() time.Time { return time.Now().Add(-10 * time.Minute) }))
	req, tk, _ := old.WithdrawRequest(500, time.Hour)
	_, err = old.CompleteWithdraw(ctx, req, tk)
	return d.refused("replayed withdrawal (stale timestamp)", err, selfverify.ErrStale)
}

// newToken withdraws the token the next attacks pay with.
func (d *svDemo) newToken(a *svAttack) error {
	var err error
	if a.st, err = a.u.Withdraw(d.ctx, 1000, time.Hour); err != nil {
		return d.fail("withdraw for attacks", err)
	}
	w := a.u.Wallet()
	if a.secret, err = d.curve.NewPrivateKey(w.Tokens[len(w.Tokens)-1].Secret); err != nil {
		return d.fail("token key", err)
	}
	a.q1, _ = d.vendorKey(a.v1.Info())
	a.q2, _ = d.vendorKey(a.v2.Info())
	return nil
}

// tokenAttacks: a token with W raised, a stolen token without its key t, and
// an impostor vendor.
func (d *svDemo) tokenAttacks(a *svAttack) error {
	ctx, c := d.ctx, d.curve
	raised := *a.st
	raised.Token.Limit = 1_000_000
	m, _, _, _ := selfverify.FirstPaymentMessage(c, a.q1, a.v1.ID(), raised, a.secret, "tea", 120, time.Now())
	_, err := a.vc1.OpenPayment(ctx, *m)
	if e := d.refused("payment with a forged token (W raised)", err, selfverify.ErrBadSignature); e != nil {
		return e
	}
	m, _, _, _ = selfverify.FirstPaymentMessage(c, a.q1, a.v1.ID(), *a.st, a.evil, "tea", 120, time.Now())
	_, err = a.vc1.OpenPayment(ctx, *m)
	if e := d.refused("payment with a stolen token (no t)", err, selfverify.ErrBadSignature); e != nil {
		return e
	}
	// V2 publishes V1's ID with its own P_V: the phone rebuilds a Q_V that
	// nobody holds the key of, so V2 cannot open the payment.
	_, err = a.u.Pay(ctx, svImpostor{VendorAPI: a.v2.Local(), id: a.v1.ID()}, "tea")
	return d.refused("impostor vendor with a forged P_V", err, selfverify.ErrDecrypt)
}

// concurrentOverspend: 600 + 600 on W = 1000 at two vendors at once; N
// accepts exactly one.
func (d *svDemo) concurrentOverspend(a *svAttack) error {
	ctx, c := d.ctx, d.curve
	m1, _, _, _ := selfverify.FirstPaymentMessage(c, a.q1, a.v1.ID(), *a.st, a.secret, "book", 600, time.Now())
	m2, _, _, _ := selfverify.FirstPaymentMessage(c, a.q2, a.v2.ID(), *a.st, a.secret, "book", 600, time.Now())
	var wg sync.WaitGroup
	var e1, e2 error
	wg.Add(2)
	go func() { defer wg.Done(); _, e1 = a.vc1.OpenPayment(ctx, *m1) }()
	go func() { defer wg.Done(); _, e2 = a.vc2.OpenPayment(ctx, *m2) }()
	wg.Wait()
	const step = "concurrent 600 + 600 at two vendors, W=1000"
	switch {
	case e1 == nil && errors.Is(e2, selfverify.ErrOverspend):
		a.winner = a.v1
		d.rows = append(d.rows, Step{Step: step, Outcome: "refused", Detail: "V1 accepted, V2 refused by N: " + e2.Error()})
	case e2 == nil && errors.Is(e1, selfverify.ErrOverspend):
		a.winner = a.v2
		d.rows = append(d.rows, Step{Step: step, Outcome: "refused", Detail: "V2 accepted, V1 refused by N: " + e1.Error()})
	default:
		return d.fail("concurrent overspend", fmt.Errorf("V1: %v, V2: %v", e1, e2))
	}
	return nil
}

// messageAttacks: a tampered AEAD payload; a replayed payment message (the
// second payment of the happy path, after the third).
func (d *svDemo) messageAttacks(a *svAttack) error {
	ctx := d.ctx
	m, _, _, _ := selfverify.FirstPaymentMessage(d.curve, a.q1, a.v1.ID(), *a.st, a.secret, "tea", 120, time.Now())
	m.Ciphertext[len(m.Ciphertext)/2] ^= 0x20
	_, err := a.vc1.OpenPayment(ctx, *m)
	if e := d.refused("tampered AEAD payload", err, selfverify.ErrDecrypt); e != nil {
		return e
	}
	if len(d.recorded.next) == 0 {
		return d.fail("replay", errors.New("no recorded payment"))
	}
	_, err = a.vc1.NextPayment(ctx, d.recorded.next[0])
	return d.refused("replayed payment message", err, selfverify.ErrReplay)
}

// depositAttacks: a deposit with a forged vendor signature; a double
// deposit; a deposit the user refuses.
func (d *svDemo) depositAttacks(a *svAttack) error {
	ctx, winner := d.ctx, a.winner
	p1, _ := winner.Payments(ctx, 10)
	var items []selfverify.DepositItem
	for _, p := range p1 {
		if p.DepositID == "" {
			items = append(items, selfverify.DepositItem{Serial: p.Serial, Ref: p.Ref, Item: p.Item, Amount: p.Price})
		}
	}
	nonce, _ := svRandomHex(16)
	dr := selfverify.DepositRequest{Vendor: winner.ID(), Timestamp: time.Now().UnixMilli(), Nonce: nonce, Items: items}
	dr.Sig, _ = a.evil.Sign(rand.Reader, dr.SigningBytes())
	_, err := d.api.Deposit(ctx, dr)
	if e := d.refused("deposit with a forged vendor signature", err, selfverify.ErrBadSignature); e != nil {
		return e
	}
	first, err := winner.Deposit(ctx)
	if err != nil || first == nil {
		return d.fail("deposit", fmt.Errorf("%v", err))
	}
	pw, _ := winner.Payments(ctx, 1)
	nonce, _ = svRandomHex(16)
	dr = selfverify.DepositRequest{Vendor: winner.ID(), Timestamp: time.Now().UnixMilli(), Nonce: nonce, Items: []selfverify.DepositItem{{Serial: pw[0].Serial, Ref: pw[0].Ref, Item: pw[0].Item, Amount: pw[0].Price}}}
	dr.Sig, _ = d.creds[winner.ID()].Key.Sign(rand.Reader, dr.SigningBytes())
	_, err = d.api.Deposit(ctx, dr)
	if e := d.refused("double deposit of the same payment", err, selfverify.ErrDoubleDeposit); e != nil {
		return e
	}
	before := d.balance("acct." + winner.ID())
	cs, err := a.u.Confirm(ctx, a.st.Token.Serial, func(selfverify.ConfirmationDetails, bool) bool { return false })
	if err != nil || len(cs) != 1 || cs[0].State != selfverify.StateRefused || d.balance("acct."+winner.ID()) != before {
		return d.fail("user refuses", fmt.Errorf("%v %+v", err, cs))
	}
	d.rows = append(d.rows, Step{Step: "deposit the user refuses", Outcome: "refused", Detail: "no money moved; refusal audited"})
	return nil
}

// unansweredDeposit: the user does not answer before the confirmation
// window ends.
func (d *svDemo) unansweredDeposit(a *svAttack) error {
	ctx := d.ctx
	if _, err := a.u.Withdraw(ctx, 500, time.Hour); err != nil {
		return d.fail("withdraw", err)
	}
	if _, err := a.u.Pay(ctx, a.vc2, "tea"); err != nil {
		return d.fail("pay", err)
	}
	// This deposit goes to the demo's own operator instance (same database),
	// whose confirmation window is 2 s, so the timeout happens during the demo.
	vShort, err := selfverify.NewVendor(ctx, d.cfg.DB, d.creds[a.v2.ID()], selfverify.VendorConfig{Operator: d.op.Local(), Catalog: svCatalog()})
	if err != nil {
		return d.fail("vendor", err)
	}
	defer vShort.Close()
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
	if _, err := d.api.DepositStatus(selfverify.WithLookupKey(ctx, d.creds[a.v1.ID()].Key), dep.ID); httpx.ProblemCode(err) != "not_owner" {
		d.rows = append(d.rows, Step{Step: "another vendor looks up the deposit", Outcome: "NOT REFUSED", Detail: fmt.Sprint(err)})
		return fmt.Errorf("selfverify demo: another vendor's deposit look-up: want not_owner, got %v", err)
	}
	d.rows = append(d.rows, Step{Step: "another vendor looks up the deposit", Outcome: "refused", Detail: "403 not_owner: the look-up is not signed by the deposit's vendor"})
	ds, err := d.api.DepositStatus(selfverify.WithLookupKey(ctx, d.creds[a.v2.ID()].Key), dep.ID)
	if err != nil || ds.Confirmations[0].State != selfverify.StateExpired {
		return d.fail("unanswered deposit", fmt.Errorf("%v %+v", err, ds))
	}
	d.rows = append(d.rows, Step{Step: "deposit the user does not answer in time", Outcome: "refused", Detail: "confirmation expired after 2 s; no money moved; audited"})
	return nil
}

// expiredToken: a payment with a token past its expiry.
func (d *svDemo) expiredToken(a *svAttack) error {
	ctx := d.ctx
	st3, err := a.u.Withdraw(ctx, 300, time.Second)
	if err != nil {
		return d.fail("withdraw", err)
	}
	time.Sleep(1100 * time.Millisecond)
	w := a.u.Wallet()
	t3, err := d.curve.NewPrivateKey(w.Tokens[len(w.Tokens)-1].Secret)
	if err != nil {
		return d.fail("token key", err)
	}
	m, _, _, _ := selfverify.FirstPaymentMessage(d.curve, a.q1, a.v1.ID(), *st3, t3, "tea", 120, time.Now())
	_, err = a.vc1.OpenPayment(ctx, *m)
	return d.refused("payment with an expired token", err, selfverify.ErrTokenExpired)
}

type svTamper struct {
	selfverify.OperatorAPI
	p []byte
}

func (t svTamper) Register(ctx context.Context, req selfverify.RegisterRequest) (*selfverify.RegisterResponse, error) {
	r, err := t.OperatorAPI.Register(ctx, req)
	if err == nil {
		r.P = t.p
	}
	return r, err
}

type svRecorder struct {
	selfverify.VendorAPI
	next []selfverify.NextPayment
}

func (r *svRecorder) NextPayment(ctx context.Context, m selfverify.NextPayment) (*selfverify.PaymentResponse, error) {
	r.next = append(r.next, m)
	return r.VendorAPI.NextPayment(ctx, m)
}

// svImpostor serves another vendor's payments under the ID id.
type svImpostor struct {
	selfverify.VendorAPI
	id string
}

func (v svImpostor) Info(ctx context.Context) (*selfverify.VendorInfo, error) {
	info, err := v.VendorAPI.Info(ctx)
	if err != nil {
		return nil, err
	}
	forged := *info
	forged.ID = v.id
	return &forged, nil
}

func svRandomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("selfverify demo: randomness: %w", err)
	}
	return hex.EncodeToString(b), nil
}
