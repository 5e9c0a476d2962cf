//go:build !wasm

package selfverify

import (
	"net/http"

	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/httpx"
)

// Prefixes under which the handlers serve.
const (
	OperatorPrefix = "/v1/selfverify/"
	VendorPrefix   = "/v1/vendor/"
)

// ErrorCodes returns the operator's and vendor's error-code registry.
func ErrorCodes() *httpx.Registry { return codes }

func writeError(w http.ResponseWriter, r *http.Request, err error) { codes.Write(w, r, err) }

// decode reads and validates a JSON body of type T.
func decode[T any, P interface {
	*T
	validator
}](w http.ResponseWriter, r *http.Request) (*T, bool) {
	v := new(T)
	if !httpx.DecodeOrProblem(w, r, 1<<20, v) {
		return nil, false
	}
	if err := P(v).validate(); err != nil {
		writeError(w, r, err)
		return nil, false
	}
	return v, true
}

// idempotency requires the Idempotency-Key header on a money-moving POST and,
// where the body carries a signed nonce, that the two agree.
func idempotency(w http.ResponseWriter, r *http.Request, nonce string) bool {
	k, ok := httpx.IdempotencyKey(w, r)
	if !ok {
		return false
	}
	if nonce != "" && k != nonce {
		codes.WriteCode(w, r, "invalid_idempotency_key", "Idempotency-Key must equal the request's signed nonce")
		return false
	}
	return true
}

// Handler serves the operator's API under /v1/selfverify/. Mount it on the
// server mux without stripping the prefix:
//
//	mux.Handle("/v1/selfverify/", op.Handler())
func (o *Operator) Handler() http.Handler {
	rt := authz.New(authz.Options{})
	rt.Register(o.Routes()...)
	rt.HandleFunc(OperatorPrefix, authz.Public("answers 404 for unknown paths"), func(w http.ResponseWriter, r *http.Request) {
		codes.WriteCode(w, r, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return rt
}

// Routes returns the operator's API with its policies. Seed 002's parties
// are not X.509 principals: users and vendors hold ECQV keys certified by
// the operator and sign every request that changes state, so at the HTTP
// layer the routes are public and the operator checks the signatures.
// The look-ups (token, deposit, confirmations) answer only a request signed
// by the owner's key (see lookup.go): the token holder's, or the deposit's
// vendor's.
func (o *Operator) Routes() []authz.Route {
	var routes []authz.Route
	p := OperatorPrefix
	pub := func(reason string) authz.Policy { return authz.Public(reason) }
	handle := func(pattern string, pol authz.Policy, f http.HandlerFunc) {
		routes = append(routes, authz.Route{Pattern: pattern, Policy: pol, Handler: f})
	}
	handle("GET "+p+"params", pub("the public system parameters and the operator's public key"), func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, o.Params())
	})
	handle("POST "+p+"register", pub("a user or vendor registers a key: the request is checked by the operator's registration rules"), func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[RegisterRequest](w, r)
		if !ok {
			return
		}
		resp, err := o.Register(r.Context(), *req)
		reply(w, r, resp, err)
	})
	handle("GET "+p+"vendors/{id}", pub("a vendor's public identity"), func(w http.ResponseWriter, r *http.Request) {
		resp, err := o.Identity(r.Context(), r.PathValue("id"))
		reply(w, r, resp, err)
	})
	handle("POST "+p+"withdraw", pub("signed by the user's certified ECQV key"), func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[WithdrawRequest](w, r)
		if !ok || !idempotency(w, r, req.Nonce) {
			return
		}
		resp, err := o.Withdraw(r.Context(), *req)
		reply(w, r, resp, err)
	})
	handle("POST "+p+"reserve", pub("signed by the vendor's certified ECQV key"), func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[ReserveRequest](w, r)
		if !ok || !idempotency(w, r, "") {
			return
		}
		resp, err := o.Reserve(r.Context(), *req)
		reply(w, r, resp, err)
	})
	handle("POST "+p+"deposits", pub("signed by the vendor's certified ECQV key"), func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[DepositRequest](w, r)
		if !ok || !idempotency(w, r, req.Nonce) {
			return
		}
		resp, err := o.Deposit(r.Context(), *req)
		reply(w, r, resp, err)
	})
	handle("GET "+p+"deposits/{id}", authz.Signed("signed by the deposit's vendor's key", func(r *http.Request) error {
		return o.verifyLookup(r, o.depositOwner(r))
	}), func(w http.ResponseWriter, r *http.Request) {
		resp, err := o.DepositStatus(r.Context(), r.PathValue("id"))
		reply(w, r, resp, err)
	})
	handle("GET "+p+"tokens/{serial}", authz.Signed("signed by the token holder's key", func(r *http.Request) error {
		return o.verifyLookup(r, o.tokenOwner(r))
	}), func(w http.ResponseWriter, r *http.Request) {
		resp, err := o.TokenStatus(r.Context(), r.PathValue("serial"))
		reply(w, r, resp, err)
	})
	handle("GET "+p+"tokens/{serial}/confirmations", authz.Signed("signed by the token holder's key", func(r *http.Request) error {
		return o.verifyLookup(r, o.tokenOwner(r))
	}), func(w http.ResponseWriter, r *http.Request) {
		resp, err := o.Confirmations(r.Context(), r.PathValue("serial"))
		reply(w, r, resp, err)
	})
	handle("POST "+p+"tokens/{serial}/close", pub("signed by the token holder's key"), func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[CloseRequest](w, r)
		if !ok || !idempotency(w, r, req.Nonce) {
			return
		}
		if req.Serial != r.PathValue("serial") {
			writeError(w, r, invalid("serial in path and body differ"))
			return
		}
		resp, err := o.CloseToken(r.Context(), *req)
		reply(w, r, resp, err)
	})
	handle("POST "+p+"confirmations/{id}", pub("signed by the token holder's key"), func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[ConfirmAnswer](w, r)
		if !ok || !idempotency(w, r, "") {
			return
		}
		if req.ID != r.PathValue("id") {
			writeError(w, r, invalid("id in path and body differ"))
			return
		}
		resp, err := o.Confirm(r.Context(), *req)
		reply(w, r, resp, err)
	})
	return routes
}

