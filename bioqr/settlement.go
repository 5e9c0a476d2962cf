package bioqr

import (
	"context"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/bioqr/phonecode"
	"github.com/qshield/qshield/consent"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
)

// Payer is the part of the ledger the settlement server uses. TransferTx
// moves money inside the settlement's own transaction (*ledger.Ledger
// implements it).
type Payer interface {
	TransferTx(ctx context.Context, tx *sql.Tx, req ledger.TransferRequest) (ledger.Transfer, error)
	Account(ctx context.Context, id string) (ledger.Account, error)
}

// SettlementConfig configures NewSettlement.
type SettlementConfig struct {
	DB      *sqldb.DB
	CA      *pki.CA
	Ledger  Payer
	Audit   audit.Recorder // nil: LogAuditor on Log
	Unit    *SecureUnit
	Matcher Matcher // nil: NewFingerprintMatcher()
	Log     *slog.Logger
	Now     func() time.Time
	// Subject is the settlement server's device name (default "settlement").
	Subject string
	// MaxFailures fingerprint mismatches within FailureWindow lock a phone
	// (defaults 5 and 15 minutes).
	MaxFailures   int
	FailureWindow time.Duration
	// SettleGrace is how long after a consumption QR's expiry its payment may
	// still reach the server (network delay; default 1 minute).
	SettleGrace time.Duration
	// Consent is the platform's enrolment-code store (nil: one on DB and
	// Ledger, audited to Audit).
	Consent *consent.Store
}

// Settlement is the payment settlement server (支付结算服务器 3) and, since
// it runs next to the platform CA, the certification centre's registration
// desk for phones (steps B–E) and POS terminals (steps b–d).
type Settlement struct {
	cfg       SettlementConfig
	certifier *Certifier
	display   *displayStore
}

const (
// AttrMerchantAccount is the POS certificate attribute naming the ledger
// account its payments go to.
)

var migrations = []sqldb.Migration{{Version: 1, SQL: `CREATE TABLE bioqr_enrolments (
		serial TEXT PRIMARY KEY,
		subject TEXT NOT NULL,
		cert_der BYTEA NOT NULL,
		template_sealed BYTEA NOT NULL,
		accounts TEXT NOT NULL,
		created_at TEXT NOT NULL);
	CREATE TABLE bioqr_settlements (
		rand_code TEXT PRIMARY KEY,
		message_hash TEXT NOT NULL,
		pos_serial TEXT NOT NULL,
		phone_serial TEXT NOT NULL,
		code TEXT NOT NULL,
		result TEXT NOT NULL,
		created_at TEXT NOT NULL);
	CREATE TABLE bioqr_failures (
		phone_serial TEXT NOT NULL,
		at_unix BIGINT NOT NULL);
	CREATE INDEX bioqr_failures_phone ON bioqr_failures (phone_serial, at_unix)`},
	{Version: 2, SQL: consentMigration},
	{Version: 3, SQL: `DROP TABLE bioqr_enrolment_codes`}}

