package platform

import (
	"context"
	"net/http"
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/ledger"
)

// Finding (#12, names behind a proxy): the watermark handlers named the
// calling device from the TLS connection's certificate. Behind a trusted
// TLS-terminating proxy (--insecure-http with --trusted-proxy) there is
// none: the router authenticated the phone from the proxy's header, then
// the handler refused it (401). The ledger audited such callers as
// "unauthenticated". Handlers now take the router's principal. Without the
// fix the phone's request below is a 401 and the actor "unauthenticated".
func TestNamesBehindTrustedProxy(t *testing.T) {
	p := openTestPlatform(t, Config{InsecureHTTP: true, Trust: TrustConfig{TrustedProxies: []string{"127.0.0.1"}, ClientCertHeader: "X-Client-Cert"}})
	url := serve(t, p)
	ctx := context.Background()
	userAccount(t, p, "wm-payer", ledger.KindUser, false)
	code, err := p.IssueEnrolmentCode(ctx, "test", "wm-payer")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := p.EnrolWatermarkDevice(ctx, "wm-phone-proxy", "phone", "wm-payer", code, nil)
	if err != nil {
		t.Fatal(err)
	}
	phone := &http.Client{Transport: withHeader("X-Client-Cert", pemEscape(iss.Cert))}
	if a := call(t, phone, "POST", url+"/v1/watermark/codes", map[string]int64{"limit": 100}); a.status != http.StatusCreated {
		t.Fatalf("watermark phone through the trusted proxy: %d %s", a.status, a.body)
	}
	// The ledger audits the admin behind the proxy by its serial.
	admin := &http.Client{Transport: withHeader("X-Client-Cert", pemEscape(p.AdminCert.Leaf))}
	if a := call(t, admin, "POST", url+"/v1/accounts", map[string]any{"id": "proxied", "owner": "x", "kind": "user", "currency": "CNY"}); a.status != http.StatusCreated {
		t.Fatalf("admin through the trusted proxy: %d %s", a.status, a.body)
	}
	recs, err := p.Audit.Search(ctx, audit.Query{Resource: "proxied"})
	if err != nil || len(recs) == 0 {
		t.Fatalf("audit of the account: %v %d", err, len(recs))
	}
	if want := p.AdminCert.Leaf.SerialNumber.Text(16); recs[0].Actor != want {
		t.Errorf("account created by %q, want the admin's serial %s", recs[0].Actor, want)
	}
}
