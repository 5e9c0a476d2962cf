package qmsp

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"github.com/qshield/qshield/qkd"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/qmsp/paycode"
	"github.com/qshield/qshield/sqldb"
)

// Payment errors; test with errors.Is.
var (
	ErrExpired      = errors.New("qmsp: payment code expired")
	ErrKeyUsed      = errors.New("qmsp: quantum key already used")
	ErrUnknownKey   = errors.New("qmsp: unknown quantum key reference")
	ErrBadSignature = errors.New("qmsp: gateway signature does not verify")
	ErrUnknownPayer = errors.New("qmsp: payer not registered to this phone")
	ErrPayerExists  = errors.New("qmsp: payer number already bound to another account or phone")
	ErrMerchant     = errors.New("qmsp: payment names another merchant than the gateway's")
	ErrCurrency     = errors.New("qmsp: unsupported currency")
	ErrRefused      = errors.New("qmsp: payment refused by the ledger")
	// ErrAmount: the payment's amount or currency is not the one the
	// gateway signed into the code.
	ErrAmount = paycode.ErrAmount
)

// PaymentRequest is what the phone sends to the payment platform (step 6);
// see [paycode.PaymentRequest].
type PaymentRequest = paycode.PaymentRequest

// Receipt is the platform's answer to a completed payment.
type Receipt struct {
	KeyRef     string `json:"key_ref"`
	TransferID string `json:"transfer_id"`
	Payer      uint64 `json:"payer"`
	Merchant   uint32 `json:"merchant"`
	Amount     int64  `json:"amount"`
	Currency   string `json:"currency"`
}

// PPSConfig configures the payment platform server.
type PPSConfig struct {
	DB *sqldb.DB
	// Keys is the PPS's key manager client (the PPS is the slave SAE).
	Keys SlaveKeys
	// MasterSAE is the CSS's SAE ID.
	MasterSAE string
	Ledger    *ledger.Ledger
	// StorageKey (32 bytes) seals fetched quantum keys at rest.
	StorageKey []byte
	Audit      audit.Recorder
	Log        *slog.Logger
	Now        func() time.Time
	// MaxValidity bounds how far ahead a displayed code may expire (default 10 min).
	MaxValidity time.Duration
}

// PPS is the payment platform server: it decrypts and verifies payments and
// moves the money through the ledger (seed §3.4 steps 6–8).
type PPS struct {
	cfg   PPSConfig
	seal  *sealer
	batch *sqldb.Batcher
	now   func() time.Time

	fetchMu sync.Mutex
	fetches map[string]*sync.Mutex

	payc *sqldb.GroupCommitter[*payJob] // paybatch.go
	// batchHook, set by tests before the first payment, sees each batch's
	// size before it runs.
	batchHook func(n int)

	// Kept in memory (paybatch.go): registered gateways' keys, fetched
	// key batches, and prepared statements (SQLite).
	cacheMu sync.RWMutex
	gwKeys  map[string]*gatewayKey
	batches map[string]*Batch
	stmtMu  sync.Mutex
	stmts   map[string]*sql.Stmt
}

// NewPPS opens the PPS on cfg.DB (applying migrations).
func NewPPS(ctx context.Context, cfg PPSConfig) (*PPS, error) {
	if cfg.DB == nil || cfg.Keys == nil || cfg.MasterSAE == "" || cfg.Ledger == nil {
		return nil, errors.New("qmsp: PPS needs a database, a key manager client, the master SAE ID and a ledger")
	}
	if cfg.MaxValidity <= 0 {
		cfg.MaxValidity = 10 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s, err := newSealer(cfg.StorageKey)
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, cfg.DB); err != nil {
		return nil, err
	}
	p := &PPS{cfg: cfg, seal: s, batch: cfg.DB.NewBatcher(256), now: nowOr(cfg.Now), fetches: map[string]*sync.Mutex{},
		gwKeys: map[string]*gatewayKey{}, batches: map[string]*Batch{}, stmts: map[string]*sql.Stmt{}}
	p.payc = newPayCommitter(p)
	return p, nil
}

