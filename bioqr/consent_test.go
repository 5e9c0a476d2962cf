package bioqr_test

import (
	"errors"
	"testing"
	"time"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// Red-team finding (critical, second half): enrolment only checked that the
// accounts existed, so an attacker enrolled their own finger against a
// victim's account and against the system account that may go negative.
func TestEnrolmentNeedsConsent(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(t, db)
		st := f.rig.Settlement
		enrol := func(account string, consent ...string) error {
			u, err := bioqr.NewSecureUnit("", bioqr.KindPhone, pki.ECDSAP256, nil)
			if err != nil {
				t.Fatal(err)
			}
			stc, _ := bioqr.ParseCredential(st.Credential())
			er, err := bioqr.NewEnrolRequest(u, stc, "PHONE-"+randSuffix(), "m", f.rig.Templates.Owner, []string{account})
			if err != nil {
				t.Fatal(err)
			}
			er.Consent = consent
			_, err = st.Enrol(f.ctx, "operator", er)
			return err
		}
		victim := f.rig.Payer
		if err := enrol(victim); !errors.Is(err, bioqr.ErrConsent) {
			t.Fatalf("enrolment without a code: %v", err)
		}
		if err := enrol(victim, "AAAAAAAAAAAAAAAA"); !errors.Is(err, bioqr.ErrConsent) {
			t.Fatalf("enrolment with a made-up code: %v", err)
		}
		other := "bioqr-other-" + randSuffix()
		if _, err := f.led.CreateAccount(f.ctx, ledger.NewAccount{ID: other, Owner: "o", Kind: ledger.KindUser, Currency: "CNY"}); err != nil {
			t.Fatal(err)
		}
		otherCode, err := st.IssueEnrolmentCode(f.ctx, "operator", other)
		if err != nil {
			t.Fatal(err)
		}
		if err := enrol(victim, otherCode.Code); !errors.Is(err, bioqr.ErrConsent) {
			t.Fatalf("enrolment with another account's code: %v", err)
		}
		code, err := st.IssueEnrolmentCode(f.ctx, "operator", victim)
		if err != nil {
			t.Fatal(err)
		}
		if err := enrol(victim, code.Code); err != nil {
			t.Fatalf("enrolment with the holder's code: %v", err)
		}
		if err := enrol(victim, code.Code); !errors.Is(err, bioqr.ErrConsent) {
			t.Fatalf("second use of a single-use code: %v", err)
		}
		expiring, err := st.IssueEnrolmentCode(f.ctx, "operator", victim)
		if err != nil {
			t.Fatal(err)
		}
		f.clk.Add(bioqr.EnrolmentCodeTTL + time.Second)
		if err := enrol(victim, expiring.Code); !errors.Is(err, bioqr.ErrConsent) {
			t.Fatalf("expired code: %v", err)
		}
		// System, escrow, merchant and may-go-negative accounts: never.
		for _, a := range []ledger.NewAccount{
			{Kind: ledger.KindSystem, AllowNegative: true}, {Kind: ledger.KindEscrow}, {Kind: ledger.KindMerchant}, {Kind: ledger.KindUser, AllowNegative: true},
		} {
			a.ID, a.Owner, a.Currency = "bioqr-x-"+randSuffix(), "x", "CNY"
			if _, err := f.led.CreateAccount(f.ctx, a); err != nil {
				t.Fatal(err)
			}
			if _, err := st.IssueEnrolmentCode(f.ctx, "operator", a.ID); !errors.Is(err, bioqr.ErrAccountNotEligible) {
				t.Errorf("code for a %s account (negative=%v): %v", a.Kind, a.AllowNegative, err)
			}
			if err := enrol(a.ID, "AAAAAAAAAAAAAAAA"); !errors.Is(err, bioqr.ErrAccountNotEligible) {
				t.Errorf("enrolment on a %s account (negative=%v): %v", a.Kind, a.AllowNegative, err)
			}
		}
	})
}

// Red-team finding (high): a second POS "SHOP-1" took over the first one's
// display page. Device serials are unique among active POS principals, and
// a display is published under the authenticated POS's own serial.
func TestSecondPOSWithTheSameSerial(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(t, db)
		serial := "SHOP-" + randSuffix()
		if _, err := f.rig.NewPOS(f.ctx, serial, f.rig.Merchant); err != nil {
			t.Fatal(err)
		}
		attackerShop := "bioqr-attacker-" + randSuffix()
		if _, err := f.led.CreateAccount(f.ctx, ledger.NewAccount{ID: attackerShop, Owner: "attacker", Kind: ledger.KindMerchant, Currency: "CNY"}); err != nil {
			t.Fatal(err)
		}
		_, err := f.rig.NewPOS(f.ctx, serial, attackerShop)
		if !errors.Is(err, bioqr.ErrExists) || !errors.Is(err, pki.ErrDeviceTaken) {
			t.Fatalf("second POS %s: %v", serial, err)
		}
		// A POS cannot be certified for a non-merchant account either.
		if _, err := f.rig.NewPOS(f.ctx, "SHOP-"+randSuffix(), f.rig.Payer); !errors.Is(err, bioqr.ErrAccountNotEligible) {
			t.Fatalf("POS paying into a user account: %v", err)
		}
	})
}
