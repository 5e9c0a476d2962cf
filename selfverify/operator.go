package selfverify

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
)

// OperatorConfig configures the network operator N.
type OperatorConfig struct {
	// Key is N's long-term key d_N (see LoadOrCreateOperatorKey). Required.
	Key *ecqv.PrivateKey
	// Ledger moves the money. Required.
	Ledger Ledger
	// Audit records refusals and money movements; nil logs them only.
	Audit audit.Recorder
	// EscrowPrefix names the escrow account per currency: prefix + "." + code
	// (default "selfverify.escrow").
	EscrowPrefix string
	// MaxClockSkew bounds |now − timestamp| of signed requests (default 2 min).
	MaxClockSkew time.Duration
	// TokenTTL is the default token lifetime (24 h); MaxTokenTTL caps requests (30 days).
	TokenTTL, MaxTokenTTL time.Duration
	// ConfirmWindow is how long the user has to confirm a deposit (10 min).
	ConfirmWindow time.Duration
	// DepositGrace is how long after a token's expiry or close vendors may
	// still deposit before the rest of W goes back to the user (24 h).
	DepositGrace time.Duration
	// EnrollTTL is the lifetime of an enrollment code (7 days).
	EnrollTTL time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
	Log *slog.Logger
}

// Operator is the network operator N: registration authority (ECQV issuer),
// token issuer, online spend arbiter and depository.
type Operator struct {
	db     *sqldb.DB
	cfg    OperatorConfig
	key    *ecqv.PrivateKey
	curve  *ecqv.Curve
	issuer *ecqv.Issuer
	log    *slog.Logger

	hot *committer

	mu   sync.Mutex
	ids  map[string]*identity       // registered identities (immutable once stored)
	keys map[string]*ecqv.PublicKey // ID → reconstructed Q_X
	kvn  map[string][]byte          // vendor → K_VN
}

const cacheMax = 100_000

// NewOperator applies the operator's migrations and returns the service.
func NewOperator(ctx context.Context, db *sqldb.DB, cfg OperatorConfig) (*Operator, error) {
	if db == nil || cfg.Key == nil || cfg.Ledger == nil {
		return nil, errors.New("selfverify: operator needs a database, a key and a ledger")
	}
	if cfg.EscrowPrefix == "" {
		cfg.EscrowPrefix = "selfverify.escrow"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.MaxClockSkew, 2*time.Minute)
	def(&cfg.TokenTTL, 24*time.Hour)
	def(&cfg.MaxTokenTTL, 30*24*time.Hour)
	def(&cfg.ConfirmWindow, 10*time.Minute)
	if cfg.DepositGrace < 0 {
		cfg.DepositGrace = 0
	} else if cfg.DepositGrace == 0 {
		cfg.DepositGrace = 24 * time.Hour
	}
	def(&cfg.EnrollTTL, 7*24*time.Hour)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if err := db.Migrate(ctx, "selfverify", operatorMigrations); err != nil {
		return nil, fmt.Errorf("selfverify: %w", err)
	}
	return &Operator{db: db, cfg: cfg, key: cfg.Key, curve: cfg.Key.Curve(), issuer: ecqv.NewIssuer(cfg.Key),
		log: cfg.Log, hot: newCommitter(db), ids: map[string]*identity{}, keys: map[string]*ecqv.PublicKey{}, kvn: map[string][]byte{}}, nil
}

// Close stops the operator's group-commit goroutine (SQLite); it does not
// close the database.
func (o *Operator) Close() error {
	o.hot.close()
	return nil
}

// KeySealer seals the operator's private key at rest (pki.KeyEncryptor
// implements it).
type KeySealer interface {
	Seal(plaintext, ad []byte) ([]byte, error)
	Open(sealed, ad []byte) ([]byte, error)
}

const sealedPrefix = "sealed:"

