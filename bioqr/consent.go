package bioqr

import (
	"context"
	"errors"
	"fmt"

	"github.com/qshield/qshield/consent"
	"github.com/qshield/qshield/ledger"
)

// Enrolment consent. Binding a phone to an account lets whoever holds the
// phone (and the enrolled finger) spend from it, so it needs the account
// holder's consent: a short-lived, single-use enrolment code issued for that
// account (by an administrator, or an operator whose scope includes the
// account) and handed to the holder, who gives it to the enrolment desk with
// the phone. Only user accounts that may not go negative can be bound:
// system, escrow, merchant and may-go-negative accounts never. The codes are
// the platform's one consent mechanism (package consent), shared with QMSP
// and watermark phones.

// ErrConsent is an enrolment without a valid code for one of its accounts.
var ErrConsent = consent.ErrConsent

// ErrAccountNotEligible is an account that can never be bound to a payer device.
var ErrAccountNotEligible = consent.ErrAccountNotEligible

// EnrolmentCodeTTL is how long an enrolment code stays valid.
const EnrolmentCodeTTL = consent.CodeTTL

// The codes moved to package consent's table (version 3 drops this one; a
// code lives ten minutes, so none is worth carrying over).
var consentMigration = `CREATE TABLE bioqr_enrolment_codes (
		code_hash TEXT PRIMARY KEY,
		account TEXT NOT NULL,
		issued_by TEXT NOT NULL,
		expires_unix BIGINT NOT NULL,
		used_by TEXT NOT NULL DEFAULT '')`

// EnrolmentCode is a code issued for an account.
type EnrolmentCode = consent.Code

// IssueEnrolmentCode issues a single-use code consenting to bind account to
// one phone, valid for EnrolmentCodeTTL. issuer is recorded (the
// authorization layer has checked it may act for the account).
func (s *Settlement) IssueEnrolmentCode(ctx context.Context, issuer, account string) (*EnrolmentCode, error) {
	c, err := s.cfg.Consent.Issue(ctx, issuer, account)
	if err != nil && errors.Is(err, ledger.ErrAccountNotFound) {
		return nil, fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	return c, err
}

// Consent is the enrolment-code store this server uses.
func (s *Settlement) Consent() *consent.Store { return s.cfg.Consent }

func (s *Settlement) checkConsent(ctx context.Context, accounts, codes []string) error {
	err := s.cfg.Consent.Check(ctx, accounts, codes)
	if err != nil && errors.Is(err, ledger.ErrAccountNotFound) {
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	return err
}
