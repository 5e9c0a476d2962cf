package selfverify

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/qshield/qshield/selfverify/ecqv"
)

// Benchmarks of the per-payment cryptography (targets: a later payment
// ≤ 10 µs per side, a first payment ≤ 0.5 ms). `qshield experiment
// selfverify` reports the same quantities with Figures 5 and 6.

func BenchmarkChainStep(b *testing.B) {
	c := ecqv.P256()
	k := make([]byte, KeySize)
	for b.Loop() {
		k = NextKey(c, k)
	}
}

func BenchmarkLaterPaymentPhone(b *testing.B) {
	for _, c := range []*ecqv.Curve{ecqv.P256(), ecqv.SM2()} {
		b.Run(c.Name(), func(b *testing.B) {
			k := make([]byte, KeySize)
			now := time.Now()
			for b.Loop() {
				k = NextKey(c, k)
				if _, err := NextPaymentMessage(c, k, "00112233445566778899aabbccddeeff", 2, "tea", 120, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkFirstPaymentPhone(b *testing.B) {
	for _, c := range []*ecqv.Curve{ecqv.P256(), ecqv.SM2()} {
		b.Run(c.Name(), func(b *testing.B) {
			n, _ := c.GenerateKey(rand.Reader)
			v, _ := c.GenerateKey(rand.Reader)
			t, _ := c.GenerateKey(rand.Reader)
			now := time.Now()
			tok := Token{Serial: "00112233445566778899aabbccddeeff", Curve: c.Name(), Currency: "CNY", Limit: 1000,
				IssuedAt: now.UnixMilli(), ExpiresAt: now.Add(time.Hour).UnixMilli(), Key: t.Public().Bytes()}
			sig, _ := n.Sign(rand.Reader, tok.signingBytes())
			st := SignedToken{Token: tok, Sig: sig}
			for b.Loop() {
				if _, _, _, err := FirstPaymentMessage(c, v.Public(), "shop", st, t, "tea", 120, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReconstruct(b *testing.B) {
	c := ecqv.P256()
	n, _ := c.GenerateKey(rand.Reader)
	req, _, _ := ecqv.NewRequest(c, rand.Reader, "shop")
	resp, _ := ecqv.NewIssuer(n).Issue(rand.Reader, req)
	for b.Loop() {
		if _, err := ecqv.Reconstruct(c, "shop", resp.P, n.Public()); err != nil {
			b.Fatal(err)
		}
	}
}