// LoadOrCreateOperatorKey returns N's long-term key d_N, creating it on first
// use. With seal it is stored sealed (AEAD, bound to the curve name); a key
// stored in clear by an earlier version is resealed on load. With seal nil it
// is stored in clear (tests and throwaway databases only).
func LoadOrCreateOperatorKey(ctx context.Context, db *sqldb.DB, curve *ecqv.Curve, seal KeySealer) (*ecqv.PrivateKey, error) {
	if err := db.Migrate(ctx, "selfverify", operatorMigrations); err != nil {
		return nil, fmt.Errorf("selfverify: %w", err)
	}
	ad := []byte("selfverify operator key " + curve.Name())
	encode := func(d []byte) (string, error) {
		if seal == nil {
			return hex.EncodeToString(d), nil
		}
		b, err := seal.Seal(d, ad)
		if err != nil {
			return "", fmt.Errorf("selfverify: seal operator key: %w", err)
		}
		return sealedPrefix + hex.EncodeToString(b), nil
	}
	var name, stored string
	err := db.QueryRowContext(ctx, `SELECT curve, d FROM sv_operator_key WHERE id = 1`).Scan(&name, &stored)
	if errors.Is(err, sql.ErrNoRows) {
		k, err := curve.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		enc, err := encode(k.Bytes())
		if err != nil {
			return nil, err
		}
		_, err = db.ExecContext(ctx, db.Rebind(`INSERT INTO sv_operator_key (id, curve, d, created_at) VALUES (1, ?, ?, ?)`),
			curve.Name(), enc, ms(time.Now()))
		if err != nil && !sqldb.IsUniqueViolation(err) {
			return nil, fmt.Errorf("selfverify: store operator key: %w", err)
		}
		return LoadOrCreateOperatorKey(ctx, db, curve, seal)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: load operator key: %w", err)
	}
	c, err := ecqv.CurveByName(name)
	if err != nil {
		return nil, err
	}
	if c.Name() != curve.Name() {
		return nil, fmt.Errorf("selfverify: operator key is on %s, %s requested", c.Name(), curve.Name())
	}
	var raw []byte
	if strings.HasPrefix(stored, sealedPrefix) {
		if seal == nil {
			return nil, errors.New("selfverify: the operator key is sealed; the platform's key is needed to open it")
		}
		b, err := hex.DecodeString(strings.TrimPrefix(stored, sealedPrefix))
		if err != nil {
			return nil, fmt.Errorf("selfverify: stored operator key: %w", err)
		}
		if raw, err = seal.Open(b, ad); err != nil {
			return nil, fmt.Errorf("selfverify: open operator key (wrong platform key?): %w", err)
		}
	} else {
		if raw, err = hex.DecodeString(stored); err != nil {
			return nil, fmt.Errorf("selfverify: stored operator key: %w", err)
		}
		if seal != nil { // stored in clear by an earlier version: seal it now
			enc, err := encode(raw)
			if err != nil {
				return nil, err
			}
			if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE sv_operator_key SET d = ? WHERE id = 1`), enc); err != nil {
				return nil, fmt.Errorf("selfverify: reseal operator key: %w", err)
			}
		}
	}
	return c.NewPrivateKey(raw)
}

func (o *Operator) now() time.Time { return o.cfg.Now() }

// Curve is the operator's curve.
func (o *Operator) Curve() *ecqv.Curve { return o.curve }

// Params returns the curve and Q_N.
func (o *Operator) Params() Params {
	return Params{Curve: o.curve.Name(), QN: o.key.Public().Bytes()}
}

func (o *Operator) forUpdate() string {
	if o.db.Dialect == sqldb.Postgres {
		return " FOR UPDATE"
	}
	return ""
}

func (o *Operator) logAudit(ctx context.Context, e AuditEvent) {
	level := slog.LevelInfo
	if e.Outcome != "success" {
		level = slog.LevelWarn
	}
	o.log.Log(ctx, level, "selfverify audit", "event", e.Event, "outcome", e.Outcome, "actor", e.Actor, "resource", e.Resource)
}

func (o *Operator) audit(ctx context.Context, e AuditEvent) {
	o.logAudit(ctx, e)
	if o.cfg.Audit == nil {
		return
	}
	if err := o.cfg.Audit.Record(ctx, e.Entry()); err != nil {
		o.log.Error("selfverify: audit append failed", "event", e.Event, "err", err)
	}
}

func (o *Operator) refuse(ctx context.Context, actor, event, resource string, err error) error {
	o.audit(ctx, AuditEvent{Actor: actor, Event: event, Outcome: "denied", Resource: resource,
		Details: map[string]any{"reason": err.Error()}})
	return err
}

func (o *Operator) escrow(currency string) string { return o.cfg.EscrowPrefix + "." + currency }

// ---- Enrollment and registration ----

// Enroll is the operator's out-of-band step before registration: it binds an
// identity and role to a ledger account and returns a one-time code that the
// entity presents when it registers (the seed's "secure channel"). The
// account must exist. Enrolling an already registered identity fails.
func (o *Operator) Enroll(ctx context.Context, id, role, account string) (string, error) {
	if err := checkID("id", id); err != nil {
		return "", err
	}
	if role != RoleUser && role != RoleVendor {
		return "", invalid("role must be %q or %q", RoleUser, RoleVendor)
	}
	if _, err := o.cfg.Ledger.Account(ctx, account); err != nil {
		return "", fmt.Errorf("selfverify: enroll %s: account %s: %w", id, account, err)
	}
	code, err := randomHex(16)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(code))
	exp := ms(o.now().Add(o.cfg.EnrollTTL))
	err = o.db.InTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, o.db.Rebind(`SELECT COUNT(*) FROM sv_identities WHERE id = ?`), id).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: %s is already registered", ErrBadEnrollment, id)
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`DELETE FROM sv_enrollments WHERE id = ?`), id); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, o.db.Rebind(`INSERT INTO sv_enrollments (id, role, account, code_hash, expires_at) VALUES (?, ?, ?, ?, ?)`),
			id, role, account, hex.EncodeToString(h[:]), exp)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("selfverify: enroll %s: %w", id, err)
	}
	o.audit(ctx, AuditEvent{Actor: "operator", Event: "selfverify.enroll", Outcome: "success", Resource: id,
		Details: map[string]any{"role": role, "account": account}})
	return code, nil
}

// Register answers an ECQV registration request (SEC 4 steps 2): it checks
// the enrollment code, computes P_X and r, and stores (ID_X, P_X) — no
// certificate. The code is single-use.
func (o *Operator) Register(ctx context.Context, req RegisterRequest) (*RegisterResponse, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	rPt, err := o.curve.ParsePoint(req.R)
	if err != nil {
		return nil, fmt.Errorf("%w: r: %v", ErrInvalidMessage, err)
	}
	var account, role, codeHash string
	var expires int64
	var used sql.NullInt64
	err = o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT role, account, code_hash, expires_at, used_at FROM sv_enrollments WHERE id = ?`), req.ID).
		Scan(&role, &account, &codeHash, &expires, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, o.refuse(ctx, req.ID, "selfverify.register", req.ID, ErrBadEnrollment)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: register %s: %w", req.ID, err)
	}
	h := sha256.Sum256([]byte(req.Code))
	want, _ := hex.DecodeString(codeHash)
	if subtle.ConstantTimeCompare(h[:], want) != 1 || used.Valid || expires < ms(o.now()) || role != req.Role {
		return nil, o.refuse(ctx, req.ID, "selfverify.register", req.ID, ErrBadEnrollment)
	}
	acct, err := o.cfg.Ledger.Account(ctx, account)
	if err != nil {
		return nil, fmt.Errorf("selfverify: register %s: account %s: %w", req.ID, account, err)
	}
	resp, err := o.issuer.Issue(rand.Reader, &ecqv.Request{ID: req.ID, R: rPt})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	now := ms(o.now())
	err = o.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_enrollments SET used_at = ? WHERE id = ? AND used_at IS NULL`), now, req.ID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrBadEnrollment
		}
		_, err = tx.ExecContext(ctx, o.db.Rebind(`INSERT INTO sv_identities (id, role, account, currency, p, registered_at) VALUES (?, ?, ?, ?, ?, ?)`),
			req.ID, req.Role, account, acct.Currency, hex.EncodeToString(resp.P.Bytes()), now)
		if sqldb.IsUniqueViolation(err) {
			return ErrBadEnrollment
		}
		return err
	})
	if errors.Is(err, ErrBadEnrollment) {
		return nil, o.refuse(ctx, req.ID, "selfverify.register", req.ID, ErrBadEnrollment)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: register %s: %w", req.ID, err)
	}
	o.audit(ctx, AuditEvent{Actor: req.ID, Event: "selfverify.register", Outcome: "success", Resource: req.ID,
		Details: map[string]any{"role": req.Role, "p": hex.EncodeToString(resp.P.Bytes())}})
	return &RegisterResponse{ID: req.ID, Role: req.Role, Curve: o.curve.Name(), Currency: acct.Currency,
		P: resp.P.Bytes(), R: o.curve.EncodeScalar(resp.R), QN: o.key.Public().Bytes()}, nil
}

type identity struct {
	id, role, account, currency string
	p                           *ecqv.Point
}

func (o *Operator) identity(ctx context.Context, id string) (*identity, error) {
	o.mu.Lock()
	cached, ok := o.ids[id]
	o.mu.Unlock()
	if ok {
		return cached, nil
	}
	var it identity
	var pHex string
	err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT id, role, account, currency, p FROM sv_identities WHERE id = ?`), id).
		Scan(&it.id, &it.role, &it.account, &it.currency, &pHex)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNotRegistered, id)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: look up %s: %w", id, err)
	}
	raw, err := hex.DecodeString(pHex)
	if err != nil {
		return nil, fmt.Errorf("selfverify: stored point of %s: %w", id, err)
	}
	if it.p, err = o.curve.ParsePoint(raw); err != nil {
		return nil, fmt.Errorf("selfverify: stored point of %s: %w", id, err)
	}
	o.mu.Lock()
	if len(o.ids) >= cacheMax {
		clear(o.ids)
	}
	o.ids[id] = &it
	o.mu.Unlock()
	return &it, nil
}

