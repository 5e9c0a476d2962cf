package selfverify

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/qshield/qshield/selfverify/ecqv"
)

// VendorAPI is a vendor as the user's phone sees it: in-process
// (Vendor.Local) or over HTTP (*VendorClient).
type VendorAPI interface {
	Info(ctx context.Context) (*VendorInfo, error)
	OpenPayment(ctx context.Context, m OpenPayment) (*PaymentResponse, error)
	NextPayment(ctx context.Context, m NextPayment) (*PaymentResponse, error)
	Session(ctx context.Context, id string) (*SessionState, error)
}

// Wallet is the user's persistent state on the phone. It holds secrets (d_U,
// token keys t, K_UN, the current chain keys): store it with mode 0600.
type Wallet struct {
	Version  int             `json:"version"`
	ID       string          `json:"id"`
	Curve    string          `json:"curve"`
	Currency string          `json:"currency"`
	Key      []byte          `json:"key"`
	P        []byte          `json:"p"`
	QN       []byte          `json:"q_n"`
	Tokens   []WalletToken   `json:"tokens"`
	Sessions []WalletSession `json:"sessions"`
	Payments []WalletPayment `json:"payments"`
}

// WalletToken is a token with its secret key t and K_UN.
type WalletToken struct {
	Token  SignedToken `json:"token"`
	Secret []byte      `json:"secret"`
	KUN    []byte      `json:"k_un"`
	Closed bool        `json:"closed,omitempty"`
}

// WalletSession is the key-chain state with one vendor for one token: Key is
// K_Seq, the last key used.
type WalletSession struct {
	Vendor  string `json:"vendor"`
	Session string `json:"session"`
	Serial  string `json:"serial"`
	Seq     int64  `json:"seq"`
	Key     []byte `json:"key"`
}

// WalletPayment is one payment as the user remembers it; confirmations are
// checked against these.
type WalletPayment struct {
	Ref     string `json:"ref"`
	Serial  string `json:"serial"`
	Vendor  string `json:"vendor"`
	Session string `json:"session"`
	Seq     int64  `json:"seq"`
	Item    string `json:"item"`
	Price   int64  `json:"price"`
	Goods   string `json:"goods,omitempty"`
}

func (w *Wallet) validate() error {
	if w.Version != 1 {
		return invalid("wallet version %d", w.Version)
	}
	if err := checkID("id", w.ID); err != nil {
		return err
	}
	if err := checkBytes("key", w.Key, 32, 32); err != nil {
		return err
	}
	if err := (&Params{Curve: w.Curve, QN: w.QN}).validate(); err != nil {
		return err
	}
	for i := range w.Tokens {
		if err := w.Tokens[i].Token.validate(); err != nil {
			return err
		}
		if err := checkBytes("secret", w.Tokens[i].Secret, 32, 32); err != nil {
			return err
		}
		if err := checkBytes("k_un", w.Tokens[i].KUN, KeySize, KeySize); err != nil {
			return err
		}
	}
	for _, s := range w.Sessions {
		if err := checkBytes("session key", s.Key, KeySize, KeySize); err != nil {
			return err
		}
		if s.Seq < 1 {
			return invalid("session seq")
		}
	}
	return nil
}

// User is the mobile user U.
type User struct {
	api  OperatorAPI
	save func(*Wallet) error
	now  func() time.Time

	mu    sync.Mutex
	w     *Wallet
	cred  *Credentials
	qV    map[string]*ecqv.PublicKey  // vendor ID + P → Q_V
	tKeys map[string]*ecqv.PrivateKey // token serial → parsed t
	retry int
}

// UserOption configures a User.
type UserOption func(*User)

// WithSave persists the wallet after every change (e.g. to a 0600 file).
func WithSave(f func(*Wallet) error) UserOption { return func(u *User) { u.save = f } }

// WithClock sets the user's clock (tests).
func WithClock(now func() time.Time) UserOption { return func(u *User) { u.now = now } }

// NewWallet starts a wallet from freshly registered credentials.
func NewWallet(cred *Credentials) *Wallet {
	return &Wallet{Version: 1, ID: cred.ID, Curve: cred.Curve().Name(), Currency: cred.Currency,
		Key: cred.Key.Bytes(), P: cred.P.Bytes(), QN: cred.QN.Bytes()}
}

