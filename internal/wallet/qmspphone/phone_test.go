package qmspphone

import (
	"bytes"
	"crypto/rand"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/qshield/qshield/qmsp"
)

func randInt(t testing.TB, n int64) int64 {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		t.Fatal(err)
	}
	return v.Int64()
}

func randomDisplay(t testing.TB, sale bool) qmsp.Display {
	d := qmsp.Display{Gateway: "GW-" + big.NewInt(randInt(t, 1e6)).String(), Merchant: uint32(randInt(t, 1<<32)),
		Ref: qmsp.KeyRef{Unit: uint16(randInt(t, 1<<16))}, Expires: time.Unix(randInt(t, 1<<40), 0).UTC(), Sig: make([]byte, 1+randInt(t, 80))}
	rand.Read(d.Ref.KeyID[:])
	rand.Read(d.Pad[:])
	rand.Read(d.MACKey[:])
	rand.Read(d.Sig)
	if sale {
		d.Amount, d.Currency = 1+randInt(t, qmsp.MaxAmount), uint16(1+randInt(t, 999))
	}
	return d
}

// TestSameAsQMSP: for random codes, the fields read and every byte of the
// payment (ciphertext and tag) equal the qmsp package's.
func TestSameAsQMSP(t *testing.T) {
	for i := 0; i < 500; i++ {
		d := randomDisplay(t, i%2 == 0)
		text, err := d.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		c, err := Parse(string(text))
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if c.Gateway != d.Gateway || c.Merchant != d.Merchant || c.Amount != d.Amount || c.Currency != d.Currency ||
			c.KeyID != d.Ref.KeyID || c.Unit != d.Ref.Unit || c.Expires != d.Expires.Unix() || !bytes.Equal(c.Sig, d.Sig) || c.Ref() != d.Ref.String() {
			t.Fatalf("parsed %+v from %+v", c, d)
		}
		m := qmsp.PaymentInfo{Payer: uint64(randInt(t, 1<<62)), Amount: d.Amount, Currency: d.Currency, Merchant: d.Merchant}
		if d.Amount == 0 {
			m.Amount, m.Currency = 1+randInt(t, qmsp.MaxAmount), 156
		}
		rand.Read(m.Nonce[:])
		ct, tag, err := qmsp.SealPayment(&d, &m)
		if err != nil {
			t.Fatal(err)
		}
		amount, cur := m.Amount, m.Currency
		if d.Amount != 0 {
			amount, cur = 0, 0
		}
		req, err := c.build(m.Payer, amount, cur, m.Nonce)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(req.Ciphertext, ct[:]) || !bytes.Equal(req.Tag, tag[:]) {
			t.Fatalf("payment differs from qmsp.SealPayment for %+v", m)
		}
		if req.KeyID != d.Ref.String()[:36] || req.Amount != d.Amount || req.Currency != d.Currency {
			t.Fatalf("request fields %+v", req)
		}
	}
}

func TestAmountRules(t *testing.T) {
	d := randomDisplay(t, true)
	d.Amount, d.Currency = 12_34, 156
	text, _ := d.MarshalText()
	c, err := Parse(string(text))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Build(7, 99_99, 156); !errors.Is(err, ErrAmount) {
		t.Fatalf("another amount than the signed sale: %v", err)
	}
	if r, err := c.Build(7, 0, 0); err != nil || r.Amount != 12_34 {
		t.Fatalf("the signed amount: %v %+v", err, r)
	}
	d.Amount, d.Currency = 0, 0
	text, _ = d.MarshalText()
	c, _ = Parse(string(text))
	if _, err := c.Build(7, 0, 156); !errors.Is(err, ErrAmount) {
		t.Fatalf("zero amount on an open code: %v", err)
	}
	if FormatAmount(12_34, 156) != "12.34 CNY" {
		t.Fatal(FormatAmount(12_34, 156))
	}
}

// FuzzParse: Parse accepts exactly what qmsp.Display.UnmarshalText accepts,
// with the same fields, and never panics.
func FuzzParse(f *testing.F) {
	for _, sale := range []bool{false, true} {
		d := randomDisplay(f, sale)
		text, _ := d.MarshalText()
		f.Add(string(text))
	}
	f.Add("QMSP1:")
	f.Add("QMSP2:AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		var d qmsp.Display
		derr := d.UnmarshalText([]byte(s))
		if (err == nil) != (derr == nil) {
			t.Fatalf("%q: qmspphone %v, qmsp %v", s, err, derr)
		}
		if err != nil {
			if !errors.Is(err, ErrCode) {
				t.Fatalf("error %v does not wrap ErrCode", err)
			}
			return
		}
		if c.Gateway != d.Gateway || c.Merchant != d.Merchant || c.Amount != d.Amount || c.Currency != d.Currency || c.KeyID != d.Ref.KeyID ||
			c.Unit != d.Ref.Unit || c.Expires != d.Expires.Unix() || !bytes.Equal(c.Sig, d.Sig) || c.pad != d.Pad || c.macKey != d.MACKey {
			t.Fatalf("%q: fields differ", s)
		}
	})
}
