// Package consent is the account holder's consent to binding a payer device
// to an account: a short-lived, single-use enrolment code.
//
// Binding a phone to an account lets whoever holds the phone spend from the
// account, so no scheme may do it on an operator's word alone. The holder (or
// an administrator, or an operator whose scope includes the account) asks for
// a code for that account; the code is handed to the enrolment desk with the
// phone and is used up by the one enrolment it consents to. Every scheme that
// binds payer devices — biometric QR (bioqr), QMSP and watermark phones —
// uses this one store, so one code means the same thing everywhere.
//
// Only user accounts that may not go negative can ever be bound to a payer
// device: system, escrow, merchant and may-go-negative accounts never, code
// or not.
//
// Codes are 80 random bits (16 base32 characters), valid for CodeTTL, and
// stored only as a SHA-256 hash, so a copy of the database does not hold a
// usable code. A code is used in the same transaction (or just before) the
// device is bound; two enrolments racing on one code cannot both win.
package consent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
)

// ErrConsent is an enrolment without a valid code for one of its accounts.
var ErrConsent = errors.New("no valid enrolment code for the account (ask the account holder for one)")

// ErrAccountNotEligible is an account that can never be bound to a payer device.
var ErrAccountNotEligible = errors.New("account cannot be bound to a payer device")

// CodeTTL is how long an enrolment code stays valid.
const CodeTTL = 10 * time.Minute

// Accounts reads ledger accounts (a *ledger.Ledger).
type Accounts interface {
	Account(ctx context.Context, id string) (ledger.Account, error)
}

// Auditor records the issue of codes (an *audit.Log, or a scheme's recorder).
type Auditor interface {
	Record(ctx context.Context, e audit.Entry) error
}

// Config configures a Store.
type Config struct {
	DB       *sqldb.DB
	Accounts Accounts
	Audit    Auditor          // optional
	Log      *slog.Logger     // optional
	Now      func() time.Time // optional (tests)
}

// Store issues and uses enrolment codes.
type Store struct{ cfg Config }

var migrations = []sqldb.Migration{{Version: 1, SQL: `CREATE TABLE enrolment_codes (
		code_hash TEXT PRIMARY KEY,
		account TEXT NOT NULL,
		issued_by TEXT NOT NULL,
		expires_unix BIGINT NOT NULL,
		used_by TEXT NOT NULL DEFAULT '')`}}

// New migrates the code table and returns the store.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.DB == nil || cfg.Accounts == nil {
		return nil, errors.New("consent: needs a database and the ledger's accounts")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.DB.Migrate(ctx, "consent", migrations); err != nil {
		return nil, fmt.Errorf("consent: %w", err)
	}
	return &Store{cfg: cfg}, nil
}

// Code is a code issued for an account.
type Code struct {
	Code    string    `json:"code"`
	Account string    `json:"account"`
	Expires time.Time `json:"expires"`
}

// Eligible reports whether a may be bound to a payer device: a user account
// that may not go negative.
func Eligible(a ledger.Account) error {
	if a.Kind != ledger.KindUser || a.AllowNegative {
		neg := ""
		if a.AllowNegative {
			neg = ", may go negative"
		}
		return fmt.Errorf("%w: %q is a %s account%s", ErrAccountNotEligible, a.ID, a.Kind, neg)
	}
	return nil
}

// CheckAccount reads account id and checks that it may be bound to a payer device.
func (s *Store) CheckAccount(ctx context.Context, id string) error {
	a, err := s.cfg.Accounts.Account(ctx, id)
	if err != nil {
		return fmt.Errorf("consent: account %q: %w", id, err)
	}
	return Eligible(a)
}

