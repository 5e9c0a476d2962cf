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
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
)

// Trust is the red team's attacks on the identity and authorization model
// (issue #12), replayed from outside over HTTPS: each must be refused.
func Trust() Scenario {
	return Scenario{Name: "trust", Run: func(ctx context.Context, env *Env) ([]Row, error) {
		var rows []Row
		p := env.P
		sfx := demoSuffix()
		payer, shop := "trust-alice-"+sfx, "trust-shop-"+sfx
		for _, a := range []ledger.NewAccount{
			{ID: payer, Owner: "alice", Kind: ledger.KindUser, Currency: "CNY"},
			{ID: shop, Owner: "honest shop", Kind: ledger.KindMerchant, Currency: "CNY"},
		} {
			if _, err := p.Ledger.CreateAccount(ctx, a); err != nil {
				return rows, err
			}
		}
		// A payer's phone, enrolled for QMSP with alice's enrolment code;
		// without it, binding a phone to her account is refused.
		_, err := p.QMSP.EnrolPhone(ctx, "PHONE-X-"+sfx, 8000+uint64(len(sfx)), payer, "", nil)
		if err := Expect(&rows, "admin binds a QMSP phone to alice's account without her enrolment code", err, "no valid enrolment code", ""); err != nil {
			return rows, err
		}
		code, err := p.IssueEnrolmentCode(ctx, "demo", payer)
		if err != nil {
			return rows, err
		}
		iss, err := p.QMSP.EnrolPhone(ctx, "PHONE-"+sfx, 9000+uint64(len(sfx)), payer, code, nil)
		if err != nil {
			return rows, err
		}
		phoneCert, err := pki.TLSCertificate(iss)
		if err != nil {
			return rows, err
		}
		phoneTLS := env.ClientTLS(phoneCert)

		// 1. The phone acts as the bioqr operator: certify a POS for itself.
		posUnit, err := bioqr.NewSecureUnit("", bioqr.KindPOS, pki.ECDSAP256, nil)
		if err != nil {
			return rows, err
		}
		posReq, err := bioqr.NewCertRequest(posUnit, "SHOP-"+sfx, "demo POS", nil, map[string]string{bioqr.AttrMerchantAccount: shop})
		if err != nil {
			return rows, err
		}
		asPhone := bioqr.NewClient(env.URL, phoneTLS)
		defer asPhone.Close()
		_, err = asPhone.RegisterPOS(ctx, posReq)
		if err := Expect(&rows, "a payer's phone acts as the bioqr operator (certifies a POS)", err, "forbidden", ""); err != nil {
			return rows, err
		}

		// 2. The operator (here the admin) certifies the POS; a second POS with the same serial is refused.
		asAdmin := bioqr.NewClient(env.URL, env.ClientTLS(p.AdminCert))
		defer asAdmin.Close()
		_, err = asAdmin.RegisterPOS(ctx, posReq)
		if err := Expect(&rows, "operator certifies POS SHOP-"+sfx, err, "", "its display is keyed by this POS's certificate"); err != nil {
			return rows, err
		}
		rogueUnit, err := bioqr.NewSecureUnit("", bioqr.KindPOS, pki.ECDSAP256, nil)
		if err != nil {
			return rows, err
		}
		rogueReq, err := bioqr.NewCertRequest(rogueUnit, "SHOP-"+sfx, "rogue POS", nil, map[string]string{bioqr.AttrMerchantAccount: shop})
		if err != nil {
			return rows, err
		}
		_, err = asAdmin.RegisterPOS(ctx, rogueReq)
		if err := Expect(&rows, "a second POS with the same serial", err, "exists", ""); err != nil {
			return rows, err
		}

		// 3. Enrolment without the account holder's consent.
		phoneUnit, err := bioqr.NewSecureUnit("", bioqr.KindPhone, pki.ECDSAP256, nil)
		if err != nil {
			return rows, err
		}
		stc, err := bioqr.ParseCredential(p.BioQR.Credential())
		if err != nil {
			return rows, err
		}
		tp, err := bioqr.LoadTemplates(env.DataDir, nil)
		if err != nil {
			return rows, err
		}
		er, err := bioqr.NewEnrolRequest(phoneUnit, stc, "BIO-"+sfx, "demo phone", tp.Owner, []string{payer})
		if err == nil {
			_, err = asAdmin.Enrol(ctx, er)
		}
		if err := Expect(&rows, "operator binds a phone to alice's account without her enrolment code", err, "no valid enrolment code", ""); err != nil {
			return rows, err
		}

		// 4. A phone the admin named "charger-x" reports PIN failures to lock a device.
		cx, err := p.CA.IssueTLSFor(ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: "charger-x-" + sfx, Kind: pki.PrincipalPhone})
		if err != nil {
			return rows, err
		}
		status, code, _ := do(ctx, &http.Client{Transport: &http.Transport{TLSClientConfig: env.ClientTLS(cx)}, Timeout: 10 * time.Second},
			"POST", env.URL+"/v1/keycharge/devices/QK-ANY/pin-failures", "{}")
		if err := Expect(&rows, "a phone named charger-x reports PIN failures", problemErr(status, code), "forbidden", "identity is the principal's kind, not its name"); err != nil {
			return rows, err
		}

		// 5. A revoked phone on its kept-alive connection.
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: phoneTLS, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
		defer hc.CloseIdleConnections()
		status, code, _ = do(ctx, hc, "GET", env.URL+"/v1/bioqr/credential", "")
		if err := Expect(&rows, "the phone fetches the settlement credential", problemErr(status, code), "", "keeps its connection open"); err != nil {
			return rows, err
		}
		serial := iss.Cert.SerialNumber.Text(16)
		if _, err := env.Client.Do(ctx, "POST", "/v1/admin/certs/"+serial+"/revoke", nil, map[string]string{"reason": "phone reported stolen"}, nil); err != nil {
			return rows, err
		}
		rows = append(rows, Row{Step: "admin revokes the phone (POST /v1/admin/certs/{serial}/revoke)", Outcome: "ok", Detail: "serial " + serial})
		var reused bool
		tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
		status, code, _ = do(tctx, hc, "GET", env.URL+"/v1/bioqr/credential", "")
		if err := Expect(&rows, "the revoked phone on its kept-alive connection", problemErr(status, code), "client_certificate_rejected",
			fmt.Sprintf("same TLS connection: %v; checked per request", reused)); err != nil {
			return rows, err
		}

		// 6. A classical-only client at a key manager (harvest now, decrypt later).
		sae, err := p.KME.ClientTLS(ctx, platform.SAECSS)
		if err != nil {
			return rows, err
		}
		classical := sae.Clone()
		classical.CurvePreferences = []tls.CurveID{tls.X25519}
		conn, err := tls.Dial("tcp", strings.TrimPrefix(p.KME.BURL, "https://"), classical)
		if err == nil {
			conn.Close()
		}
		if err := Expect(&rows, "a classical-only (X25519) client at a key manager", err, "handshake failure", "key managers accept only X25519MLKEM768"); err != nil {
			return rows, err
		}
		conn, err = tls.Dial("tcp", strings.TrimPrefix(p.KME.BURL, "https://"), sae)
		detail := ""
		if err == nil {
			detail = "negotiated " + conn.ConnectionState().CurveID.String()
			conn.Close()
		}
		if err := Expect(&rows, "a post-quantum client at the same key manager", err, "", detail); err != nil {
			return rows, err
		}
		return rows, nil
	}}
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
