package keycharge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/keycharge/channel"
	"github.com/qshield/qshield/pki"
)

// Prefix is where the lead mounts Handler.
const Prefix = "/v1/keycharge/"

const maxJSON = 1 << 20

// codes is the keycharge API's error-code registry; Client maps the codes
// back, so errors.Is works across HTTP.
var codes = httpx.NewRegistry(
	httpx.Code{Code: "client_certificate_required", Status: http.StatusUnauthorized, Message: "This service needs a device certificate from the platform.", Err: ErrUnauthenticated},
	httpx.Code{Code: "forbidden", Status: http.StatusForbidden, Message: "This device is not allowed to do that.", Err: ErrForbidden},
	httpx.Code{Code: "not_found", Status: http.StatusNotFound, Message: "That was not found.", Err: ErrNotFound},
	httpx.Code{Code: "exists", Status: http.StatusConflict, Message: "That is already registered.", Err: ErrExists},
	httpx.Code{Code: "illegal_transition", Status: http.StatusConflict, Message: "The device cannot change to that state.", Err: ErrTransition},
	httpx.Code{Code: "device_state", Status: http.StatusForbidden, Message: "The device is not in a state that allows this.", Err: ErrDeviceState},
	httpx.Code{Code: "invalid_request", Status: http.StatusBadRequest, Message: "The request is not valid.", Err: ErrInvalid},
	httpx.Code{Code: "untrusted_device", Status: http.StatusForbidden, Message: "The device could not be verified as genuine.", Err: ErrCounterfeit},
	httpx.Code{Code: "bad_signature", Status: http.StatusForbidden, Message: "The signature is not valid.", Err: ErrBadSignature},
	httpx.Code{Code: "charge_state", Status: http.StatusConflict, Message: "The charge is not in a state that allows this.", Err: ErrChargeState},
	httpx.Code{Code: "consistency_check_failed", Status: http.StatusConflict, Message: "The device's keys do not match the platform's; the charge was stopped.", Err: ErrHashMismatch},
	httpx.Code{Code: "pending_charge", Status: http.StatusConflict, Message: "Another charge is still in progress.", Err: ErrPendingCharge},
	httpx.Code{Code: "pin_locked", Status: http.StatusForbidden, Message: "Too many wrong PINs; the device is locked.", Err: ErrPINLocked},
	httpx.Code{Code: "key_used", Status: http.StatusConflict, Message: "That key was already used.", Err: ErrKeyUsed},
	httpx.Code{Code: "no_key", Status: http.StatusConflict, Message: "No key is available for this device.", Err: ErrNoKey},
	httpx.Code{Code: "no_kme", Status: http.StatusServiceUnavailable, Message: "The key service is not available right now.", Err: ErrNoKME},
	httpx.Code{Code: "kme_error", Status: http.StatusBadGateway, Message: "The key service failed; please try again.", Err: ErrKME},
	httpx.Code{Code: "read_error", Status: http.StatusBadRequest, Message: "The request could not be read."},
)

// ErrorCodes returns the keycharge API's error-code registry.
func ErrorCodes() *httpx.Registry { return codes }