// Issue issues a single-use code consenting to bind account to one payer
// device, valid for CodeTTL. issuer is recorded; the caller has checked that
// it may act for the account (see Handler).
func (s *Store) Issue(ctx context.Context, issuer, account string) (*Code, error) {
	if err := s.CheckAccount(ctx, account); err != nil {
		return nil, err
	}
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("consent: enrolment code: %w", err)
	}
	code := base32.StdEncoding.EncodeToString(b) // 16 characters, 80 bits
	exp := s.cfg.Now().Add(CodeTTL)
	db := s.cfg.DB
	if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO enrolment_codes (code_hash, account, issued_by, expires_unix) VALUES (?, ?, ?, ?)`),
		hashCode(code), account, issuer, exp.Unix()); err != nil {
		return nil, fmt.Errorf("consent: store enrolment code: %w", err)
	}
	if s.cfg.Audit != nil {
		if err := s.cfg.Audit.Record(ctx, audit.Entry{Actor: issuer, Event: "enrolment.code", Outcome: audit.OutcomeSuccess,
			Resource: account, Details: map[string]string{"expires": exp.UTC().Format(time.RFC3339)}}); err != nil {
			s.cfg.Log.Error("consent: audit record failed", "err", err)
		}
	}
	return &Code{Code: code, Account: account, Expires: exp}, nil
}

func hashCode(code string) string {
	h := sha256.Sum256([]byte("qshield enrolment code\x00" + strings.ToUpper(strings.TrimSpace(code))))
	return hex.EncodeToString(h[:])
}

// Check verifies, without using them, that codes hold one valid code for
// each account (in order) and that each account may be bound.
func (s *Store) Check(ctx context.Context, accounts, codes []string) error {
	for _, acct := range accounts {
		if err := s.CheckAccount(ctx, acct); err != nil {
			return err
		}
	}
	if len(codes) != len(accounts) {
		return fmt.Errorf("%w: %d accounts, %d enrolment codes", ErrConsent, len(accounts), len(codes))
	}
	now := s.cfg.Now().Unix()
	db := s.cfg.DB
	for i, acct := range accounts {
		var n int
		if err := db.QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM enrolment_codes WHERE code_hash = ? AND account = ? AND used_by = '' AND expires_unix > ?`),
			hashCode(codes[i]), acct, now).Scan(&n); err != nil {
			return fmt.Errorf("consent: check enrolment code: %w", err)
		}
		if n != 1 {
			return fmt.Errorf("%w: account %q", ErrConsent, acct)
		}
	}
	return nil
}

// UseTx marks the codes used by device inside tx (the transaction that binds
// the device); a code used concurrently, expired or wrong makes it fail with
// ErrConsent. Call Check first for the account rules.
func (s *Store) UseTx(ctx context.Context, tx *sql.Tx, accounts, codes []string, device string) error {
	if len(codes) != len(accounts) {
		return fmt.Errorf("%w: %d accounts, %d enrolment codes", ErrConsent, len(accounts), len(codes))
	}
	if device == "" {
		return errors.New("consent: use needs the device's name")
	}
	now := s.cfg.Now().Unix()
	for i, acct := range accounts {
		res, err := tx.ExecContext(ctx, s.cfg.DB.Rebind(`UPDATE enrolment_codes SET used_by = ? WHERE code_hash = ? AND account = ? AND used_by = '' AND expires_unix > ?`),
			device, hashCode(codes[i]), acct, now)
		if err != nil {
			return fmt.Errorf("consent: use enrolment code: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("%w: account %q (code unknown, expired or already used)", ErrConsent, acct)
		}
	}
	return nil
}

// Use checks the accounts and uses one code per account for device in its
// own transaction: for schemes that bind the device outside the database
// (a certificate, another component's register). If binding then fails,
// Release gives the codes back.
func (s *Store) Use(ctx context.Context, accounts, codes []string, device string) error {
	for _, acct := range accounts {
		if err := s.CheckAccount(ctx, acct); err != nil {
			return err
		}
	}
	return s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error { return s.UseTx(ctx, tx, accounts, codes, device) })
}

// Release makes codes that device used (and that have not expired) usable
// again, after its binding failed for a reason that was not the holder's.
func (s *Store) Release(ctx context.Context, codes []string, device string) error {
	db := s.cfg.DB
	for _, c := range codes {
		if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE enrolment_codes SET used_by = '' WHERE code_hash = ? AND used_by = ?`), hashCode(c), device); err != nil {
			return fmt.Errorf("consent: release enrolment code: %w", err)
		}
	}
	return nil
}

// IssueRequest is the body of the code-issuing endpoint.
type IssueRequest struct {
	Account string `json:"account"`
}

// Handler issues a code (201 with a Code) for the account in the body. The
// route's policy admits the administrator and operators; an operator gets a
// code only for an account in its scope ("account:ID").
func (s *Store) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := authz.PrincipalFrom(r.Context())
		var req IssueRequest
		if !httpx.DecodeOrProblem(w, r, 4<<10, &req) {
			return
		}
		if p == nil || req.Account == "" || (p.Kind != pki.PrincipalAdmin && !p.MayActFor("account:"+req.Account)) {
			httpx.WriteProblem(w, r, http.StatusForbidden, "not_owner", "account "+req.Account+" is outside this principal's scope")
			return
		}
		out, err := s.Issue(r.Context(), string(p.Kind)+":"+p.Name+"#"+p.Serial, req.Account)
		switch {
		case err == nil:
			httpx.WriteJSON(w, http.StatusCreated, out)
		case errors.Is(err, ErrAccountNotEligible):
			httpx.WriteProblem(w, r, http.StatusForbidden, "account_not_eligible", err.Error())
		case errors.Is(err, ledger.ErrAccountNotFound):
			httpx.WriteProblem(w, r, http.StatusNotFound, "not_found", err.Error())
		default:
			s.cfg.Log.Error("consent: issue enrolment code", "err", err)
			httpx.WriteProblem(w, r, http.StatusInternalServerError, "internal", "internal error")
		}
	})
}