// Close stops the PPS's committers.
func (p *PPS) Close() error {
	p.payc.Close()
	err := p.batch.Close()
	p.stmtMu.Lock()
	defer p.stmtMu.Unlock()
	for q, st := range p.stmts {
		st.Close()
		delete(p.stmts, q)
	}
	return err
}

// RegisterGateway records gateway gi (setup step 2 on the platform side): its
// merchant number, the merchant's ledger account and the gateway's
// certificate, whose public key verifies the codes it displays.
// Registering the same gateway again with the same key, merchant and account
// succeeds and changes nothing (a setup resumed after a crash); anything
// else already registered under gi is ErrGatewayExists.
func (p *PPS) RegisterGateway(ctx context.Context, gi string, merchant uint32, merchantAccount string, cert *x509.Certificate) error {
	if err := checkGatewayID(gi); err != nil {
		return err
	}
	if _, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok {
		return fmt.Errorf("qmsp: gateway %s certificate has no ECDSA key", gi)
	}
	if _, err := p.cfg.Ledger.Account(ctx, merchantAccount); err != nil {
		return fmt.Errorf("qmsp: merchant account for %s: %w", gi, err)
	}
	pub, err := gatewayPublicKey(cert)
	if err != nil {
		return err
	}
	err = p.batch.Do(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, p.cfg.DB.Rebind(`INSERT INTO qmsp_pps_gateways (gi, merchant, merchant_account, public_key, status, created_at) VALUES (?, ?, ?, ?, 'active', ?)`),
			gi, int64(merchant), merchantAccount, pub, p.now().UnixNano())
		return err
	})
	if sqldb.IsUniqueViolation(err) {
		// The same registration again (a resumed setup) succeeds and
		// changes nothing; another key, merchant or account is refused.
		if same, rerr := p.registeredAs(ctx, gi, merchant, merchantAccount, pub); rerr != nil {
			return rerr
		} else if same {
			return nil
		}
		return fmt.Errorf("%w: %s", ErrGatewayExists, gi)
	}
	return err
}

// RegisterPayer binds payer number payer to a ledger account and to the phone
// (its client certificate's common name) allowed to spend from it.
//
// Registering a binding that already exists succeeds and changes nothing
// (several nodes, or a retried enrolment, may register the same phone); a
// payer number already bound to another account or phone fails with
// ErrPayerExists and changes nothing. One transaction inserts the row if the
// number is free and reads back the binding that holds, so nodes registering
// the same number at once all get the answer of the one that won.
func (p *PPS) RegisterPayer(ctx context.Context, payer uint64, account, phone string) error {
	if payer > math.MaxInt64 {
		return fmt.Errorf("%w: payer number %d out of range", ErrFormat, payer)
	}
	if account == "" || phone == "" {
		return fmt.Errorf("%w: payer %d needs an account and a phone", ErrFormat, payer)
	}
	if _, err := p.cfg.Ledger.Account(ctx, account); err != nil {
		return fmt.Errorf("qmsp: payer account: %w", err)
	}
	var boundAccount, boundPhone string
	err := p.batch.Do(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, p.cfg.DB.Rebind(`INSERT INTO qmsp_pps_payers (payer, account, phone) VALUES (?, ?, ?)
			ON CONFLICT (payer) DO NOTHING`), int64(payer), account, phone); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, p.cfg.DB.Rebind(`SELECT account, phone FROM qmsp_pps_payers WHERE payer = ?`), int64(payer)).Scan(&boundAccount, &boundPhone)
	})
	if err != nil {
		return fmt.Errorf("qmsp: register payer %d: %w", payer, err)
	}
	if boundAccount != account || boundPhone != phone {
		return fmt.Errorf("%w: payer %d is bound to another account or phone", ErrPayerExists, payer)
	}
	return nil
}

