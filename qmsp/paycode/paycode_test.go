package paycode

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"math/big"
	"testing"
	"time"
)

// The known answer was computed by package qmsp before the code moved here
// (qmsp.Display.MarshalText and qmsp.SealPayment at main 9abdb91), so it pins
// the QR text and the payment bytes the CLI phone, the gateways in the field
// and the browser wallet all produce.
const (
	katText = "QMSP2:CEdXLWthdC4xAAAQkgABAgMEBQYHCAkKCwwNDg8AAwAAAABrSdIAAAAAAATSAJxAQUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVpbXF1eX4CBgoOEhYaHiImKi4yNjo-QkZKTlJWWl5iZmpucnZ6fBQECAwQF"
	katCT   = "414040404040404040494a4b4c499c4fcc515243c6f5f7f5fbfdfffdfbf5f7f5"
	katTag  = "ba3e4945ee4c76026103dcb74f493d05"
)

func katDisplay() Display {
	d := Display{Gateway: "GW-kat.1", Merchant: 4242, Amount: 12_34, Currency: 156, Expires: time.Unix(1_800_000_000, 0).UTC()}
	for i := range d.Ref.KeyID {
		d.Ref.KeyID[i] = byte(i)
	}
	d.Ref.Unit = 3
	for i := range d.Pad {
		d.Pad[i] = byte(0x40 + i)
		d.MACKey[i] = byte(0x80 + i)
	}
	d.Sig = []byte{1, 2, 3, 4, 5}
	return d
}

// unitOf rebuilds the 64-byte payment unit a display's pad and MAC key
// came from (the inverse of UnitKeys).
func unitOf(d *Display) *[UnitSize]byte {
	var u [UnitSize]byte
	copy(u[0:16], d.MACKey[:16])
	copy(u[16:48], d.Pad[:])
	copy(u[48:64], d.MACKey[16:])
	return &u
}

func TestKnownAnswer(t *testing.T) {
	d := katDisplay()
	text, err := d.MarshalText()
	if err != nil || string(text) != katText {
		t.Fatalf("code text %s (%v), want %s", text, err, katText)
	}
	var parsed Display
	if err := parsed.UnmarshalText([]byte(katText)); err != nil || !bytes.Equal(parsed.SignedBytes(), d.SignedBytes()) || parsed.Pad != d.Pad || parsed.MACKey != d.MACKey {
		t.Fatalf("parse of the known code: %v %+v", err, parsed)
	}
	var nonce [11]byte
	for i := range nonce {
		nonce[i] = byte(0xA0 + i)
	}
	req, err := build(&parsed, 0x0102030405060708, 0, 0, nonce)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(req.Ciphertext) != katCT || hex.EncodeToString(req.Tag) != katTag {
		t.Fatalf("payment %x %x, want %s %s", req.Ciphertext, req.Tag, katCT, katTag)
	}
	if req.KeyID != "00010203-0405-0607-0809-0a0b0c0d0e0f" || req.Unit != 3 || req.Expires != 1_800_000_000 || req.Amount != 12_34 || req.Currency != 156 {
		t.Fatalf("request fields %+v", req)
	}
	m, err := OpenPayment(req.Gateway, parsed.Ref, req.Expires, unitOf(&parsed), req.Ciphertext, req.Tag)
	if err != nil || m.Payer != 0x0102030405060708 || m.Amount != 12_34 || m.Currency != 156 || m.Merchant != 4242 || m.Nonce != nonce {
		t.Fatalf("open: %v %+v", err, m)
	}
	if got := d.Describe(); got != "pay 12.34 CNY to merchant 4242 (gateway GW-kat.1, signed)" {
		t.Fatal(got)
	}
	if got := d.IdempotencyKey(); got != "qmsp-00010203-0405-0607-0809-0a0b0c0d0e0f/3" {
		t.Fatal(got)
	}
}

func TestAmountRules(t *testing.T) {
	d := katDisplay()
	if _, err := Build(&d, 7, 99_99, 156); !errors.Is(err, ErrAmount) {
		t.Fatalf("another amount than the signed sale: %v", err)
	}
	if _, err := Build(&d, 7, 12_34, 978); !errors.Is(err, ErrAmount) {
		t.Fatalf("another currency than the signed sale: %v", err)
	}
	if r, err := Build(&d, 7, 12_34, 156); err != nil || r.Amount != 12_34 {
		t.Fatalf("the signed amount entered: %v %+v", err, r)
	}
	d.Amount, d.Currency = 0, 0
	for _, c := range []struct {
		amount   int64
		currency uint16
	}{{0, 156}, {-5, 156}, {MaxAmount + 1, 156}, {5, 0}, {5, 1000}} {
		if _, err := Build(&d, 7, c.amount, c.currency); !errors.Is(err, ErrFormat) {
			t.Fatalf("open code, amount %d currency %d: %v", c.amount, c.currency, err)
		}
	}
	r, err := Build(&d, 7, 5_00, 978)
	if err != nil || r.Amount != 0 || r.Currency != 0 {
		t.Fatalf("open code: %v %+v", err, r)
	}
	m, err := OpenPayment(r.Gateway, d.Ref, r.Expires, unitOf(&d), r.Ciphertext, r.Tag)
	if err != nil || m.Amount != 5_00 || m.Currency != 978 {
		t.Fatalf("open: %v %+v", err, m)
	}
	if FormatAmount(12_34, 156) != "12.34 CNY" || FormatAmount(7, 1) != "7 (currency 1)" {
		t.Fatal(FormatAmount(12_34, 156), FormatAmount(7, 1))
	}
}