// Identity returns the public directory entry of a registered vendor.
// Users are not listed, so that the directory reveals nobody's customers.
func (o *Operator) Identity(ctx context.Context, id string) (*Identity, error) {
	it, err := o.identity(ctx, id)
	if err != nil {
		return nil, err
	}
	if it.role != RoleVendor {
		return nil, fmt.Errorf("%w: %s", ErrNotRegistered, id)
	}
	return &Identity{ID: it.id, Role: it.role, Curve: o.curve.Name(), P: it.p.Bytes()}, nil
}

// publicKey reconstructs Q_X = e·P_X + Q_N (cached).
func (o *Operator) publicKey(it *identity) (*ecqv.PublicKey, error) {
	cacheKey := it.id + "\x00" + string(it.p.Bytes())
	o.mu.Lock()
	k, ok := o.keys[cacheKey]
	o.mu.Unlock()
	if ok {
		return k, nil
	}
	k, err := ecqv.Reconstruct(o.curve, it.id, it.p, o.key.Public())
	if err != nil {
		return nil, fmt.Errorf("selfverify: reconstruct key of %s: %w", it.id, err)
	}
	o.mu.Lock()
	if len(o.keys) >= cacheMax {
		clear(o.keys)
	}
	o.keys[cacheKey] = k
	o.mu.Unlock()
	return k, nil
}

func (o *Operator) vendorKVN(it *identity) ([]byte, error) {
	o.mu.Lock()
	k, ok := o.kvn[it.id]
	o.mu.Unlock()
	if ok {
		return k, nil
	}
	q, err := o.publicKey(it)
	if err != nil {
		return nil, err
	}
	z, err := o.key.ECDH(q)
	if err != nil {
		return nil, err
	}
	if k, err = deriveKVN(o.curve, z, it.id); err != nil {
		return nil, err
	}
	o.mu.Lock()
	if len(o.kvn) >= cacheMax {
		clear(o.kvn)
	}
	o.kvn[it.id] = k
	o.mu.Unlock()
	return k, nil
}

// ---- Withdrawing ----

