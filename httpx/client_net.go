//go:build !wasm

package httpx

import (
	"net/http"
	"time"
)

// defaultDoer is a Client's transport when none is set.
func defaultDoer() Doer { return &http.Client{Timeout: 30 * time.Second} }
