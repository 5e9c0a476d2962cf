//go:build wasm

package selfverify

import "errors"

// answeredByServer reports whether err is an answer of the operator or
// vendor rather than a transport failure: in WebAssembly the wallet's
// transport marks such errors with an Answered method (local.go has the
// httpx form).
func answeredByServer(err error) bool {
	var a interface{ Answered() bool }
	return errors.As(err, &a) && a.Answered()
}
