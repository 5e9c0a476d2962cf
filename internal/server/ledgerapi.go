package server

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
)

// LedgerAPI serves accounts, balances, transfers and history over HTTP.
//
//	POST /v1/accounts                    open an account (Idempotency-Key optional)
//	GET  /v1/accounts/{id}               the account with its balances
//	GET  /v1/accounts/{id}/transfers     history, newest first (?cursor=&limit=)
//	POST /v1/transfers                   move money (Idempotency-Key required)
//	GET  /v1/transfers/{id}              one transfer
//	POST /v1/transfers/{id}/post         post a pending transfer (Idempotency-Key required)
//	POST /v1/transfers/{id}/void         void a pending transfer (Idempotency-Key required)
//
// Every route requires a client certificate verified by the TLS layer unless
// the server runs with the explicit insecure-HTTP option.
type LedgerAPI struct {
	Ledger *ledger.Ledger
	// RequireClientCert refuses requests without a verified client certificate.
	RequireClientCert bool
	// Authorize, when set, decides whether the verified caller may use the
	// ledger API at all (the platform allows only its admin certificate:
	// devices such as phones and gateways move money only through their
	// scheme's own checks).
	Authorize func(*http.Request) bool
}

// Routes returns the API with its policies: only administrators move money
// or open accounts; auditors may read. Devices move money only through
// their scheme's own checks.
func (a *LedgerAPI) Routes() []authz.Route {
	write := authz.Allow(pki.PrincipalAdmin)
	read := authz.Allow(pki.PrincipalAdmin, pki.PrincipalAuditor)
	return []authz.Route{
		{Pattern: "POST /v1/accounts", Policy: write, Handler: http.HandlerFunc(a.createAccount)},
		{Pattern: "GET /v1/accounts/{id}", Policy: read, Handler: http.HandlerFunc(a.getAccount)},
		{Pattern: "GET /v1/accounts/{id}/transfers", Policy: read, Handler: http.HandlerFunc(a.history)},
		{Pattern: "POST /v1/transfers", Policy: write, Handler: http.HandlerFunc(a.transfer)},
		{Pattern: "GET /v1/transfers/{id}", Policy: read, Handler: http.HandlerFunc(a.getTransfer)},
		{Pattern: "POST /v1/transfers/{id}/post", Policy: write, Handler: http.HandlerFunc(a.post)},
		{Pattern: "POST /v1/transfers/{id}/void", Policy: write, Handler: http.HandlerFunc(a.void)},
	}
}

// Register mounts the routes on s with the checks of RequireClientCert and
// Authorize (a stand-alone server without principals; the platform
// registers Routes on its authorization router instead).
func (a *LedgerAPI) Register(s *Server) {
	s.Handle("POST /v1/accounts", a.auth(a.createAccount))
	s.Handle("GET /v1/accounts/{id}", a.auth(a.getAccount))
	s.Handle("GET /v1/accounts/{id}/transfers", a.auth(a.history))
	s.Handle("POST /v1/transfers", a.auth(a.transfer))
	s.Handle("GET /v1/transfers/{id}", a.auth(a.getTransfer))
	s.Handle("POST /v1/transfers/{id}/post", a.auth(a.post))
	s.Handle("POST /v1/transfers/{id}/void", a.auth(a.void))
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
		h(w, r)
	})
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
	acct, err := a.Ledger.CreateAccount(r.Context(), ledger.NewAccount{
		ID: req.ID, Owner: req.Owner, Kind: req.Kind, Currency: req.Currency, AllowNegative: req.AllowNegative,
	})
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
			httpx.WriteProblem(w, r, http.StatusBadRequest, "invalid_limit", "limit must be an integer from 1 to 500")
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
	if _, ok := httpx.IdempotencyKey(w, r); !ok {
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
	if _, ok := httpx.IdempotencyKey(w, r); !ok {
		return
	}
	t, err := a.Ledger.Void(r.Context(), r.PathValue("id"))
	if err != nil {
		writeLedgerError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, t)
}

// ledgerErrors maps ledger sentinel errors to HTTP status and problem code.
var ledgerErrors = []struct {
	err    error
	status int
	code   string
}{
	{ledger.ErrInvalidAccount, http.StatusBadRequest, "invalid_account"},
	{ledger.ErrAccountExists, http.StatusConflict, "account_exists"},
	{ledger.ErrAccountNotFound, http.StatusNotFound, "account_not_found"},
	{ledger.ErrInvalidAmount, http.StatusUnprocessableEntity, "invalid_amount"},
	{ledger.ErrCurrencyMismatch, http.StatusUnprocessableEntity, "currency_mismatch"},
	{ledger.ErrSameAccount, http.StatusUnprocessableEntity, "same_account"},
	{ledger.ErrInsufficientFunds, http.StatusUnprocessableEntity, "insufficient_funds"},
	{ledger.ErrIdempotencyConflict, http.StatusConflict, "idempotency_conflict"},
	{ledger.ErrMissingIdempotency, http.StatusBadRequest, "idempotency_key_required"},
	{ledger.ErrTransferNotFound, http.StatusNotFound, "transfer_not_found"},
	{ledger.ErrNotPending, http.StatusConflict, "not_pending"},
	{ledger.ErrExpired, http.StatusConflict, "expired"},
	{ledger.ErrInvalidExpiry, http.StatusUnprocessableEntity, "invalid_expiry"},
	{ledger.ErrInvalidMemo, http.StatusUnprocessableEntity, "invalid_memo"},
	{ledger.ErrInvalidCursor, http.StatusBadRequest, "invalid_cursor"},
	{ledger.ErrInvalidKey, http.StatusBadRequest, "invalid_idempotency_key"},
	{ledger.ErrClosed, http.StatusServiceUnavailable, "shutting_down"},
}

func writeLedgerError(w http.ResponseWriter, r *http.Request, err error) {
	for _, m := range ledgerErrors {
		if errors.Is(err, m.err) {
			httpx.WriteProblem(w, r, m.status, m.code, err.Error())
			return
		}
	}
	if r.Context().Err() != nil {
		httpx.WriteProblem(w, r, http.StatusServiceUnavailable, "cancelled", "request cancelled")
		return
	}
	httpx.WriteProblem(w, r, http.StatusInternalServerError, "internal", "internal error")
}
