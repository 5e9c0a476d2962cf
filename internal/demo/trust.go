package demo

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"time"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/internal/lab"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
)

// Trust is the red team's attacks on the identity and authorization model
// (issue #12), replayed from outside over HTTPS: each must be refused.
func Trust() Scenario {
	return Scenario{Name: "trust", Run: func(ctx context.Context, env *Env) ([]Row, error) {
		r := &trustRun{ctx: ctx, env: env, p: env.P, sfx: demoSuffix()}
		err := r.run()
		return r.rows, err
	}}
}

// trustRun is one run of the Trust scenario: each attack is a method, and
// the state one leaves for the next is a field.
type trustRun struct {
	ctx         context.Context
	env         *Env
	p           *platform.Platform
	sfx         string
	rows        []Row
	payer, shop string
	// iss is the payer's enrolled QMSP phone, phoneTLS its client config.
	iss      *pki.Issued
	phoneTLS *tls.Config
	posReq   *bioqr.CertRequest // the honest POS's certification request
	asAdmin  *bioqr.Client      // the bioqr operator (here the admin)
}

func (r *trustRun) expect(step string, err error, want, detail string) error {
	return Expect(&r.rows, step, err, want, detail)
}

func (r *trustRun) run() error {
	defer func() {
		if r.asAdmin != nil {
			r.asAdmin.Close()
		}
	}()
	for _, phase := range []func() error{r.enrolPhone, r.phoneAsOperator, r.duplicatePOS,
		r.enrolWithoutConsent, r.nameIsNotKind, r.revokedKeepAlive, r.classicalKME} {
		if err := phase(); err != nil {
			return err
		}
	}
	return nil
}

// enrolPhone creates the accounts and enrols a payer's phone for QMSP with
// alice's enrolment code; without it, binding a phone to her account is
// refused.
func (r *trustRun) enrolPhone() error {
	ctx, p, sfx := r.ctx, r.p, r.sfx
	r.payer, r.shop = "trust-alice-"+sfx, "trust-shop-"+sfx
	for _, a := range []ledger.NewAccount{
		{ID: r.payer, Owner: "alice", Kind: ledger.KindUser, Currency: "CNY"},
		{ID: r.shop, Owner: "honest shop", Kind: ledger.KindMerchant, Currency: "CNY"},
	} {
		if _, err := p.Ledger.CreateAccount(ctx, a); err != nil {
			return err
		}
	}
	_, err := p.QMSP.EnrolPhone(ctx, "PHONE-X-"+sfx, 8000+uint64(len(sfx)), r.payer, "", nil)
	if err := r.expect("admin binds a QMSP phone to alice's account without her enrolment code", err, "no valid enrolment code", ""); err != nil {
		return err
	}
	code, err := p.IssueEnrolmentCode(ctx, "demo", r.payer)
	if err != nil {
		return err
	}
	iss, err := p.QMSP.EnrolPhone(ctx, "PHONE-"+sfx, 9000+uint64(len(sfx)), r.payer, code, nil)
	if err != nil {
		return err
	}
	phoneCert, err := pki.TLSCertificate(iss)
	if err != nil {
		return err
	}
	r.iss, r.phoneTLS = iss, r.env.ClientTLS(phoneCert)
	return nil
}

// phoneAsOperator (1): the phone acts as the bioqr operator and certifies a
// POS for itself.
func (r *trustRun) phoneAsOperator() error {
	posUnit, err := bioqr.NewSecureUnit("", bioqr.KindPOS, pki.ECDSAP256, nil)
	if err != nil {
		return err
	}
	r.posReq, err = bioqr.NewCertRequest(posUnit, "SHOP-"+r.sfx, "demo POS", nil, map[string]string{bioqr.AttrMerchantAccount: r.shop})
	if err != nil {
		return err
	}
	asPhone := bioqr.NewClient(r.env.URL, r.phoneTLS)
	defer asPhone.Close()
	_, err = asPhone.RegisterPOS(r.ctx, r.posReq)
	return r.expect("a payer's phone acts as the bioqr operator (certifies a POS)", err, "forbidden", "")
}

// duplicatePOS (2): the operator (here the admin) certifies the POS; a
// second POS with the same serial is refused.
func (r *trustRun) duplicatePOS() error {
	r.asAdmin = bioqr.NewClient(r.env.URL, r.env.ClientTLS(r.p.AdminCert))
	_, err := r.asAdmin.RegisterPOS(r.ctx, r.posReq)
	if err := r.expect("operator certifies POS SHOP-"+r.sfx, err, "", "its display is keyed by this POS's certificate"); err != nil {
		return err
	}
	rogueUnit, err := bioqr.NewSecureUnit("", bioqr.KindPOS, pki.ECDSAP256, nil)
	if err != nil {
		return err
	}
	rogueReq, err := bioqr.NewCertRequest(rogueUnit, "SHOP-"+r.sfx, "rogue POS", nil, map[string]string{bioqr.AttrMerchantAccount: r.shop})
	if err != nil {
		return err
	}
	_, err = r.asAdmin.RegisterPOS(r.ctx, rogueReq)
	return r.expect("a second POS with the same serial", err, "exists", "")
}

