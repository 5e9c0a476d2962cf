package console

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/pki"
)

// fakeTills keeps the platform's rule: an admin, or an operator whose scope
// names merchant 1.
type fakeTills struct{ sale map[string]int64 }

func (f *fakeTills) Tills(context.Context) []Till {
	return []Till{{Gateway: "GW-0001", Merchant: 1, MerchantName: "Shop", Currency: "CNY", Ready: true, Sale: saleOf(f.sale["GW-0001"])}}
}

func saleOf(v int64) string {
	if v == 0 {
		return ""
	}
	return formatMoney(v, "CNY")
}

func (f *fakeTills) SetSale(_ context.Context, by *pki.Principal, gi string, amount int64, cur string) (Till, error) {
	if by.Kind != pki.PrincipalAdmin && !(by.Kind == pki.PrincipalOperator && by.MayActFor("merchant:1")) {
		return Till{}, ErrNotYours
	}
	f.sale[gi] = amount
	return Till{Gateway: gi, Merchant: 1, Sale: saleOf(amount), Currency: cur, Ready: true}, nil
}

// TestTillSale: an operator whose principal names the merchant sets the
// sale; an operator without it and an auditor are refused, and nothing
// changes; every attempt is audited.
func TestTillSale(t *testing.T) {
	clk := newClock()
	c := newConsole(t, clk)
	ctx := context.Background()
	ft := &fakeTills{sale: map[string]int64{}}
	c.cfg.Tills = ft
	withPrincipal := func(name string, role Role, scope []string) (string, *Session) {
		ck, s := signIn(t, c, name, role)
		_, cred := passkey(t)
		serial, err := c.issueOperatorPrincipal(ctx, s.Operator, scope, cred, "test")
		if err != nil || c.st.setPrincipal(ctx, s.Operator.ID, serial) != nil {
			t.Fatal(err)
		}
		s.Operator.PrincipalSerial = serial
		return ck, s
	}
	form := url.Values{"amount": {"8.80"}, "currency": {"CNY"}}
	ack, as := withPrincipal("Aud", RoleAuditor, nil)
	if w := request(c, http.MethodPost, "/console/tills/GW-0001/sale", ack, as.CSRF, form); w.Code != http.StatusForbidden {
		t.Fatalf("auditor: %d", w.Code)
	}
	nck, ns := withPrincipal("Nemo", RoleOperator, []string{"merchant:2"})
	if w := request(c, http.MethodPost, "/console/tills/GW-0001/sale", nck, ns.CSRF, form); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "not in your scope") {
		t.Fatalf("operator of another merchant: %d %s", w.Code, w.Body)
	}
	if ft.sale["GW-0001"] != 0 {
		t.Fatal("a refused request set the sale")
	}
	mck, ms := withPrincipal("Mia", RoleOperator, []string{"merchant:1"})
	if w := request(c, http.MethodPost, "/console/tills/GW-0001/sale", mck, ms.CSRF, url.Values{"amount": {"8.801"}, "currency": {"CNY"}}); w.Code != http.StatusBadRequest {
		t.Fatalf("three decimals: %d", w.Code)
	}
	w := request(c, http.MethodPost, "/console/tills/GW-0001/sale", mck, ms.CSRF, form)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "asks for 8.80 CNY") || ft.sale["GW-0001"] != 880 {
		t.Fatalf("merchant's operator: %d %v %s", w.Code, ft.sale, w.Body)
	}
	ok, _ := c.cfg.Audit.Search(ctx, audit.Query{Event: "console.till.sale", Outcome: audit.OutcomeSuccess})
	bad, _ := c.cfg.Audit.Search(ctx, audit.Query{Event: "console.till.sale", Outcome: audit.OutcomeFailure})
	if len(ok) != 1 || len(bad) != 2 {
		t.Fatalf("audited %d successes and %d refusals, want 1 and 2", len(ok), len(bad))
	}
}
