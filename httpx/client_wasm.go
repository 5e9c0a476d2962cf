//go:build wasm

package httpx

import (
	"errors"
	"net/http"
)

// defaultDoer: in WebAssembly a Client has no default transport (net/http's
// would link a TLS stack into the page for nothing); the browser wallet
// sets Client.HTTP to the page's fetch.
func defaultDoer() Doer { return noDoer{} }

type noDoer struct{}

func (noDoer) Do(*http.Request) (*http.Response, error) {
	return nil, errors.New("httpx: no transport in WebAssembly: set Client.HTTP to the page's fetch")
}