func digestHex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Withdraw authenticates U (signature with d_U over the request and a fresh
// timestamp), moves W from U's account into escrow and returns a token signed
// by N. Retrying the identical signed request returns the same token without
// moving money again; any other reuse of its nonce is a replay.
func (o *Operator) Withdraw(ctx context.Context, req WithdrawRequest) (*SignedToken, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	it, err := o.identity(ctx, req.User)
	if err != nil || it.role != RoleUser {
		return nil, o.refuse(ctx, req.User, "selfverify.withdraw", req.User, fmt.Errorf("%w: %s", ErrNotRegistered, req.User))
	}
	q, err := o.publicKey(it)
	if err != nil {
		return nil, err
	}
	if !q.Verify(req.signingBytes(), req.Sig) {
		return nil, o.refuse(ctx, req.User, "selfverify.withdraw", req.User, ErrBadSignature)
	}
	now := o.now()
	if err := fresh(now, req.Timestamp, o.cfg.MaxClockSkew); err != nil {
		return nil, o.refuse(ctx, req.User, "selfverify.withdraw", req.User, err)
	}
	if req.Currency != it.currency {
		return nil, fmt.Errorf("%w: account is in %s", ErrCurrency, it.currency)
	}
	tKey, err := o.curve.ParsePoint(req.TokenKey)
	if err != nil {
		return nil, fmt.Errorf("%w: token_key: %v", ErrInvalidMessage, err)
	}
	ttl := time.Duration(req.TTLSeconds) * time.Second
	if ttl == 0 {
		ttl = o.cfg.TokenTTL
	}
	if ttl > o.cfg.MaxTokenTTL {
		ttl = o.cfg.MaxTokenTTL
	}
	serial, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	tok := Token{Serial: serial, Curve: o.curve.Name(), Currency: req.Currency, Limit: req.Amount,
		IssuedAt: ms(now), ExpiresAt: ms(now.Add(ttl)), Key: tKey.Bytes()}
	sig, err := o.key.Sign(rand.Reader, tok.signingBytes())
	if err != nil {
		return nil, err
	}
	st := &SignedToken{Token: tok, Sig: sig}
	tj, _ := json.Marshal(st)
	digest := digestHex(req.signingBytes())
	err = o.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`INSERT INTO sv_withdrawals (nonce, user_id, digest, serial, created_at) VALUES (?, ?, ?, ?, ?)`),
			req.Nonce, req.User, digest, serial, ms(now)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, o.db.Rebind(`INSERT INTO sv_tokens (serial, user_id, account, currency, w, token_key, token_json, issued_at, expires_at, state)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'funding')`),
			serial, req.User, it.account, req.Currency, req.Amount, hex.EncodeToString(tKey.Bytes()), string(tj), tok.IssuedAt, tok.ExpiresAt)
		return err
	})
	if sqldb.IsUniqueViolation(err) {
		// The nonce was used before: an identical retry gets its token back.
		var prevUser, prevDigest, prevSerial string
		if qerr := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT user_id, digest, serial FROM sv_withdrawals WHERE nonce = ?`), req.Nonce).
			Scan(&prevUser, &prevDigest, &prevSerial); qerr != nil {
			return nil, fmt.Errorf("selfverify: withdraw: %w", qerr)
		}
		if prevUser != req.User || subtle.ConstantTimeCompare([]byte(prevDigest), []byte(digest)) != 1 {
			return nil, o.refuse(ctx, req.User, "selfverify.withdraw", req.User, ErrReplay)
		}
		return o.fund(ctx, prevSerial)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: withdraw: %w", err)
	}
	return o.fund(ctx, serial)
}

// fund moves W into escrow for a token in state 'funding' (idempotent).
func (o *Operator) fund(ctx context.Context, serial string) (*SignedToken, error) {
	var user, account, currency, state, tj string
	var w int64
	err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT user_id, account, currency, w, state, token_json FROM sv_tokens WHERE serial = ?`), serial).
		Scan(&user, &account, &currency, &w, &state, &tj)
	if err != nil {
		return nil, fmt.Errorf("selfverify: withdraw: load token: %w", err)
	}
	var st SignedToken
	if err := json.Unmarshal([]byte(tj), &st); err != nil {
		return nil, fmt.Errorf("selfverify: withdraw: stored token: %w", err)
	}
	switch state {
	case "funding":
	case "failed":
		return nil, ErrInsufficientFunds
	default:
		return &st, nil
	}
	escrow := o.escrow(currency)
	if _, err := o.cfg.Ledger.EnsureAccount(ctx, ledger.NewAccount{ID: escrow, Owner: "selfverify", Kind: ledger.KindEscrow, Currency: currency}); err != nil {
		return nil, fmt.Errorf("selfverify: withdraw: escrow account: %w", err)
	}
	var refusal error
	err = o.moveMoney(ctx, func(tx *sql.Tx) (*AuditEvent, error) {
		refusal = nil
		t, err := o.loadToken(ctx, tx, serial, true)
		if err != nil {
			return nil, err
		}
		if t.state != "funding" {
			return nil, nil // funded (or refused) concurrently
		}
		tr, err := o.cfg.Ledger.TransferTx(ctx, tx, ledger.TransferRequest{IdempotencyKey: "selfverify:withdraw:" + serial,
			From: account, To: escrow, Amount: w, Currency: currency, Memo: "selfverify token " + serial})
		if errors.Is(err, ledger.ErrInsufficientFunds) {
			// A refused transfer writes nothing: the refusal commits alone.
			refusal = fmt.Errorf("%w: %v", ErrInsufficientFunds, err)
			if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_tokens SET state = 'failed' WHERE serial = ? AND state = 'funding'`), serial); err != nil {
				return nil, err
			}
			return &AuditEvent{Actor: user, Event: "selfverify.withdraw", Outcome: "denied", Resource: serial,
				Details: map[string]any{"reason": refusal.Error()}}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("move W to escrow: %w", err)
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_tokens SET state = 'active', escrow_transfer = ? WHERE serial = ? AND state = 'funding'`), tr.ID, serial); err != nil {
			return nil, fmt.Errorf("activate token: %w", err)
		}
		return &AuditEvent{Actor: user, Event: "selfverify.withdraw", Outcome: "success", Resource: serial,
			Details: map[string]any{"w": w, "currency": currency, "transfer": tr.ID}}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("selfverify: withdraw: %w", err)
	}
	if refusal != nil {
		return nil, refusal
	}
	var state2 string
	if err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT state FROM sv_tokens WHERE serial = ?`), serial).Scan(&state2); err != nil {
		return nil, fmt.Errorf("selfverify: withdraw: %w", err)
	}
	if state2 == "failed" {
		return nil, ErrInsufficientFunds
	}
	return &st, nil
}

// moveMoney runs fn, which claims what it moves money for (a state change
// under a row lock) and calls Ledger.TransferTx, in one transaction together
// with the audit record fn returns (nil: nothing happened, nothing to
// record). If anything fails nothing is written.
func (o *Operator) moveMoney(ctx context.Context, fn func(tx *sql.Tx) (*AuditEvent, error)) error {
	var ev *AuditEvent
	err := o.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		if ev, err = fn(tx); err != nil || ev == nil || o.cfg.Audit == nil {
			return err
		}
		if err := o.cfg.Audit.RecordTx(ctx, tx, ev.Entry()); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		return nil
	})
	if err != nil || ev == nil {
		return err
	}
	o.logAudit(ctx, *ev)
	return nil
}

type tokenRow struct {
	serial, user, account, currency, state string
	w, reserved, settled, refunded         int64
	expiresAt                              int64
	closedAt                               sql.NullInt64
	key                                    *ecqv.Point
}

func (o *Operator) loadToken(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, serial string, lock bool) (*tokenRow, error) {
	query := `SELECT serial, user_id, account, currency, state, w, reserved, settled, refunded, expires_at, closed_at, token_key FROM sv_tokens WHERE serial = ?`
	if lock {
		query += o.forUpdate()
	}
	var t tokenRow
	var keyHex string
	err := q.QueryRowContext(ctx, o.db.Rebind(query), serial).Scan(&t.serial, &t.user, &t.account, &t.currency, &t.state,
		&t.w, &t.reserved, &t.settled, &t.refunded, &t.expiresAt, &t.closedAt, &keyHex)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrTokenNotFound, serial)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: load token %s: %w", serial, err)
	}
	raw, _ := hex.DecodeString(keyHex)
	if t.key, err = o.curve.ParsePoint(raw); err != nil {
		return nil, fmt.Errorf("selfverify: stored token key: %w", err)
	}
	return &t, nil
}

// TokenStatus returns N's view of a token.
func (o *Operator) TokenStatus(ctx context.Context, serial string) (*TokenStatus, error) {
	t, err := o.loadToken(ctx, o.db, serial, false)
	if err != nil {
		return nil, err
	}
	return &TokenStatus{Serial: t.serial, State: t.state, Limit: t.w, Reserved: t.reserved, Settled: t.settled,
		Refunded: t.refunded, Currency: t.currency}, nil
}

// kun derives K_UN for a token on N's side: HKDF(x(d_N·T), serial, ID_U).
func (o *Operator) kun(t *tokenRow) ([]byte, error) {
	pk, err := o.curve.NewPublicKey(t.key)
	if err != nil {
		return nil, err
	}
	z, err := o.key.ECDH(pk)
	if err != nil {
		return nil, err
	}
	return deriveKUN(o.curve, z, t.serial, t.user)
}

// ---- Online spend reservation ----

// Reserve records a payment against a token before V releases goods. It is
// N's arbiter step against overspending: the token's reserved sum is raised
// with a conditional UPDATE (reserved + amount ≤ W), so of two concurrent
// payments at two vendors that together exceed W, one is refused. A repeated
// request for the same ref is idempotent.
func (o *Operator) Reserve(ctx context.Context, req ReserveRequest) (*ReserveResponse, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	it, err := o.identity(ctx, req.Vendor)
	if err != nil || it.role != RoleVendor {
		return nil, o.refuse(ctx, req.Vendor, "selfverify.reserve", req.Serial, fmt.Errorf("%w: %s", ErrNotRegistered, req.Vendor))
	}
	kvn, err := o.vendorKVN(it)
	if err != nil {
		return nil, err
	}
	if !macEqual(o.curve, kvn, req.macBytes(), req.MAC) {
		return nil, o.refuse(ctx, req.Vendor, "selfverify.reserve", req.Serial, ErrBadMAC)
	}
	now := ms(o.now())
	if o.db.Dialect == sqldb.Postgres {
		// Fast path, one round trip: reserve and record in one statement.
		// Anything else (a repeated ref, a refusal, a race on the same ref)
		// takes the transaction below, which also explains refusals.
		res, err := o.db.ExecContext(ctx, `WITH upd AS (
			UPDATE sv_tokens SET reserved = reserved + $1
			WHERE serial = $2 AND state = 'active' AND expires_at > $3 AND reserved + $1 <= w AND currency = $4
			AND NOT EXISTS (SELECT 1 FROM sv_reservations WHERE ref = $5)
			RETURNING serial)
			INSERT INTO sv_reservations (ref, serial, vendor, amount, state, created_at)
			SELECT $5, serial, $6, $1, 'reserved', $3 FROM upd`,
			req.Amount, req.Serial, now, it.currency, req.Ref, req.Vendor)
		if err == nil {
			if n, _ := res.RowsAffected(); n == 1 {
				return &ReserveResponse{Ref: req.Ref, State: "reserved"}, nil
			}
		} else if !sqldb.IsUniqueViolation(err) {
			return nil, fmt.Errorf("selfverify: reserve: %w", err)
		}
	}
	var refusal error
	err = o.hot.run(ctx, func(tx *sql.Tx) error {
		refusal = nil
		var serial, vendor string
		var amount int64
		err := tx.QueryRowContext(ctx, o.db.Rebind(`SELECT serial, vendor, amount FROM sv_reservations WHERE ref = ?`), req.Ref).Scan(&serial, &vendor, &amount)
		if err == nil {
			if serial != req.Serial || vendor != req.Vendor || amount != req.Amount {
				refusal = fmt.Errorf("%w: ref %s already reserved with other parameters", ErrReplay, req.Ref)
			}
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		res, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_tokens SET reserved = reserved + ?
			WHERE serial = ? AND state = 'active' AND expires_at > ? AND reserved + ? <= w AND currency = ?`),
			req.Amount, req.Serial, now, req.Amount, it.currency)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			refusal = o.whyNotReservable(ctx, tx, req.Serial, req.Amount, it.currency, now)
			return nil
		}
		_, err = tx.ExecContext(ctx, o.db.Rebind(`INSERT INTO sv_reservations (ref, serial, vendor, amount, state, created_at) VALUES (?, ?, ?, ?, 'reserved', ?)`),
			req.Ref, req.Serial, req.Vendor, req.Amount, now)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("selfverify: reserve: %w", err)
	}
	if refusal != nil {
		return nil, o.refuse(ctx, req.Vendor, "selfverify.reserve", req.Serial, refusal)
	}
	return &ReserveResponse{Ref: req.Ref, State: "reserved"}, nil
}

