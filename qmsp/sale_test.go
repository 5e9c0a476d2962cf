package qmsp

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// Red-team finding (medium): "the amount is not bound by both parties — a
// QMSP display carries no amount (the payer picks it)". A code may carry the
// sale, signed by the gateway: the phone shows it and pays exactly that, and
// the platform refuses any other amount.
func TestSignedSale(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := newEnv(t, db, 400)
	g := e.gateway("GW-S")
	ctx := context.Background()
	ph := e.phone()
	if err := g.SetSale(12_00, 156); err != nil {
		t.Fatal(err)
	}
	c := code(t, g)
	if !strings.HasPrefix(c, "QMSP2:") {
		t.Fatalf("sale code %.10s", c)
	}
	var d Display
	if err := d.UnmarshalText([]byte(c)); err != nil || d.Amount != 12_00 || d.Currency != 156 {
		t.Fatalf("parsed %+v %v", d, err)
	}
	if got := d.Describe(); !strings.Contains(got, "12.00 CNY") || !strings.Contains(got, "merchant") {
		t.Fatalf("Describe: %q", got)
	}
	// The phone refuses to pay another amount than the signed one.
	if _, err := ph.Pay(ctx, c, 1_00, 156); !errors.Is(err, ErrAmount) {
		t.Fatalf("phone pays 1.00 on a 12.00 code: %v", err)
	}
	// A tampered phone seals another amount: the platform refuses it.
	req, _, err := ph.BuildPayment(c, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	m := PaymentInfo{Payer: 42, Amount: 1_00, Currency: 156, Merchant: d.Merchant}
	rand.Read(m.Nonce[:])
	ct, tag, err := SealPayment(&d, &m)
	if err != nil {
		t.Fatal(err)
	}
	forged := *req
	forged.Ciphertext, forged.Tag = ct[:], tag[:]
	before := e.balance("alice")
	if _, err := e.pps.Pay(ctx, "phone-alice", "k-sale-1", forged); !errors.Is(err, ErrAmount) {
		t.Fatalf("platform accepts 1.00 on a 12.00 code: %v", err)
	}
	// Dropping the signed sale from the request breaks the gateway's signature.
	stripped := *req
	stripped.Amount, stripped.Currency = 0, 0
	if _, err := e.pps.Pay(ctx, "phone-alice", "k-sale-2", stripped); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("request without the signed sale: %v", err)
	}
	if e.balance("alice") != before {
		t.Fatal("money moved on a refused payment")
	}
	// The honest payment of the signed amount goes through.
	if r, err := ph.Pay(ctx, c, 0, 0); err != nil || r.Amount != 12_00 {
		t.Fatalf("honest payment: %+v %v", r, err)
	}
	// Back to payer-entered amounts.
	if err := g.Advance(); err != nil {
		t.Fatal(err)
	}
	if err := g.SetSale(0, 0); err != nil {
		t.Fatal(err)
	}
	if c := code(t, g); !strings.HasPrefix(c, "QMSP1:") {
		t.Fatalf("open code %.10s", c)
	}
	for _, bad := range [][2]int64{{-1, 156}, {5, 0}, {MaxAmount + 1, 156}, {5, 999}} {
		if err := g.SetSale(bad[0], uint16(bad[1])); err == nil {
			t.Errorf("SetSale(%d, %d) accepted", bad[0], bad[1])
		}
	}
}
