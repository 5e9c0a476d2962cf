package platform

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
)

// Finding (critical, #12): QMSP and watermark phone enrolment checked only
// the account's kind, so whoever held the admin credential (or an operator
// acting through it) bound a phone of their own to a victim's account and
// spent from it. Enrolment now needs the account holder's enrolment code,
// the same single-use code bioqr requires. Without the fix the enrolments
// below without a code (or with another account's) succeed.
func TestRedTeamPhoneOnVictimAccountWithoutCode(t *testing.T) {
	p := openTestPlatform(t, Config{})
	url := serve(t, p)
	ctx := context.Background()
	userAccount(t, p, "victim", ledger.KindUser, false)
	userAccount(t, p, "mallory", ledger.KindUser, false)
	admin := httpsClient(p, p.AdminCert)
	pub := func() []byte {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(k.Public())
		return der
	}
	issue := func(acct string) string {
		a := call(t, admin, "POST", url+"/v1/enrolment-codes", map[string]string{"account": acct})
		if a.status != http.StatusCreated {
			t.Fatalf("enrolment code for %s: %d %s", acct, a.status, a.body)
		}
		var c struct{ Code string }
		if err := json.Unmarshal([]byte(a.body), &c); err != nil || len(c.Code) != 16 {
			t.Fatalf("enrolment code: %v %s", err, a.body)
		}
		return c.Code
	}
	malloryCode := issue("mallory")
	payers := func() int {
		var n int
		if err := p.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM qmsp_pps_payers`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	principals := func(name string) int {
		ps, err := p.CA.Principals(ctx, pki.PrincipalFilter{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return len(ps)
	}
	for _, code := range []string{"", "AAAAAAAAAAAAAAAA", malloryCode} {
		a := call(t, admin, "POST", url+"/v1/qmsp/admin/phones", PhoneEnrolment{Phone: "PHONE-EVIL", Payer: 666, Account: "victim", EnrolmentCode: code, PublicKey: pub()})
		if a.status != http.StatusForbidden || a.code != "consent_required" {
			t.Errorf("QMSP phone on the victim's account with code %q: %d %s", code, a.status, a.body)
		}
		a = call(t, admin, "POST", url+"/v1/watermark/admin/devices", WatermarkEnrolment{Name: "WM-EVIL", Role: "phone", Account: "victim", EnrolmentCode: code, PublicKey: pub()})
		if a.status != http.StatusForbidden || a.code != "consent_required" {
			t.Errorf("watermark phone on the victim's account with code %q: %d %s", code, a.status, a.body)
		}
	}
	// Nothing changed: no certificate, no payer, no watermark device.
	if n := principals("PHONE-EVIL") + principals("WM-EVIL"); n != 0 {
		t.Errorf("%d certificates issued for refused enrolments", n)
	}
	if n := payers(); n != 0 {
		t.Errorf("%d QMSP payers bound by refused enrolments", n)
	}
	if _, err := p.Watermark.Account(ctx, "WM-EVIL", "phone"); err == nil {
		t.Error("watermark phone bound by a refused enrolment")
	}
	// Mallory's own code was not used up by the refusals: it still enrols
	// her own phone, once.
	if a := call(t, admin, "POST", url+"/v1/qmsp/admin/phones", PhoneEnrolment{Phone: "PHONE-M", Payer: 7, Account: "mallory", EnrolmentCode: malloryCode, PublicKey: pub()}); a.status != http.StatusCreated {
		t.Fatalf("QMSP phone with the holder's code: %d %s", a.status, a.body)
	}
	if a := call(t, admin, "POST", url+"/v1/watermark/admin/devices", WatermarkEnrolment{Name: "WM-M", Role: "phone", Account: "mallory", EnrolmentCode: malloryCode, PublicKey: pub()}); a.status != http.StatusForbidden || a.code != "consent_required" {
		t.Errorf("second use of a code: %d %s", a.status, a.body)
	}
	wmCode := issue("mallory")
	if a := call(t, admin, "POST", url+"/v1/watermark/admin/devices", WatermarkEnrolment{Name: "WM-M", Role: "phone", Account: "mallory", EnrolmentCode: wmCode, PublicKey: pub()}); a.status != http.StatusCreated {
		t.Fatalf("watermark phone with the holder's code: %d %s", a.status, a.body)
	}
	// A scanner is paid into its account and binds without a code.
	userAccount(t, p, "shop", ledger.KindMerchant, false)
	if a := call(t, admin, "POST", url+"/v1/watermark/admin/devices", WatermarkEnrolment{Name: "SC-1", Role: "scanner", Account: "shop", PublicKey: pub()}); a.status != http.StatusCreated {
		t.Fatalf("scanner: %d %s", a.status, a.body)
	}
	// A failed binding gives the code back and leaves no active certificate.
	retry := issue("mallory")
	if _, err := p.QMSP.EnrolPhone(ctx, "PHONE-M2", 7, "mallory", retry, nil); err == nil { // payer 7 is taken
		t.Fatal("second phone with a taken payer number enrolled")
	}
	if ps, _ := p.CA.Principals(ctx, pki.PrincipalFilter{Name: "PHONE-M2", ActiveOnly: true}); len(ps) != 0 {
		t.Errorf("unbound phone left active: %+v", ps[0])
	}
	if _, err := p.QMSP.EnrolPhone(ctx, "PHONE-M3", 8, "mallory", retry, nil); err != nil {
		t.Errorf("code after a failed binding: %v", err)
	}
}

// An operator gets codes only for accounts in its scope.
func TestEnrolmentCodeScope(t *testing.T) {
	p := openTestPlatform(t, Config{})
	url := serve(t, p)
	userAccount(t, p, "alice", ledger.KindUser, false)
	userAccount(t, p, "bob", ledger.KindUser, false)
	userAccount(t, p, "bank", ledger.KindSystem, true)
	op, err := p.CA.IssueTLSFor(context.Background(), pki.IssueRequest{Role: pki.RoleClient, CommonName: "desk-1", Kind: pki.PrincipalOperator, Scope: []string{"account:alice"}})
	if err != nil {
		t.Fatal(err)
	}
	hc := httpsClient(p, op)
	if a := call(t, hc, "POST", url+"/v1/enrolment-codes", map[string]string{"account": "alice"}); a.status != http.StatusCreated {
		t.Errorf("operator, own account: %d %s", a.status, a.body)
	}
	if a := call(t, hc, "POST", url+"/v1/enrolment-codes", map[string]string{"account": "bob"}); a.status != http.StatusForbidden || a.code != "not_owner" {
		t.Errorf("operator, another account: %d %s", a.status, a.body)
	}
	admin := httpsClient(p, p.AdminCert)
	if a := call(t, admin, "POST", url+"/v1/enrolment-codes", map[string]string{"account": "bank"}); a.status != http.StatusForbidden || a.code != "account_not_eligible" {
		t.Errorf("code for the system account: %d %s", a.status, a.body)
	}
	if a := call(t, admin, "POST", url+"/v1/enrolment-codes", map[string]string{"account": "nobody"}); a.status != http.StatusNotFound {
		t.Errorf("code for a missing account: %d %s", a.status, a.body)
	}
}