// PayerBinding returns the account and phone payer number payer is bound
// to, or ErrUnknownPayer.
func (p *PPS) PayerBinding(ctx context.Context, payer uint64) (account, phone string, err error) {
	if payer > math.MaxInt64 {
		return "", "", fmt.Errorf("%w: payer number %d out of range", ErrUnknownPayer, payer)
	}
	err = p.cfg.DB.QueryRowContext(ctx, p.cfg.DB.Rebind(`SELECT account, phone FROM qmsp_pps_payers WHERE payer = ?`), int64(payer)).Scan(&account, &phone)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", fmt.Errorf("%w: payer %d", ErrUnknownPayer, payer)
	}
	if err != nil {
		return "", "", fmt.Errorf("qmsp: payer %d: %w", payer, err)
	}
	return account, phone, nil
}

// CurrencyCode returns the numeric ISO 4217 code of an alphabetic one.
func CurrencyCode(alpha string) (uint16, bool) {
	c, err := money.Lookup(alpha)
	return c.Numeric, err == nil
}

// material returns the quantum key batch keyID, fetching it from the key
// manager on first use (the key manager hands it out once) and keeping it
// sealed in the database.
func (p *PPS) material(ctx context.Context, keyID string) ([]byte, error) {
	if b, err := p.storedMaterial(ctx, keyID); err == nil || !errors.Is(err, sql.ErrNoRows) {
		return b, err
	}
	p.fetchMu.Lock()
	mu, ok := p.fetches[keyID]
	if !ok {
		mu = &sync.Mutex{}
		p.fetches[keyID] = mu
	}
	p.fetchMu.Unlock()
	mu.Lock()
	defer func() {
		mu.Unlock()
		p.fetchMu.Lock()
		delete(p.fetches, keyID)
		p.fetchMu.Unlock()
	}()
	// Several PPS processes on one PostgreSQL database: a session advisory
	// lock per key ID makes the fetch and store happen once across them
	// (the key manager hands a key out once; a second fetcher would fail).
	if p.cfg.DB.Dialect == sqldb.Postgres {
		unlock, err := p.lockKey(ctx, keyID)
		if err != nil {
			return nil, fmt.Errorf("qmsp: lock quantum key %s: %w", keyID, err)
		}
		defer unlock()
	}
	if b, err := p.storedMaterial(ctx, keyID); err == nil || !errors.Is(err, sql.ErrNoRows) {
		return b, err
	}
	keys, err := p.cfg.Keys.DecKeys(ctx, p.cfg.MasterSAE, keyID)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnknownKey, keyID, err)
	}
	if len(keys) != 1 || keys[0].ID != keyID {
		return nil, fmt.Errorf("%w: key manager answered %d keys for %s", ErrUnknownKey, len(keys), keyID)
	}
	b := keys[0].Key
	if len(b) < MinBatchSize || len(b) > MaxBatchSize {
		return nil, fmt.Errorf("%w: key %s has %d bytes", ErrUnknownKey, keyID, len(b))
	}
	sealed, err := p.seal.seal(b, "pps-key/"+keyID)
	if err != nil {
		return nil, err
	}
	// The key manager has handed the key out: store it even if the caller
	// gave up meanwhile (a cancelled payment request lost the batch). A
	// process that dies right here fetches it again if the key manager
	// keeps delivered keys for a while (kme.Config.RedeliverWithin, which
	// the platform sets).
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err = p.batch.Do(sctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(sctx, p.cfg.DB.Rebind(`INSERT INTO qmsp_pps_keys (key_id, material, units, fetched_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (key_id) DO NOTHING`),
			keyID, sealed, (len(b)-PresetKeySize)/UnitSize, p.now().UnixNano())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("qmsp: store quantum key %s: %w", keyID, err)
	}
	return b, nil
}