func (q *QKMP) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	if _, ok := codes.Lookup(err); !ok && r.Context().Err() == nil {
		q.cfg.Log.Error("keycharge request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	codes.Write(w, r, err)
}

// PrincipalOf returns the caller of a request: the principal package
// authz authenticated from its client certificate.
func PrincipalOf(r *http.Request) (Principal, error) {
	p := authz.PrincipalFrom(r.Context())
	if p == nil {
		return Principal{}, ErrUnauthenticated
	}
	return Principal{Name: p.Name, Role: p.Role, Kind: p.Kind}, nil
}

// Handler returns the QKMP/QSSC HTTP API, to be mounted at Prefix:
//
//	POST /v1/keycharge/devices                          register (admin)
//	GET  /v1/keycharge/devices                          list (admin)
//	GET  /v1/keycharge/devices/{serial}                 device with key volume
//	POST /v1/keycharge/devices/{serial}/transitions     lifecycle action (admin)
//	GET  /v1/keycharge/devices/{serial}/keys            stored keys' life (admin)
//	POST /v1/keycharge/devices/{serial}/pin-failures    charger reports a wrong PIN
//	POST /v1/keycharge/charges                          begin: certificate → challenge
//	GET  /v1/keycharge/charges/{id}                     charge status
//	POST /v1/keycharge/charges/{id}/authenticate        device signature
//	POST /v1/keycharge/charges/{id}/commit              key IDs + hash (consistency check)
//	POST /v1/keycharge/charges/{id}/abort
//	POST /v1/keycharge/pool                             charger announces prefetched key IDs
//	POST /v1/keycharge/pool/reset                       charger drops its platform pool
//	GET  /v1/keycharge/audit/stats?by=event,resource,day&from=&to=   (admin)
//	GET  /v1/keycharge/audit/search?event=&resource=&limit=          (admin)
//	POST /v1/keycharge/channel/open                     phone opens a QSSC session (device-signed)
//	POST /v1/keycharge/channel/message                  one frame (application/octet-stream)
//
// Administrative and charging routes need a verified client certificate;
// the channel routes authenticate the device by its signature and key.
// Handler serves Routes on its own router (a stand-alone QKMP server).
func (q *QKMP) Handler() http.Handler {
	rt := authz.New(authz.Options{Auth: q.cfg.CA})
	rt.Register(q.Routes()...)
	rt.HandleFunc(Prefix, authz.Public("answers 404 for unknown keycharge paths"), func(w http.ResponseWriter, r *http.Request) {
		codes.WriteCode(w, r, "not_found", "no such keycharge endpoint: "+r.Method+" "+r.URL.Path)
	})
	return rt
}

// Routes returns the API with its policies: administration for admins and
// operators; charging for chargers (each sees and aborts only its own
// charges); the channel for devices, which authenticate by signature.
func (q *QKMP) Routes() []authz.Route {
	var routes []authz.Route
	admin := authz.Allow(pki.PrincipalAdmin, pki.PrincipalOperator)
	adminRead := admin // the handlers refuse auditors too: the registry shows key volumes
	charger := authz.Allow(pki.PrincipalAdmin, pki.PrincipalOperator, pki.PrincipalCharger)
	device := authz.Public("the device authenticates each frame by its signature under its certified key")
	handle := func(pattern string, pol authz.Policy, f http.HandlerFunc) {
		routes = append(routes, authz.Route{Pattern: pattern, Policy: pol, Handler: f})
	}
	auth := func(f func(w http.ResponseWriter, r *http.Request, p Principal)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			p, err := PrincipalOf(r)
			if err != nil {
				q.writeErr(w, r, err)
				return
			}
			f(w, r, p)
		}
	}
	handle("POST /v1/keycharge/devices", admin, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		var req RegisterRequest
		if !httpx.DecodeOrProblem(w, r, maxJSON, &req) {
			return
		}
		d, err := q.Register(r.Context(), p, req)
		q.respond(w, r, http.StatusCreated, d, err)
	}))
	handle("GET /v1/keycharge/devices", adminRead, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		ds, err := q.Devices(r.Context(), p, limit)
		if ds == nil {
			ds = []*Device{}
		}
		q.respond(w, r, http.StatusOK, ds, err)
	}))
	handle("GET /v1/keycharge/devices/{serial}", charger, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		d, err := q.Device(r.Context(), p, r.PathValue("serial"))
		q.respond(w, r, http.StatusOK, d, err)
	}))
	handle("POST /v1/keycharge/devices/{serial}/transitions", admin, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		var req TransitionRequest
		if !httpx.DecodeOrProblem(w, r, maxJSON, &req) {
			return
		}
		res, err := q.Transition(r.Context(), p, r.PathValue("serial"), req)
		q.respond(w, r, http.StatusOK, res, err)
	}))
	handle("GET /v1/keycharge/devices/{serial}/keys", adminRead, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		ks, err := q.Keys(r.Context(), p, r.PathValue("serial"), limit)
		if ks == nil {
			ks = []KeyRecord{}
		}
		q.respond(w, r, http.StatusOK, ks, err)
	}))
	handle("POST /v1/keycharge/devices/{serial}/pin-failures", charger, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		n, err := q.ReportPINFailure(r.Context(), p, r.PathValue("serial"))
		q.respond(w, r, http.StatusOK, map[string]int{"pin_failures": n}, err)
	}))
	handle("POST /v1/keycharge/charges", charger, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		var req BeginRequest
		if !httpx.DecodeOrProblem(w, r, maxJSON, &req) {
			return
		}
		res, err := q.BeginCharge(r.Context(), p, req)
		q.respond(w, r, http.StatusCreated, res, err)
	}))
	handle("GET /v1/keycharge/charges/{id}", charger, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		res, err := q.ChargeStatusOf(r.Context(), p, r.PathValue("id"))
		q.respond(w, r, http.StatusOK, res, err)
	}))
	handle("POST /v1/keycharge/charges/{id}/authenticate", charger, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		var req AuthenticateRequest
		if !httpx.DecodeOrProblem(w, r, maxJSON, &req) {
			return
		}
		err := q.AuthenticateCharge(r.Context(), p, r.PathValue("id"), req.Signature)
		q.respond(w, r, http.StatusOK, map[string]string{"state": ChargePending}, err)
	}))
	handle("POST /v1/keycharge/charges/{id}/commit", charger, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		var req CommitRequest
		if !httpx.DecodeOrProblem(w, r, maxJSON, &req) {
			return
		}
		res, err := q.CommitCharge(r.Context(), p, r.PathValue("id"), req)
		q.respond(w, r, http.StatusOK, res, err)
	}))
	handle("POST /v1/keycharge/charges/{id}/abort", charger, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		var req AbortRequest
		if !httpx.DecodeOrProblem(w, r, maxJSON, &req) {
			return
		}
		res, err := q.AbortCharge(r.Context(), p, r.PathValue("id"), req.Reason)
		q.respond(w, r, http.StatusOK, res, err)
	}))
	handle("POST /v1/keycharge/pool", charger, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		var req PoolRequest
		if !httpx.DecodeOrProblem(w, r, maxJSON, &req) {
			return
		}
		res, err := q.PoolKeys(r.Context(), p, req)
		q.respond(w, r, http.StatusOK, res, err)
	}))
	handle("POST /v1/keycharge/pool/reset", charger, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		res, err := q.ResetPool(r.Context(), p)
		q.respond(w, r, http.StatusOK, res, err)
	}))
	handle("GET /v1/keycharge/audit/stats", adminRead, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		res, err := q.AuditStats(r.Context(), p, r.URL.Query().Get("by"), r.URL.Query().Get("from"), r.URL.Query().Get("to"))
		q.respond(w, r, http.StatusOK, res, err)
	}))
	handle("GET /v1/keycharge/audit/search", adminRead, auth(func(w http.ResponseWriter, r *http.Request, p Principal) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		res, err := q.AuditSearch(r.Context(), p, r.URL.Query().Get("event"), r.URL.Query().Get("resource"), limit)
		q.respond(w, r, http.StatusOK, res, err)
	}))
	handle("POST /v1/keycharge/channel/open", device, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		var req channel.OpenRequest
		if !httpx.DecodeOrProblem(w, r, 16<<10, &req) {
			return
		}
		res, err := q.OpenChannel(r.Context(), req)
		q.respond(w, r, http.StatusOK, res, err)
	})
	handle("POST /v1/keycharge/channel/message", device, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if ct := r.Header.Get("Content-Type"); ct != "application/octet-stream" {
			codes.WriteCode(w, r, "unsupported_media_type", "channel frames are application/octet-stream")
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, channel.MaxFrame+1))
		if err != nil {
			codes.WriteCode(w, r, "read_error", "could not read the frame")
			return
		}
		if len(body) > channel.MaxFrame {
			codes.WriteCode(w, r, "body_too_large", "frame too large")
			return
		}
		out, err := q.ChannelMessage(r.Context(), body)
		if err != nil {
			q.writeErr(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		w.Write(out)
	})
	return routes
}

