//go:build !wasm

package selfverify

import (
	"context"
	"errors"
	"strings"

	"github.com/qshield/qshield/httpx"
)

// The in-process views of the operator and a vendor, and the transport
// check of callRetry. Like the operator and the vendor themselves (they
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

// answeredByServer reports whether err is an answer of the operator or
// vendor (a problem document it wrote), as opposed to a transport failure
// or a proxy's page.
func answeredByServer(err error) bool {
	var p *httpx.Problem
	return errors.As(err, &p) && !strings.HasPrefix(p.Code, "http_")
}
