package bioqr

import (
	"strings"
	"testing"
	"time"

	"github.com/qshield/qshield/paypage"
)

func TestCustomerStatus(t *testing.T) {
	for _, tc := range []struct {
		d          displayed
		state, msg string
	}{
		{displayed{payload: "x"}, paypage.Waiting, "Waiting for payment…"},
		{displayed{}, paypage.Waiting, "No payment pending."},
		{displayed{message: msgExpired}, paypage.Expired, "This code has expired. Please ask for a new one."},
		{displayed{message: "paid 25.50 CNY"}, paypage.Paid, "Paid 25.50 CNY. Thank you!"},
		{displayed{message: "payment refused: rand_code_used"}, paypage.Refused, "Payment refused. The payment code was already used."},
		{displayed{message: "payment refused: fingerprint_mismatch"}, paypage.Refused, "Payment refused. The fingerprint did not match."},
		{displayed{message: "payment refused: no_such_code_xyz"}, paypage.Refused, "Payment refused. Please try again or ask the cashier."},
		{displayed{message: "payment refused"}, paypage.Refused, "Payment refused. Please try again or ask the cashier."},
	} {
		s := customerStatus(tc.d)
		if s.State != tc.state || s.Message != tc.msg {
			t.Errorf("%+v: got %s %q, want %s %q", tc.d, s.State, s.Message, tc.state, tc.msg)
		}
	}
	// No registered code's refusal shows the code itself (codes that are
	// plain words, such as "cancelled", may appear as words).
	for _, c := range codes.Codes() {
		if !strings.Contains(c.Code, "_") {
			continue
		}
		if m := customerStatus(displayed{message: "payment refused: " + c.Code}).Message; strings.Contains(m, c.Code) || strings.Contains(m, "_") {
			t.Errorf("refusal %s reads %q", c.Code, m)
		}
	}
}

func TestPOSStatusAsksForReload(t *testing.T) {
	d := displayed{payload: "x", updated: time.Unix(1, 5)}
	if v := version(d); v != "1000000005" {
		t.Fatalf("version %q", v)
	}
	if posStatusURL("POS 1", d) != "/bioqr/pos/POS%201/status?v=1000000005" {
		t.Fatalf("status URL %q", posStatusURL("POS 1", d))
	}
}
