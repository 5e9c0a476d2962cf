package server

import (
	"encoding/base64"
	"net/http"
	"strconv"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/ledger"
)

// AccountPage is the body of GET /v1/accounts: accounts in ID order and,
// when more may follow, the cursor of the next page.
type AccountPage struct {
	Accounts   []ledger.Account `json:"accounts"`
	NextCursor string           `json:"next_cursor,omitempty"`
}

// Page sizes of GET /v1/accounts.
const (
	DefaultAccountPage = 50
	MaxAccountPage     = 500
)

// listAccounts serves GET /v1/accounts?cursor=&limit=. The cursor is
// opaque to clients (base64url of the last ID of the previous page); a page
// is one consistent snapshot, and pages follow each other in ID order, so
// an account opened while a client pages through appears at most once.
func (a *LedgerAPI) listAccounts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := DefaultAccountPage
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxAccountPage {
			LedgerCodes.WriteCode(w, r, "invalid_limit", "limit must be an integer from 1 to "+strconv.Itoa(MaxAccountPage))
			return
		}
		limit = n
	}
	after, err := base64.RawURLEncoding.DecodeString(q.Get("cursor"))
	if err != nil || (len(after) > 0 && !ledger.ValidAccountID(string(after))) {
		LedgerCodes.WriteCode(w, r, "invalid_cursor", "cursor is not one this server returned")
		return
	}
	// One more than asked tells whether a next page exists.
	accts, err := a.Ledger.Accounts(r.Context(), string(after), limit+1)
	if err != nil {
		writeLedgerError(w, r, err)
		return
	}
	page := AccountPage{Accounts: accts}
	if len(accts) > limit {
		page.Accounts = accts[:limit]
		page.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(accts[limit-1].ID))
	}
	if page.Accounts == nil {
		page.Accounts = []ledger.Account{}
	}
	httpx.WriteJSON(w, http.StatusOK, page)
}
