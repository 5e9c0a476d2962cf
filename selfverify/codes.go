package selfverify

import "net/http"

// codeTable is the operator's and vendor's error codes: the problem code
// on the wire, its HTTP status, the sentence a person reads, and the
// sentinel a client maps it back to. http.go builds the httpx registry from
// it; clients without httpx (the browser wallet) use ErrorForCode.
var codeTable = []struct {
	code    string
	status  int
	message string
	err     error
}{
	{"invalid_message", http.StatusBadRequest, "The request could not be read.", ErrInvalidMessage},
	{"bad_enrollment", http.StatusForbidden, "The enrolment could not be verified.", ErrBadEnrollment},
	{"not_registered", http.StatusForbidden, "This wallet is not registered.", ErrNotRegistered},
	{"bad_signature", http.StatusForbidden, "The signature is not valid.", ErrBadSignature},
	{"bad_mac", http.StatusUnauthorized, "The request could not be authenticated.", ErrBadMAC},
	{"stale_request", http.StatusBadRequest, "The request is too old; please try again.", ErrStale},
	{"replay", http.StatusConflict, "This request was already made.", ErrReplay},
	{"insufficient_funds", http.StatusUnprocessableEntity, "The account does not have enough money for this payment.", ErrInsufficientFunds},
	{"token_not_found", http.StatusNotFound, "The payment token was not found.", ErrTokenNotFound},
	{"token_expired", http.StatusGone, "The payment token has expired.", ErrTokenExpired},
	{"token_closed", http.StatusGone, "The payment token is closed.", ErrTokenClosed},
	{"overspend", http.StatusUnprocessableEntity, "The payment is more than the token holds.", ErrOverspend},
	{"double_deposit", http.StatusConflict, "This payment was already deposited.", ErrDoubleDeposit},
	{"unknown_payment", http.StatusUnprocessableEntity, "The payment is not known.", ErrUnknownPayment},
	{"not_found", http.StatusNotFound, "That was not found.", ErrNotFound},
	{"deadline_passed", http.StatusGone, "The deadline for this has passed.", ErrDeadline},
	{"already_decided", http.StatusConflict, "This was already decided.", ErrDecided},
	{"refused", http.StatusConflict, "The payment was refused.", ErrRefused},
	{"decrypt_failed", http.StatusBadRequest, "The payment data could not be opened.", ErrDecrypt},
	{"sequence", http.StatusConflict, "The request is out of sequence; please try again.", ErrSequence},
	{"wrong_vendor", http.StatusBadRequest, "The payment was made for another vendor.", ErrWrongVendor},
	{"wrong_price", http.StatusUnprocessableEntity, "The amount does not match the price.", ErrPrice},
	{"currency_mismatch", http.StatusUnprocessableEntity, "The payment is in the wrong currency.", ErrCurrency},
}

// ErrorForCode returns the sentinel error of a problem code the operator or
// a vendor answered with, or nil for a code it does not know.
func ErrorForCode(code string) error {
	for _, c := range codeTable {
		if c.code == code {
			return c.err
		}
	}
	return nil
}