// ParseWallet decodes and validates a stored wallet.
func ParseWallet(b []byte) (*Wallet, error) { return Parse[Wallet](b) }

// OpenUser returns the user for a wallet, talking to the operator through api.
// It re-checks d_U·G = e·P_U + Q_N.
func OpenUser(w *Wallet, api OperatorAPI, opts ...UserOption) (*User, error) {
	if err := w.validate(); err != nil {
		return nil, err
	}
	c, err := ecqv.CurveByName(w.Curve)
	if err != nil {
		return nil, err
	}
	cred := &Credentials{ID: w.ID, Role: RoleUser, Currency: w.Currency}
	if cred.Key, err = c.NewPrivateKey(w.Key); err != nil {
		return nil, err
	}
	if cred.P, err = c.ParsePoint(w.P); err != nil {
		return nil, err
	}
	if cred.QN, err = c.ParsePublicKey(w.QN); err != nil {
		return nil, err
	}
	q, err := ecqv.Reconstruct(c, w.ID, cred.P, cred.QN)
	if err != nil || !q.Equal(cred.Key.Public()) {
		return nil, fmt.Errorf("selfverify: wallet of %s: %w", w.ID, ecqv.ErrInvalidResponse)
	}
	u := &User{api: api, now: time.Now, w: w, cred: cred, qV: map[string]*ecqv.PublicKey{}, tKeys: map[string]*ecqv.PrivateKey{}, retry: 1}
	for _, o := range opts {
		o(u)
	}
	return u, nil
}

// ID is ID_U.
func (u *User) ID() string { return u.cred.ID }

// Wallet returns a deep copy of the wallet.
func (u *User) Wallet() *Wallet {
	u.mu.Lock()
	defer u.mu.Unlock()
	b, _ := json.Marshal(u.w)
	var w Wallet
	_ = json.Unmarshal(b, &w)
	return &w
}

func (u *User) persist() error {
	if u.save == nil {
		return nil
	}
	if err := u.save(u.w); err != nil {
		return fmt.Errorf("selfverify: save wallet: %w", err)
	}
	return nil
}

func (u *User) curve() *ecqv.Curve { return u.cred.Curve() }

// Withdraw asks N for a token of limit W (amount) and lifetime ttl (0: N's
// default), signed with d_U over a fresh timestamp and nonce, checks N's
// signature on the token, and derives K_UN.
func (u *User) Withdraw(ctx context.Context, amount int64, ttl time.Duration) (*SignedToken, error) {
	req, t, err := u.WithdrawRequest(amount, ttl)
	if err != nil {
		return nil, err
	}
	return u.CompleteWithdraw(ctx, req, t)
}

// WithdrawRequest builds and signs a withdrawal request with a fresh token key
// t (returned; keep it for CompleteWithdraw).
func (u *User) WithdrawRequest(amount int64, ttl time.Duration) (*WithdrawRequest, *ecqv.PrivateKey, error) {
	t, err := u.curve().GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	nonce, err := randomHex(16)
	if err != nil {
		return nil, nil, err
	}
	req := &WithdrawRequest{User: u.cred.ID, Amount: amount, Currency: u.cred.Currency, TTLSeconds: int64(ttl / time.Second),
		TokenKey: t.Public().Bytes(), Timestamp: ms(u.now()), Nonce: nonce}
	if req.Sig, err = u.cred.Key.Sign(rand.Reader, req.signingBytes()); err != nil {
		return nil, nil, err
	}
	return req, t, nil
}

