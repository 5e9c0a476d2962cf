// Package service is the server side of the watermarked payment codes (seed
// 003): it issues original tokens T0 to payers, keeps them (as SHA-256
// digests, never T0 itself) in the platform database, and, when a merchant's
// scanner has reconstructed T0 from enough watermark shares, verifies it and
// moves the money through the ledger.
//
// A code is single use, valid for at most 60 seconds, carries the most the
// payer agreed to pay with it (its limit, set when the phone asks for the
// code; a larger charge is refused and does not consume the code), and pays
// only with shares shown within a few seconds of the claim's receipt (the
// shares' time stamps, see watermark.CheckStamps; a recording replayed later
// is refused, without consuming the code) and, when the platform's master
// challenge key is configured (Config.ChallengeMaster), bound to the
// challenge of the scanner that submits the claim, so a close video relayed
// live to another scanner is refused too (see watermark's challenge.go).
// Paying runs in one
// database transaction: the code is marked used (only if it was unused), the
// ledger transfer from the payer's account to the merchant's is recorded,
// and so is the audit entry; either all of it commits or none. A wrong T0
// for a known T1 does not consume the code — a thief who only read the
// public T1 cannot burn the payer's code — while a right T0 consumes it even
// when the ledger then refuses the payment (insufficient funds), as wallets
// burn a payment code whatever the outcome.
//
// Who may do what is decided by client certificates from the platform CA:
// a phone's certificate is bound to the payer account it issues codes for, a
// scanner's to the merchant account it is paid into (tables wm_devices).
package service

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/watermark"
)

// Errors beyond those of package watermark.
var (
	ErrUnknownDevice = errors.New("watermark: device not enrolled for this role")
	ErrRefused       = errors.New("watermark: payment refused by the ledger")
	ErrChallengesOff = errors.New("watermark: scanner challenges are not turned on")
)

const schema = `CREATE TABLE wm_tokens (
	handle TEXT PRIMARY KEY,
	digest BYTEA NOT NULL,
	account TEXT NOT NULL,
	issued_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL,
	used_at BIGINT NOT NULL DEFAULT 0,
	transfer_id TEXT NOT NULL DEFAULT '');
CREATE INDEX wm_tokens_expires ON wm_tokens (expires_at);
CREATE TABLE wm_devices (
	name TEXT NOT NULL,
	role TEXT NOT NULL CHECK (role IN ('phone', 'scanner')),
	account TEXT NOT NULL,
	PRIMARY KEY (name, role))`

// Version 2: the slot key K that authenticates the shares' time stamps, and
// the payer's limit for the code.
const schemaV2 = `ALTER TABLE wm_tokens ADD COLUMN slot_key BYTEA;
ALTER TABLE wm_tokens ADD COLUMN pay_limit BIGINT NOT NULL DEFAULT 0`

var migrations = []sqldb.Migration{{Version: 1, SQL: schema}, {Version: 2, SQL: schemaV2}}

// Service issues and redeems codes.
type Service struct {
	db     *sqldb.DB
	led    *ledger.Ledger
	audit  audit.Recorder
	batch  *sqldb.Batcher
	now    func() time.Time
	Params watermark.Params
	window watermark.Window
	issuer *watermark.Issuer
	store  *SQLStore
	// challengeMaster derives every scanner's challenge key (nil: scanner
	// challenges are not required; see Config.ChallengeMaster).
	challengeMaster []byte
}

// Config configures a Service.
type Config struct {
	DB     *sqldb.DB
	Ledger *ledger.Ledger
	Audit  audit.Recorder
	Params watermark.Params // zero: watermark.DefaultParams()
	Window watermark.Window // zero: watermark.DefaultWindow()
	TTL    time.Duration    // code validity, ≤ 60 s (default 60 s)
	Now    func() time.Time
	// ChallengeMaster (at least watermark.ChallengeKeyLen bytes, secret)
	// turns on scanner challenges: each scanner fetches its challenge key
	// (GET /v1/watermark/challenge-key) and shows its rotating challenge to
	// the payer's front camera, and a claim pays only with shares bound to
	// the challenge of the scanner that submits it — the defence against a
	// close re-capture relayed live to another scanner. Nil leaves claims
	// checked by the time binding alone (phones and scanners without a
	// challenge display).
	ChallengeMaster []byte
}

