package console

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/pki"
)

// Certificates from the console.
//
// An admin issues a principal's client certificate here with the same CA
// operation as `qshield admin cert issue` (pki.CA.IssuePrincipal). The
// private key never reaches the server: the page either generates an ECDSA
// P-256 key pair in the admin's browser (WebCrypto), offers the private key
// for download from the browser itself and submits only a certificate
// signing request (CSR), or takes a CSR made on the device (`openssl req`).
// The CSR's signature proves whoever asked holds the key; its subject is
// ignored (the form's name, kind and scope are what the register records).

const maxCSR = 16 << 10

// parseCSR reads a PEM (or base64 DER) certificate signing request, checks
// its self-signature and returns its public key.
func parseCSR(text string) (crypto.PublicKey, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, formError("Paste a certificate signing request, or generate a key in this browser.")
	}
	if len(text) > maxCSR {
		return nil, formError("The certificate signing request is too long.")
	}
	var der []byte
	if b, _ := pem.Decode([]byte(text)); b != nil {
		if b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST" {
			return nil, formError(fmt.Sprintf("That is a %s, not a certificate signing request.", strings.ToLower(b.Type)))
		}
		der = b.Bytes
	} else {
		return nil, formError("That is not a PEM certificate signing request (-----BEGIN CERTIFICATE REQUEST-----).")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, formError("The certificate signing request could not be read: " + err.Error())
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, formError("The certificate signing request's signature is not valid: it was not made with its own key.")
	}
	if csr.PublicKey == nil {
		return nil, formError("The certificate signing request holds no usable public key.")
	}
	return csr.PublicKey, nil
}

type certsData struct {
	Kinds   []string
	Schemes []string
	Form    certForm
	Issued  *pki.Principal
	CertPEM string
	Recent  []*pki.Principal
}

type certForm struct {
	Kind, Name, Scheme, Scope string
}

var schemeNames = []string{"", "qmsp", "keycharge", "selfverify", "watermark", "bioqr", "kme"}

func issuableKinds() []string {
	var out []string
	for _, k := range pki.IssuableKinds() {
		out = append(out, string(k))
	}
	return out
}

func (c *Console) certsPage(w http.ResponseWriter, r *http.Request, s *Session) {
	c.renderCerts(w, r, s, http.StatusOK, certsData{Form: certForm{Kind: "auditor"}}, "")
}

func (c *Console) renderCerts(w http.ResponseWriter, r *http.Request, s *Session, status int, d certsData, errMsg string) {
	d.Kinds = issuableKinds()
	d.Schemes = schemeNames[1:]
	d.Recent, _ = c.cfg.CA.Principals(r.Context(), pki.PrincipalFilter{Limit: 10})
	c.render(w, r, status, "certs", page{Title: "Issue a certificate", Nav: "devices", S: s, Data: d, Error: errMsg})
}

var scopeEntry = regexp.MustCompile(`^(\*|(account|device|merchant):[A-Za-z0-9._:-]{1,120})$`)

func (c *Console) issueCert(w http.ResponseWriter, r *http.Request, s *Session) {
	ctx := r.Context()
	f := certForm{Kind: r.PostFormValue("kind"), Name: strings.TrimSpace(r.PostFormValue("name")),
		Scheme: r.PostFormValue("scheme"), Scope: strings.TrimSpace(r.PostFormValue("scope"))}
	d := certsData{Form: f}
	refuse := func(msg string) {
		c.record(ctx, s, "console.cert.issue", audit.OutcomeFailure, f.Name, map[string]any{"kind": f.Kind, "error": msg})
		c.renderCerts(w, r, s, http.StatusBadRequest, d, msg)
	}
	kind := pki.PrincipalKind(f.Kind)
	if !slices.Contains(pki.IssuableKinds(), kind) {
		refuse("Choose the kind of principal.")
		return
	}
	if f.Name == "" || len(f.Name) > 100 || strings.ContainsFunc(f.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		refuse("The name must be 1 to 100 printable characters.")
		return
	}
	if !slices.Contains(schemeNames, f.Scheme) {
		refuse("Choose a scheme from the list.")
		return
	}
	scope := strings.Fields(strings.ReplaceAll(f.Scope, ",", " "))
	for _, e := range scope {
		if !scopeEntry.MatchString(e) {
			refuse(fmt.Sprintf("%q is not a scope entry: use account:ID, device:SERIAL, merchant:N or *.", e))
			return
		}
	}
	pub, err := parseCSR(r.PostFormValue("csr"))
	if err != nil {
		refuse(err.Error())
		return
	}
	// The CA records the register entry and its pki.issue audit record, with
	// this operator as actor, in the transaction that issues.
	ca := c.cfg.CA.WithAudit(c.cfg.Audit, "operator:"+s.Operator.ID)
	iss, err := ca.IssuePrincipal(ctx, pki.PrincipalRequest{Kind: kind, Name: f.Name, Scheme: f.Scheme, Scope: scope, PublicKey: pub})
	if err != nil {
		refuse("No certificate was issued: " + pkiMessage(err))
		return
	}
	p, err := c.cfg.CA.PrincipalBySerial(ctx, iss.Cert.SerialNumber.Text(16))
	if err != nil {
		c.fail(w, r, s, http.StatusServiceUnavailable, "The certificate was issued but the register cannot be read back right now; find it under Devices.")
		return
	}
	d.Issued, d.CertPEM = p, string(pki.EncodeCertPEM(iss.Cert))
	d.Form = certForm{Kind: f.Kind}
	c.renderCerts(w, r, s, http.StatusOK, d, "")
}

// pkiMessage is a CA refusal in words.
func pkiMessage(err error) string {
	switch {
	case errors.Is(err, pki.ErrNameTaken):
		return "that name already belongs to a principal of another kind"
	case errors.Is(err, pki.ErrTLSNotSM2):
		return "this CA cannot generate the key; submit a certificate signing request"
	case errors.Is(err, pki.ErrBadRequest):
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		return msg
	}
	return "the CA refused the request"
}

// certFile serves a certificate (public) as PEM: SERIAL.pem, or ca.pem for
// the platform's root.
func (c *Console) certFile(w http.ResponseWriter, r *http.Request, s *Session) {
	name := r.PathValue("file")
	serial, ok := strings.CutSuffix(name, ".pem")
	if !ok {
		http.NotFound(w, r)
		return
	}
	var body []byte
	if serial == "ca" {
		body = pki.EncodeCertPEM(c.cfg.CA.Certificate())
	} else {
		der, err := c.cfg.CA.CertificateDER(r.Context(), serial)
		if err != nil {
			c.fail(w, r, s, http.StatusNotFound, "There is no certificate with that serial number.")
			return
		}
		body = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Content-Disposition", `attachment; filename="`+serial+`.pem"`)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(body)
}