// CompleteWithdraw sends a withdrawal request and stores the token.
func (u *User) CompleteWithdraw(ctx context.Context, req *WithdrawRequest, t *ecqv.PrivateKey) (*SignedToken, error) {
	st, err := u.api.Withdraw(ctx, *req)
	if err != nil {
		return nil, fmt.Errorf("selfverify: withdraw: %w", err)
	}
	if err := st.Verify(u.cred.QN); err != nil {
		return nil, fmt.Errorf("selfverify: withdraw: %w", err)
	}
	tok := st.Token
	if tok.Limit != req.Amount || tok.Currency != req.Currency || string(tok.Key) != string(t.Public().Bytes()) {
		return nil, fmt.Errorf("%w: token does not match the request", ErrBadSignature)
	}
	z, err := t.ECDH(u.cred.QN)
	if err != nil {
		return nil, err
	}
	kun, err := deriveKUN(u.curve(), z, tok.Serial, u.cred.ID)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, wt := range u.w.Tokens {
		if wt.Token.Token.Serial == tok.Serial {
			return st, nil
		}
	}
	u.w.Tokens = append(u.w.Tokens, WalletToken{Token: *st, Secret: t.Bytes(), KUN: kun})
	return st, u.persist()
}

// tokenKeyLocked returns the parsed token key t (cached).
func (u *User) tokenKeyLocked(wt *WalletToken) (*ecqv.PrivateKey, error) {
	serial := wt.Token.Token.Serial
	if k, ok := u.tKeys[serial]; ok {
		return k, nil
	}
	k, err := u.curve().NewPrivateKey(wt.Secret)
	if err != nil {
		return nil, fmt.Errorf("selfverify: token key: %w", err)
	}
	u.tKeys[serial] = k
	return k, nil
}

// spentLocked is what U has paid with a token.
func (u *User) spentLocked(serial string) int64 {
	var s int64
	for _, p := range u.w.Payments {
		if p.Serial == serial {
			s += p.Price
		}
	}
	return s
}

func (u *User) vendorKey(info *VendorInfo) (*ecqv.PublicKey, error) {
	if string(info.QN) != string(u.cred.QN.Bytes()) || info.Curve != u.curve().Name() {
		return nil, fmt.Errorf("%w: vendor %s belongs to another operator", ErrBadSignature, info.ID)
	}
	ck := info.ID + "\x00" + string(info.P)
	u.mu.Lock()
	q, ok := u.qV[ck]
	u.mu.Unlock()
	if ok {
		return q, nil
	}
	p, err := u.curve().ParsePoint(info.P)
	if err != nil {
		return nil, fmt.Errorf("%w: vendor point: %v", ErrInvalidMessage, err)
	}
	if q, err = ecqv.Reconstruct(u.curve(), info.ID, p, u.cred.QN); err != nil {
		return nil, err
	}
	u.mu.Lock()
	u.qV[ck] = q
	u.mu.Unlock()
	return q, nil
}

// Pay buys one item from a vendor: the first payment to that vendor with a
// token derives K_UV from a fresh ephemeral point; later ones step the chain
// K_j = H(K_{j−1}). Each key is used for one exchange: the new sequence number
// is saved before the message is sent.
func (u *User) Pay(ctx context.Context, v VendorAPI, itemID string) (*Receipt, error) {
	info, err := v.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("selfverify: pay: vendor info: %w", err)
	}
	if err := info.validate(); err != nil {
		return nil, fmt.Errorf("selfverify: pay: vendor info: %w", err)
	}
	var item *Item
	for i := range info.Catalog {
		if info.Catalog[i].ID == itemID {
			item = &info.Catalog[i]
		}
	}
	if item == nil {
		return nil, fmt.Errorf("%w: %s sells no %q", ErrPrice, info.ID, itemID)
	}
	qV, err := u.vendorKey(info)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	now := u.now()
	// Prefer a token that already has a session with this vendor.
	var tok *WalletToken
	var sess *WalletSession
	for i := range u.w.Sessions {
		s := &u.w.Sessions[i]
		if s.Vendor != info.ID {
			continue
		}
		for j := range u.w.Tokens {
			wt := &u.w.Tokens[j]
			if wt.Token.Token.Serial == s.Serial && !wt.Closed && ms(now) < wt.Token.Token.ExpiresAt &&
				u.spentLocked(s.Serial)+item.Price <= wt.Token.Token.Limit {
				tok, sess = wt, s
			}
		}
	}
	if tok == nil {
		for j := range u.w.Tokens {
			wt := &u.w.Tokens[j]
			if !wt.Closed && ms(now) < wt.Token.Token.ExpiresAt && wt.Token.Token.Currency == info.Currency &&
				u.spentLocked(wt.Token.Token.Serial)+item.Price <= wt.Token.Token.Limit {
				tok = wt
				break
			}
		}
	}
	if tok == nil {
		u.mu.Unlock()
		return nil, fmt.Errorf("%w: no token with %d %s left; withdraw first", ErrOverspend, item.Price, info.Currency)
	}
	if sess == nil {
		u.mu.Unlock()
		return u.payFirst(ctx, v, info, qV, tok, item)
	}
	u.mu.Unlock()
	return u.payNext(ctx, v, info.ID, sess.Session, item)
}

