package bioqr

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/qshield/qshield/ledger"
)

// Enrolment consent. Binding a phone to an account lets whoever holds the
// phone (and the enrolled finger) spend from it, so it needs the account
// holder's consent: a short-lived, single-use enrolment code issued for that
// account (by an administrator, or an operator whose scope includes the
// account) and handed to the holder, who gives it to the enrolment desk with
// the phone. Only user accounts that may not go negative can be bound:
// system, escrow, merchant and may-go-negative accounts never.

// ErrConsent is an enrolment without a valid code for one of its accounts.
var ErrConsent = errors.New("bioqr: no valid enrolment code for the account (ask the account holder for one)")

// ErrAccountNotEligible is an account that can never be bound to a payer device.
var ErrAccountNotEligible = errors.New("bioqr: account cannot be bound to a payer device")

// EnrolmentCodeTTL is how long an enrolment code stays valid.
const EnrolmentCodeTTL = 10 * time.Minute

var consentMigration = `CREATE TABLE bioqr_enrolment_codes (
		code_hash TEXT PRIMARY KEY,
		account TEXT NOT NULL,
		issued_by TEXT NOT NULL,
		expires_unix BIGINT NOT NULL,
		used_by TEXT NOT NULL DEFAULT '')`

// EnrolmentCode is a code issued for an account.
type EnrolmentCode struct {
	Code    string    `json:"code"`
	Account string    `json:"account"`
	Expires time.Time `json:"expires"`
}

// payerAccount checks that a may be bound to a payer device.
func payerAccount(a ledger.Account) error {
	if a.Kind != ledger.KindUser || a.AllowNegative {
		neg := ""
		if a.AllowNegative {
			neg = ", may go negative"
		}
		return fmt.Errorf("%w: %q is a %s account%s", ErrAccountNotEligible, a.ID, a.Kind, neg)
	}
	return nil
}

// IssueEnrolmentCode issues a single-use code consenting to bind account to
// one phone, valid for EnrolmentCodeTTL. issuer is recorded (the
// authorization layer has checked it may act for the account).
func (s *Settlement) IssueEnrolmentCode(ctx context.Context, issuer, account string) (*EnrolmentCode, error) {
	a, err := s.cfg.Ledger.Account(ctx, account)
	if err != nil {
		return nil, fmt.Errorf("%w: account %q: %v", ErrNotFound, account, err)
	}
	if err := payerAccount(a); err != nil {
		return nil, err
	}
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("bioqr: enrolment code: %w", err)
	}
	code := base32.StdEncoding.EncodeToString(b) // 16 characters, 80 bits
	exp := s.cfg.Now().Add(EnrolmentCodeTTL)
	db := s.cfg.DB
	if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO bioqr_enrolment_codes (code_hash, account, issued_by, expires_unix) VALUES (?, ?, ?, ?)`),
		codeHash(code), account, issuer, exp.Unix()); err != nil {
		return nil, fmt.Errorf("bioqr: store enrolment code: %w", err)
	}
	s.audit(ctx, AuditEvent{Action: "bioqr.enrolment_code", Actor: issuer, Subject: account, Outcome: "ok",
		Detail: map[string]string{"expires": exp.UTC().Format(time.RFC3339)}})
	return &EnrolmentCode{Code: code, Account: account, Expires: exp}, nil
}

func codeHash(code string) string {
	h := sha256.Sum256([]byte("qshield bioqr enrolment code\x00" + strings.ToUpper(strings.TrimSpace(code))))
	return hex.EncodeToString(h[:])
}

// checkConsent verifies, without using them, that codes hold one valid code
// for each account (in order) and that each account may be bound.
func (s *Settlement) checkConsent(ctx context.Context, accounts, codes []string) error {
	for _, acct := range accounts {
		a, err := s.cfg.Ledger.Account(ctx, acct)
		if err != nil {
			return fmt.Errorf("%w: account %q: %v", ErrNotFound, acct, err)
		}
		if err := payerAccount(a); err != nil {
			return err
		}
	}
	if len(codes) != len(accounts) {
		return fmt.Errorf("%w: %d accounts, %d enrolment codes", ErrConsent, len(accounts), len(codes))
	}
	now := s.cfg.Now().Unix()
	for i, acct := range accounts {
		var n int
		db := s.cfg.DB
		if err := db.QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM bioqr_enrolment_codes WHERE code_hash = ? AND account = ? AND used_by = '' AND expires_unix > ?`),
			codeHash(codes[i]), acct, now).Scan(&n); err != nil {
			return fmt.Errorf("bioqr: check enrolment code: %w", err)
		}
		if n != 1 {
			return fmt.Errorf("%w: account %q", ErrConsent, acct)
		}
	}
	return nil
}

// useConsentTx marks the codes used by phone serial inside the enrolment's
// transaction; a code used concurrently makes it fail.
func (s *Settlement) useConsentTx(ctx context.Context, tx *sql.Tx, accounts, codes []string, serial string) error {
	now := s.cfg.Now().Unix()
	for i, acct := range accounts {
		res, err := tx.ExecContext(ctx, s.cfg.DB.Rebind(`UPDATE bioqr_enrolment_codes SET used_by = ? WHERE code_hash = ? AND account = ? AND used_by = '' AND expires_unix > ?`),
			serial, codeHash(codes[i]), acct, now)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("%w: account %q (code already used)", ErrConsent, acct)
		}
	}
	return nil
}

// UseEnrolmentCode checks that code is a valid, unused enrolment code for
// account (a payer account) and marks it used by usedBy, in one
// transaction: the same consent, for a payer device enrolled outside bioqr
// (the browser wallet's key). It returns an error wrapping ErrConsent or
// ErrAccountNotEligible when the enrolment must be refused.
func (s *Settlement) UseEnrolmentCode(ctx context.Context, account, code, usedBy string) error {
	accounts, codes := []string{account}, []string{code}
	if err := s.checkConsent(ctx, accounts, codes); err != nil {
		return err
	}
	err := s.cfg.DB.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.useConsentTx(ctx, tx, accounts, codes, usedBy); err != nil {
			return err
		}
		e := AuditEvent{Action: "bioqr.enrolment_code_used", Actor: usedBy, Subject: account, Outcome: "ok"}
		return s.cfg.Audit.RecordTx(ctx, tx, e.Entry())
	})
	if err != nil {
		return fmt.Errorf("bioqr: use enrolment code: %w", err)
	}
	return nil
}