// enrolWithoutConsent (3): enrolment without the account holder's consent.
func (r *trustRun) enrolWithoutConsent() error {
	phoneUnit, err := bioqr.NewSecureUnit("", bioqr.KindPhone, pki.ECDSAP256, nil)
	if err != nil {
		return err
	}
	stc, err := bioqr.ParseCredential(r.p.BioQR.Credential())
	if err != nil {
		return err
	}
	tp, err := lab.LoadTemplates(r.env.DataDir, nil)
	if err != nil {
		return err
	}
	er, err := bioqr.NewEnrolRequest(phoneUnit, stc, "BIO-"+r.sfx, "demo phone", tp.Owner, []string{r.payer})
	if err == nil {
		_, err = r.asAdmin.Enrol(r.ctx, er)
	}
	return r.expect("operator binds a phone to alice's account without her enrolment code", err, "no valid enrolment code", "")
}

// nameIsNotKind (4): a phone the admin named "charger-x" reports PIN
// failures to lock a device.
func (r *trustRun) nameIsNotKind() error {
	cx, err := r.p.CA.IssueTLSFor(r.ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: "charger-x-" + r.sfx, Kind: pki.PrincipalPhone})
	if err != nil {
		return err
	}
	status, code, _ := do(r.ctx, &http.Client{Transport: &http.Transport{TLSClientConfig: r.env.ClientTLS(cx)}, Timeout: 10 * time.Second},
		"POST", r.env.URL+"/v1/keycharge/devices/QK-ANY/pin-failures", "{}")
	return r.expect("a phone named charger-x reports PIN failures", problemErr(status, code), "forbidden", "identity is the principal's kind, not its name")
}

// revokedKeepAlive (5): a revoked phone on its kept-alive connection.
func (r *trustRun) revokedKeepAlive() error {
	ctx := r.ctx
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: r.phoneTLS, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	status, code, _ := do(ctx, hc, "GET", r.env.URL+"/v1/bioqr/credential", "")
	if err := r.expect("the phone fetches the settlement credential", problemErr(status, code), "", "keeps its connection open"); err != nil {
		return err
	}
	serial := r.iss.Cert.SerialNumber.Text(16)
	if _, err := r.env.Client.Do(ctx, "POST", "/v1/admin/certs/"+serial+"/revoke", nil, map[string]string{"reason": "phone reported stolen"}, nil); err != nil {
		return err
	}
	r.rows = append(r.rows, Row{Step: "admin revokes the phone (POST /v1/admin/certs/{serial}/revoke)", Outcome: "ok", Detail: "serial " + serial})
	var reused bool
	tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
	status, code, _ = do(tctx, hc, "GET", r.env.URL+"/v1/bioqr/credential", "")
	return r.expect("the revoked phone on its kept-alive connection", problemErr(status, code), "client_certificate_rejected",
		fmt.Sprintf("same TLS connection: %v; checked per request", reused))
}

// classicalKME (6): a classical-only client at a key manager (harvest now,
// decrypt later) is refused; a post-quantum one is not.
func (r *trustRun) classicalKME() error {
	p := r.p
	sae, err := p.KME.ClientTLS(r.ctx, platform.SAECSS)
	if err != nil {
		return err
	}
	classical := sae.Clone()
	classical.CurvePreferences = []tls.CurveID{tls.X25519}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(p.KME.BURL, "https://"), classical)
	if err == nil {
		conn.Close()
	}
	if err := r.expect("a classical-only (X25519) client at a key manager", err, "handshake failure", "key managers accept only X25519MLKEM768"); err != nil {
		return err
	}
	conn, err = tls.Dial("tcp", strings.TrimPrefix(p.KME.BURL, "https://"), sae)
	detail := ""
	if err == nil {
		detail = "negotiated " + conn.ConnectionState().CurveID.String()
		conn.Close()
	}
	return r.expect("a post-quantum client at the same key manager", err, "", detail)
}

func demoSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// do sends one request and returns the status and problem code.
func do(ctx context.Context, hc *http.Client, method, url, body string) (int, string, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, "", err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error(), err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	var p httpx.Problem
	_ = json.Unmarshal(b, &p)
	return resp.StatusCode, p.Code, nil
}

// problemErr turns a status and code into nil (2xx) or a problem error.
func problemErr(status int, code string) error {
	if status >= 200 && status < 300 {
		return nil
	}
	return &httpx.Problem{Status: status, Code: code, Detail: http.StatusText(status)}
}
