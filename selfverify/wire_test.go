package selfverify

import (
	"errors"
	"testing"

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