// New opens the service (applying its migrations).
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.DB == nil || cfg.Ledger == nil {
		return nil, errors.New("watermark/service: needs a database and a ledger")
	}
	if err := cfg.DB.Migrate(ctx, "watermark", migrations); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Params == (watermark.Params{}) {
		cfg.Params = watermark.DefaultParams()
	}
	if cfg.Window == (watermark.Window{}) {
		cfg.Window = watermark.DefaultWindow()
	}
	s := &Service{db: cfg.DB, led: cfg.Ledger, audit: cfg.Audit, batch: cfg.DB.NewBatcher(256), now: cfg.Now, Params: cfg.Params, window: cfg.Window}
	if cfg.ChallengeMaster != nil && len(cfg.ChallengeMaster) < watermark.ChallengeKeyLen {
		return nil, fmt.Errorf("watermark/service: challenge master key of %d bytes, want at least %d", len(cfg.ChallengeMaster), watermark.ChallengeKeyLen)
	}
	s.challengeMaster = append([]byte(nil), cfg.ChallengeMaster...)
	if cfg.ChallengeMaster == nil {
		s.challengeMaster = nil
	}
	s.store = &SQLStore{db: cfg.DB}
	check, err := watermark.ReadabilityCheck(cfg.Params)
	if err != nil {
		return nil, fmt.Errorf("watermark/service: %w", err)
	}
	s.issuer = &watermark.Issuer{Store: s.store, TTL: cfg.TTL, Now: cfg.Now, TokenLen: cfg.Params.TokenLen, Check: check}
	return s, nil
}

// Close stops the service's committer.
func (s *Service) Close() error { return s.batch.Close() }

// Store is the service's token store.
func (s *Service) Store() *SQLStore { return s.store }

// Enrol binds device name (its certificate's common name) in role "phone"
// or "scanner" to a ledger account.
func (s *Service) Enrol(ctx context.Context, name, role, account string) error {
	if role != "phone" && role != "scanner" {
		return fmt.Errorf("watermark/service: role %q is neither phone nor scanner", role)
	}
	if _, err := s.led.Account(ctx, account); err != nil {
		return err
	}
	return s.batch.Do(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO wm_devices (name, role, account) VALUES (?, ?, ?)`), name, role, account)
		return err
	})
}

// Account returns the account bound to device name in role.
func (s *Service) Account(ctx context.Context, name, role string) (string, error) {
	var acct string
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT account FROM wm_devices WHERE name = ? AND role = ?`), name, role).Scan(&acct)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("%w: %s as %s", ErrUnknownDevice, name, role)
	}
	return acct, err
}

// ChallengeKey returns the challenge key of scanner (its certificate's
// common name), or ErrChallengesOff when challenges are not turned on.
func (s *Service) ChallengeKey(scanner string) ([]byte, error) {
	if s.challengeMaster == nil {
		return nil, ErrChallengesOff
	}
	return watermark.ScannerChallengeKey(s.challengeMaster, scanner)
}

// Issue creates a fresh code (T0 and its slot key) for the payer's account,
// good for at most limit minor units (the phone then derives T1 and the
// watermark from it and shows the looping code).
func (s *Service) Issue(ctx context.Context, account string, limit int64) (watermark.Code, watermark.Record, error) {
	code, rec, err := s.issuer.Issue(ctx, account, limit)
	if err != nil {
		return code, rec, err
	}
	s.audited(ctx, "payer", "watermark.issue", "success", rec.Handle, map[string]string{"account": account, "limit": strconv.FormatInt(limit, 10)})
	return code, rec, nil
}