func (o *Operator) whyNotReservable(ctx context.Context, tx *sql.Tx, serial string, amount int64, currency string, now int64) error {
	t, err := o.loadToken(ctx, tx, serial, false)
	if err != nil {
		return err
	}
	switch {
	case t.currency != currency:
		return fmt.Errorf("%w: token in %s, vendor in %s", ErrCurrency, t.currency, currency)
	case t.state != "active":
		return fmt.Errorf("%w: state %s", ErrTokenClosed, t.state)
	case t.expiresAt <= now:
		return ErrTokenExpired
	default:
		return fmt.Errorf("%w: reserved %d + %d > W %d", ErrOverspend, t.reserved, amount, t.w)
	}
}

// ---- Depositing ----

// depositDigest identifies a deposit's content (vendor, nonce, payments) for
// idempotent retries: a retry may carry a fresh timestamp and signature.
func depositDigest(req *DepositRequest) string {
	c := newCanon("qshield-sv-deposit-content-v1").str(req.Vendor).str(req.Nonce).i64(int64(len(req.Items)))
	for _, it := range req.Items {
		c = c.str(it.Serial).str(it.Ref).str(it.Item).i64(it.Amount)
	}
	return digestHex(c)
}

// Deposit verifies V's signed batch and marks each valid payment deposited (a
// payment can be deposited once); each token's holder is then asked, under
// K_UN, to confirm. A payment that is unknown, another vendor's, already
// deposited or whose token is settled is rejected individually (listed in
// Rejected, audited); when every payment is rejected the whole request fails
// with the first reason. No money moves until the user agrees (Confirm).
// Retrying the same nonce with the same payments returns the same deposit.
func (o *Operator) Deposit(ctx context.Context, req DepositRequest) (*DepositResponse, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	it, err := o.identity(ctx, req.Vendor)
	if err != nil || it.role != RoleVendor {
		return nil, o.refuse(ctx, req.Vendor, "selfverify.deposit", req.Vendor, fmt.Errorf("%w: %s", ErrNotRegistered, req.Vendor))
	}
	q, err := o.publicKey(it)
	if err != nil {
		return nil, err
	}
	if !q.Verify(req.signingBytes(), req.Sig) {
		return nil, o.refuse(ctx, req.Vendor, "selfverify.deposit", req.Vendor, ErrBadSignature)
	}
	now := o.now()
	if err := fresh(now, req.Timestamp, o.cfg.MaxClockSkew); err != nil {
		return nil, o.refuse(ctx, req.Vendor, "selfverify.deposit", req.Vendor, err)
	}
	digest := depositDigest(&req)
	var prevID, prevVendor, prevDigest string
	err = o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT id, vendor, digest FROM sv_deposits WHERE nonce = ?`), req.Nonce).Scan(&prevID, &prevVendor, &prevDigest)
	if err == nil {
		if prevVendor != req.Vendor || prevDigest != digest {
			return nil, o.refuse(ctx, req.Vendor, "selfverify.deposit", req.Vendor, ErrReplay)
		}
		return o.DepositStatus(ctx, prevID)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("selfverify: deposit: %w", err)
	}
	id, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	bySerial := map[string][]DepositItem{}
	for _, item := range req.Items {
		bySerial[item.Serial] = append(bySerial[item.Serial], item)
	}
	serials := make([]string, 0, len(bySerial))
	for s := range bySerial {
		serials = append(serials, s)
	}
	sort.Strings(serials) // lock tokens in a fixed order
	deadline := now.Add(o.cfg.ConfirmWindow)
	var confs []ConfirmationStatus
	var rejected []RejectedItem
	var firstReason error
	err = o.db.InTx(ctx, func(tx *sql.Tx) error {
		confs, rejected, firstReason = confs[:0], rejected[:0], nil
		reject := func(item DepositItem, reason error) {
			if firstReason == nil {
				firstReason = reason
			}
			code := "rejected"
			if c, ok := codes.Lookup(reason); ok {
				code = c.Code
			}
			rejected = append(rejected, RejectedItem{Ref: item.Ref, Serial: item.Serial, Code: code, Reason: reason.Error()})
		}
		for _, serial := range serials {
			t, err := o.loadToken(ctx, tx, serial, true)
			if err != nil && !errors.Is(err, ErrTokenNotFound) {
				return err
			}
			if t == nil || (t.state != "active" && t.state != "closed") {
				reason := fmt.Errorf("%w: token %s", ErrUnknownPayment, serial)
				if t != nil {
					reason = fmt.Errorf("%w: token %s is %s", ErrTokenClosed, serial, t.state)
				}
				for _, item := range bySerial[serial] {
					reject(item, reason)
				}
				continue
			}
			cid, err := randomHex(16)
			if err != nil {
				return err
			}
			var accepted []DepositItem
			var total int64
			for _, item := range bySerial[serial] {
				var vendor, state string
				var amount int64
				err := tx.QueryRowContext(ctx, o.db.Rebind(`SELECT vendor, amount, state FROM sv_reservations WHERE ref = ? AND serial = ?`+o.forUpdate()),
					item.Ref, serial).Scan(&vendor, &amount, &state)
				switch {
				case errors.Is(err, sql.ErrNoRows) || (err == nil && (vendor != req.Vendor || amount != item.Amount)):
					reject(item, fmt.Errorf("%w: %s", ErrUnknownPayment, item.Ref))
					continue
				case err != nil:
					return err
				case state != "reserved":
					reject(item, fmt.Errorf("%w: %s is %s", ErrDoubleDeposit, item.Ref, state))
					continue
				}
				if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_reservations SET state = 'deposited', deposit_id = ?, confirmation_id = ? WHERE ref = ?`),
					id, cid, item.Ref); err != nil {
					return err
				}
				accepted = append(accepted, item)
				total += item.Amount
			}
			if len(accepted) == 0 {
				continue
			}
			kun, err := o.kun(t)
			if err != nil {
				return err
			}
			details := ConfirmationDetails{ID: cid, Serial: serial, Vendor: req.Vendor, Items: accepted, Total: total, Deadline: ms(deadline)}
			pt, _ := json.Marshal(details)
			ct, err := sealRandom(o.curve, kun, pt, confirmAAD(cid, serial))
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, o.db.Rebind(`INSERT INTO sv_confirmations (id, deposit_id, serial, vendor, amount, ciphertext, deadline, state)
				VALUES (?, ?, ?, ?, ?, ?, ?, 'awaiting')`), cid, id, serial, req.Vendor, total, hex.EncodeToString(ct), ms(deadline)); err != nil {
				return err
			}
			confs = append(confs, ConfirmationStatus{ID: cid, Serial: serial, Amount: total, State: StateAwaiting, Deadline: ms(deadline)})
		}
		if len(confs) == 0 {
			return errRollback
		}
		rj, _ := json.Marshal(rejected)
		_, err := tx.ExecContext(ctx, o.db.Rebind(`INSERT INTO sv_deposits (id, vendor, nonce, digest, rejected, created_at) VALUES (?, ?, ?, ?, ?, ?)`),
			id, req.Vendor, req.Nonce, digest, string(rj), ms(now))
		return err
	})
	if errors.Is(err, errRollback) {
		return nil, o.refuse(ctx, req.Vendor, "selfverify.deposit", req.Vendor, firstReason)
	}
	if sqldb.IsUniqueViolation(err) { // concurrent identical deposit
		return o.Deposit(ctx, req)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: deposit: %w", err)
	}
	for _, r := range rejected {
		o.audit(ctx, AuditEvent{Actor: req.Vendor, Event: "selfverify.deposit.item", Outcome: "denied", Resource: r.Ref,
			Details: map[string]any{"deposit": id, "serial": r.Serial, "reason": r.Reason}})
	}
	for _, c := range confs {
		o.audit(ctx, AuditEvent{Actor: req.Vendor, Event: "selfverify.deposit", Outcome: "success", Resource: c.Serial,
			Details: map[string]any{"deposit": id, "confirmation": c.ID, "amount": c.Amount}})
	}
	return &DepositResponse{ID: id, Vendor: req.Vendor, Confirmations: confs, Rejected: rejected}, nil
}

