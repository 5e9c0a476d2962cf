package selfverify

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestWireAgreesWithServices checks the stateless message layer against the
// stateful services: what FirstPaymentMessage and NextPaymentMessage build,
// OpenFirstPayment and OpenNextPayment open to the same key, session and
// payload; a real vendor's answers open with OpenReceipt; and each kind of
// forgery is refused with its error.
func TestWireAgreesWithServices(t *testing.T) {
	for _, curve := range []*ecqv.Curve{ecqv.P256(), ecqv.SM2()} {
		t.Run(curve.Name(), func(t *testing.T) {
			e := newEnv(t, sqldbtest.Open(t, sqldbtest.Backends()[0]), curve)
			u := e.user("alice")
			v := e.vendor("tea-shop")
			st := mustWithdraw(t, u, 1000)
			w := u.Wallet()
			tk, err := curve.NewPrivateKey(w.Tokens[len(w.Tokens)-1].Secret)
			if err != nil {
				t.Fatal(err)
			}
			qN := e.op.key.Public()
			qV := v.cred.Key.Public()
			now := e.clock.Now()

			m, k1, session, err := FirstPaymentMessage(curve, qV, v.ID(), *st, tk, "tea", 120, now)
			if err != nil {
				t.Fatal(err)
			}
			p, kv, sv, err := OpenFirstPayment(v.cred.Key, qN, v.ID(), *m)
			if err != nil {
				t.Fatal(err)
			}
			if string(kv) != string(k1) || sv != session || p.Item != "tea" || p.Price != 120 || p.Token.Token.Serial != st.Token.Serial {
				t.Fatalf("OpenFirstPayment: session %s/%s, payload %+v", sv, session, p)
			}
			resp, err := v.OpenPayment(e.ctx, *m)
			if err != nil {
				t.Fatal(err)
			}
			rc, err := OpenReceipt(curve, k1, *resp)
			if err != nil {
				t.Fatal(err)
			}
			if rc.Seq != 1 || rc.Item != "tea" || rc.Ref != PaymentRef(curve, session, 1) {
				t.Fatalf("receipt %+v", rc)
			}

			k2 := NextKey(curve, k1)
			nm, err := NextPaymentMessage(curve, k2, session, 2, "cake", 250, now)
			if err != nil {
				t.Fatal(err)
			}
			np, err := OpenNextPayment(curve, k2, *nm)
			if err != nil || np.Item != "cake" || np.Price != 250 {
				t.Fatalf("OpenNextPayment: %+v, %v", np, err)
			}
			resp2, err := v.NextPayment(e.ctx, *nm)
			if err != nil {
				t.Fatal(err)
			}
			if rc2, err := OpenReceipt(curve, k2, *resp2); err != nil || rc2.SpentAtVendor != 370 {
				t.Fatalf("second receipt %+v, %v", rc2, err)
			}
			sealed, err := SealReceipt(curve, k2, *rc)
			if err != nil {
				t.Fatal(err)
			}
			if back, err := OpenReceipt(curve, k2, *sealed); err != nil || *back != *rc {
				t.Fatalf("SealReceipt round trip: %+v, %v", back, err)
			}

			// Refusals.
			if _, _, _, err := OpenFirstPayment(v.cred.Key, qN, "other-shop", *m); !errors.Is(err, ErrDecrypt) {
				t.Errorf("another vendor ID: %v, want ErrDecrypt", err)
			}
			bad := *m
			bad.Ciphertext = append([]byte(nil), m.Ciphertext...)
			bad.Ciphertext[len(bad.Ciphertext)/2] ^= 1
			if _, _, _, err := OpenFirstPayment(v.cred.Key, qN, v.ID(), bad); !errors.Is(err, ErrDecrypt) {
				t.Errorf("tampered ciphertext: %v, want ErrDecrypt", err)
			}
			if _, _, _, err := OpenFirstPayment(v.cred.Key, randKey(t, curve).Public(), v.ID(), *m); !errors.Is(err, ErrBadSignature) {
				t.Errorf("token of another operator: %v, want ErrBadSignature", err)
			}
			stolen, _, _, err := FirstPaymentMessage(curve, qV, v.ID(), *st, randKey(t, curve), "tea", 120, now)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, _, err := OpenFirstPayment(v.cred.Key, qN, v.ID(), *stolen); !errors.Is(err, ErrBadSignature) {
				t.Errorf("token without its key t: %v, want ErrBadSignature", err)
			}
			if _, err := OpenNextPayment(curve, k1, *nm); !errors.Is(err, ErrDecrypt) {
				t.Errorf("later payment under the previous key: %v, want ErrDecrypt", err)
			}
			moved := *resp2
			moved.Seq = 3
			if _, err := OpenReceipt(curve, k2, moved); !errors.Is(err, ErrDecrypt) {
				t.Errorf("receipt moved to another seq: %v, want ErrDecrypt", err)
			}
		})
	}
}

// FuzzOpenFirstPayment feeds arbitrary (A, ciphertext) to the vendor's
// stateless first-payment opener and arbitrary ciphertexts to the later
// payment and receipt openers. Invariant: nothing panics, and nothing but the
// seed's genuine message opens (a forged message would need K_UV).
func FuzzOpenFirstPayment(f *testing.F) {
	c := ecqv.P256()
	nk, _ := c.NewPrivateKey(bytes.Repeat([]byte{1}, 32))
	dV, _ := c.NewPrivateKey(bytes.Repeat([]byte{2}, 32))
	tk, _ := c.NewPrivateKey(bytes.Repeat([]byte{3}, 32))
	tok := Token{Serial: "00112233445566778899aabbccddeeff", Curve: c.Name(), Currency: "CNY", Limit: 1000, IssuedAt: 1, ExpiresAt: 2, Key: tk.Public().Bytes()}
	sig, _ := nk.Sign(rand.Reader, tok.SigningBytes())
	m, _, _, _ := FirstPaymentMessage(c, dV.Public(), "shop", SignedToken{Token: tok, Sig: sig}, tk, "tea", 120, time.UnixMilli(1))
	f.Add(m.A, m.Ciphertext)
	f.Add(make([]byte, 33), make([]byte, 40))
	f.Add([]byte{}, []byte{})
	k := make([]byte, KeySize)
	f.Fuzz(func(t *testing.T, a, ct []byte) {
		p, _, _, err := OpenFirstPayment(dV, nk.Public(), "shop", OpenPayment{A: a, Ciphertext: ct})
		if err == nil && (p.Item != "tea" || p.Price != 120 || p.Token.Token.Serial != tok.Serial) {
			t.Fatalf("a fuzzed first payment opened: %+v", p)
		}
		if _, err := OpenNextPayment(c, k, NextPayment{Session: "00112233445566778899aabbccddeeff", Seq: 2, Ciphertext: ct}); err == nil {
			t.Fatal("a fuzzed later payment opened")
		}
		if _, err := OpenReceipt(c, k, PaymentResponse{Session: "00112233445566778899aabbccddeeff", Seq: 2, Ciphertext: ct}); err == nil {
			t.Fatal("a fuzzed receipt opened")
		}
	})
}
