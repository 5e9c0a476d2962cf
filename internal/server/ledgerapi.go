package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
)

// LedgerAPI serves accounts, balances, transfers and history over HTTP.
//
//	GET  /v1/accounts                    list accounts in ID order (?cursor=&limit=)
//	POST /v1/accounts                    open an account (Idempotency-Key honoured)
//	GET  /v1/accounts/{id}               the account with its balances
//	GET  /v1/accounts/{id}/transfers     history, newest first (?cursor=&limit=)
//	POST /v1/transfers                   move money (Idempotency-Key required)
//	GET  /v1/transfers/{id}              one transfer
//	POST /v1/transfers/{id}/post         post a pending transfer (Idempotency-Key required)
//	POST /v1/transfers/{id}/void         void a pending transfer (Idempotency-Key required)
//
// Every route requires a client certificate verified by the TLS layer unless
// the server runs with the explicit insecure-HTTP option. With a ledger
// opened WithAudit, every account creation, transfer, post and void is
// audited in its own database transaction with the caller's certificate
// serial as the actor (see Principal).
type LedgerAPI struct {
	Ledger *ledger.Ledger
	// RequireClientCert refuses requests without a verified client certificate.
	RequireClientCert bool
	// Authorize, when set, decides whether the verified caller may use the
	// ledger API at all (the platform allows only its admin certificate:
	// devices such as phones and gateways move money only through their
	// scheme's own checks).
	Authorize func(*http.Request) bool
	// Idempotency, when set, stores the response of every POST carrying an
	// Idempotency-Key (refusals included) and replays it for a retry with
	// the same key (see httpx.Idempotency). Without it only the ledger's
	// own transfer keys and account IDs derived from keys protect retries.
	Idempotency *httpx.Idempotency
}

// Routes returns the API with its policies: only administrators move money
// or open accounts; auditors may read. Devices move money only through
// their scheme's own checks.
func (a *LedgerAPI) Routes() []authz.Route {
	write := authz.Allow(pki.PrincipalAdmin)
	read := authz.Allow(pki.PrincipalAdmin, pki.PrincipalAuditor)
	return []authz.Route{
		{Pattern: "GET /v1/accounts", Policy: read, Handler: http.HandlerFunc(a.listAccounts)},
		{Pattern: "POST /v1/accounts", Policy: write, Handler: a.idem(false, a.createAccount)},
		{Pattern: "GET /v1/accounts/{id}", Policy: read, Handler: http.HandlerFunc(a.getAccount)},
		{Pattern: "GET /v1/accounts/{id}/transfers", Policy: read, Handler: http.HandlerFunc(a.history)},
		{Pattern: "POST /v1/transfers", Policy: write, Handler: a.idem(true, a.transfer)},
		{Pattern: "GET /v1/transfers/{id}", Policy: read, Handler: http.HandlerFunc(a.getTransfer)},
		{Pattern: "POST /v1/transfers/{id}/post", Policy: write, Handler: a.idem(true, a.post)},
		{Pattern: "POST /v1/transfers/{id}/void", Policy: write, Handler: a.idem(true, a.void)},
	}
}

// Register mounts the routes on s with the checks of RequireClientCert and
// Authorize (a stand-alone server without principals; the platform
// registers Routes on its authorization router instead).
func (a *LedgerAPI) Register(s *Server) {
	for _, r := range a.Routes() { // one list of routes for both ways of serving
		s.Handle(r.Pattern, a.auth(r.Handler.ServeHTTP))
	}
}

// idem puts h behind the idempotency store when there is one.
func (a *LedgerAPI) idem(required bool, h http.HandlerFunc) http.HandlerFunc {
	if a.Idempotency == nil {
		return h
	}
	return a.Idempotency.Wrap(required, h).ServeHTTP
}

// accountIDForKey derives the ID of an account created without one under an
// Idempotency-Key, so that a retry whose stored response was lost (a crash
// between the commit and storing it) finds the same account instead of
// opening a second one.
func accountIDForKey(r *http.Request, key string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s", httpx.PrincipalOf(r.Context()), key)
	return "acc_k" + hex.EncodeToString(h.Sum(nil)[:15])
}

func (a *LedgerAPI) auth(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.RequireClientCert && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			httpx.WriteProblem(w, r, http.StatusUnauthorized, "client_certificate_required", "this endpoint needs a client certificate issued by the platform CA")
			return
		}
		if a.Authorize != nil && !a.Authorize(r) {
			httpx.WriteProblem(w, r, http.StatusForbidden, "forbidden", "this certificate may not use the ledger API")
			return
		}
		// The ledger audits every account and money movement inside its
		// transaction with this principal as the actor.
		h(w, r.WithContext(audit.WithActor(r.Context(), Principal(r))))
	})
}

