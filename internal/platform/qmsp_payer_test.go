package platform

import (
	"context"
	"errors"
	"testing"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qmsp"
)

// TestEnrolPhonePayerTaken: a payer number bound to one phone and account
// cannot be enrolled for another phone or account (qmsp.ErrPayerExists, 409
// "exists" on the admin API), and the refused enrolment issues no
// certificate; enrolling a phone's binding again is not a conflict at the
// PPS (the soak's second node failed on qmsp_pps_payers_pkey).
func TestEnrolPhonePayerTaken(t *testing.T) {
	p := openTestPlatform(t, Config{})
	ctx := context.Background()
	for _, a := range []string{"alice", "mallory"} {
		if _, err := p.Ledger.CreateAccount(ctx, ledger.NewAccount{ID: a, Owner: a, Kind: ledger.KindUser, Currency: "CNY"}); err != nil {
			t.Fatal(err)
		}
	}
	code := func(account string) string {
		t.Helper()
		c, err := p.IssueEnrolmentCode(ctx, "test", account)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if _, err := p.QMSP.EnrolPhone(ctx, "PHONE-A", 5150, "alice", code("alice"), nil); err != nil {
		t.Fatal(err)
	}
	if err := p.QMSP.PPS.RegisterPayer(ctx, 5150, "alice", "PHONE-A"); err != nil {
		t.Fatalf("the same binding again: %v", err)
	}
	for _, c := range []struct{ phone, account string }{{"PHONE-M", "mallory"}, {"PHONE-M2", "alice"}} {
		_, err := p.QMSP.EnrolPhone(ctx, c.phone, 5150, c.account, code(c.account), nil)
		if !errors.Is(err, qmsp.ErrPayerExists) {
			t.Fatalf("enrol %s on payer 5150: %v, want ErrPayerExists", c.phone, err)
		}
		if st, ok := enrolCodes.Lookup(err); !ok || st.Status != 409 || st.Code != "exists" {
			t.Fatalf("admin API answer for %v: %+v", err, st)
		}
		prs, err := p.CA.Principals(ctx, pki.PrincipalFilter{Kind: pki.PrincipalPhone, Name: c.phone})
		if err != nil || len(prs) != 0 {
			t.Fatalf("refused enrolment of %s issued %d certificates (%v)", c.phone, len(prs), err)
		}
	}
	acct, phone, err := p.QMSP.PPS.PayerBinding(ctx, 5150)
	if err != nil || acct != "alice" || phone != "PHONE-A" {
		t.Fatalf("binding %s/%s %v", acct, phone, err)
	}
}