func (u *User) payFirst(ctx context.Context, v VendorAPI, info *VendorInfo, qV *ecqv.PublicKey, tok *WalletToken, item *Item) (*Receipt, error) {
	c := u.curve()
	u.mu.Lock()
	st := tok.Token
	t, err := u.tokenKeyLocked(tok)
	u.mu.Unlock()
	if err != nil {
		return nil, err
	}
	m, k1, session, err := FirstPaymentMessage(c, qV, info.ID, st, t, item.ID, item.Price, u.now())
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	u.w.Sessions = append(u.w.Sessions, WalletSession{Vendor: info.ID, Session: session, Serial: st.Token.Serial, Seq: 1, Key: k1})
	if err := u.persist(); err != nil {
		u.mu.Unlock()
		return nil, err
	}
	u.mu.Unlock()
	resp, err := callRetry(u.retry, func() (*PaymentResponse, error) { return v.OpenPayment(ctx, *m) })
	if err != nil {
		// The session key was used for this message; forget the session so
		// that the next attempt starts from a fresh ephemeral point.
		u.dropSession(session)
		return nil, fmt.Errorf("selfverify: pay %s: %w", info.ID, err)
	}
	return u.finish(resp, k1, session, 1, info.ID, st.Token.Serial, item)
}

// FirstPaymentMessage builds a first payment: fresh a, A = a·G, K_UV =
// HKDF(x(a·Q_V), A, ID_V), the payload signed with the token key and sealed
// under K_UV. It returns the message, K_UV and the session ID.
func FirstPaymentMessage(c *ecqv.Curve, qV *ecqv.PublicKey, vendor string, st SignedToken, t *ecqv.PrivateKey, item string, price int64, now time.Time) (*OpenPayment, []byte, string, error) {
	a, err := c.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, "", err
	}
	aBytes := a.Public().Bytes()
	z, err := a.ECDH(qV)
	if err != nil {
		return nil, nil, "", err
	}
	k1, err := deriveKUV(c, z, aBytes, vendor)
	if err != nil {
		return nil, nil, "", err
	}
	session := sessionID(c, aBytes)
	p := FirstPayload{Token: st, Vendor: vendor, Item: item, Price: price, Timestamp: ms(now)}
	if p.HolderSig, err = t.Sign(rand.Reader, p.holderBytes(aBytes)); err != nil {
		return nil, nil, "", err
	}
	pt, _ := json.Marshal(p)
	ct, err := sealOnce(c, k1, nonceRequest, pt, payAAD(session, 1))
	if err != nil {
		return nil, nil, "", err
	}
	return &OpenPayment{A: aBytes, Ciphertext: ct}, k1, session, nil
}

// NextPaymentMessage builds later payment seq under key k = K_seq.
func NextPaymentMessage(c *ecqv.Curve, k []byte, session string, seq int64, item string, price int64, now time.Time) (*NextPayment, error) {
	pt, _ := json.Marshal(NextPayload{Item: item, Price: price, Timestamp: ms(now)})
	ct, err := sealOnce(c, k, nonceRequest, pt, payAAD(session, seq))
	if err != nil {
		return nil, err
	}
	return &NextPayment{Session: session, Seq: seq, Ciphertext: ct}, nil
}

func (u *User) dropSession(session string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := range u.w.Sessions {
		if u.w.Sessions[i].Session == session {
			u.w.Sessions = append(u.w.Sessions[:i], u.w.Sessions[i+1:]...)
			break
		}
	}
	_ = u.persist()
}