var errRollback = errors.New("selfverify: rollback")

// DepositStatus returns a deposit with the state of its confirmations.
func (o *Operator) DepositStatus(ctx context.Context, id string) (*DepositResponse, error) {
	var vendor, rj string
	err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT vendor, rejected FROM sv_deposits WHERE id = ?`), id).Scan(&vendor, &rj)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: deposit %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: deposit status: %w", err)
	}
	rows, err := o.db.QueryContext(ctx, o.db.Rebind(`SELECT id, serial, amount, state, deadline, transfer_id FROM sv_confirmations WHERE deposit_id = ? ORDER BY serial`), id)
	if err != nil {
		return nil, fmt.Errorf("selfverify: deposit status: %w", err)
	}
	defer rows.Close()
	out := &DepositResponse{ID: id, Vendor: vendor}
	if err := json.Unmarshal([]byte(rj), &out.Rejected); err != nil {
		return nil, fmt.Errorf("selfverify: deposit %s: stored rejections: %w", id, err)
	}
	for rows.Next() {
		var c ConfirmationStatus
		var tr sql.NullString
		if err := rows.Scan(&c.ID, &c.Serial, &c.Amount, &c.State, &c.Deadline, &tr); err != nil {
			return nil, err
		}
		c.TransferID = tr.String
		out.Confirmations = append(out.Confirmations, c)
	}
	return out, rows.Err()
}

// Confirmations lists the undecided confirmation requests of a token,
// encrypted under K_UN; only the token's holder can read them.
func (o *Operator) Confirmations(ctx context.Context, serial string) (*ConfirmationList, error) {
	if err := checkHex("serial", serial, serialHex); err != nil {
		return nil, err
	}
	rows, err := o.db.QueryContext(ctx, o.db.Rebind(`SELECT id, deadline, ciphertext FROM sv_confirmations WHERE serial = ? AND state = 'awaiting' ORDER BY id`), serial)
	if err != nil {
		return nil, fmt.Errorf("selfverify: confirmations: %w", err)
	}
	defer rows.Close()
	out := &ConfirmationList{Confirmations: []ConfirmationRequest{}}
	for rows.Next() {
		c := ConfirmationRequest{Serial: serial}
		var ctHex string
		if err := rows.Scan(&c.ID, &c.Deadline, &ctHex); err != nil {
			return nil, err
		}
		if c.Ciphertext, err = hex.DecodeString(ctHex); err != nil {
			return nil, err
		}
		out.Confirmations = append(out.Confirmations, c)
	}
	return out, rows.Err()
}

// Confirm applies the user's answer, authenticated under K_UN. On agreement
// before the deadline the amount moves from escrow to the vendor; on refusal
// nothing moves and the refusal is audited.
func (o *Operator) Confirm(ctx context.Context, ans ConfirmAnswer) (*ConfirmationStatus, error) {
	if err := ans.validate(); err != nil {
		return nil, err
	}
	var serial, vendor, state string
	var amount, deadline int64
	err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT serial, vendor, amount, state, deadline FROM sv_confirmations WHERE id = ?`), ans.ID).
		Scan(&serial, &vendor, &amount, &state, &deadline)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && serial != ans.Serial) {
		return nil, fmt.Errorf("%w: confirmation %s", ErrNotFound, ans.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: confirm: %w", err)
	}
	t, err := o.loadToken(ctx, o.db, serial, false)
	if err != nil {
		return nil, err
	}
	kun, err := o.kun(t)
	if err != nil {
		return nil, err
	}
	if ans.Total != amount || !macEqual(o.curve, kun, ans.macBytes(), ans.MAC) {
		return nil, o.refuse(ctx, "user:"+serial, "selfverify.confirm", ans.ID, ErrBadMAC)
	}
	now := ms(o.now())
	newState := StateRefused
	if ans.Agree {
		newState = StateAgreed
	}
	var outcome error
	err = o.db.InTx(ctx, func(tx *sql.Tx) error {
		outcome = nil
		if _, err := o.loadToken(ctx, tx, serial, true); err != nil {
			return err
		}
		var cur string
		var dl int64
		if err := tx.QueryRowContext(ctx, o.db.Rebind(`SELECT state, deadline FROM sv_confirmations WHERE id = ?`+o.forUpdate()), ans.ID).Scan(&cur, &dl); err != nil {
			return err
		}
		switch {
		case cur == StateAwaiting && dl <= now:
			outcome = ErrDeadline
			return nil
		case cur == StateAwaiting:
		case cur == newState || (cur == StateSettled && newState == StateAgreed):
			return nil // same answer again: idempotent
		default:
			outcome = fmt.Errorf("%w: %s", ErrDecided, cur)
			return nil
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_confirmations SET state = ?, decided_at = ? WHERE id = ?`), newState, now, ans.ID); err != nil {
			return err
		}
		resState := "refused"
		if ans.Agree {
			resState = "agreed"
			if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_tokens SET settled = settled + ? WHERE serial = ?`), amount, serial); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_reservations SET state = ? WHERE confirmation_id = ?`), resState, ans.ID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("selfverify: confirm: %w", err)
	}
	if outcome != nil {
		if errors.Is(outcome, ErrDeadline) {
			_ = o.expireConfirmations(ctx)
		}
		return nil, o.refuse(ctx, "user:"+serial, "selfverify.confirm", ans.ID, outcome)
	}
	if !ans.Agree {
		o.audit(ctx, AuditEvent{Actor: "user:" + serial, Event: "selfverify.deposit.refused_by_user", Outcome: "denied", Resource: ans.ID,
			Details: map[string]any{"vendor": vendor, "amount": amount, "serial": serial}})
		return o.confirmationStatus(ctx, ans.ID)
	}
	if err := o.settle(ctx, ans.ID); err != nil {
		return nil, err
	}
	return o.confirmationStatus(ctx, ans.ID)
}

func (o *Operator) confirmationStatus(ctx context.Context, id string) (*ConfirmationStatus, error) {
	var c ConfirmationStatus
	var tr sql.NullString
	err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT id, serial, amount, state, deadline, transfer_id FROM sv_confirmations WHERE id = ?`), id).
		Scan(&c.ID, &c.Serial, &c.Amount, &c.State, &c.Deadline, &tr)
	if err != nil {
		return nil, fmt.Errorf("selfverify: confirmation %s: %w", id, err)
	}
	c.TransferID = tr.String
	return &c, nil
}

