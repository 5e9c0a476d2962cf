package bioqr_test

import (
	"testing"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/fingerprint"
)

// TestPaymentThresholdIsRecalibrated: the payment matcher decides at the
// threshold calibrated for the current fingerprint matcher (issue 17), not at
// a constant left over from an earlier score scale (0.80 accepted almost no
// genuine probe and said nothing about the false match rate).
func TestPaymentThresholdIsRecalibrated(t *testing.T) {
	if bioqr.PaymentThreshold != fingerprint.DefaultThreshold {
		t.Fatalf("PaymentThreshold %v, fingerprint.DefaultThreshold %v", bioqr.PaymentThreshold, fingerprint.DefaultThreshold)
	}
	if got := bioqr.NewFingerprintMatcher().M.Threshold(); got != bioqr.PaymentThreshold {
		t.Fatalf("payment matcher threshold %v, want %v", got, bioqr.PaymentThreshold)
	}
}
