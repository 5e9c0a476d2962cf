package bioqr_test

import (
	"strings"
	"testing"
	"time"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/paypage"
)

func TestCustomerStatus(t *testing.T) {
	for _, tc := range []struct {
		d          bioqr.Displayed
		state, msg string
	}{
		{bioqr.Display("x", "", time.Time{}), paypage.Waiting, "Waiting for payment…"},
		{bioqr.Display("", "", time.Time{}), paypage.Waiting, "No payment pending."},
		{bioqr.Display("", bioqr.MsgExpired, time.Time{}), paypage.Expired, "This code has expired. Please ask for a new one."},
		{bioqr.Display("", "paid 25.50 CNY", time.Time{}), paypage.Paid, "Paid 25.50 CNY. Thank you!"},
		{bioqr.Display("", "payment refused: rand_code_used", time.Time{}), paypage.Refused, "Payment refused. The payment code was already used."},
		{bioqr.Display("", "payment refused: fingerprint_mismatch", time.Time{}), paypage.Refused, "Payment refused. The fingerprint did not match."},
		{bioqr.Display("", "payment refused: no_such_code_xyz", time.Time{}), paypage.Refused, "Payment refused. Please try again or ask the cashier."},
		{bioqr.Display("", "payment refused", time.Time{}), paypage.Refused, "Payment refused. Please try again or ask the cashier."},
	} {
		s := bioqr.CustomerStatus(tc.d)
		if s.State != tc.state || s.Message != tc.msg {
			t.Errorf("%+v: got %s %q, want %s %q", tc.d, s.State, s.Message, tc.state, tc.msg)
		}
	}
	// No registered code's refusal shows the code itself (codes that are
	// plain words, such as "cancelled", may appear as words).
	for _, c := range bioqr.Codes().Codes() {
		if !strings.Contains(c.Code, "_") {
			continue
		}
		if m := bioqr.CustomerStatus(bioqr.Display("", "payment refused: "+c.Code, time.Time{})).Message; strings.Contains(m, c.Code) || strings.Contains(m, "_") {
			t.Errorf("refusal %s reads %q", c.Code, m)
		}
	}
}

func TestPOSStatusAsksForReload(t *testing.T) {
	d := bioqr.Display("x", "", time.Unix(1, 5))
	if v := bioqr.Version(d); v != "1000000005" {
		t.Fatalf("version %q", v)
	}
	if bioqr.POSStatusURL("POS 1", d) != "/bioqr/pos/POS%201/status?v=1000000005" {
		t.Fatalf("status URL %q", bioqr.POSStatusURL("POS 1", d))
	}
}
