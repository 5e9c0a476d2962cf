package selfverify

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/qshield/qshield/selfverify/ecqv"
)

// Errors returned by the operator, vendor and user; test with errors.Is.
var (
	ErrInvalidMessage    = errors.New("selfverify: invalid message")
	ErrBadEnrollment     = errors.New("selfverify: unknown, used or expired enrollment code")
	ErrNotRegistered     = errors.New("selfverify: identity not registered")
	ErrBadSignature      = errors.New("selfverify: signature does not verify (forged key or message)")
	ErrBadMAC            = errors.New("selfverify: authentication tag does not verify")
	ErrStale             = errors.New("selfverify: timestamp outside the allowed clock skew (stale or replayed request)")
	ErrReplay            = errors.New("selfverify: request already used (replay)")
	ErrInsufficientFunds = errors.New("selfverify: insufficient funds")
	ErrTokenNotFound     = errors.New("selfverify: token not found")
	ErrTokenExpired      = errors.New("selfverify: token expired")
	ErrTokenClosed       = errors.New("selfverify: token closed")
	ErrOverspend         = errors.New("selfverify: payment would exceed the token's limit W")
	ErrDoubleDeposit     = errors.New("selfverify: payment already deposited")
	ErrUnknownPayment    = errors.New("selfverify: payment unknown to the operator or reserved by another vendor")
	ErrNotFound          = errors.New("selfverify: not found")
	ErrDeadline          = errors.New("selfverify: confirmation deadline passed")
	ErrDecided           = errors.New("selfverify: confirmation already decided")
	ErrRefused           = errors.New("selfverify: the user refused the deposit")
	ErrDecrypt           = errors.New("selfverify: ciphertext does not authenticate (wrong key or tampered)")
	ErrSequence          = errors.New("selfverify: payment sequence number out of step")
	ErrWrongVendor       = errors.New("selfverify: payment addressed to another vendor")
	ErrPrice             = errors.New("selfverify: unknown item or wrong price")
	ErrCurrency          = errors.New("selfverify: currency mismatch")
)

// Roles of registered identities.
const (
	RoleUser   = "user"
	RoleVendor = "vendor"
)

// Limits on message fields.
const (
	MaxAmount   = 1 << 50
	maxItems    = 1000
	maxTextLen  = 256
	serialHex   = 32
	nonceMinHex = 32
)

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidMessage, fmt.Sprintf(format, a...))
}

func checkText(name, s string, required bool) error {
	if s == "" {
		if required {
			return invalid("%s is required", name)
		}
		return nil
	}
	if len(s) > maxTextLen || !utf8.ValidString(s) {
		return invalid("%s must be at most %d bytes of UTF-8", name, maxTextLen)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return invalid("%s contains a control character", name)
		}
	}
	return nil
}

func checkID(name, id string) error {
	if err := ecqv.ValidateID(id); err != nil {
		return invalid("%s: %v", name, err)
	}
	return nil
}

func checkHex(name, s string, n int) error {
	if len(s) != n {
		return invalid("%s must be %d hex characters", name, n)
	}
	if _, err := hex.DecodeString(s); err != nil {
		return invalid("%s is not hex", name)
	}
	return nil
}

func checkNonce(s string) error {
	if len(s) < nonceMinHex || len(s) > 64 || len(s)%2 != 0 {
		return invalid("nonce must be 32–64 hex characters")
	}
	if _, err := hex.DecodeString(s); err != nil {
		return invalid("nonce is not hex")
	}
	return nil
}

func checkAmount(name string, v int64) error {
	if v <= 0 || v > MaxAmount {
		return invalid("%s must be in 1..%d", name, int64(MaxAmount))
	}
	return nil
}

func checkCurrency(c string) error {
	if len(c) != 3 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' || c[2] < 'A' || c[2] > 'Z' {
		return invalid("currency must be an ISO 4217 code")
	}
	return nil
}

func checkBytes(name string, b []byte, min, max int) error {
	if len(b) < min || len(b) > max {
		return invalid("%s must be %d–%d bytes", name, min, max)
	}
	return nil
}

func checkTime(name string, ms int64) error {
	if ms <= 0 || ms > 1<<50 {
		return invalid("%s is not a valid time", name)
	}
	return nil
}

