//go:build !wasm

package selfverify

import (
	"context"
	"net/http"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/ledger"
)

// The in-process views of the operator and a vendor, and the error codes
// whose sentinels need the ledger. Like the operator and the vendor themselves (they
// need a database), they are built only outside WebAssembly; the user's
// side and the message layer (user.go, messages.go, wire.go, crypto.go,
// api.go, proto.go) build for GOOS=js too, so the browser wallet runs the
// same code as the CLI phone (internal/wallet/wasm).

type localOperator struct{ *Operator }

func (l localOperator) Params(context.Context) (*Params, error) {
	p := l.Operator.Params()
	return &p, nil
}
func (l localOperator) Vendor(ctx context.Context, id string) (*Identity, error) {
	return l.Operator.Identity(ctx, id)
}

// Local returns the operator as an OperatorAPI for in-process use.
func (o *Operator) Local() OperatorAPI { return localOperator{o} }

type localVendor struct{ *Vendor }

func (l localVendor) Info(context.Context) (*VendorInfo, error) { return l.Vendor.Info(), nil }

// Local returns the vendor as a VendorAPI for in-process use.
func (v *Vendor) Local() VendorAPI { return localVendor{v} }

// extraCodes are the server's codes beyond codeTable whose sentinel
// errors come from packages the WebAssembly build does not link.
var extraCodes = []httpx.Code{
	{Code: "account_not_found", Status: http.StatusNotFound, Message: "That account does not exist.", Err: ledger.ErrAccountNotFound},
}