// advance moves a session to seq (hashing forward) and saves it before use.
func (u *User) advance(session string, seq int64) ([]byte, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := range u.w.Sessions {
		s := &u.w.Sessions[i]
		if s.Session != session {
			continue
		}
		if seq <= s.Seq {
			return nil, fmt.Errorf("%w: would reuse key %d", ErrSequence, seq)
		}
		k := s.Key
		for j := s.Seq; j < seq; j++ {
			k = NextKey(u.curve(), k)
		}
		s.Seq, s.Key = seq, k
		return k, u.persist()
	}
	return nil, fmt.Errorf("%w: session %s", ErrNotFound, session)
}

func (u *User) payNext(ctx context.Context, v VendorAPI, vendor, session string, item *Item) (*Receipt, error) {
	u.mu.Lock()
	var seq int64
	var serial string
	for _, s := range u.w.Sessions {
		if s.Session == session {
			seq, serial = s.Seq+1, s.Serial
		}
	}
	u.mu.Unlock()
	for attempt := 0; ; attempt++ {
		k, err := u.advance(session, seq)
		if err != nil {
			return nil, err
		}
		m, err := NextPaymentMessage(u.curve(), k, session, seq, item.ID, item.Price, u.now())
		if err != nil {
			return nil, err
		}
		resp, err := callRetry(u.retry, func() (*PaymentResponse, error) { return v.NextPayment(ctx, *m) })
		if err == nil {
			return u.finish(resp, k, session, seq, vendor, serial, item)
		}
		if attempt == 0 && (errors.Is(err, ErrSequence) || errors.Is(err, ErrReplay)) {
			// Out of step (e.g. the phone lost its last save): ask V where it
			// is and move past it; the keys in between are never used.
			st, serr := v.Session(ctx, session)
			if serr == nil && st.NextSeq > seq {
				seq = st.NextSeq
				continue
			}
		}
		return nil, fmt.Errorf("selfverify: pay %s: %w", vendor, err)
	}
}

// callRetry retries a call whose failure was not an answer of the server
// (a transport error), sending the identical message again: V answers a
// byte-identical retry with its stored response, so no key is reused.
func callRetry(n int, f func() (*PaymentResponse, error)) (*PaymentResponse, error) {
	for i := 0; ; i++ {
		r, err := f()
		answered := answeredByServer(err)
		if err == nil || i >= n || answered || errors.Is(err, context.Canceled) || isProtocolError(err) {
			return r, err
		}
	}
}