// lockKey takes a PostgreSQL session advisory lock for keyID on a
// dedicated connection and returns its release.
func (p *PPS) lockKey(ctx context.Context, keyID string) (func(), error) {
	conn, err := p.cfg.DB.Conn(ctx)
	if err != nil {
		return nil, err
	}
	const k = `hashtext('qshield qmsp pps key ' || $1)`
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(`+k+`)`, keyID); err != nil {
		conn.Close()
		return nil, err
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.ExecContext(uctx, `SELECT pg_advisory_unlock(`+k+`)`, keyID); err != nil {
			// Closing the session releases the lock; do not return it to the pool.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		conn.Close()
	}, nil
}

func (p *PPS) storedMaterial(ctx context.Context, keyID string) ([]byte, error) {
	var sealed []byte
	err := p.cfg.DB.QueryRowContext(ctx, p.cfg.DB.Rebind(`SELECT material FROM qmsp_pps_keys WHERE key_id = ?`), keyID).Scan(&sealed)
	if err != nil {
		return nil, err
	}
	return p.seal.open(sealed, "pps-key/"+keyID)
}

// gateway reads gateway gi's registration and parses its key.
func (p *PPS) gateway(ctx context.Context, gi string) (gatewayRow, *ecdsa.PublicKey, error) {
	var g gatewayRow
	var merchant int64
	err := p.cfg.DB.QueryRowContext(ctx, p.cfg.DB.Rebind(`SELECT merchant, merchant_account, public_key, status FROM qmsp_pps_gateways WHERE gi = ?`), gi).Scan(&merchant, &g.account, &g.pubDER, &g.status)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && g.status != "active") {
		return g, nil, fmt.Errorf("%w: %s", ErrUnknownGateway, gi)
	}
	if err != nil {
		return g, nil, err
	}
	g.merchant = uint32(merchant)
	pk, err := x509.ParsePKIXPublicKey(g.pubDER)
	if err != nil {
		return g, nil, err
	}
	pub, ok := pk.(*ecdsa.PublicKey)
	if !ok {
		return g, nil, fmt.Errorf("qmsp: gateway %s key is not ECDSA", gi)
	}
	return g, pub, nil
}

// Pay verifies and executes a payment (steps 6–8). phone is the client
// certificate identity of the caller ("" skips the phone binding, for
// in-process use). The quantum key unit is burned by the first attempt that
// verifies, whatever the ledger then says, as wallets burn a payment code
// even when the payment fails.
func (p *PPS) Pay(ctx context.Context, phone, idemKey string, req PaymentRequest) (*Receipt, error) {
	r, err := p.pay(ctx, phone, idemKey, req)
	if err != nil {
		// Accepted payments are audited inside their claim transaction.
		audited(ctx, p.cfg.Audit, phoneOr(phone), "qmsp.pay", "denied", req.Gateway,
			map[string]string{"key": req.KeyID + "/" + strconv.Itoa(int(req.Unit)), "reason": err.Error()})
	}
	return r, err
}

func phoneOr(s string) string {
	if s == "" {
		return "phone"
	}
	return s
}

func (p *PPS) pay(ctx context.Context, phone, idemKey string, req PaymentRequest) (*Receipt, error) {
	j, err := p.verify(ctx, phone, idemKey, req)
	if err != nil {
		return nil, err
	}
	// The committer checks the gateway and the payer as committed, claims
	// the unit, moves the money and writes the audit record, in one
	// transaction shared with concurrent payments (paybatch.go). A refusal
	// by the ledger still commits the claim, marked refused: the unit is
	// burned either way.
	if err := p.payc.Do(j.ctx, j); err != nil {
		return nil, err
	}
	return j.rc, j.err
}

// verify checks a payment's code and cryptography (the gateway's signature
// and expiry, the one-time tag) and returns it ready for the committer.
func (p *PPS) verify(ctx context.Context, phone, idemKey string, req PaymentRequest) (*payJob, error) {
	if err := checkGatewayID(req.Gateway); err != nil {
		return nil, err
	}
	keyID, err := parseKeyID(req.KeyID)
	if err != nil {
		return nil, err
	}
	if qkd.FormatKeyID(keyID) != req.KeyID {
		return nil, fmt.Errorf("%w: key ID must be lowercase canonical", ErrFormat)
	}
	g, err := p.gatewayKey(ctx, req.Gateway)
	if err != nil {
		return nil, err
	}
	d := Display{Gateway: req.Gateway, Merchant: req.Merchant, Amount: req.Amount, Currency: req.Currency, Ref: KeyRef{KeyID: keyID, Unit: req.Unit}, Expires: time.Unix(req.Expires, 0)}
	if err := d.CheckSale(); err != nil {
		return nil, err
	}
	digest := sha256.Sum256(d.SignedBytes())
	if !ecdsa.VerifyASN1(g.pub, digest[:], req.GatewaySig) {
		return nil, fmt.Errorf("%w: code claims gateway %s", ErrBadSignature, req.Gateway)
	}
	now := p.now()
	if !now.Before(d.Expires) {
		return nil, fmt.Errorf("%w: at %s", ErrExpired, d.Expires.UTC().Format(time.RFC3339))
	}
	if d.Expires.Sub(now) > p.cfg.MaxValidity {
		return nil, fmt.Errorf("%w: code valid beyond the platform's %s limit", ErrExpired, p.cfg.MaxValidity)
	}
	if req.Merchant != g.merchant {
		return nil, fmt.Errorf("%w: code names merchant %d, gateway belongs to %d", ErrMerchant, req.Merchant, g.merchant)
	}
	batch, err := p.keyBatch(ctx, req.KeyID)
	if err != nil {
		return nil, err
	}
	if int(req.Unit) >= len(batch.Units) {
		return nil, fmt.Errorf("%w: unit %d of a %d-unit key", ErrUnknownKey, req.Unit, len(batch.Units))
	}
	m, err := OpenPayment(req.Gateway, d.Ref, req.Expires, &batch.Units[req.Unit], req.Ciphertext, req.Tag)
	if err != nil {
		return nil, err
	}
	if m.Merchant != g.merchant {
		return nil, fmt.Errorf("%w: M names merchant %d", ErrMerchant, m.Merchant)
	}
	if d.Amount != 0 && (m.Amount != d.Amount || m.Currency != d.Currency) {
		return nil, fmt.Errorf("%w: M pays %d (currency %d), the code asks %d (currency %d)", ErrAmount, m.Amount, m.Currency, d.Amount, d.Currency)
	}
	currency, err := money.ByNumeric(m.Currency)
	if err != nil {
		return nil, fmt.Errorf("%w: %d", ErrCurrency, m.Currency)
	}
	if m.Payer > math.MaxInt64 {
		return nil, fmt.Errorf("%w: payer %d", ErrUnknownPayer, m.Payer)
	}
	return &payJob{ctx: ctx, phone: phone, idemKey: idemKey, keyID: req.KeyID, unit: int(req.Unit), ref: d.Ref.String(),
		gi: req.Gateway, pubDER: g.pubDER, m: *m, cur: currency, reqHash: requestHash(idemKey, &req), now: now}, nil
}

func requestHash(idemKey string, r *PaymentRequest) []byte {
	h := sha256.New()
	h.Write([]byte(idemKey))
	h.Write([]byte{0})
	h.Write(r.Ciphertext)
	h.Write(r.Tag)
	return h.Sum(nil)
}

// UnitUsed reports whether a payment unit has been spent (the gateway page
// uses it to move to the next code).
func (p *PPS) UnitUsed(ctx context.Context, ref KeyRef) (bool, error) {
	var n int
	err := p.cfg.DB.QueryRowContext(ctx, p.cfg.DB.Rebind(`SELECT COUNT(*) FROM qmsp_payments WHERE key_id = ? AND unit = ?`), qkd.FormatKeyID(ref.KeyID), int(ref.Unit)).Scan(&n)
	return n > 0, err
}
