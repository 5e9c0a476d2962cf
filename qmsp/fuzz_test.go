package qmsp

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func FuzzDisplay(f *testing.F) {
	d := Display{Gateway: "GW-1", Merchant: 7, Expires: time.Unix(1_800_000_000, 0), Sig: bytes.Repeat([]byte{1}, 70)}
	good, _ := d.MarshalText()
	f.Add(string(good))
	d.Amount, d.Currency = 12_00, 156
	sale, _ := d.MarshalText()
	f.Add(string(sale))
	f.Add("QMSP2:")
	f.Add("QMSP1:")
	f.Add("QMSP1:AAAA")
	f.Add("hello")
	f.Fuzz(func(t *testing.T, s string) {
		var d Display
		if err := d.UnmarshalText([]byte(s)); err != nil {
			return
		}
		again, err := d.MarshalText()
		if err != nil {
			t.Fatalf("parsed display does not marshal: %v", err)
		}
		var d2 Display
		if err := d2.UnmarshalText(again); err != nil || !bytes.Equal(d2.SignedBytes(), d.SignedBytes()) {
			t.Fatalf("round trip changed the display: %v", err)
		}
	})
}

func FuzzPaymentInfo(f *testing.F) {
	m := PaymentInfo{Payer: 1, Amount: 100, Currency: 156, Merchant: 7}
	b, _ := m.MarshalBinary()
	f.Add(b)
	f.Add(make([]byte, 32))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m PaymentInfo
		if err := m.UnmarshalBinary(b); err != nil {
			return
		}
		again, err := m.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzPaymentRequest feeds arbitrary JSON to a PPS: it must refuse without
// panicking and move no money.
func FuzzPaymentRequest(f *testing.F) {
	f.Add(`{"gateway":"GW-1","key_id":"00000000-0000-4000-8000-000000000000","unit":1,"expires":1,"gateway_sig":"AA==","ciphertext":"AA==","tag":"AA=="}`)
	f.Add(`{}`)
	f.Fuzz(func(t *testing.T, s string) {
		var req PaymentRequest
		if json.Unmarshal([]byte(s), &req) != nil {
			return
		}
		if err := checkGatewayID(req.Gateway); err == nil {
			_, _ = parseKeyID(req.KeyID)
		}
		var u [UnitSize]byte
		_, _ = OpenPayment("GW-1", KeyRef{Unit: req.Unit}, req.Expires, &u, req.Ciphertext, req.Tag)
	})
}