// fresh checks |now − ts| ≤ skew.
func fresh(now time.Time, tsMillis int64, skew time.Duration) error {
	d := now.Sub(time.UnixMilli(tsMillis))
	if d > skew || d < -skew {
		return fmt.Errorf("%w (timestamp %s, now %s)", ErrStale, time.UnixMilli(tsMillis).UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// decodeStrict decodes exactly one JSON value without unknown fields.
func decodeStrict(b []byte, v any) error {
	if len(b) > 1<<20 {
		return invalid("message larger than 1 MiB")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalid("malformed JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("data after the JSON value")
	}
	return nil
}

type validator interface{ validate() error }

// Parse decodes and validates one message of type T (any message type of this
// package) from its JSON encoding; it is what every handler runs on its input.
func Parse[T any, P interface {
	*T
	validator
}](b []byte) (*T, error) {
	v := new(T)
	if err := decodeStrict(b, v); err != nil {
		return nil, err
	}
	if err := P(v).validate(); err != nil {
		return nil, err
	}
	return v, nil
}

// ---- Registration ----

// Params are the operator's public parameters: the curve and Q_N.
type Params struct {
	Curve string `json:"curve"`
	QN    []byte `json:"q_n"`
}

func (p *Params) validate() error {
	if _, err := ecqv.CurveByName(p.Curve); err != nil || p.Curve == "" {
		return invalid("unknown curve %q", p.Curve)
	}
	return checkBytes("q_n", p.QN, 33, 65)
}

// RegisterRequest is step 1 of ECQV registration: ID_X, R_X = k_X·G, and the
// one-time enrollment code the operator issued for ID_X out of band (the
// seed's "secure channel").
type RegisterRequest struct {
	ID   string `json:"id"`
	Role string `json:"role"`
	R    []byte `json:"r"`
	Code string `json:"code"`
}

func (m *RegisterRequest) validate() error {
	if err := checkID("id", m.ID); err != nil {
		return err
	}
	if m.Role != RoleUser && m.Role != RoleVendor {
		return invalid("role must be %q or %q", RoleUser, RoleVendor)
	}
	if err := checkBytes("r", m.R, 33, 65); err != nil {
		return err
	}
	return checkText("code", m.Code, true)
}

// RegisterResponse is N's answer (P_X, r) plus Q_N.
type RegisterResponse struct {
	ID       string `json:"id"`
	Role     string `json:"role"`
	Curve    string `json:"curve"`
	Currency string `json:"currency"`
	P        []byte `json:"p"`
	R        []byte `json:"r"`
	QN       []byte `json:"q_n"`
}

func (m *RegisterResponse) validate() error {
	if err := checkID("id", m.ID); err != nil {
		return err
	}
	if err := checkCurrency(m.Currency); err != nil {
		return err
	}
	if err := checkBytes("p", m.P, 33, 65); err != nil {
		return err
	}
	if err := checkBytes("r", m.R, 32, 32); err != nil {
		return err
	}
	return (&Params{Curve: m.Curve, QN: m.QN}).validate()
}

// Identity is a public directory entry: everything needed to rebuild a key.
type Identity struct {
	ID    string `json:"id"`
	Role  string `json:"role"`
	Curve string `json:"curve"`
	P     []byte `json:"p"`
}

func (m *Identity) validate() error {
	if err := checkID("id", m.ID); err != nil {
		return err
	}
	return checkBytes("p", m.P, 33, 65)
}

// ---- Tokens and withdrawal ----

// Token is the e-balance token: serial, limit W, expiry and the token key T
// whose private half t the user holds. It carries no identity of the user.
type Token struct {
	Serial    string `json:"serial"`
	Curve     string `json:"curve"`
	Currency  string `json:"currency"`
	Limit     int64  `json:"w"`
	IssuedAt  int64  `json:"issued_at"`  // Unix ms
	ExpiresAt int64  `json:"expires_at"` // Unix ms
	Key       []byte `json:"key"`        // T = t·G, compressed
}

func (t *Token) validate() error {
	if err := checkHex("serial", t.Serial, serialHex); err != nil {
		return err
	}
	if _, err := ecqv.CurveByName(t.Curve); err != nil || t.Curve == "" {
		return invalid("unknown curve")
	}
	if err := checkCurrency(t.Currency); err != nil {
		return err
	}
	if err := checkAmount("w", t.Limit); err != nil {
		return err
	}
	if err := checkTime("issued_at", t.IssuedAt); err != nil {
		return err
	}
	if err := checkTime("expires_at", t.ExpiresAt); err != nil {
		return err
	}
	if t.ExpiresAt <= t.IssuedAt {
		return invalid("token expires before it is issued")
	}
	return checkBytes("key", t.Key, 33, 33)
}

func (t *Token) signingBytes() []byte {
	return newCanon(labelToken).str(t.Serial).str(t.Curve).str(t.Currency).i64(t.Limit).
		i64(t.IssuedAt).i64(t.ExpiresAt).bytes(t.Key)
}

// Expires is the token's expiry time.
func (t *Token) Expires() time.Time { return time.UnixMilli(t.ExpiresAt) }

// SignedToken is a token with N's signature.
type SignedToken struct {
	Token Token  `json:"token"`
	Sig   []byte `json:"sig"`
}

func (s *SignedToken) validate() error {
	if err := s.Token.validate(); err != nil {
		return err
	}
	return checkBytes("sig", s.Sig, 8, 80)
}

// Verify checks N's signature and that the token is on qN's curve.
func (s *SignedToken) Verify(qN *ecqv.PublicKey) error {
	if err := s.validate(); err != nil {
		return err
	}
	if s.Token.Curve != qN.Curve().Name() {
		return invalid("token on curve %s, operator on %s", s.Token.Curve, qN.Curve().Name())
	}
	if !qN.Verify(s.Token.signingBytes(), s.Sig) {
		return fmt.Errorf("%w: token not signed by the operator", ErrBadSignature)
	}
	return nil
}

// WithdrawRequest asks N to move W from the user's account into escrow and
// issue a token; it is signed with d_U and carries a fresh timestamp and nonce.
type WithdrawRequest struct {
	User       string `json:"user"`
	Amount     int64  `json:"amount"`
	Currency   string `json:"currency"`
	TTLSeconds int64  `json:"ttl_seconds"`
	TokenKey   []byte `json:"token_key"`
	Timestamp  int64  `json:"timestamp"`
	Nonce      string `json:"nonce"`
	Sig        []byte `json:"sig"`
}

func (m *WithdrawRequest) validate() error {
	if err := checkID("user", m.User); err != nil {
		return err
	}
	if err := checkAmount("amount", m.Amount); err != nil {
		return err
	}
	if err := checkCurrency(m.Currency); err != nil {
		return err
	}
	if m.TTLSeconds < 0 || m.TTLSeconds > 366*24*3600 {
		return invalid("ttl_seconds out of range")
	}
	if err := checkBytes("token_key", m.TokenKey, 33, 33); err != nil {
		return err
	}
	if err := checkTime("timestamp", m.Timestamp); err != nil {
		return err
	}
	if err := checkNonce(m.Nonce); err != nil {
		return err
	}
	return checkBytes("sig", m.Sig, 8, 80)
}

func (m *WithdrawRequest) signingBytes() []byte {
	return newCanon(labelWithdraw).str(m.User).i64(m.Amount).str(m.Currency).i64(m.TTLSeconds).
		bytes(m.TokenKey).i64(m.Timestamp).str(m.Nonce)
}

// CloseRequest ends a token early; signed with the token key t.
type CloseRequest struct {
	Serial    string `json:"serial"`
	Timestamp int64  `json:"timestamp"`
	Nonce     string `json:"nonce"`
	Sig       []byte `json:"sig"`
}

func (m *CloseRequest) validate() error {
	if err := checkHex("serial", m.Serial, serialHex); err != nil {
		return err
	}
	if err := checkTime("timestamp", m.Timestamp); err != nil {
		return err
	}
	if err := checkNonce(m.Nonce); err != nil {
		return err
	}
	return checkBytes("sig", m.Sig, 8, 80)
}

func (m *CloseRequest) signingBytes() []byte {
	return newCanon(labelClose).str(m.Serial).i64(m.Timestamp).str(m.Nonce)
}

// TokenStatus is N's view of a token's money.
type TokenStatus struct {
	Serial   string `json:"serial"`
	State    string `json:"state"`
	Limit    int64  `json:"w"`
	Reserved int64  `json:"reserved"`
	Settled  int64  `json:"settled"`
	Refunded int64  `json:"refunded"`
	Currency string `json:"currency"`
}

func (m *TokenStatus) validate() error { return checkHex("serial", m.Serial, serialHex) }

// ---- Online spend reservation (V → N) ----

// ReserveRequest reserves a payment's amount against the token's limit at N
// before V releases goods; authenticated with HMAC under K_VN.
type ReserveRequest struct {
	Vendor string `json:"vendor"`
	Serial string `json:"serial"`
	Ref    string `json:"ref"`
	Amount int64  `json:"amount"`
	MAC    []byte `json:"mac"`
}

func (m *ReserveRequest) validate() error {
	if err := checkID("vendor", m.Vendor); err != nil {
		return err
	}
	if err := checkHex("serial", m.Serial, serialHex); err != nil {
		return err
	}
	if err := checkHex("ref", m.Ref, 32); err != nil {
		return err
	}
	if err := checkAmount("amount", m.Amount); err != nil {
		return err
	}
	return checkBytes("mac", m.MAC, 32, 32)
}

func (m *ReserveRequest) macBytes() []byte {
	return newCanon(labelReserve).str(m.Vendor).str(m.Serial).str(m.Ref).i64(m.Amount)
}

// ReserveResponse acknowledges a reservation.
type ReserveResponse struct {
	Ref   string `json:"ref"`
	State string `json:"state"`
}

func (m *ReserveResponse) validate() error { return checkHex("ref", m.Ref, 32) }

// ---- Deposit and user confirmation ----

// DepositItem is one collected payment.
type DepositItem struct {
	Serial string `json:"serial"`
	Ref    string `json:"ref"`
	Item   string `json:"item"`
	Amount int64  `json:"amount"`
}

func (m *DepositItem) validate() error {
	if err := checkHex("serial", m.Serial, serialHex); err != nil {
		return err
	}
	if err := checkHex("ref", m.Ref, 32); err != nil {
		return err
	}
	if err := checkText("item", m.Item, true); err != nil {
		return err
	}
	return checkAmount("amount", m.Amount)
}

// DepositRequest is V's signed batch of collected payments.
type DepositRequest struct {
	Vendor    string        `json:"vendor"`
	Timestamp int64         `json:"timestamp"`
	Nonce     string        `json:"nonce"`
	Items     []DepositItem `json:"items"`
	Sig       []byte        `json:"sig"`
}

func (m *DepositRequest) validate() error {
	if err := checkID("vendor", m.Vendor); err != nil {
		return err
	}
	if err := checkTime("timestamp", m.Timestamp); err != nil {
		return err
	}
	if err := checkNonce(m.Nonce); err != nil {
		return err
	}
	if len(m.Items) == 0 || len(m.Items) > maxItems {
		return invalid("a deposit holds 1–%d payments", maxItems)
	}
	seen := make(map[string]bool, len(m.Items))
	for i := range m.Items {
		if err := m.Items[i].validate(); err != nil {
			return fmt.Errorf("item %d: %w", i, err)
		}
		if seen[m.Items[i].Ref] {
			return fmt.Errorf("%w: payment %s twice in one deposit", ErrDoubleDeposit, m.Items[i].Ref)
		}
		seen[m.Items[i].Ref] = true
	}
	return checkBytes("sig", m.Sig, 8, 80)
}

func (m *DepositRequest) signingBytes() []byte {
	c := newCanon(labelDeposit).str(m.Vendor).i64(m.Timestamp).str(m.Nonce).i64(int64(len(m.Items)))
	for _, it := range m.Items {
		c = c.str(it.Serial).str(it.Ref).str(it.Item).i64(it.Amount)
	}
	return c
}

// Confirmation states.
const (
	StateAwaiting = "awaiting"
	StateAgreed   = "agreed"
	StateSettled  = "settled"
	StateRefused  = "refused"
	StateExpired  = "expired"
)

// ConfirmationStatus is the state of one per-token confirmation of a deposit.
type ConfirmationStatus struct {
	ID         string `json:"id"`
	Serial     string `json:"serial"`
	Amount     int64  `json:"amount"`
	State      string `json:"state"`
	Deadline   int64  `json:"deadline"`
	TransferID string `json:"transfer_id,omitempty"`
}

// RejectedItem is a payment of a deposit that N did not accept.
type RejectedItem struct {
	Ref    string `json:"ref"`
	Serial string `json:"serial"`
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

// DepositResponse lists the confirmations a deposit created and the payments
// it rejected.
type DepositResponse struct {
	ID            string               `json:"id"`
	Vendor        string               `json:"vendor"`
	Confirmations []ConfirmationStatus `json:"confirmations"`
	Rejected      []RejectedItem       `json:"rejected,omitempty"`
}

func (m *DepositResponse) validate() error {
	if err := checkHex("id", m.ID, 32); err != nil {
		return err
	}
	for _, c := range m.Confirmations {
		if err := checkHex("confirmation id", c.ID, 32); err != nil {
			return err
		}
	}
	for _, r := range m.Rejected {
		if err := checkHex("rejected ref", r.Ref, 32); err != nil {
			return err
		}
	}
	return nil
}

// ConfirmationRequest is N's question to U, encrypted under K_UN.
type ConfirmationRequest struct {
	ID         string `json:"id"`
	Serial     string `json:"serial"`
	Deadline   int64  `json:"deadline"`
	Ciphertext []byte `json:"ciphertext"`
}

func (m *ConfirmationRequest) validate() error {
	if err := checkHex("id", m.ID, 32); err != nil {
		return err
	}
	if err := checkHex("serial", m.Serial, serialHex); err != nil {
		return err
	}
	return checkBytes("ciphertext", m.Ciphertext, 28, 1<<20)
}

// ConfirmationList is the response of GET …/tokens/{serial}/confirmations.
type ConfirmationList struct {
	Confirmations []ConfirmationRequest `json:"confirmations"`
}

func (m *ConfirmationList) validate() error {
	for i := range m.Confirmations {
		if err := m.Confirmations[i].validate(); err != nil {
			return err
		}
	}
	return nil
}

// ConfirmationDetails is the plaintext of a ConfirmationRequest.
type ConfirmationDetails struct {
	ID       string        `json:"id"`
	Serial   string        `json:"serial"`
	Vendor   string        `json:"vendor"`
	Items    []DepositItem `json:"items"`
	Total    int64         `json:"total"`
	Deadline int64         `json:"deadline"`
}

func (m *ConfirmationDetails) validate() error {
	if err := checkHex("id", m.ID, 32); err != nil {
		return err
	}
	if err := checkID("vendor", m.Vendor); err != nil {
		return err
	}
	var sum int64
	for i := range m.Items {
		if err := m.Items[i].validate(); err != nil {
			return err
		}
		sum += m.Items[i].Amount
	}
	if len(m.Items) == 0 || sum != m.Total {
		return invalid("confirmation total does not match its items")
	}
	return nil
}

func confirmAAD(id, serial string) []byte {
	return newCanon("qshield-sv-confirm-aad-v1").str(id).str(serial)
}

// ConfirmAnswer is U's decision, authenticated with HMAC under K_UN.
type ConfirmAnswer struct {
	ID     string `json:"id"`
	Serial string `json:"serial"`
	Agree  bool   `json:"agree"`
	Total  int64  `json:"total"`
	MAC    []byte `json:"mac"`
}

func (m *ConfirmAnswer) validate() error {
	if err := checkHex("id", m.ID, 32); err != nil {
		return err
	}
	if err := checkHex("serial", m.Serial, serialHex); err != nil {
		return err
	}
	if err := checkAmount("total", m.Total); err != nil {
		return err
	}
	return checkBytes("mac", m.MAC, 32, 32)
}

func (m *ConfirmAnswer) macBytes() []byte {
	agree := int64(0)
	if m.Agree {
		agree = 1
	}
	return newCanon(labelConfirm).str(m.ID).str(m.Serial).i64(agree).i64(m.Total)
}

// ---- Payments (U ↔ V) ----

// Item is one article of a vendor's catalogue (the seed's goods information GI).
type Item struct {
	ID          string `json:"id"`
	Description string `json:"description"`
	Price       int64  `json:"price"`
}

func (m *Item) validate() error {
	if err := checkText("item id", m.ID, true); err != nil {
		return err
	}
	if err := checkText("description", m.Description, false); err != nil {
		return err
	}
	return checkAmount("price", m.Price)
}

// VendorInfo is what a vendor publishes: ID_V and P_V (from which anyone
// rebuilds Q_V), the operator's parameters, its currency and catalogue.
type VendorInfo struct {
	ID       string `json:"id"`
	Curve    string `json:"curve"`
	P        []byte `json:"p"`
	QN       []byte `json:"q_n"`
	Currency string `json:"currency"`
	Catalog  []Item `json:"catalog"`
}

func (m *VendorInfo) validate() error {
	if err := checkID("id", m.ID); err != nil {
		return err
	}
	if err := checkBytes("p", m.P, 33, 65); err != nil {
		return err
	}
	if err := (&Params{Curve: m.Curve, QN: m.QN}).validate(); err != nil {
		return err
	}
	if err := checkCurrency(m.Currency); err != nil {
		return err
	}
	if len(m.Catalog) > maxItems {
		return invalid("catalogue too long")
	}
	for i := range m.Catalog {
		if err := m.Catalog[i].validate(); err != nil {
			return err
		}
	}
	return nil
}

// OpenPayment is the first payment to a vendor: the ephemeral point A = a·G
// and the payment under K_UV.
type OpenPayment struct {
	A          []byte `json:"a"`
	Ciphertext []byte `json:"ciphertext"`
}

func (m *OpenPayment) validate() error {
	if err := checkBytes("a", m.A, 33, 33); err != nil {
		return err
	}
	return checkBytes("ciphertext", m.Ciphertext, 16, 64<<10)
}

// NextPayment is a later payment under K_seq.
type NextPayment struct {
	Session    string `json:"session"`
	Seq        int64  `json:"seq"`
	Ciphertext []byte `json:"ciphertext"`
}

func (m *NextPayment) validate() error {
	if err := checkHex("session", m.Session, 32); err != nil {
		return err
	}
	if m.Seq < 2 || m.Seq > 1<<40 {
		return invalid("seq out of range")
	}
	return checkBytes("ciphertext", m.Ciphertext, 16, 64<<10)
}

// FirstPayload is the plaintext of an OpenPayment.
type FirstPayload struct {
	Token     SignedToken `json:"token"`
	Vendor    string      `json:"vendor"`
	Item      string      `json:"item"`
	Price     int64       `json:"price"`
	Timestamp int64       `json:"timestamp"`
	HolderSig []byte      `json:"holder_sig"`
}

func (m *FirstPayload) validate() error {
	if err := m.Token.validate(); err != nil {
		return err
	}
	if err := checkID("vendor", m.Vendor); err != nil {
		return err
	}
	if err := checkText("item", m.Item, true); err != nil {
		return err
	}
	if err := checkAmount("price", m.Price); err != nil {
		return err
	}
	if err := checkTime("timestamp", m.Timestamp); err != nil {
		return err
	}
	return checkBytes("holder_sig", m.HolderSig, 8, 80)
}

// holderBytes is what the token holder signs with t in the first payment: it
// binds the token, the vendor, the ephemeral point A and the first purchase.
func (m *FirstPayload) holderBytes(a []byte) []byte {
	return newCanon(labelPay1).str(m.Token.Token.Serial).str(m.Vendor).bytes(a).str(m.Item).
		i64(m.Price).i64(m.Timestamp)
}

// NextPayload is the plaintext of a NextPayment.
type NextPayload struct {
	Item      string `json:"item"`
	Price     int64  `json:"price"`
	Timestamp int64  `json:"timestamp"`
}

func (m *NextPayload) validate() error {
	if err := checkText("item", m.Item, true); err != nil {
		return err
	}
	if err := checkAmount("price", m.Price); err != nil {
		return err
	}
	return checkTime("timestamp", m.Timestamp)
}

// PaymentResponse carries V's receipt under the same K_j (response nonce).
type PaymentResponse struct {
	Session    string `json:"session"`
	Seq        int64  `json:"seq"`
	Ciphertext []byte `json:"ciphertext"`
}

func (m *PaymentResponse) validate() error {
	if err := checkHex("session", m.Session, 32); err != nil {
		return err
	}
	if m.Seq < 1 {
		return invalid("seq out of range")
	}
	return checkBytes("ciphertext", m.Ciphertext, 16, 1<<20)
}

// Receipt is the plaintext of a PaymentResponse: the goods, encrypted for U.
type Receipt struct {
	Session       string `json:"session"`
	Seq           int64  `json:"seq"`
	Ref           string `json:"ref"`
	Item          string `json:"item"`
	Price         int64  `json:"price"`
	SpentAtVendor int64  `json:"spent_at_vendor"`
	Goods         string `json:"goods"`
}

func (m *Receipt) validate() error {
	if err := checkHex("ref", m.Ref, 32); err != nil {
		return err
	}
	return checkText("item", m.Item, true)
}

// SessionState is V's public high-water mark of a session, used by U to
// resynchronise its key chain.
type SessionState struct {
	Session string `json:"session"`
	NextSeq int64  `json:"next_seq"`
}

func (m *SessionState) validate() error {
	if err := checkHex("session", m.Session, 32); err != nil {
		return err
	}
	if m.NextSeq < 2 {
		return invalid("next_seq out of range")
	}
	return nil
}