// NewSettlement migrates the bioqr tables and, when the unit holds no valid
// credential from this CA yet, certifies the settlement server's own key
// (steps a–d for the server).
func NewSettlement(ctx context.Context, cfg SettlementConfig) (*Settlement, error) {
	if cfg.DB == nil || cfg.CA == nil || cfg.Ledger == nil || cfg.Unit == nil {
		return nil, errors.New("bioqr: settlement needs a database, a CA, a ledger and a secure unit")
	}
	if cfg.Unit.Kind() != KindSettlement {
		return nil, fmt.Errorf("%w: the settlement secure unit is a %s unit", ErrMalformed, cfg.Unit.Kind())
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Audit == nil {
		cfg.Audit = LogAuditor{Log: cfg.Log}
	}
	if cfg.Matcher == nil {
		cfg.Matcher = NewFingerprintMatcher()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Subject == "" {
		cfg.Subject = "settlement"
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 5
	}
	if cfg.FailureWindow <= 0 {
		cfg.FailureWindow = 15 * time.Minute
	}
	if cfg.SettleGrace <= 0 {
		cfg.SettleGrace = time.Minute
	}
	if err := cfg.DB.Migrate(ctx, "bioqr", migrations); err != nil {
		return nil, fmt.Errorf("bioqr: migrate: %w", err)
	}
	if cfg.Consent == nil {
		c, err := consent.New(ctx, consent.Config{DB: cfg.DB, Accounts: cfg.Ledger, Audit: cfg.Audit, Log: cfg.Log, Now: cfg.Now})
		if err != nil {
			return nil, err
		}
		cfg.Consent = c
	}
	s := &Settlement{cfg: cfg, certifier: &Certifier{CA: cfg.CA}, display: newDisplayStore()}
	if err := s.ensureCertified(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Settlement) ensureCertified(ctx context.Context) error {
	u := s.cfg.Unit
	now := s.cfg.Now()
	if c := u.Credential(); c != nil && u.Root() != nil && u.Root().Equal(s.cfg.CA.Certificate()) &&
		c.EncryptionKey != nil && c.EncryptionKey.Equal(u.EncryptionPublic()) && // else from before keys were separated
		c.Verify(s.cfg.CA.Certificate(), KindSettlement, now.Add(24*time.Hour)) == nil {
		if rev, err := s.cfg.CA.IsRevoked(ctx, c.Serial); err == nil && !rev {
			return nil
		}
	}
	req, err := NewCertRequest(u, s.cfg.Subject, "qshield settlement server", nil, nil)
	if err != nil {
		return err
	}
	var replaces *big.Int
	if c := u.Credential(); c != nil && u.Root() != nil && u.Root().Equal(s.cfg.CA.Certificate()) {
		if rev, err := s.cfg.CA.IsRevoked(ctx, c.Serial); err == nil && !rev {
			replaces = c.Serial
		}
	}
	if replaces == nil {
		// A unit certified by the CA whose copy with the certificate was
		// never saved (the process died between the two): the CA holds an
		// active certificate for this very key, which the new one replaces,
		// instead of refusing the subject as taken for ever.
		c, _, err := s.cfg.CA.ActiveCertFor(ctx, pki.PrincipalSettlement, KindSettlement.String()+" "+s.cfg.Subject, u.Public())
		if err != nil {
			return fmt.Errorf("bioqr: settlement certificates: %w", err)
		}
		if c != nil {
			replaces = c.SerialNumber
		}
	}
	certd, err := s.certifier.certify(ctx, req, nil, replaces)
	if err != nil {
		return err
	}
	if err := certd.Install(u, s.cfg.CA.Certificate()); err != nil {
		return err
	}
	s.audit(ctx, AuditEvent{Action: "bioqr.certify", Actor: "ca", Subject: "settlement " + s.cfg.Subject, Outcome: "ok",
		Detail: map[string]string{"serial": u.Credential().Serial.Text(16)}})
	return nil
}

func (s *Settlement) audit(ctx context.Context, e AuditEvent) {
	if err := s.cfg.Audit.Record(ctx, e.Entry()); err != nil {
		s.cfg.Log.Error("bioqr: audit record failed", "action", e.Action, "err", err)
	}
}

// Credential returns the settlement server's credential (PubS, step 12).
func (s *Settlement) Credential() []byte { return s.cfg.Unit.Credential().Raw }

// Root returns the CA root certificate.
func (s *Settlement) Root() *x509.Certificate { return s.cfg.CA.Certificate() }

// RegisterPOS certifies a POS terminal (steps b–d). Its request must carry
// the attribute merchant_account naming an existing ledger account.
func (s *Settlement) RegisterPOS(ctx context.Context, actor string, req *CertRequest) (*Certified, error) {
	if req == nil || req.Kind != KindPOS {
		return nil, fmt.Errorf("%w: not a POS certification request", ErrMalformed)
	}
	acct := req.Attrs[AttrMerchantAccount]
	if acct == "" {
		return nil, fmt.Errorf("%w: POS request without the %s attribute", ErrMalformed, AttrMerchantAccount)
	}
	a, err := s.cfg.Ledger.Account(ctx, acct)
	if err != nil {
		return nil, fmt.Errorf("%w: merchant account %q: %v", ErrNotFound, acct, err)
	}
	if a.Kind != ledger.KindMerchant {
		return nil, fmt.Errorf("%w: %q is a %s account, not a merchant's", ErrAccountNotEligible, acct, a.Kind)
	}
	certd, err := s.certifier.certify(ctx, req, []string{"account:" + acct}, nil)
	s.auditCertify(ctx, actor, req, certd, err)
	return certd, err
}

func (s *Settlement) auditCertify(ctx context.Context, actor string, req *CertRequest, c *Certified, err error) {
	e := AuditEvent{Action: "bioqr.certify", Actor: actor, Subject: req.Kind.String() + " " + req.Subject, Outcome: "ok", Detail: map[string]string{}}
	if err != nil {
		e.Outcome = ErrorCode(err)
		e.Detail["error"] = err.Error()
	} else if cred, perr := ParseCredential(c.Credential); perr == nil {
		e.Detail["serial"] = cred.Serial.Text(16)
	}
	s.audit(ctx, e)
}

// EnrolRequest is a phone's enrolment (steps B and C): its certification
// request, whose Extra is SHA-256 of SealedTemplate, the owner template
// sealed to the settlement server's key, and the accounts it may pay from.
type EnrolRequest struct {
	Request        *CertRequest `json:"request"`
	SealedTemplate []byte       `json:"sealed_template"`
	Accounts       []string     `json:"accounts"`
	// Consent holds one enrolment code per account, in the same order:
	// the account holder's consent (see IssueEnrolmentCode).
	Consent []string `json:"consent"`
}

// NewEnrolRequest builds a phone's enrolment inside its unit: it seals the
// template to the settlement server and signs the certification request
// carrying the commitment.
func NewEnrolRequest(u *SecureUnit, settlement *Credential, subject, model string, template []byte, accounts []string) (*EnrolRequest, error) {
	if u.Kind() != KindPhone {
		return nil, fmt.Errorf("%w: enrolment needs a phone unit", ErrMalformed)
	}
	sealed, commit, err := SealTemplate(settlement, u.Public(), template)
	if err != nil {
		return nil, err
	}
	req, err := NewCertRequest(u, subject, model, commit, nil)
	if err != nil {
		return nil, err
	}
	return &EnrolRequest{Request: req, SealedTemplate: sealed, Accounts: accounts}, nil
}

// Enrol certifies a phone (steps B–E): it checks the proof of possession,
// that the template commitment matches and that the template opens and is
// usable, that the accounts exist, then issues the certificate and the
// credential and keeps the sealed template bound to the certificate serial.
func (s *Settlement) Enrol(ctx context.Context, actor string, er *EnrolRequest) (*Certified, error) {
	certd, err := s.enrol(ctx, er)
	if er != nil && er.Request != nil {
		s.auditCertify(ctx, actor, er.Request, certd, err)
	}
	return certd, err
}

func (s *Settlement) enrol(ctx context.Context, er *EnrolRequest) (*Certified, error) {
	if er == nil || er.Request == nil || er.Request.Kind != KindPhone {
		return nil, fmt.Errorf("%w: not a phone enrolment", ErrMalformed)
	}
	if len(er.Accounts) == 0 || len(er.Accounts) > 16 {
		return nil, fmt.Errorf("%w: 1..16 accounts", ErrMalformed)
	}
	pub, err := er.Request.SigningKey()
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(er.SealedTemplate)
	if subtle.ConstantTimeCompare(h[:], er.Request.Extra) != 1 {
		return nil, fmt.Errorf("%w: template commitment does not match the sealed template", ErrMalformed)
	}
	tmpl, err := s.cfg.Unit.Decrypt([]byte(templateInfo), elliptic.MarshalCompressed(pub.Curve, pub.X, pub.Y), er.SealedTemplate)
	if err != nil {
		return nil, err
	}
	verr := s.cfg.Matcher.Validate(tmpl)
	clear(tmpl)
	if verr != nil {
		return nil, verr
	}
	if err := s.checkConsent(ctx, er.Accounts, er.Consent); err != nil {
		return nil, err
	}
	scope := make([]string, len(er.Accounts))
	for i, a := range er.Accounts {
		scope[i] = "account:" + a
	}
	certd, err := s.certifier.certify(ctx, er.Request, scope, nil)
	if err != nil {
		return nil, err
	}
	cred, err := ParseCredential(certd.Credential)
	if err != nil {
		return nil, err
	}
	accts, _ := json.Marshal(er.Accounts)
	db := s.cfg.DB
	err = db.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.cfg.Consent.UseTx(ctx, tx, er.Accounts, er.Consent, "bioqr:"+cred.Serial.Text(16)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO bioqr_enrolments (serial, subject, cert_der, template_sealed, accounts, created_at) VALUES (?, ?, ?, ?, ?, ?)`),
			cred.Serial.Text(16), er.Request.Subject, certd.CertDER, er.SealedTemplate, string(accts), s.cfg.Now().UTC().Format(time.RFC3339Nano))
		return err
	})
	if err != nil {
		// The certificate exists but is unusable without its enrolment: revoke it.
		_ = s.cfg.CA.Revoke(ctx, cred.Serial, "enrolment not stored")
		if errors.Is(err, ErrConsent) {
			return nil, err
		}
		return nil, fmt.Errorf("bioqr: store enrolment: %w", err)
	}
	return certd, nil
}

type enrolment struct {
	cert     *x509.Certificate
	sealed   []byte
	accounts []string
	subject  string
}

func (s *Settlement) loadEnrolment(ctx context.Context, serial *big.Int) (*enrolment, error) {
	db := s.cfg.DB
	var der, sealed []byte
	var accts, subject string
	err := db.QueryRowContext(ctx, db.Rebind(`SELECT cert_der, template_sealed, accounts, subject FROM bioqr_enrolments WHERE serial = ?`), serial.Text(16)).
		Scan(&der, &sealed, &accts, &subject)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: phone %s is not enrolled", ErrIllegalPhone, serial.Text(16))
	}
	if err != nil {
		return nil, fmt.Errorf("bioqr: load enrolment: %w", err)
	}
	cert, err := pki.ParseCertDER(der)
	if err != nil {
		return nil, fmt.Errorf("bioqr: stored certificate: %w", err)
	}
	e := &enrolment{cert: cert, sealed: sealed, subject: subject}
	if err := json.Unmarshal([]byte(accts), &e.accounts); err != nil {
		return nil, fmt.Errorf("bioqr: stored accounts: %w", err)
	}
	return e, nil
}

// Settle processes a sealed envelope from the POS whose verified TLS client
// certificate is posCert (steps 13–15).
//
// Once the payment message is authentic its RandCode's outcome is final and
// is written in one database transaction with everything it implies: the
// outcome row that claims the RandCode, the ledger transfer (when paid), the
// fingerprint failure (when refused for a mismatch) and the audit record. If
// any of them fails, none of them happens and the RandCode stays open.
func (s *Settlement) Settle(ctx context.Context, posCert *x509.Certificate, sealed []byte) (*SettleResult, error) {
	res, audited, err := s.settle(ctx, posCert, sealed)
	if !audited {
		// Refused before the message was authentic, a replay, or a transient
		// failure: nothing was written, so the record stands alone.
		s.audit(ctx, settleEvent(posCert, res, err))
	}
	return res, err
}

// settleEvent is the audit record of one settlement attempt.
func settleEvent(posCert *x509.Certificate, res *SettleResult, err error) AuditEvent {
	e := AuditEvent{Action: "bioqr.settle", Outcome: "ok", Detail: map[string]string{}}
	if posCert != nil {
		e.Actor = posCert.Subject.CommonName
	}
	if err != nil {
		e.Outcome = ErrorCode(err)
		e.Detail["error"] = err.Error()
		return e
	}
	e.Subject = res.RandCode
	e.Detail = map[string]string{"transfer": res.TransferID, "amount": money.Format(res.Amount, res.Currency), "currency": res.Currency,
		"account": res.Account, "merchant_account": res.MerchantAccount, "phone": res.Phone, "probe": res.ProbeSource,
		"score": fmt.Sprintf("%.3f", res.Score), "replayed": fmt.Sprint(res.Replayed)}
	return e
}

// InProcess returns a Settler that settles directly, as if posCert had
// authenticated over mutual TLS (for the demo, tests and experiments).
func (s *Settlement) InProcess(posCert *x509.Certificate) Settler {
	return settlerFunc(func(ctx context.Context, sealed []byte) (*SettleResult, error) {
		return s.Settle(ctx, posCert, sealed)
	})
}

type settlerFunc func(context.Context, []byte) (*SettleResult, error)

func (f settlerFunc) Settle(ctx context.Context, b []byte) (*SettleResult, error) { return f(ctx, b) }

// settle runs the protocol; audited reports whether the outcome's audit
// record was written in the outcome's transaction.
func (s *Settlement) settle(ctx context.Context, posCert *x509.Certificate, sealed []byte) (res *SettleResult, audited bool, err error) {
	now := s.cfg.Now()
	a, err := s.authenticate(ctx, now, posCert, sealed)
	if err != nil {
		return nil, false, err
	}
	// From here the message is authentic: its RandCode's outcome is final.
	if prev, err := s.previous(ctx, a.rc, a.hash, posCert.SerialNumber); prev != nil || err != nil {
		return prev, false, err
	}
	pay, err := s.decide(ctx, now, a)
	if err != nil && !isRefusal(err) {
		return nil, false, err // transient: the RandCode stays open for a retry
	}
	return s.conclude(ctx, a, pay, err)
}

// authentic is a payment message that passed step 14: decrypted, from a
// certified POS, signed by an enrolled, certified phone.
type authentic struct {
	posCert  *x509.Certificate
	dev      *pki.DeviceInfo
	env      *Envelope
	m        *PaymentMessage
	cred     *Credential
	en       *enrolment
	rc, hash string // the RandCode and the plaintext's SHA-256, hex
}

// authenticate is steps 13 and 14: the POS, the envelope, the phone's
// credential and enrolment, and the message signature.
func (s *Settlement) authenticate(ctx context.Context, now time.Time, posCert *x509.Certificate, sealed []byte) (*authentic, error) {
	// The POS: certified by our CA, not revoked, a POS, with a merchant account.
	dev, err := s.cfg.CA.Verify(ctx, posCert, pki.RoleDevice, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIllegalPOS, err)
	}
	if dev == nil || dev.Kind != pki.KindPOS || dev.Attrs[AttrMerchantAccount] == "" {
		return nil, fmt.Errorf("%w: the client certificate is not a POS's", ErrIllegalPOS)
	}
	// Step 13: decrypt.
	pt, err := s.cfg.Unit.Decrypt([]byte(envelopeInfo), phonecode.EnvelopeAAD(posCert.SerialNumber), sealed)
	if err != nil {
		return nil, err
	}
	env, err := ParseEnvelope(pt)
	if err != nil {
		return nil, err
	}
	m, err := ParsePaymentMessage(env.Message)
	if err != nil {
		return nil, err
	}
	// Step 14: the phone's credential, enrolment, certificate status and signature.
	cred, err := ParseCredential(m.PhoneCredential)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIllegalPhone, err)
	}
	if err := cred.Verify(s.cfg.CA.Certificate(), KindPhone, now); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIllegalPhone, err)
	}
	en, err := s.loadEnrolment(ctx, cred.Serial)
	if err != nil {
		return nil, err
	}
	if _, err := s.cfg.CA.Verify(ctx, en.cert, pki.RoleDevice, now); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIllegalPhone, err)
	}
	commit := sha256.Sum256(en.sealed)
	if !cred.PublicKey.Equal(en.cert.PublicKey) || subtle.ConstantTimeCompare(commit[:], cred.Extra) != 1 {
		return nil, fmt.Errorf("%w: credential does not match the enrolment", ErrIllegalPhone)
	}
	if err := m.VerifySignature(cred); err != nil {
		return nil, err
	}
	mh := sha256.Sum256(pt)
	return &authentic{posCert: posCert, dev: dev, env: env, m: m, cred: cred, en: en,
		rc: hex.EncodeToString(m.RandCode[:]), hash: hex.EncodeToString(mh[:])}, nil
}

// isRefusal reports whether err is a final answer about the payment (a
// registered refusal) rather than a transient failure that may be retried.
func isRefusal(err error) bool {
	_, ok := codes.Lookup(err)
	return ok
}

// payment is a decided payment: the transfer to make and the result it gives.
type payment struct {
	transfer ledger.TransferRequest
	result   SettleResult
}

// decide checks the payment against the enrolment, the POS and the owner's
// fingerprint (step 15 up to the transfer). It writes nothing: the outcome
// is written by conclude.
func (s *Settlement) decide(ctx context.Context, now time.Time, a *authentic) (*payment, error) {
	m, env, en := a.m, a.env, a.en
	if n, err := s.failures(ctx, a.cred.Serial, now); err != nil {
		return nil, err
	} else if n >= s.cfg.MaxFailures {
		return nil, fmt.Errorf("%w: %d failures", ErrLocked, n)
	}
	if m.POSSerial.Cmp(a.posCert.SerialNumber) != 0 {
		return nil, fmt.Errorf("%w: signed for POS %s, submitted by %s", ErrWrongPOS, m.POSSerial.Text(16), a.posCert.SerialNumber.Text(16))
	}
	if m.MerchantAccount != a.dev.Attrs[AttrMerchantAccount] {
		return nil, fmt.Errorf("%w: payee %q is not the POS's merchant account", ErrMismatch, m.MerchantAccount)
	}
	if now.After(m.Expires.Add(s.cfg.SettleGrace)) || env.POSTime.After(m.Expires) {
		return nil, fmt.Errorf("%w: consumption QR expired at %s", ErrExpired, m.Expires.Format(time.RFC3339))
	}
	allowed := false
	for _, acct := range en.accounts {
		allowed = allowed || acct == m.Account
	}
	if !allowed {
		return nil, fmt.Errorf("%w: %q", ErrAccountNotEnrolled, m.Account)
	}
	cur, err := LookupCurrency(m.Currency)
	if err != nil {
		return nil, err
	}
	probe, source := m.Probe, "phone"
	switch {
	case env.ProbeSource == ProbeFromPhone && len(m.Probe) > 0 && len(env.POSProbe) == 0:
	case env.ProbeSource == ProbeFromPOS && len(m.Probe) == 0 && len(env.POSProbe) > 0:
		probe, source = env.POSProbe, "pos"
	case len(m.Probe) == 0 && len(env.POSProbe) == 0:
		return nil, ErrNoFingerprint
	default:
		return nil, fmt.Errorf("%w: probe source inconsistent", ErrMalformed)
	}
	pub := a.cred.PublicKey
	owner, err := s.cfg.Unit.Decrypt([]byte(templateInfo), elliptic.MarshalCompressed(pub.Curve, pub.X, pub.Y), en.sealed)
	if err != nil {
		return nil, fmt.Errorf("bioqr: open owner template: %w", err)
	}
	ok, score, err := s.cfg.Matcher.Match(owner, probe)
	clear(owner)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: score %.3f", ErrFingerprint, score)
	}
	return &payment{
		transfer: ledger.TransferRequest{
			IdempotencyKey: "bioqr-" + a.rc,
			From:           m.Account, To: m.MerchantAccount, Amount: m.Amount, Currency: cur.Code,
			Memo: "bioqr payment at " + a.dev.Serial,
		},
		result: SettleResult{Status: "paid", Amount: m.Amount, Currency: cur.Code, Account: m.Account,
			MerchantAccount: m.MerchantAccount, RandCode: a.rc, Phone: en.subject, ProbeSource: source, Score: score},
	}, nil
}

// ledgerRefusal maps a refused transfer to the protocol's refusal.
func ledgerRefusal(err error) error {
	switch {
	case errors.Is(err, ledger.ErrInsufficientFunds):
		return fmt.Errorf("%w: %v", ErrInsufficientFunds, err)
	case errors.Is(err, ledger.ErrCurrencyMismatch), errors.Is(err, ledger.ErrIdempotencyConflict):
		return fmt.Errorf("%w: %v", ErrMismatch, err)
	case errors.Is(err, ledger.ErrAccountNotFound):
		return fmt.Errorf("%w: %v", ErrAccountNotEnrolled, err)
	}
	return fmt.Errorf("bioqr: ledger transfer: %w", err)
}

// errClaimed: another settlement of the same RandCode committed first.
var errClaimed = errors.New("bioqr: RandCode claimed concurrently")

// conclude writes the final outcome of an authentic message in one
// transaction: the transfer (pay != nil), the outcome row that claims the
// RandCode, the fingerprint failure (refused for a mismatch) and the audit
// record. A transfer the ledger refuses becomes the outcome instead.
func (s *Settlement) conclude(ctx context.Context, a *authentic, pay *payment, refusal error) (*SettleResult, bool, error) {
	var res *SettleResult
	var derr error
	err := s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		res, derr = nil, refusal
		if pay != nil {
			t, err := s.cfg.Ledger.TransferTx(ctx, tx, pay.transfer)
			if err != nil {
				if derr = ledgerRefusal(err); !isRefusal(derr) {
					return derr
				}
			} else {
				r := pay.result
				r.TransferID = t.ID
				res = &r
			}
		}
		if errors.Is(derr, ErrFingerprint) {
			if err := s.addFailure(ctx, tx, a.cred.Serial, s.cfg.Now()); err != nil {
				return err
			}
		}
		if err := s.record(ctx, tx, a, res, derr); err != nil {
			return err
		}
		return s.cfg.Audit.RecordTx(ctx, tx, settleEvent(a.posCert, res, derr).Entry())
	})
	switch {
	case errors.Is(err, errClaimed):
		prev, perr := s.previous(ctx, a.rc, a.hash, a.posCert.SerialNumber)
		return prev, false, perr
	case err != nil:
		return nil, false, err
	}
	return res, true, derr
}

type storedOutcome struct {
	Code   string        `json:"code"`
	Error  string        `json:"error,omitempty"`
	Result *SettleResult `json:"result,omitempty"`
}

// previous returns the recorded outcome for a RandCode: the same result
// (marked Replayed) for the identical envelope from the same POS, and
// ErrRandCodeUsed for anything else.
func (s *Settlement) previous(ctx context.Context, rc, hash string, pos *big.Int) (*SettleResult, error) {
	db := s.cfg.DB
	var h, p, raw string
	err := db.QueryRowContext(ctx, db.Rebind(`SELECT message_hash, pos_serial, result FROM bioqr_settlements WHERE rand_code = ?`), rc).Scan(&h, &p, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bioqr: look up RandCode: %w", err)
	}
	if h != hash || p != pos.Text(16) {
		return nil, fmt.Errorf("%w: RandCode %s was settled with another payment", ErrRandCodeUsed, rc)
	}
	var o storedOutcome
	if err := json.Unmarshal([]byte(raw), &o); err != nil {
		return nil, fmt.Errorf("bioqr: stored outcome: %w", err)
	}
	if o.Result == nil {
		return nil, fmt.Errorf("%w: RandCode %s was already refused (%s)", ErrRandCodeUsed, rc, o.Code)
	}
	r := *o.Result
	r.Replayed = true
	return &r, nil
}

// record writes the outcome row that claims the RandCode (errClaimed when
// a concurrent settlement claimed it first).
func (s *Settlement) record(ctx context.Context, tx *sql.Tx, a *authentic, res *SettleResult, derr error) error {
	o := storedOutcome{Code: "ok", Result: res}
	if derr != nil {
		o = storedOutcome{Code: ErrorCode(derr), Error: derr.Error()}
	}
	raw, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("bioqr: encode outcome: %w", err)
	}
	_, err = tx.ExecContext(ctx, s.cfg.DB.Rebind(`INSERT INTO bioqr_settlements (rand_code, message_hash, pos_serial, phone_serial, code, result, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		a.rc, a.hash, a.posCert.SerialNumber.Text(16), a.cred.Serial.Text(16), o.Code, string(raw), s.cfg.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		if sqldb.IsUniqueViolation(err) {
			return errClaimed
		}
		return fmt.Errorf("bioqr: record outcome: %w", err)
	}
	return nil
}

func (s *Settlement) failures(ctx context.Context, phone *big.Int, now time.Time) (int, error) {
	db := s.cfg.DB
	var n int
	err := db.QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM bioqr_failures WHERE phone_serial = ? AND at_unix > ?`),
		phone.Text(16), now.Add(-s.cfg.FailureWindow).Unix()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("bioqr: count failures: %w", err)
	}
	return n, nil
}

func (s *Settlement) addFailure(ctx context.Context, tx *sql.Tx, phone *big.Int, now time.Time) error {
	if _, err := tx.ExecContext(ctx, s.cfg.DB.Rebind(`INSERT INTO bioqr_failures (phone_serial, at_unix) VALUES (?, ?)`), phone.Text(16), now.Unix()); err != nil {
		return fmt.Errorf("bioqr: record failure: %w", err)
	}
	return nil
}
