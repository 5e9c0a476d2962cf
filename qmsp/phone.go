package qmsp

import (
	"context"
	"crypto/rand"
	"fmt"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/qkd"
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
// (step 5: En_Info = QK32 ⊕ M, with its one-time tag). When the code
// carries a signed sale, the payment is for exactly that amount: amount 0
// takes it, another amount is refused (ErrAmount). Show Describe to the
// payer before calling it.
func (p *Phone) BuildPayment(code string, amount int64, currency uint16) (*PaymentRequest, *Display, error) {
	var d Display
	if err := d.UnmarshalText([]byte(code)); err != nil {
		return nil, nil, err
	}
	if d.Amount != 0 {
		if amount == 0 {
			amount, currency = d.Amount, d.Currency
		}
		if amount != d.Amount || currency != d.Currency {
			return nil, nil, fmt.Errorf("%w: the code asks %d (currency %d), the payer entered %d (currency %d)", ErrAmount, d.Amount, d.Currency, amount, currency)
		}
	}
	m := PaymentInfo{Payer: p.Payer, Amount: amount, Currency: currency, Merchant: d.Merchant}
	if _, err := rand.Read(m.Nonce[:]); err != nil {
		return nil, nil, err
	}
	ct, tag, err := SealPayment(&d, &m)
	if err != nil {
		return nil, nil, err
	}
	return &PaymentRequest{
		Gateway: d.Gateway, Merchant: d.Merchant, Amount: d.Amount, Currency: d.Currency, KeyID: qkd.FormatKeyID(d.Ref.KeyID), Unit: d.Ref.Unit, Expires: d.Expires.Unix(),
		GatewaySig: d.Sig, Ciphertext: ct[:], Tag: tag[:],
	}, &d, nil
}

// Pay scans code and pays amount (step 6).
func (p *Phone) Pay(ctx context.Context, code string, amount int64, currency uint16) (*Receipt, error) {
	req, d, err := p.BuildPayment(code, amount, currency)
	if err != nil {
		return nil, err
	}
	r, err := p.Platform.Pay(ctx, "qmsp-"+d.Ref.String(), *req)
	if err != nil {
		return nil, fmt.Errorf("qmsp: payment with %s: %w", d.Ref, err)
	}
	return r, nil
}

// Describe is what the phone shows before paying: the merchant and, for a
// code carrying a sale, the amount the gateway signed.
func (d *Display) Describe() string {
	if d.Amount == 0 {
		return fmt.Sprintf("pay merchant %d (gateway %s); enter the amount", d.Merchant, d.Gateway)
	}
	amt := fmt.Sprintf("%d (currency %d)", d.Amount, d.Currency)
	if c, err := money.ByNumeric(d.Currency); err == nil {
		amt = c.Format(d.Amount) + " " + c.Code
	}
	return fmt.Sprintf("pay %s to merchant %d (gateway %s, signed)", amt, d.Merchant, d.Gateway)
}
