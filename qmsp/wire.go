package qmsp

import (
	"fmt"

	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qmsp/paycode"
)

// Sizes fixed by the scheme (the code's and the payment's are package
// paycode's).
const (
	PresetKeySize = 16 // PK, and the 16-byte segment of every DivQ
	PadSize       = paycode.PadSize
	MACKeySize    = paycode.MACKeySize
	UnitSize      = paycode.UnitSize
	TagSize       = paycode.TagSize
	InfoSize      = paycode.InfoSize
	MaxBatchSize  = 1024
	MinBatchSize  = PresetKeySize + UnitSize
)

// MaxAmount is the largest amount M can carry.
const MaxAmount = paycode.MaxAmount

// ErrFormat is malformed input; all such errors wrap it (it is
// paycode.ErrFormat).
var ErrFormat = paycode.ErrFormat

// The code, M and the payment request live in package paycode, which the
// browser wallet compiles to WebAssembly without this package's database.
type (
	// PaymentInfo is M; see [paycode.PaymentInfo].
	PaymentInfo = paycode.PaymentInfo
	// KeyRef names one payment unit; see [paycode.KeyRef].
	KeyRef = paycode.KeyRef
	// Display is the gateway's QR code; see [paycode.Display].
	Display = paycode.Display
)

// checkGatewayID is [paycode.CheckGatewayID].
func checkGatewayID(gi string) error { return paycode.CheckGatewayID(gi) }

// parseKeyID parses a key reference's UUID, reporting a malformed one as
// ErrFormat.
func parseKeyID(s string) ([16]byte, error) {
	b, err := qkd.ParseKeyID(s)
	if err != nil {
		return b, fmt.Errorf("%w: %q is not a UUID", ErrFormat, s)
	}
	return b, nil
}