// Principal names the caller of r for the audit trail: the serial number
// (hex) of the principal the authorization router authenticated (the only
// one there is behind a trusted TLS-terminating proxy), else of its verified
// client certificate, or "unauthenticated" on a server run with the
// insecure-HTTP option.
func Principal(r *http.Request) string {
	if p := authz.PrincipalFrom(r.Context()); p != nil {
		return p.Serial
	}
	if _, serial, err := pki.PeerIdentity(r.TLS); err == nil {
		return serial.Text(16)
	}
	return "unauthenticated"
}

// AccountRequest is the body of POST /v1/accounts.
type AccountRequest struct {
	ID            string      `json:"id,omitempty"`
	Owner         string      `json:"owner"`
	Kind          ledger.Kind `json:"kind"`
	Currency      string      `json:"currency"`
	AllowNegative bool        `json:"allow_negative,omitempty"`
}

// TransferRequest is the body of POST /v1/transfers.
type TransferRequest struct {
	From      string    `json:"from"`
	To        string    `json:"to"`
	Amount    int64     `json:"amount"`
	Currency  string    `json:"currency"`
	Memo      string    `json:"memo,omitempty"`
	Pending   bool      `json:"pending,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// PostRequest is the body of POST /v1/transfers/{id}/post (optional).
type PostRequest struct {
	Amount int64 `json:"amount,omitempty"`
}

// HistoryPage is the body of a history response.
type HistoryPage struct {
	Transfers  []ledger.Transfer `json:"transfers"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

func (a *LedgerAPI) createAccount(w http.ResponseWriter, r *http.Request) {
	var req AccountRequest
	if !httpx.DecodeOrProblem(w, r, 4<<10, &req) {
		return
	}
	na := ledger.NewAccount{
		ID: req.ID, Owner: req.Owner, Kind: req.Kind, Currency: req.Currency, AllowNegative: req.AllowNegative,
	}
	var acct ledger.Account
	var err error
	if key := r.Header.Get(httpx.IdempotencyHeader); key != "" && na.ID == "" {
		na.ID = accountIDForKey(r, key)
		acct, err = a.Ledger.EnsureAccount(r.Context(), na)
	} else {
		acct, err = a.Ledger.CreateAccount(r.Context(), na)
	}
	if err != nil {
		writeLedgerError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/accounts/"+acct.ID)
	httpx.WriteJSON(w, http.StatusCreated, acct)
}

func (a *LedgerAPI) getAccount(w http.ResponseWriter, r *http.Request) {
	acct, err := a.Ledger.Account(r.Context(), r.PathValue("id"))
	if err != nil {
		writeLedgerError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, acct)
}

func (a *LedgerAPI) history(w http.ResponseWriter, r *http.Request) {
	limit := 50
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 500 {
			LedgerCodes.WriteCode(w, r, "invalid_limit", "limit must be an integer from 1 to 500")
			return
		}
		limit = n
	}
	page, next, err := a.Ledger.History(r.Context(), r.PathValue("id"), r.URL.Query().Get("cursor"), limit)
	if err != nil {
		writeLedgerError(w, r, err)
		return
	}
	if page == nil {
		page = []ledger.Transfer{}
	}
	httpx.WriteJSON(w, http.StatusOK, HistoryPage{Transfers: page, NextCursor: next})
}

func (a *LedgerAPI) transfer(w http.ResponseWriter, r *http.Request) {
	key, ok := httpx.IdempotencyKey(w, r)
	if !ok {
		return
	}
	var req TransferRequest
	if !httpx.DecodeOrProblem(w, r, 4<<10, &req) {
		return
	}
	t, err := a.Ledger.Transfer(r.Context(), ledger.TransferRequest{
		IdempotencyKey: key, From: req.From, To: req.To, Amount: req.Amount, Currency: req.Currency,
		Memo: req.Memo, Pending: req.Pending, ExpiresAt: req.ExpiresAt,
	})
	if err != nil {
		writeLedgerError(w, r, err)
		return
	}
	// A replay returns the first result with 200; a new transfer is 201.
	status := http.StatusCreated
	if t.Replayed {
		status = http.StatusOK
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Location", "/v1/transfers/"+t.ID)
	httpx.WriteJSON(w, status, t)
}

func (a *LedgerAPI) getTransfer(w http.ResponseWriter, r *http.Request) {
	t, err := a.Ledger.GetTransfer(r.Context(), r.PathValue("id"))
	if err != nil {
		writeLedgerError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, t)
}

func (a *LedgerAPI) post(w http.ResponseWriter, r *http.Request) {
	if _, ok := httpx.IdempotencyKey(w, r); !ok { // used by a.Idempotency
		return
	}
	var req PostRequest
	if r.ContentLength != 0 {
		if !httpx.DecodeOrProblem(w, r, 1<<10, &req) {
			return
		}
	}
	t, err := a.Ledger.Post(r.Context(), r.PathValue("id"), req.Amount)
	if err != nil {
		writeLedgerError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, t)
}

func (a *LedgerAPI) void(w http.ResponseWriter, r *http.Request) {
	if _, ok := httpx.IdempotencyKey(w, r); !ok { // used by a.Idempotency
		return
	}
	t, err := a.Ledger.Void(r.Context(), r.PathValue("id"))
	if err != nil {
		writeLedgerError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, t)
}

// LedgerCodes is the ledger API's error-code registry.
var LedgerCodes = httpx.NewRegistry(
	httpx.Code{Code: "invalid_account", Status: http.StatusBadRequest, Message: "That account name is not valid.", Err: ledger.ErrInvalidAccount},
	httpx.Code{Code: "account_exists", Status: http.StatusConflict, Message: "That account already exists.", Err: ledger.ErrAccountExists},
	httpx.Code{Code: "account_not_found", Status: http.StatusNotFound, Message: "That account does not exist.", Err: ledger.ErrAccountNotFound},
	httpx.Code{Code: "invalid_amount", Status: http.StatusUnprocessableEntity, Message: "The amount is not valid.", Err: ledger.ErrInvalidAmount},
	httpx.Code{Code: "currency_mismatch", Status: http.StatusUnprocessableEntity, Message: "The payment is in the wrong currency.", Err: ledger.ErrCurrencyMismatch},
	httpx.Code{Code: "same_account", Status: http.StatusUnprocessableEntity, Message: "Money cannot move from an account to itself.", Err: ledger.ErrSameAccount},
	httpx.Code{Code: "insufficient_funds", Status: http.StatusUnprocessableEntity, Message: "The account does not have enough money for this payment.", Err: ledger.ErrInsufficientFunds},
	httpx.Code{Code: "idempotency_conflict", Status: http.StatusConflict, Message: "This Idempotency-Key was already used for a different request.", Err: ledger.ErrIdempotencyConflict},
	httpx.Code{Code: "idempotency_key_required", Status: http.StatusBadRequest, Message: "The request is missing its Idempotency-Key.", Err: ledger.ErrMissingIdempotency},
	httpx.Code{Code: "transfer_not_found", Status: http.StatusNotFound, Message: "That transfer does not exist.", Err: ledger.ErrTransferNotFound},
	httpx.Code{Code: "not_pending", Status: http.StatusConflict, Message: "The transfer is no longer pending.", Err: ledger.ErrNotPending},
	httpx.Code{Code: "expired", Status: http.StatusConflict, Message: "The transfer has expired.", Err: ledger.ErrExpired},
	httpx.Code{Code: "invalid_expiry", Status: http.StatusUnprocessableEntity, Message: "The expiry is not valid.", Err: ledger.ErrInvalidExpiry},
	httpx.Code{Code: "invalid_memo", Status: http.StatusUnprocessableEntity, Message: "The memo is not valid.", Err: ledger.ErrInvalidMemo},
	httpx.Code{Code: "invalid_cursor", Status: http.StatusBadRequest, Message: "The page cursor is not valid.", Err: ledger.ErrInvalidCursor},
	httpx.Code{Code: "invalid_idempotency_key", Status: http.StatusBadRequest, Message: "The request's Idempotency-Key is not valid.", Err: ledger.ErrInvalidKey},
	httpx.Code{Code: "shutting_down", Status: http.StatusServiceUnavailable, Message: "The service is restarting; please try again shortly.", Err: ledger.ErrClosed},
	httpx.Code{Code: "invalid_limit", Status: http.StatusBadRequest, Message: "The page size is not valid."},
)

func writeLedgerError(w http.ResponseWriter, r *http.Request, err error) {
	// Registered refusals are 4xx; database down, disk full, timeouts are
	// 503 with Retry-After; anything else is a bug: 500 with the request
	// ID. The last two are logged with the cause (httpx.WriteError).
	LedgerCodes.Write(w, r, err)
}