func isProtocolError(err error) bool {
	for _, e := range []error{ErrInvalidMessage, ErrDecrypt, ErrSequence, ErrReplay, ErrOverspend, ErrPrice, ErrBadSignature,
		ErrTokenExpired, ErrTokenClosed, ErrWrongVendor, ErrCurrency, ErrNotFound, ErrStale, ErrBadMAC, ErrUnknownPayment,
		ErrDoubleDeposit, ErrTokenNotFound, ErrBadEnrollment, ErrNotRegistered, ErrInsufficientFunds, ErrDeadline, ErrDecided} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (u *User) finish(resp *PaymentResponse, k []byte, session string, seq int64, vendor, serial string, item *Item) (*Receipt, error) {
	if resp.Session != session || resp.Seq != seq {
		return nil, fmt.Errorf("%w: response for another payment", ErrInvalidMessage)
	}
	pt, err := openOnce(u.curve(), k, nonceResponse, resp.Ciphertext, payAAD(session, seq))
	if err != nil {
		return nil, fmt.Errorf("selfverify: pay %s: receipt: %w", vendor, err)
	}
	rc, err := Parse[Receipt](pt)
	if err != nil {
		return nil, err
	}
	ref := PaymentRef(u.curve(), session, seq)
	if rc.Ref != ref || rc.Item != item.ID || rc.Price != item.Price {
		return nil, fmt.Errorf("%w: receipt does not match the payment", ErrInvalidMessage)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.w.Payments = append(u.w.Payments, WalletPayment{Ref: ref, Serial: serial, Vendor: vendor, Session: session, Seq: seq,
		Item: item.ID, Price: item.Price, Goods: rc.Goods})
	return rc, u.persist()
}

// Decision decides a confirmation; known reports whether every payment in it
// is one the wallet made, to that vendor, at that amount.
type Decision func(d ConfirmationDetails, known bool) bool

// AgreeIfKnown agrees exactly when every payment is known.
func AgreeIfKnown(_ ConfirmationDetails, known bool) bool { return known }

func (u *User) token(serial string) (*WalletToken, error) {
	for i := range u.w.Tokens {
		if u.w.Tokens[i].Token.Token.Serial == serial {
			return &u.w.Tokens[i], nil
		}
	}
	return nil, fmt.Errorf("%w: token %s not in this wallet", ErrTokenNotFound, serial)
}

// Confirm fetches the operator's pending confirmation requests for a token,
// decrypts them under K_UN, decides each (decide nil: AgreeIfKnown) and
// answers with a MAC under K_UN.
func (u *User) Confirm(ctx context.Context, serial string, decide Decision) ([]ConfirmationStatus, error) {
	if decide == nil {
		decide = AgreeIfKnown
	}
	u.mu.Lock()
	wt, err := u.token(serial)
	var kun, secret []byte
	if err == nil {
		kun, secret = wt.KUN, wt.Secret
	}
	u.mu.Unlock()
	if err != nil {
		return nil, err
	}
	t, err := u.curve().NewPrivateKey(secret)
	if err != nil {
		return nil, err
	}
	list, err := u.api.Confirmations(WithLookupKey(ctx, t), serial) // signed by the token key: only the holder sees them
	if err != nil {
		return nil, fmt.Errorf("selfverify: confirmations: %w", err)
	}
	var out []ConfirmationStatus
	for _, c := range list.Confirmations {
		pt, err := openRandom(u.curve(), kun, c.Ciphertext, confirmAAD(c.ID, serial))
		if err != nil {
			return out, fmt.Errorf("selfverify: confirmation %s: %w", c.ID, err)
		}
		d, err := Parse[ConfirmationDetails](pt)
		if err != nil {
			return out, err
		}
		if d.ID != c.ID || d.Serial != serial {
			return out, fmt.Errorf("%w: confirmation for another token", ErrInvalidMessage)
		}
		ans := ConfirmAnswer{ID: c.ID, Serial: serial, Agree: decide(*d, u.known(d)), Total: d.Total}
		ans.MAC = mac(u.curve(), kun, ans.macBytes())
		st, err := u.api.Confirm(ctx, ans)
		if err != nil {
			return out, fmt.Errorf("selfverify: confirm %s: %w", c.ID, err)
		}
		out = append(out, *st)
	}
	return out, nil
}

func (u *User) known(d *ConfirmationDetails) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	byRef := make(map[string]WalletPayment, len(u.w.Payments))
	for _, p := range u.w.Payments {
		byRef[p.Ref] = p
	}
	for _, it := range d.Items {
		p, ok := byRef[it.Ref]
		if !ok || p.Serial != d.Serial || p.Vendor != d.Vendor || p.Price != it.Amount || p.Item != it.Item {
			return false
		}
	}
	return true
}

// Close ends a token (signed with its key t); the rest of W returns to U's
// account once outstanding deposits are decided.
func (u *User) Close(ctx context.Context, serial string) (*TokenStatus, error) {
	u.mu.Lock()
	wt, err := u.token(serial)
	var secret []byte
	if err == nil {
		secret = wt.Secret
	}
	u.mu.Unlock()
	if err != nil {
		return nil, err
	}
	t, err := u.curve().NewPrivateKey(secret)
	if err != nil {
		return nil, err
	}
	nonce, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	req := CloseRequest{Serial: serial, Timestamp: ms(u.now()), Nonce: nonce}
	if req.Sig, err = t.Sign(rand.Reader, req.signingBytes()); err != nil {
		return nil, err
	}
	st, err := u.api.CloseToken(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("selfverify: close %s: %w", serial, err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if wt, err := u.token(serial); err == nil {
		wt.Closed = true
	}
	return st, u.persist()
}