// TestTamperedPayment: any changed bit of the ciphertext, tag or the
// reference the tag covers is ErrAuth, and nothing is decrypted.
func TestTamperedPayment(t *testing.T) {
	d := katDisplay()
	r, err := Build(&d, 7, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	u := unitOf(&d)
	for i := 0; i < 8*(InfoSize+TagSize); i++ {
		ct, tag := bytes.Clone(r.Ciphertext), bytes.Clone(r.Tag)
		if i < 8*InfoSize {
			ct[i/8] ^= 1 << (i % 8)
		} else {
			tag[i/8-InfoSize] ^= 1 << (i % 8)
		}
		if m, err := OpenPayment(r.Gateway, d.Ref, r.Expires, u, ct, tag); !errors.Is(err, ErrAuth) || m != nil {
			t.Fatalf("bit %d flipped: %v %+v", i, err, m)
		}
	}
	other := d.Ref
	other.Unit++
	if _, err := OpenPayment(r.Gateway, other, r.Expires, u, r.Ciphertext, r.Tag); !errors.Is(err, ErrAuth) {
		t.Fatalf("another unit: %v", err)
	}
	if _, err := OpenPayment("GW-other", d.Ref, r.Expires, u, r.Ciphertext, r.Tag); !errors.Is(err, ErrAuth) {
		t.Fatalf("another gateway: %v", err)
	}
	if _, err := OpenPayment(r.Gateway, d.Ref, r.Expires+1, u, r.Ciphertext, r.Tag); !errors.Is(err, ErrAuth) {
		t.Fatalf("another expiry: %v", err)
	}
	if _, err := OpenPayment(r.Gateway, d.Ref, r.Expires, u, r.Ciphertext[:31], r.Tag); !errors.Is(err, ErrFormat) {
		t.Fatalf("short ciphertext: %v", err)
	}
}

func randomDisplay(t testing.TB, sale bool) Display {
	n := func(max int64) int64 {
		v, err := rand.Int(rand.Reader, big.NewInt(max))
		if err != nil {
			t.Fatal(err)
		}
		return v.Int64()
	}
	d := Display{Gateway: "GW-" + big.NewInt(n(1e6)).String(), Merchant: uint32(n(1 << 32)),
		Ref: KeyRef{Unit: uint16(n(1 << 16))}, Expires: time.Unix(n(1<<40), 0).UTC(), Sig: make([]byte, 1+n(80))}
	rand.Read(d.Ref.KeyID[:])
	rand.Read(d.Pad[:])
	rand.Read(d.MACKey[:])
	rand.Read(d.Sig)
	if sale {
		d.Amount, d.Currency = 1+n(MaxAmount), uint16(1+n(999))
	}
	return d
}

// FuzzParse: the phone's reading of a scanned code never panics; what it
// refuses wraps ErrFormat; what it accepts marshals back to a code with the
// same fields, and a payment built on it opens with the unit the code came
// from, giving back the payer, amount and merchant.
func FuzzParse(f *testing.F) {
	for _, sale := range []bool{false, true} {
		d := randomDisplay(f, sale)
		text, _ := d.MarshalText()
		f.Add(string(text), uint64(7), int64(1_00))
	}
	f.Add(katText, uint64(1), int64(0))
	f.Add("QMSP1:", uint64(0), int64(0))
	f.Add("QMSP2:AAAA", uint64(0), int64(1))
	f.Add("hello", uint64(0), int64(1))
	f.Fuzz(func(t *testing.T, s string, payer uint64, amount int64) {
		var d Display
		if err := d.UnmarshalText([]byte(s)); err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		text, err := d.MarshalText()
		if err != nil {
			t.Fatalf("accepted code does not marshal: %v", err)
		}
		var again Display
		if err := again.UnmarshalText(text); err != nil || !bytes.Equal(again.SignedBytes(), d.SignedBytes()) ||
			again.Pad != d.Pad || again.MACKey != d.MACKey || !bytes.Equal(again.Sig, d.Sig) {
			t.Fatalf("round trip changed the code: %v", err)
		}
		cur := uint16(156)
		if d.Amount != 0 {
			amount, cur = 0, 0
		}
		r, err := Build(&d, payer, amount, cur)
		if err != nil {
			if d.Amount != 0 || !errors.Is(err, ErrFormat) || (amount > 0 && amount <= MaxAmount) {
				t.Fatalf("build: %v", err)
			}
			return
		}
		m, err := OpenPayment(r.Gateway, d.Ref, r.Expires, unitOf(&d), r.Ciphertext, r.Tag)
		if err != nil || m.Payer != payer || m.Merchant != d.Merchant || (d.Amount != 0 && (m.Amount != d.Amount || m.Currency != d.Currency)) || (d.Amount == 0 && m.Amount != amount) {
			t.Fatalf("payment does not open to what was built: %v %+v", err, m)
		}
	})
}