// settle moves an agreed confirmation's amount from escrow to the vendor
// (idempotent: the ledger transfer's key is derived from the confirmation).
func (o *Operator) settle(ctx context.Context, cid string) error {
	var serial, vendor, state string
	var amount int64
	err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT serial, vendor, amount, state FROM sv_confirmations WHERE id = ?`), cid).Scan(&serial, &vendor, &amount, &state)
	if err != nil {
		return fmt.Errorf("selfverify: settle %s: %w", cid, err)
	}
	if state != StateAgreed {
		return nil
	}
	it, err := o.identity(ctx, vendor)
	if err != nil {
		return err
	}
	err = o.moveMoney(ctx, func(tx *sql.Tx) (*AuditEvent, error) {
		var state string
		if err := tx.QueryRowContext(ctx, o.db.Rebind(`SELECT state FROM sv_confirmations WHERE id = ?`+o.forUpdate()), cid).Scan(&state); err != nil {
			return nil, err
		}
		if state != StateAgreed {
			return nil, nil // settled concurrently
		}
		tr, err := o.cfg.Ledger.TransferTx(ctx, tx, ledger.TransferRequest{IdempotencyKey: "selfverify:settle:" + cid,
			From: o.escrow(it.currency), To: it.account, Amount: amount, Currency: it.currency,
			Memo: "selfverify deposit " + cid + " token " + serial})
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_confirmations SET state = 'settled', transfer_id = ? WHERE id = ? AND state = 'agreed'`), tr.ID, cid); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_reservations SET state = 'settled' WHERE confirmation_id = ?`), cid); err != nil {
			return nil, err
		}
		return &AuditEvent{Actor: "operator", Event: "selfverify.settle", Outcome: "success", Resource: cid,
			Details: map[string]any{"vendor": vendor, "amount": amount, "serial": serial, "transfer": tr.ID}}, nil
	})
	if err != nil {
		o.audit(ctx, AuditEvent{Actor: "operator", Event: "selfverify.settle", Outcome: "failure", Resource: cid, Details: map[string]any{"error": err.Error()}})
		return fmt.Errorf("selfverify: settle %s: %w", cid, err)
	}
	return nil
}

// ---- Closing and sweeping ----

// CloseToken ends a token at its holder's request (signed with t): no further
// payments are reserved, and the rest of W goes back to the user once every
// deposited payment is decided (at once when nothing is outstanding).
func (o *Operator) CloseToken(ctx context.Context, req CloseRequest) (*TokenStatus, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	t, err := o.loadToken(ctx, o.db, req.Serial, false)
	if err != nil {
		return nil, err
	}
	pk, err := o.curve.NewPublicKey(t.key)
	if err != nil {
		return nil, err
	}
	if !pk.Verify(req.signingBytes(), req.Sig) {
		return nil, o.refuse(ctx, "user:"+req.Serial, "selfverify.close", req.Serial, ErrBadSignature)
	}
	if err := fresh(o.now(), req.Timestamp, o.cfg.MaxClockSkew); err != nil {
		return nil, o.refuse(ctx, "user:"+req.Serial, "selfverify.close", req.Serial, err)
	}
	if _, err := o.db.ExecContext(ctx, o.db.Rebind(`UPDATE sv_tokens SET state = 'closed', closed_at = ? WHERE serial = ? AND state = 'active'`),
		ms(o.now()), req.Serial); err != nil {
		return nil, fmt.Errorf("selfverify: close: %w", err)
	}
	if err := o.refundIfDone(ctx, req.Serial); err != nil {
		return nil, err
	}
	return o.TokenStatus(ctx, req.Serial)
}

// Sweep does the operator's timed work: it expires unanswered confirmations
// (no money moves; audited), retries interrupted settlements, fundings and
// refunds, and refunds the rest of W of tokens that are expired or closed and
// have nothing outstanding (or whose deposit grace period is over).
func (o *Operator) Sweep(ctx context.Context) error {
	if err := o.expireConfirmations(ctx); err != nil {
		return err
	}
	ids, err := o.strings(ctx, `SELECT id FROM sv_confirmations WHERE state = 'agreed'`)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		errs = append(errs, o.settle(ctx, id))
	}
	funding, err := o.strings(ctx, `SELECT serial FROM sv_tokens WHERE state = 'funding' AND issued_at < ?`, ms(o.now().Add(-time.Minute)))
	if err != nil {
		return err
	}
	for _, s := range funding {
		if _, err := o.fund(ctx, s); err != nil && !errors.Is(err, ErrInsufficientFunds) {
			errs = append(errs, err)
		}
	}
	now := ms(o.now())
	serials, err := o.strings(ctx, `SELECT serial FROM sv_tokens WHERE state = 'refunding' OR state = 'closed' OR (state = 'active' AND expires_at <= ?)`, now)
	if err != nil {
		return err
	}
	for _, s := range serials {
		errs = append(errs, o.refundIfDone(ctx, s))
	}
	return errors.Join(errs...)
}

// Run calls Sweep every interval until ctx is done.
func (o *Operator) Run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = 30 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := o.Sweep(ctx); err != nil {
				o.log.Error("selfverify: sweep", "err", err)
			}
		}
	}
}

func (o *Operator) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := o.db.QueryContext(ctx, o.db.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("selfverify: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func (o *Operator) expireConfirmations(ctx context.Context) error {
	now := ms(o.now())
	type exp struct {
		id, serial, vendor string
		amount             int64
	}
	var expired []exp
	err := o.db.InTx(ctx, func(tx *sql.Tx) error {
		expired = expired[:0]
		rows, err := tx.QueryContext(ctx, o.db.Rebind(`SELECT id, serial, vendor, amount FROM sv_confirmations WHERE state = 'awaiting' AND deadline <= ?`), now)
		if err != nil {
			return err
		}
		for rows.Next() {
			var e exp
			if err := rows.Scan(&e.id, &e.serial, &e.vendor, &e.amount); err != nil {
				rows.Close()
				return err
			}
			expired = append(expired, e)
		}
		rows.Close()
		for _, e := range expired {
			if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_confirmations SET state = 'expired', decided_at = ? WHERE id = ? AND state = 'awaiting'`), now, e.id); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_reservations SET state = 'unconfirmed' WHERE confirmation_id = ?`), e.id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("selfverify: expire confirmations: %w", err)
	}
	for _, e := range expired {
		o.audit(ctx, AuditEvent{Actor: "operator", Event: "selfverify.deposit.unconfirmed", Outcome: "denied", Resource: e.id,
			Details: map[string]any{"vendor": e.vendor, "amount": e.amount, "serial": e.serial, "reason": "no answer from the user before the deadline"}})
	}
	return nil
}

// refundIfDone returns W − settled to the user once a closed or expired token
// has nothing outstanding, or its grace period is over.
func (o *Operator) refundIfDone(ctx context.Context, serial string) error {
	now := o.now()
	var ready bool
	var t *tokenRow
	err := o.db.InTx(ctx, func(tx *sql.Tx) error {
		ready = false
		var err error
		if t, err = o.loadToken(ctx, tx, serial, true); err != nil {
			return err
		}
		if t.state == "refunding" {
			ready = true
			return nil
		}
		end := t.expiresAt
		if t.state == "closed" && t.closedAt.Valid && t.closedAt.Int64 < end {
			end = t.closedAt.Int64
		}
		if !(t.state == "closed" || (t.state == "active" && end <= ms(now))) {
			return nil
		}
		var open, undecided int
		if err := tx.QueryRowContext(ctx, o.db.Rebind(`SELECT COUNT(*) FROM sv_reservations WHERE serial = ? AND state IN ('reserved', 'deposited')`), serial).Scan(&open); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, o.db.Rebind(`SELECT COUNT(*) FROM sv_confirmations WHERE serial = ? AND state IN ('awaiting', 'agreed')`), serial).Scan(&undecided); err != nil {
			return err
		}
		graceOver := ms(now) >= end+o.cfg.DepositGrace.Milliseconds()
		if undecided > 0 || (open > 0 && !graceOver) {
			return nil
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_reservations SET state = 'lapsed' WHERE serial = ? AND state = 'reserved'`), serial); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_tokens SET state = 'refunding' WHERE serial = ?`), serial); err != nil {
			return err
		}
		ready = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("selfverify: refund %s: %w", serial, err)
	}
	if !ready {
		return nil
	}
	amount := t.w - t.settled
	err = o.moveMoney(ctx, func(tx *sql.Tx) (*AuditEvent, error) {
		t, err := o.loadToken(ctx, tx, serial, true)
		if err != nil {
			return nil, err
		}
		if t.state != "refunding" {
			return nil, nil // refunded concurrently
		}
		var trID string
		if amount > 0 {
			tr, err := o.cfg.Ledger.TransferTx(ctx, tx, ledger.TransferRequest{IdempotencyKey: "selfverify:refund:" + serial,
				From: o.escrow(t.currency), To: t.account, Amount: amount, Currency: t.currency, Memo: "selfverify token " + serial + " refund"})
			if err != nil {
				return nil, err
			}
			trID = tr.ID
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_tokens SET state = 'refunded', refunded = ?, refund_transfer = ? WHERE serial = ? AND state = 'refunding'`),
			amount, trID, serial); err != nil {
			return nil, err
		}
		return &AuditEvent{Actor: "operator", Event: "selfverify.refund", Outcome: "success", Resource: serial,
			Details: map[string]any{"amount": amount, "settled": t.settled, "w": t.w, "transfer": trID}}, nil
	})
	if err != nil {
		return fmt.Errorf("selfverify: refund %s: %w", serial, err)
	}
	return nil
}
