package qmsp

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/sqldb/sqldbtest"
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

// FuzzPaymentRequest feeds arbitrary payment requests to a running PPS
// (SQLite, a registered gateway, a funded payer): every one must be refused
// and none may move money or claim a key unit.
func FuzzPaymentRequest(f *testing.F) {
	f.Add(`{"gateway":"GW-1","key_id":"00000000-0000-4000-8000-000000000000","unit":1,"expires":1,"gateway_sig":"AA==","ciphertext":"AA==","tag":"AA=="}`)
	f.Add(`{"gateway":"GW-1","key_id":"00000000-0000-4000-8000-000000000000","unit":0,"expires":99999999999,"ciphertext":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","tag":"AAAAAAAAAAAAAAAAAAAAAA=="}`)
	f.Add(`{}`)
	e := newEnv(f, sqldbtest.Open(f, sqldbtest.Backends()[0]), 50)
	g := e.gateway("GW-1")
	// A real code's key ID and unit, so mutations reach past the look-ups.
	var d Display
	if err := d.UnmarshalText([]byte(code(e.t, g))); err == nil {
		b, _ := json.Marshal(PaymentRequest{Gateway: "GW-1", KeyID: qkd.FormatKeyID(d.Ref.KeyID), Unit: d.Ref.Unit, Expires: d.Expires.Unix(), Ciphertext: make([]byte, 32), Tag: make([]byte, 16)})
		f.Add(string(b))
	}
	alice, market := e.balance("alice"), e.balance("market")
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, s string) {
		var req PaymentRequest
		if json.Unmarshal([]byte(s), &req) != nil {
			return
		}
		if r, err := e.pps.Pay(ctx, "phone-alice", "fuzz", req); err == nil {
			t.Fatalf("forged request paid: %+v", r)
		}
		if a, m := e.balance("alice"), e.balance("market"); a != alice || m != market {
			t.Fatalf("money moved: alice %d market %d, want %d %d", a, m, alice, market)
		}
		var n int
		if err := e.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM qmsp_payments`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d key units claimed (%v)", n, err)
		}
	})
}