// AuthenticateRequest carries the device's signature over the challenge.
type AuthenticateRequest struct {
	Signature []byte `json:"signature"`
}

// AbortRequest aborts a charge.
type AbortRequest struct {
	Reason string `json:"reason,omitempty"`
}

func (q *QKMP) respond(w http.ResponseWriter, r *http.Request, status int, v any, err error) {
	if err != nil {
		q.writeErr(w, r, err)
		return
	}
	httpx.WriteJSON(w, status, v)
}

// AuditStats counts keycharge audit records grouped by (a comma list of)
// event, resource (device), day, actor, outcome — administrators only.
func (q *QKMP) AuditStats(ctx context.Context, p Principal, by, from, to string) ([]audit.Count, error) {
	if !q.isAdmin(p) {
		return nil, ErrForbidden
	}
	if by == "" {
		by = "event"
	}
	gs, err := audit.ParseGroupBy(by)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	qr := audit.Query{Event: "keycharge.*"}
	now := q.cfg.Now()
	if from != "" {
		if qr.From, err = audit.ParseTime(from, now); err != nil {
			return nil, fmt.Errorf("%w: from: %v", ErrInvalid, err)
		}
	}
	if to != "" {
		if qr.To, err = audit.ParseTime(to, now); err != nil {
			return nil, fmt.Errorf("%w: to: %v", ErrInvalid, err)
		}
	}
	out, err := q.cfg.Audit.Stats(ctx, qr, gs...)
	if errors.Is(err, audit.ErrInvalid) {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if out == nil {
		out = []audit.Count{}
	}
	return out, err
}

// AuditSearch returns keycharge audit records (event defaults to keycharge.*).
func (q *QKMP) AuditSearch(ctx context.Context, p Principal, event, resource string, limit int) ([]audit.Record, error) {
	if !q.isAdmin(p) {
		return nil, ErrForbidden
	}
	if event == "" {
		event = "keycharge.*"
	}
	if limit <= 0 || limit > 10000 {
		limit = 100
	}
	out, err := q.cfg.Audit.Search(ctx, audit.Query{Event: event, Resource: resource, Limit: limit})
	if errors.Is(err, audit.ErrInvalid) {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if out == nil {
		out = []audit.Record{}
	}
	return out, err
}