func reply[T any](w http.ResponseWriter, r *http.Request, v *T, err error) {
	if err != nil {
		writeError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, v)
}

// Handler serves a vendor's API under /v1/vendor/.
func (v *Vendor) Handler() http.Handler {
	mux := http.NewServeMux()
	p := VendorPrefix
	mux.HandleFunc("GET "+p+"info", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, v.Info())
	})
	mux.HandleFunc("POST "+p+"pay/open", func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[OpenPayment](w, r)
		if !ok || !idempotency(w, r, "") {
			return
		}
		resp, err := v.OpenPayment(r.Context(), *req)
		reply(w, r, resp, err)
	})
	mux.HandleFunc("POST "+p+"pay", func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[NextPayment](w, r)
		if !ok || !idempotency(w, r, "") {
			return
		}
		resp, err := v.NextPayment(r.Context(), *req)
		reply(w, r, resp, err)
	})
	mux.HandleFunc("GET "+p+"sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		resp, err := v.Session(r.Context(), r.PathValue("id"))
		reply(w, r, resp, err)
	})
	mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
		codes.WriteCode(w, r, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return crossOrigin(mux)
}

// crossOrigin lets a payer's browser wallet, served from the platform's
// origin, call the vendor's API (CORS). The API carries no ambient
// authority (no cookies, no client certificates are asked for: every
// payment is authenticated by its own cryptography), so any origin may
// call it, never with credentials.
func crossOrigin(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			w.Header().Set("Access-Control-Allow-Methods", "GET, POST")
			w.Header().Set("Access-Control-Allow-Headers", "Content-Type, Idempotency-Key")
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.ServeHTTP(w, r)
	})
}
