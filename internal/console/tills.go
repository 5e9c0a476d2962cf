package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/pki"
)

// Tills: the QMSP gateways the platform runs itself (the built-in one at
// /qmsp/gateways/GW-0001/), where a merchant's operator sets the amount of
// the next sale; the gateway's codes then carry it, signed, and its screen
// shows it. Who may: an admin, or an operator whose principal's scope names
// the gateway's merchant ("merchant:N", given in the invitation); the
// platform decides (TillService.SetSale), the console only asks with the
// operator's principal from the register.

// Till is a gateway as the console shows it.
type Till struct {
	Gateway      string
	Merchant     uint32
	MerchantName string
	Sale         string // "12.34 CNY"; "" when the payer enters the amount
	Currency     string // the merchant's currency (alphabetic)
	Ready        bool   // the gateway answered (it has quantum key)
}

// TillService is what the platform offers for tills.
type TillService interface {
	Tills(ctx context.Context) []Till
	// SetSale sets gateway's sale for principal by (amount in minor units of
	// currency, 0 for none); ErrNotYours when by may not.
	SetSale(ctx context.Context, by *pki.Principal, gateway string, amount int64, currency string) (Till, error)
}

// ErrNotYours: the principal's scope does not name the gateway's merchant.
var ErrNotYours = errors.New("console: the gateway's merchant is not in your scope")

func (c *Console) tills(w http.ResponseWriter, r *http.Request, s *Session) {
	c.renderTills(w, r, s, http.StatusOK, "", "")
}

func (c *Console) renderTills(w http.ResponseWriter, r *http.Request, s *Session, status int, flash, errMsg string) {
	var ts []Till
	if c.cfg.Tills != nil {
		ts = c.cfg.Tills.Tills(r.Context())
	}
	c.render(w, r, status, "tills", page{Title: "Tills", Nav: "tills", S: s, Flash: flash, Error: errMsg, Data: struct {
		On    bool
		Tills []Till
	}{c.cfg.Tills != nil, ts}})
}

func (c *Console) setSale(w http.ResponseWriter, r *http.Request, s *Session) {
	ctx := r.Context()
	if c.cfg.Tills == nil {
		c.fail(w, r, s, http.StatusNotFound, "This platform runs no tills.")
		return
	}
	gi := r.PathValue("gi")
	cur := strings.ToUpper(strings.TrimSpace(r.PostFormValue("currency")))
	text := strings.TrimSpace(r.PostFormValue("amount"))
	refuse := func(status int, msg string) {
		c.record(ctx, s, "console.till.sale", audit.OutcomeFailure, gi, map[string]any{"amount": text, "currency": cur, "error": msg})
		c.renderTills(w, r, s, status, "", msg)
	}
	var amount int64
	if text != "" && text != "0" {
		v, err := parseMoney(text, cur)
		if err != nil {
			refuse(http.StatusBadRequest, err.Error())
			return
		}
		amount = v
	}
	var pr *pki.Principal
	if s.Operator.PrincipalSerial != "" {
		pr, _ = c.cfg.CA.PrincipalBySerial(ctx, s.Operator.PrincipalSerial)
	}
	if pr == nil {
		refuse(http.StatusForbidden, "Your sign-in is not in the principals register yet; sign out and in again.")
		return
	}
	t, err := c.cfg.Tills.SetSale(ctx, pr, gi, amount, cur)
	if errors.Is(err, ErrNotYours) {
		refuse(http.StatusForbidden, fmt.Sprintf("You may not set sales on %s: its merchant is not in your scope (ask an administrator for an invitation naming it).", gi))
		return
	}
	if err != nil {
		refuse(http.StatusBadRequest, "The sale was not set: "+err.Error())
		return
	}
	if aerr := c.record(ctx, s, "console.till.sale", audit.OutcomeSuccess, gi, map[string]any{"amount": strconv.FormatInt(amount, 10), "currency": cur, "merchant": t.Merchant}); aerr != nil {
		c.fail(w, r, s, http.StatusServiceUnavailable, "The sale was set but the audit trail could not record it; check the audit trail.")
		return
	}
	msg := "The till now asks the payer to enter the amount."
	if t.Sale != "" {
		msg = "The till now asks for " + t.Sale + "."
	}
	c.renderTills(w, r, s, http.StatusOK, msg, "")
}

// SaleText is an amount of a till for people ("" for none).
func SaleText(amount int64, numeric uint16) (text, alpha string) {
	if numeric == 0 {
		return "", ""
	}
	cur, err := money.ByNumeric(numeric)
	if err != nil {
		return "", ""
	}
	if amount == 0 {
		return "", cur.Code
	}
	return formatMoney(amount, cur.Code), cur.Code
}
