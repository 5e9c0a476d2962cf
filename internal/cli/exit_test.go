package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/money"
)

func TestErrorCodes(t *testing.T) {
	_, amountErr := money.ParsePositive("1.234", "CNY")
	_, currencyErr := money.ParsePositive("1", "XYZ")
	for _, tc := range []struct {
		err  error
		code string
		exit int
	}{
		{nil, "", ExitOK},
		{errors.New("boom"), "error", ExitFailure},
		{Usagef("bad flag"), "usage", ExitUsage},
		{fmt.Errorf("transfer: %w", &httpx.Problem{Status: 422, Code: "insufficient_funds"}), "insufficient_funds", ExitFailure},
		{amountErr, "invalid_amount", ExitFailure},
		{currencyErr, "unknown_currency", ExitFailure},
		{Usage(&Error{Code: "invalid_amount", Err: amountErr}), "invalid_amount", ExitUsage},
		{fmt.Errorf("wait: %w", context.Canceled), "interrupted", ExitFailure},
		{fmt.Errorf("open: %w", os.ErrNotExist), "not_found", ExitFailure},
		{&Error{Code: "charge_failed", Err: errors.New("1 of 1 charges failed")}, "charge_failed", ExitFailure},
	} {
		if tc.err == nil {
			if ExitCode(nil) != ExitOK {
				t.Error("ExitCode(nil) != 0")
			}
			continue
		}
		if got := ErrorCode(tc.err); got != tc.code {
			t.Errorf("ErrorCode(%v) = %q, want %q", tc.err, got, tc.code)
		}
		if got := ExitCode(tc.err); got != tc.exit {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.exit)
		}
	}
}