// Pay redeems claim c (T1, the reconstructed T0, the shares' stamps and the
// amount) in currency into merchantAccount. idemKey makes a scanner's retry
// of the same payment return its first result.
func (s *Service) Pay(ctx context.Context, scanner, merchantAccount string, c watermark.Claim, currency, idemKey string) (ledger.Transfer, error) {
	c.Scanner = scanner
	t, err := s.pay(ctx, merchantAccount, c, currency, idemKey)
	if err != nil {
		details := map[string]string{"reason": err.Error()}
		if errors.Is(err, watermark.ErrBadStamp) {
			if other := s.boundElsewhere(ctx, c); other != "" {
				err = fmt.Errorf("%w (%v)", watermark.ErrWrongScanner, err)
				details = map[string]string{"reason": err.Error(), "bound_to": other}
			}
		}
		s.audited(ctx, scanner, "watermark.pay", "denied", c.Handle, details)
	}
	return t, err
}

// maxRelayCheck bounds how many registered scanners a refused claim's
// stamps are tried against (boundElsewhere).
const maxRelayCheck = 4096

// boundElsewhere names the registered scanner, other than the claim's, to
// whose challenges the refused claim's stamps are bound (watermark.BoundTo),
// or "" when there is none: a claim relayed from the scanner the payer held
// the phone to. It runs only after a claim with the code's right T0 was
// refused for its stamps, so only a holder of T0 can make it work.
func (s *Service) boundElsewhere(ctx context.Context, c watermark.Claim) string {
	if s.challengeMaster == nil {
		return ""
	}
	nb := 0
	for _, st := range c.Stamps {
		if st.Bound {
			nb++
		}
	}
	if nb < watermark.MinBoundStamps {
		return ""
	}
	rec, err := s.store.Lookup(ctx, c.Handle)
	if err != nil {
		return ""
	}
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT name FROM wm_devices WHERE role = 'scanner' AND name <> ? ORDER BY name LIMIT ?`), c.Scanner, maxRelayCheck)
	if err != nil {
		return ""
	}
	var names []string
	for rows.Next() {
		var n string
		if rows.Scan(&n) == nil {
			names = append(names, n)
		}
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return ""
	}
	now := s.now()
	for _, n := range names {
		k, err := watermark.ScannerChallengeKey(s.challengeMaster, n)
		if err == nil && watermark.BoundTo(rec.SlotKey, c.Handle, c.Stamps, now, s.window, k) {
			return n
		}
	}
	return ""
}

func (s *Service) pay(ctx context.Context, merchantAccount string, c watermark.Claim, currency, idemKey string) (ledger.Transfer, error) {
	handle, t0, amount := c.Handle, c.Token, c.Amount
	if err := watermark.ParseHandle(handle); err != nil {
		return ledger.Transfer{}, fmt.Errorf("%w: %v", watermark.ErrUnknownToken, err)
	}
	rec, err := s.store.Lookup(ctx, handle)
	if err != nil {
		return ledger.Transfer{}, err
	}
	d := watermark.Digest(t0)
	if subtle.ConstantTimeCompare(d[:], rec.Digest[:]) != 1 {
		return ledger.Transfer{}, watermark.ErrWrongToken // does not consume the code
	}
	now := s.now()
	key := "wm/" + handle
	var out ledger.Transfer
	var refused error
	err = s.batch.Do(ctx, func(tx *sql.Tx) error {
		refused = nil
		var usedAt int64
		var transferID string
		if err := tx.QueryRowContext(ctx, s.db.Rebind(`SELECT used_at, transfer_id FROM wm_tokens WHERE handle = ?`), handle).Scan(&usedAt, &transferID); err != nil {
			return err
		}
		if usedAt != 0 {
			// A retry of the payment that used the code gets its result.
			if transferID != "" && idemKey != "" {
				if t, err := s.led.TransferByKey(ctx, key); err == nil && t.Memo == memo(idemKey) {
					out = t
					return nil
				}
			}
			return watermark.ErrUsed
		}
		// Expiry, the shares' time stamps and the payer's limit: a
		// refusal here does not consume the code.
		b, err := watermark.BindingFor(s.challengeMaster, c.Scanner)
		if err != nil {
			return err
		}
		if err := rec.Check(c, s.Params.Threshold, now, s.window, b); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE wm_tokens SET used_at = ? WHERE handle = ? AND used_at = 0`), now.UnixNano(), handle)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return watermark.ErrUsed
		}
		t, err := s.led.TransferTx(ctx, tx, ledger.TransferRequest{IdempotencyKey: key, From: rec.Account, To: merchantAccount,
			Amount: amount, Currency: currency, Memo: memo(idemKey)})
		switch {
		case errors.Is(err, ledger.ErrInsufficientFunds):
			refused = err // a real refusal: the code stays burned
			return nil
		case err != nil:
			return err // a bad request (amount, currency, accounts): the code is not consumed
		}
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE wm_tokens SET transfer_id = ? WHERE handle = ?`), t.ID, handle); err != nil {
			return err
		}
		out = t
		if s.audit == nil {
			return nil
		}
		err = s.audit.RecordTx(ctx, tx, audit.Entry{Actor: merchantAccount, Event: "watermark.pay", Outcome: "success", Origin: "watermark", Resource: handle,
			Details: map[string]string{"amount": money.Format(amount, currency), "transfer": t.ID}})
		return err
	})
	if err != nil {
		return ledger.Transfer{}, err
	}
	if refused != nil {
		return ledger.Transfer{}, fmt.Errorf("%w: %w", ErrRefused, refused)
	}
	return out, nil
}

func memo(idemKey string) string { return "watermarked code payment " + idemKey }

func (s *Service) audited(ctx context.Context, actor, event, outcome, resource string, details map[string]string) {
	if s.audit != nil {
		_ = s.audit.Record(ctx, audit.Entry{Actor: actor, Event: event, Outcome: outcome, Origin: "watermark", Resource: resource, Details: details})
	}
}

// SQLStore is a watermark.TokenStore in the platform database.
type SQLStore struct{ db *sqldb.DB }

// Insert implements watermark.TokenStore.
func (st *SQLStore) Insert(ctx context.Context, r watermark.Record) error {
	_, err := st.db.ExecContext(ctx, st.db.Rebind(`INSERT INTO wm_tokens (handle, digest, account, issued_at, expires_at, slot_key, pay_limit) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		r.Handle, r.Digest[:], r.Account, r.IssuedAt.UnixNano(), r.ExpiresAt.UnixNano(), r.SlotKey, r.Limit)
	if sqldb.IsUniqueViolation(err) {
		return fmt.Errorf("%w: %s", watermark.ErrDuplicate, r.Handle)
	}
	return err
}

