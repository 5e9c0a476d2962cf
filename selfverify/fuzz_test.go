package selfverify

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// FuzzParse feeds arbitrary bytes to the decoder of every message type. A
// message that is accepted must re-encode and parse again to the same value.
func FuzzParse(f *testing.F) {
	seeds := []any{
		RegisterRequest{ID: "alice", Role: RoleUser, R: make([]byte, 33), Code: "abc"},
		WithdrawRequest{User: "alice", Amount: 100, Currency: "CNY", TokenKey: make([]byte, 33), Timestamp: 1, Nonce: "00112233445566778899aabbccddeeff", Sig: make([]byte, 70)},
		SignedToken{Token: Token{Serial: "00112233445566778899aabbccddeeff", Curve: "P-256", Currency: "CNY", Limit: 5, IssuedAt: 1, ExpiresAt: 2, Key: make([]byte, 33)}, Sig: make([]byte, 70)},
		ReserveRequest{Vendor: "v", Serial: "00112233445566778899aabbccddeeff", Ref: "00112233445566778899aabbccddeeff", Amount: 1, MAC: make([]byte, 32)},
		DepositRequest{Vendor: "v", Timestamp: 1, Nonce: "00112233445566778899aabbccddeeff", Items: []DepositItem{{Serial: "00112233445566778899aabbccddeeff", Ref: "00112233445566778899aabbccddeeff", Item: "tea", Amount: 3}}, Sig: make([]byte, 70)},
		ConfirmAnswer{ID: "00112233445566778899aabbccddeeff", Serial: "00112233445566778899aabbccddeeff", Agree: true, Total: 3, MAC: make([]byte, 32)},
		OpenPayment{A: make([]byte, 33), Ciphertext: make([]byte, 40)},
		NextPayment{Session: "00112233445566778899aabbccddeeff", Seq: 2, Ciphertext: make([]byte, 40)},
		NextPayload{Item: "tea", Price: 3, Timestamp: 1},
		CloseRequest{Serial: "00112233445566778899aabbccddeeff", Timestamp: 1, Nonce: "00112233445566778899aabbccddeeff", Sig: make([]byte, 70)},
		Wallet{Version: 1, ID: "a", Curve: "P-256", Key: make([]byte, 32), QN: make([]byte, 33)},
	}
	for _, s := range seeds {
		b, _ := json.Marshal(s)
		f.Add(b)
	}
	f.Add([]byte(`{"items":[{"serial":"x"}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		check[RegisterRequest](t, b)
		check[RegisterResponse](t, b)
		check[Params](t, b)
		check[Identity](t, b)
		check[WithdrawRequest](t, b)
		check[SignedToken](t, b)
		check[CloseRequest](t, b)
		check[TokenStatus](t, b)
		check[ReserveRequest](t, b)
		check[ReserveResponse](t, b)
		check[DepositRequest](t, b)
		check[DepositResponse](t, b)
		check[ConfirmationList](t, b)
		check[ConfirmationDetails](t, b)
		check[ConfirmAnswer](t, b)
		check[VendorInfo](t, b)
		check[OpenPayment](t, b)
		check[NextPayment](t, b)
		check[FirstPayload](t, b)
		check[NextPayload](t, b)
		check[PaymentResponse](t, b)
		check[Receipt](t, b)
		check[SessionState](t, b)
		check[Wallet](t, b)
	})
}

func check[T any, P interface {
	*T
	validator
}](t *testing.T, b []byte) {
	v, err := Parse[T, P](b)
	if err != nil {
		return
	}
	again, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%T: accepted value does not re-encode: %v", v, err)
	}
	if _, err := Parse[T, P](again); err != nil {
		t.Fatalf("%T: re-encoded value rejected: %v\n%s", v, err, again)
	}
}

// FuzzHandlers posts arbitrary bodies to every endpoint of the operator and
// vendor handlers: no panic, no 5xx, and nothing is stored.
func FuzzHandlers(f *testing.F) {
	f.Add(uint8(0), []byte(`{"id":"alice","role":"user","r":"AAAA","code":"x"}`))
	f.Add(uint8(2), []byte(`{"user":"alice","amount":1,"currency":"CNY","token_key":"AA==","timestamp":1,"nonce":"00112233445566778899aabbccddeeff","sig":"AAAAAAAAAAA="}`))
	f.Add(uint8(7), []byte(`{"a":"AzY=","ciphertext":"AAAAAAAAAAAAAAAAAAAAAA=="}`))
	f.Add(uint8(8), []byte(`{"session":"00112233445566778899aabbccddeeff","seq":2,"ciphertext":"AAAAAAAAAAAAAAAAAAAAAA=="}`))
	e := newEnv(f, sqldbtest.Open(f, sqldbtest.Backends()[0]), ecqv.P256())
	cred := e.register("shop", RoleVendor)
	v, err := NewVendor(e.ctx, e.db, cred, VendorConfig{Operator: e.op.Local(), Catalog: catalog})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { v.Close() })
	oh, vh := e.op.Handler(), v.Handler()
	routes := []struct {
		h    http.Handler
		path string
	}{
		{oh, "/v1/selfverify/register"}, {oh, "/v1/selfverify/reserve"}, {oh, "/v1/selfverify/withdraw"},
		{oh, "/v1/selfverify/deposits"}, {oh, "/v1/selfverify/confirmations/00112233445566778899aabbccddeeff"},
		{oh, "/v1/selfverify/tokens/00112233445566778899aabbccddeeff/close"},
		{vh, "/v1/vendor/info"}, {vh, "/v1/vendor/pay/open"}, {vh, "/v1/vendor/pay"},
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := routes[int(route)%len(routes)]
		req := httptest.NewRequest(http.MethodPost, r.path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "00112233445566778899aabbccddeeff")
		w := httptest.NewRecorder()
		r.h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s: %d %s", r.path, w.Code, w.Body.String())
		}
	})
}
