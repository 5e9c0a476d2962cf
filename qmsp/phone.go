package qmsp

import (
	"context"
	"fmt"

	"github.com/qshield/qshield/qmsp/paycode"
)

// Payer is the platform's view for a phone: Pay sends a payment request.
type Payer interface {
	Pay(ctx context.Context, idemKey string, req PaymentRequest) (*Receipt, error)
}

// LocalPPS calls a PPS in-process as phone Peer.
type LocalPPS struct {
	PPS  *PPS
	Peer string
}

func (l LocalPPS) Pay(ctx context.Context, idemKey string, req PaymentRequest) (*Receipt, error) {
	return l.PPS.Pay(ctx, l.Peer, idemKey, req)
}

// Phone is the mobile device of payment steps 4–6.
type Phone struct {
	Payer    uint64
	Platform Payer
}

// BuildPayment reads a scanned code (step 4) and produces the payment request
// (step 5: En_Info = QK32 ⊕ M, with its one-time tag; [paycode.Build]). When the code
// carries a signed sale, the payment is for exactly that amount: amount 0
// takes it, another amount is refused (ErrAmount). Show Describe to the
// payer before calling it.
func (p *Phone) BuildPayment(code string, amount int64, currency uint16) (*PaymentRequest, *Display, error) {
	var d Display
	if err := d.UnmarshalText([]byte(code)); err != nil {
		return nil, nil, err
	}
	req, err := paycode.Build(&d, p.Payer, amount, currency)
	if err != nil {
		return nil, nil, err
	}
	return req, &d, nil
}

// Pay scans code and pays amount (step 6).
func (p *Phone) Pay(ctx context.Context, code string, amount int64, currency uint16) (*Receipt, error) {
	req, d, err := p.BuildPayment(code, amount, currency)
	if err != nil {
		return nil, err
	}
	r, err := p.Platform.Pay(ctx, d.IdempotencyKey(), *req)
	if err != nil {
		return nil, fmt.Errorf("qmsp: payment with %s: %w", d.Ref, err)
	}
	return r, nil
}
