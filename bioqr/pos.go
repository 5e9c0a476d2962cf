package bioqr

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/qshield/qshield/bioqr/phonecode"
)

const (
	// DefaultConsumptionTTL is how long a consumption QR stays valid.
	DefaultConsumptionTTL = 2 * time.Minute
	// usedRetention keeps consumed RandCodes after their expiry so that a
	// replay is reported as "used" rather than "unknown".
	usedRetention = 10 * time.Minute
)

// Pending is a RandCodeP the POS issued and keeps in its secure unit until
// a payment uses it (step 3).
type Pending struct {
	RandCode        [16]byte  `json:"-"`
	Code            string    `json:"rand_code"`
	Amount          int64     `json:"amount"`
	Currency        string    `json:"currency"`
	MerchantAccount string    `json:"merchant_account"`
	Expires         time.Time `json:"expires"`
	Used            bool      `json:"used,omitempty"`
}

// RandStore keeps the POS's pending RandCodes. Take consumes a code
// atomically: it succeeds at most once per code, even when the payment then
// fails (like wallets' one-minute, single-use codes).
type RandStore interface {
	Put(ctx context.Context, p Pending) error
	// Take returns the pending entry and marks it used; errors wrap
	// ErrRandCodeUnknown, ErrRandCodeUsed or ErrExpired.
	Take(ctx context.Context, code [16]byte, now time.Time) (Pending, error)
}

type randMap map[string]Pending

func (m randMap) take(code [16]byte, now time.Time) (Pending, error) {
	k := hex.EncodeToString(code[:])
	p, ok := m[k]
	if !ok {
		return Pending{}, ErrRandCodeUnknown
	}
	if p.Used {
		return Pending{}, ErrRandCodeUsed
	}
	p.Used = true
	m[k] = p
	if !now.Before(p.Expires) {
		return Pending{}, fmt.Errorf("%w: RandCode expired at %s", ErrExpired, p.Expires.Format(time.RFC3339))
	}
	p.RandCode = code
	return p, nil
}

func (m randMap) prune(now time.Time) {
	for k, p := range m {
		if now.After(p.Expires.Add(usedRetention)) {
			delete(m, k)
		}
	}
}

// MemoryRandStore is a RandStore in memory (one POS process).
type MemoryRandStore struct {
	mu sync.Mutex
	m  randMap
}

// NewMemoryRandStore returns an empty store.
func NewMemoryRandStore() *MemoryRandStore { return &MemoryRandStore{m: randMap{}} }

// Put records a pending code.
func (s *MemoryRandStore) Put(_ context.Context, p Pending) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.prune(time.Now())
	p.Code = hex.EncodeToString(p.RandCode[:])
	s.m[p.Code] = p
	return nil
}

// Take consumes a code.
func (s *MemoryRandStore) Take(_ context.Context, code [16]byte, now time.Time) (Pending, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m.take(code, now)
}

// FileRandStore is a RandStore in a JSON file, shared safely by several POS
// processes (`qshield pos charge` and `qshield pos accept`) through an
// exclusive flock on a lock file and atomic renames.
type FileRandStore struct{ Path string }