// Lookup implements watermark.TokenStore.
func (st *SQLStore) Lookup(ctx context.Context, handle string) (watermark.Record, error) {
	var r watermark.Record
	var digest []byte
	var issued, expires, used int64
	err := st.db.QueryRowContext(ctx, st.db.Rebind(`SELECT handle, digest, account, issued_at, expires_at, used_at, slot_key, pay_limit FROM wm_tokens WHERE handle = ?`), handle).
		Scan(&r.Handle, &digest, &r.Account, &issued, &expires, &used, &r.SlotKey, &r.Limit)
	if errors.Is(err, sql.ErrNoRows) {
		return r, watermark.ErrUnknownToken
	}
	if err != nil {
		return r, err
	}
	if len(digest) != len(r.Digest) {
		return r, fmt.Errorf("watermark/service: stored digest of %d bytes", len(digest))
	}
	copy(r.Digest[:], digest)
	r.IssuedAt, r.ExpiresAt = time.Unix(0, issued), time.Unix(0, expires)
	if used != 0 {
		r.UsedAt = time.Unix(0, used)
	}
	return r, nil
}

// MarkUsed implements watermark.TokenStore.
func (st *SQLStore) MarkUsed(ctx context.Context, handle string, at time.Time) error {
	res, err := st.db.ExecContext(ctx, st.db.Rebind(`UPDATE wm_tokens SET used_at = ? WHERE handle = ? AND used_at = 0`), at.UnixNano(), handle)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	if _, err := st.Lookup(ctx, handle); err != nil {
		return err
	}
	return watermark.ErrUsed
}
