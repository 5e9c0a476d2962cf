package selfverify

import "github.com/qshield/qshield/httpx"

// codeTable is the operator's and vendor's error codes: the problem code
// on the wire, its HTTP status, the sentence a person reads, and the
// sentinel a client maps it back to; codes is the httpx registry built from
// it (with extraCodes), used by the servers and the clients alike.
var codeTable = []struct {
	code    string
	status  int
	message string
	err     error
}{
	{"invalid_message", 400, "The request could not be read.", ErrInvalidMessage},
	{"bad_enrollment", 403, "The enrolment could not be verified.", ErrBadEnrollment},
	{"not_registered", 403, "This wallet is not registered.", ErrNotRegistered},
	{"bad_signature", 403, "The signature is not valid.", ErrBadSignature},
	{"bad_mac", 401, "The request could not be authenticated.", ErrBadMAC},
	{"stale_request", 400, "The request is too old; please try again.", ErrStale},
	{"replay", 409, "This request was already made.", ErrReplay},
	{"insufficient_funds", 422, "The account does not have enough money for this payment.", ErrInsufficientFunds},
	{"token_not_found", 404, "The payment token was not found.", ErrTokenNotFound},
	{"token_expired", 410, "The payment token has expired.", ErrTokenExpired},
	{"token_closed", 410, "The payment token is closed.", ErrTokenClosed},
	{"overspend", 422, "The payment is more than the token holds.", ErrOverspend},
	{"double_deposit", 409, "This payment was already deposited.", ErrDoubleDeposit},
	{"unknown_payment", 422, "The payment is not known.", ErrUnknownPayment},
	{"not_found", 404, "That was not found.", ErrNotFound},
	{"deadline_passed", 410, "The deadline for this has passed.", ErrDeadline},
	{"already_decided", 409, "This was already decided.", ErrDecided},
	{"refused", 409, "The payment was refused.", ErrRefused},
	{"decrypt_failed", 400, "The payment data could not be opened.", ErrDecrypt},
	{"sequence", 409, "The request is out of sequence; please try again.", ErrSequence},
	{"wrong_vendor", 400, "The payment was made for another vendor.", ErrWrongVendor},
	{"wrong_price", 422, "The amount does not match the price.", ErrPrice},
	{"currency_mismatch", 422, "The payment is in the wrong currency.", ErrCurrency},
}

// codes is the operator's and vendor's error-code registry; the clients
// map the codes back, so errors.Is works across HTTP.
var codes = httpx.NewRegistry(registryCodes()...)

func registryCodes() []httpx.Code {
	out := make([]httpx.Code, 0, len(codeTable)+len(extraCodes))
	for _, c := range codeTable {
		out = append(out, httpx.Code{Code: c.code, Status: c.status, Message: c.message, Err: c.err})
	}
	return append(out, extraCodes...)
}