func (s FileRandStore) update(fn func(randMap) error) error {
	lock, err := os.OpenFile(s.Path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("bioqr: RandCode store lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("bioqr: RandCode store lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	m := randMap{}
	if f, err := os.Open(s.Path); err == nil {
		data, rerr := io.ReadAll(io.LimitReader(f, 16<<20))
		f.Close()
		if rerr != nil {
			return fmt.Errorf("bioqr: read RandCode store: %w", rerr)
		}
		if err := json.Unmarshal(data, &m); err != nil {
			return fmt.Errorf("%w: RandCode store %s: %v", ErrMalformed, s.Path, err)
		}
	} else if !os.IsNotExist(err) {
		return fmt.Errorf("bioqr: open RandCode store: %w", err)
	}
	ferr := fn(m)
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.Path, data, 0o600); err != nil {
		return err
	}
	return ferr
}

// Put records a pending code.
func (s FileRandStore) Put(_ context.Context, p Pending) error {
	return s.update(func(m randMap) error {
		m.prune(time.Now())
		p.Code = hex.EncodeToString(p.RandCode[:])
		m[p.Code] = p
		return nil
	})
}

// Take consumes a code.
func (s FileRandStore) Take(_ context.Context, code [16]byte, now time.Time) (Pending, error) {
	var out Pending
	err := s.update(func(m randMap) error {
		var err error
		out, err = m.take(code, now)
		return err
	})
	return out, err
}

// Sensor is the POS's fingerprint sensor: it returns an ISO/IEC 19794-2
// record of the finger on it.
type Sensor interface {
	Capture(ctx context.Context) ([]byte, error)
}

// FileSensor "captures" by reading an ISO/IEC 19794-2 file (this project's
// stand-in for a sensor and its minutiae extractor).
type FileSensor struct{ Path string }

// Capture reads the file.
func (s FileSensor) Capture(context.Context) ([]byte, error) {
	f, err := os.Open(s.Path)
	if err != nil {
		return nil, fmt.Errorf("bioqr: fingerprint sensor: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxProbe+1))
	if err != nil {
		return nil, fmt.Errorf("bioqr: fingerprint sensor: %w", err)
	}
	if len(b) > maxProbe {
		return nil, fmt.Errorf("%w: template file larger than %d bytes", ErrMalformed, maxProbe)
	}
	return b, nil
}

// BytesSensor returns a fixed record.
type BytesSensor []byte

// Capture returns the record.
func (s BytesSensor) Capture(context.Context) ([]byte, error) { return append([]byte(nil), s...), nil }

// Settler sends a sealed envelope to the settlement server and returns its
// verdict: the HTTP Client over mutual TLS, or a Settlement in-process.
type Settler interface {
	Settle(ctx context.Context, sealedEnvelope []byte) (*SettleResult, error)
}

// SettleResult is the settlement server's answer for a payment (step 15).
type SettleResult struct {
	Status          string  `json:"status"` // "paid"
	TransferID      string  `json:"transfer_id"`
	Amount          int64   `json:"amount"`
	Currency        string  `json:"currency"`
	Account         string  `json:"account"`
	MerchantAccount string  `json:"merchant_account"`
	RandCode        string  `json:"rand_code"`
	Phone           string  `json:"phone"`
	ProbeSource     string  `json:"probe_source"`
	Score           float64 `json:"score"`
	Replayed        bool    `json:"replayed,omitempty"`
}

// POS is the payment device (支付设备 2).
type POS struct {
	Unit     *SecureUnit
	Merchant Merchant
	Store    RandStore
	Sensor   Sensor // nil: no sensor; payments without a probe are refused
	Settler  Settler
	// Settlement is the settlement server's credential (step 12: PubS),
	// fetched over the secure channel and verified against the CA.
	Settlement *Credential
	TTL        time.Duration // consumption QR validity (default 2 min)
	Now        func() time.Time
}

func (p *POS) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// SetSettlementCredential verifies and installs the settlement server's
// credential.
func (p *POS) SetSettlementCredential(raw []byte) error {
	c, err := ParseCredential(raw)
	if err != nil {
		return err
	}
	if err := c.Verify(p.Unit.Root(), KindSettlement, p.now()); err != nil {
		return fmt.Errorf("%w: %w", ErrIllegalServer, err)
	}
	p.Settlement = c
	return nil
}

// NewConsumption issues a consumption QR for amount (minor units) with a
// fresh 128-bit RandCodeP, kept in the store until used or expired (steps 2
// and 3).
func (p *POS) NewConsumption(ctx context.Context, amount int64) (*Consumption, error) {
	ttl := p.TTL
	if ttl <= 0 {
		ttl = DefaultConsumptionTTL
	}
	if ttl > maxConsumptionTTL {
		return nil, fmt.Errorf("%w: consumption QR validity above %v", ErrMalformed, maxConsumptionTTL)
	}
	cert := p.Unit.Certificate()
	if cert == nil {
		return nil, ErrNotCertified
	}
	c := &Consumption{Merchant: p.Merchant, Amount: amount, POSSerial: cert.SerialNumber}
	if _, err := rand.Read(c.RandCode[:]); err != nil {
		return nil, fmt.Errorf("bioqr: RandCode: %w", err)
	}
	// Whole seconds: the QR carries Unix seconds.
	c.Expires = p.now().Add(ttl).Truncate(time.Second)
	if err := phonecode.EncodeConsumption(c, p.Unit.Sign); err != nil {
		return nil, err
	}
	if err := p.Store.Put(ctx, Pending{RandCode: c.RandCode, Amount: c.Amount, Currency: c.Currency, MerchantAccount: c.Account, Expires: c.Expires}); err != nil {
		return nil, err
	}
	return c, nil
}

// Accept takes a scanned payment QR (steps 9–13 and 15): it decrypts it in
// the secure unit, consumes the RandCode (single use, unexpired) and checks
// that the payment is for what this POS asked, adds a probe from its own
// sensor when the phone sent none, seals everything to the settlement
// server and settles.
func (p *POS) Accept(ctx context.Context, qrText string) (*SettleResult, error) {
	q, err := ParsePaymentQR(qrText)
	if err != nil {
		return nil, err
	}
	if q.KeyID != p.Unit.KeyID() {
		return nil, fmt.Errorf("%w: code is encrypted to key %x, this POS is %x", ErrWrongPOS, q.KeyID, p.Unit.KeyID())
	}
	pt, err := p.Unit.Decrypt([]byte(paymentInfo), phonecode.PaymentAAD(q.KeyID), q.Ciphertext)
	if err != nil {
		return nil, err
	}
	m, err := ParsePaymentMessage(pt)
	if err != nil {
		return nil, err
	}
	// The RandCode is printed in the consumption QR for anyone to read: check
	// that a certified phone signed this payment before consuming it, so a
	// bystander cannot burn the customer's code with a forged payment.
	cred, err := ParseCredential(m.PhoneCredential)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIllegalPhone, err)
	}
	if err := cred.Verify(p.Unit.Root(), KindPhone, p.now()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIllegalPhone, err)
	}
	if err := m.VerifySignature(cred); err != nil {
		return nil, err
	}
	pend, err := p.Store.Take(ctx, m.RandCode, p.now())
	if err != nil {
		return nil, err
	}
	cert := p.Unit.Certificate()
	switch {
	case cert == nil:
		return nil, ErrNotCertified
	case m.POSSerial.Cmp(cert.SerialNumber) != 0:
		return nil, fmt.Errorf("%w: made for POS serial %s", ErrWrongPOS, m.POSSerial.Text(16))
	case m.Amount != pend.Amount || m.Currency != pend.Currency || m.MerchantAccount != pend.MerchantAccount:
		return nil, fmt.Errorf("%w: phone paid %d (%s) to %q, POS asked %d (%s) to %q", ErrMismatch,
			m.Amount, m.Currency, m.MerchantAccount, pend.Amount, pend.Currency, pend.MerchantAccount)
	case !m.Expires.Equal(pend.Expires):
		return nil, fmt.Errorf("%w: expiry differs", ErrMismatch)
	}
	env := &Envelope{Message: m.Raw, ProbeSource: ProbeFromPhone, POSTime: p.now()}
	if len(m.Probe) == 0 {
		if p.Sensor == nil {
			return nil, fmt.Errorf("%w: the phone sent none and this POS has no sensor", ErrNoFingerprint)
		}
		probe, err := p.Sensor.Capture(ctx)
		if err != nil {
			return nil, err
		}
		if len(probe) == 0 {
			return nil, ErrNoFingerprint
		}
		env.ProbeSource, env.POSProbe = ProbeFromPOS, probe
	}
	sealed, err := p.SealEnvelope(env)
	if err != nil {
		return nil, err
	}
	return p.Settler.Settle(ctx, sealed)
}

// SealEnvelope encrypts an envelope to the settlement server (step 12),
// bound to this POS's certificate serial.
func (p *POS) SealEnvelope(env *Envelope) ([]byte, error) {
	if p.Settlement == nil {
		return nil, fmt.Errorf("%w: no settlement server credential", ErrIllegalServer)
	}
	if err := p.Settlement.Verify(p.Unit.Root(), KindSettlement, p.now()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIllegalServer, err)
	}
	raw, err := env.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	to, err := p.Settlement.SealKey()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIllegalServer, err)
	}
	return seal(to, []byte(envelopeInfo), phonecode.EnvelopeAAD(p.Unit.Certificate().SerialNumber), raw)
}
