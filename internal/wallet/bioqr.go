package wallet

// Biometric QR payments (seed 004) from the browser wallet.
//
// The wallet is the patent's mobile device: it films the POS's consumption
// QR, checks the POS certificate the QR names against the CA root, shows
// the merchant and the amount, and shows the payment QR for the POS to
// read; the payer's finger goes on the POS's sensor, so the phone never
// handles a probe. The cryptography is package bioqr/phonecode compiled to
// WebAssembly — the code the CLI phone (`qshield phone bioqr`) runs — with
// the secure unit's two keys replaced by WebCrypto keys that never leave
// the browser: a non-extractable ECDSA P-256 signing key (the payment
// message and the certification request's proof of possession) and a
// non-extractable ECDH P-256 key whose public half the CA registers as the
// phone's encryption key (nothing is ever sealed to the signing key).
//
// Enrolment is the bioqr phone enrolment (bioqr.Settlement.Enrol) with the
// account holder's single-use enrolment code, as for every payer device:
// the wallet, already enrolled (its requests are signed), asks for the
// settlement server's credential and the CA root (GET
// /v1/wallet/bioqr/settlement), seals the owner's fingerprint template to
// the settlement server's key in WebAssembly (the template is the one the
// enrolment desk's sensor recorded; it leaves the browser only sealed, as
// it leaves the CLI phone) and sends the signed certification request with
// a new code for its own account (POST /v1/wallet/bioqr/enrol). The server
// refuses another account than the wallet's, and a missing, wrong or used
// code, with nothing issued.
//
// What the browser sends and keeps is what the CLI phone sends and keeps:
// the certification request, the sealed template, the enrolment code, and
// at payment time only GET look-ups of the POS's certificate and
// revocation status (GET /v1/wallet/bioqr/pos/{serial}, one request for
// both) — the payment QR itself goes to the POS through its camera, sealed
// to the POS's encryption key. The CA root is the one the platform serves
// on first enrolment (the wallet's code comes from the same origin, so it
// adds no trust the page does not already need); the wallet pins it and
// refuses a certificate from another root.

import (
	"errors"
	"math/big"
	"net/http"

	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/consent"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/pki"
)

// BioQREnrolRequest is the body of POST /v1/wallet/bioqr/enrol: the bioqr
// phone enrolment of the CLI phone for the wallet's own account, with one
// enrolment code.
type BioQREnrolRequest struct {
	Request        *bioqr.CertRequest `json:"request"`
	SealedTemplate []byte             `json:"sealed_template"`
	Code           string             `json:"code"`
}

// BioQRSettlement is the answer of GET /v1/wallet/bioqr/settlement.
type BioQRSettlement struct {
	Credential []byte `json:"credential"`
	CARoot     []byte `json:"ca_root"`
}

// BioQRPOS is the answer of GET /v1/wallet/bioqr/pos/{serial}: the
// certificate with that serial (the wallet verifies it against its CA
// root) and its revocation status, what the CLI phone gets from GET
// /v1/bioqr/certificate/{serial} and GET /v1/bioqr/status/{serial}.
type BioQRPOS struct {
	Certificate []byte `json:"certificate,omitempty"` // DER; empty when unknown
	Known       bool   `json:"known"`
	Revoked     bool   `json:"revoked"`
}

// BioQRRoutes returns the wallet's bioqr routes for the settlement server
// st: every one needs a request signed by an enrolled wallet (or a phone's
// client certificate).
func (s *Service) BioQRRoutes(st *bioqr.Settlement) []authz.Route {
	phone := authz.Allow(pki.PrincipalPhone).OrSigned()
	return []authz.Route{
		{Pattern: "GET /v1/wallet/bioqr/settlement", Policy: phone, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			httpx.WriteJSON(w, http.StatusOK, BioQRSettlement{Credential: st.Credential(), CARoot: st.Root().Raw})
		})},
		{Pattern: "POST /v1/wallet/bioqr/enrol", Policy: phone, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.bioqrEnrol(w, r, st) })},
		{Pattern: "GET /v1/wallet/bioqr/pos/{serial}", Policy: phone, Handler: http.HandlerFunc(s.bioqrPOS)},
	}
}

func (s *Service) bioqrEnrol(w http.ResponseWriter, r *http.Request, st *bioqr.Settlement) {
	p := authz.PrincipalFrom(r.Context())
	accts := p.ScopeValues("account:")
	if len(accts) != 1 {
		codes.WriteCode(w, r, "no_account", "")
		return
	}
	var req BioQREnrolRequest
	if !httpx.DecodeOrProblem(w, r, 32<<10, &req) {
		return
	}
	if req.Request == nil || req.Code == "" || len(req.SealedTemplate) == 0 {
		codes.WriteCode(w, r, "malformed", "request, sealed_template and code are required")
		return
	}
	out, err := st.Enrol(r.Context(), "wallet:"+p.Name+"#"+p.Serial, &bioqr.EnrolRequest{
		Request: req.Request, SealedTemplate: req.SealedTemplate, Accounts: accts, Consent: []string{req.Code},
	})
	if err != nil {
		if errors.Is(err, consent.ErrConsent) || errors.Is(err, consent.ErrAccountNotEligible) {
			s.cfg.Log.Info("wallet bioqr enrolment refused", "account", accts[0], "err", err)
			codes.WriteCode(w, r, "enrolment_refused", "")
			return
		}
		s.cfg.Log.Info("wallet bioqr enrolment", "account", accts[0], "err", err)
		bioqr.ErrorCodes().Write(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, out)
}

func (s *Service) bioqrPOS(w http.ResponseWriter, r *http.Request) {
	serial, ok := new(big.Int).SetString(r.PathValue("serial"), 16)
	if !ok || serial.Sign() <= 0 || serial.BitLen() > 160 {
		codes.WriteCode(w, r, "malformed", "serial must be hexadecimal")
		return
	}
	der, err := s.cfg.CA.CertificateDER(r.Context(), serial.Text(16))
	if errors.Is(err, pki.ErrUnknownCert) {
		httpx.WriteJSON(w, http.StatusOK, BioQRPOS{Known: false, Revoked: true})
		return
	}
	if err != nil {
		codes.WriteCode(w, r, httpx.CodeUnavailable, "")
		return
	}
	revoked, err := s.cfg.CA.IsRevoked(r.Context(), serial)
	if err != nil {
		codes.WriteCode(w, r, httpx.CodeUnavailable, "")
		return
	}
	httpx.WriteJSON(w, http.StatusOK, BioQRPOS{Certificate: der, Known: true, Revoked: revoked})
}
