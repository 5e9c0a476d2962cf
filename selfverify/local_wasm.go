//go:build wasm

package selfverify

import (
	"net/http"

	"github.com/qshield/qshield/httpx"
)

// extraCodes are the server's codes beyond codeTable (local.go has them
// with their sentinel errors, from the ledger, which the WebAssembly build
// does not link).
var extraCodes = []httpx.Code{
	{Code: "account_not_found", Status: http.StatusNotFound, Message: "That account does not exist."},
}
