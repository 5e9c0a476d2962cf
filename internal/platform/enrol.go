package platform

import (
	"context"
	"crypto/x509"
	"errors"
	"github.com/qshield/qshield/consent"
	"log/slog"
	"net/http"

	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qmsp"
	"github.com/qshield/qshield/sqldb"
)

// enrolCodes is the error-code registry of the admin enrolment endpoints.
var enrolCodes = httpx.NewRegistry(
	httpx.Code{Code: "admin_required", Status: http.StatusForbidden, Message: "This needs the platform administrator's certificate."},
	httpx.Code{Code: "malformed", Status: http.StatusBadRequest, Message: "The request could not be read."},
	httpx.Code{Code: "exists", Status: http.StatusConflict, Message: "That is already registered.", Err: qmsp.ErrGatewayExists},
	httpx.Code{Code: "exists", Status: http.StatusConflict, Message: "That is already registered.", Err: qmsp.ErrPayerExists},
	httpx.Code{Code: "exists", Status: http.StatusConflict, Message: "That is already registered.", Err: ledger.ErrAccountExists},
	httpx.Code{Code: "invalid", Status: http.StatusBadRequest, Message: "The enrolment is not valid.", Err: qmsp.ErrFormat},
	httpx.Code{Code: "invalid", Status: http.StatusBadRequest, Message: "The enrolment is not valid.", Err: pki.ErrBadRequest},
	httpx.Code{Code: "invalid", Status: http.StatusBadRequest, Message: "The enrolment is not valid.", Err: ledger.ErrInvalidAccount},
	httpx.Code{Code: "invalid", Status: http.StatusBadRequest, Message: "The enrolment is not valid.", Err: ledger.ErrAccountNotFound},
	httpx.Code{Code: "consent_required", Status: http.StatusForbidden, Message: "The account holder's enrolment code is needed.", Err: consent.ErrConsent},
	httpx.Code{Code: "account_not_eligible", Status: http.StatusForbidden, Message: "This account cannot be used from a payer's device.", Err: ErrNotPayerAccount},
	httpx.Code{Code: "exists", Status: http.StatusConflict, Message: "That is already registered.", Err: pki.ErrNameTaken},
	httpx.Code{Code: "exists", Status: http.StatusConflict, Message: "That is already registered.", Err: pki.ErrDeviceTaken},
	httpx.Code{Code: "no_quantum_key", Status: http.StatusServiceUnavailable, Message: "No payment keys are available right now; please try again shortly.", Err: qmsp.ErrNoQuantumKey},
)

// enrolment is a request body of an admin enrolment endpoint: it carries the
// device's PKIX public key.
type enrolment interface {
	publicKeyDER() []byte
}

// enrolHandler is the one admin device-enrolment endpoint (registered on the
// router for the admin principal): a JSON body of type T (at most 8 KiB) with a PKIX
// public key, enrol, and 201 with what enrol returns (the platform root
// filled in). Every admin enrolment route is built with it.
func enrolHandler[T any, P interface {
	*T
	enrolment
}](p *Platform, what string, enrol func(ctx context.Context, req P, pub any) (DeviceEnrolled, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The router admits only the admin; checked again here so that the
		// handler is never an open door if registered elsewhere.
		if pr := authz.PrincipalFrom(r.Context()); pr == nil || pr.Kind != pki.PrincipalAdmin {
			enrolCodes.WriteCode(w, r, "admin_required", "this endpoint needs the platform admin certificate")
			return
		}
		req := P(new(T))
		if !httpx.DecodeOrProblem(w, r, 8<<10, req) {
			return
		}
		pub, err := x509.ParsePKIXPublicKey(req.publicKeyDER())
		if err != nil {
			enrolCodes.WriteCode(w, r, "malformed", "public_key is not a PKIX public key: "+err.Error())
			return
		}
		out, err := enrol(r.Context(), req, pub)
		if err != nil {
			writeEnrolError(w, r, p.Config.Log, what, err)
			return
		}
		out.CA = p.CA.Certificate().Raw
		httpx.WriteJSON(w, http.StatusCreated, out)
	})
}

func writeEnrolError(w http.ResponseWriter, r *http.Request, log *slog.Logger, what string, err error) {
	if _, ok := enrolCodes.Lookup(err); !ok && sqldb.IsUniqueViolation(err) {
		enrolCodes.WriteCode(w, r, "exists", "already enrolled")
		return
	}
	if _, ok := enrolCodes.Lookup(err); !ok && !errors.Is(err, context.Canceled) {
		log.Error(what+" enrolment", "err", err)
	}
	enrolCodes.Write(w, r, err)
}

func (g *GatewayEnrolment) publicKeyDER() []byte   { return g.PublicKey }
func (e *PhoneEnrolment) publicKeyDER() []byte     { return e.PublicKey }
func (e *WatermarkEnrolment) publicKeyDER() []byte { return e.PublicKey }
