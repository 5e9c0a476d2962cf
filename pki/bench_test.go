package pki

import (
	"context"
	"testing"
	"time"

	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func benchCA(b *testing.B, alg Algorithm) *CA {
	db := sqldbtest.Open(b, sqldbtest.Backends()[0])
	ca, err := NewCA(context.Background(), db, "bench", Options{Algorithm: alg}, fastKey("bench passphrase"))
	if err != nil {
		b.Fatal(err)
	}
	return ca
}

func BenchmarkIssue(b *testing.B) {
	for _, alg := range []Algorithm{ECDSAP256, SM2} {
		b.Run(string(alg), func(b *testing.B) {
			ca := benchCA(b, alg)
			for b.Loop() {
				if _, err := ca.Issue(context.Background(), IssueRequest{Role: RoleDevice, CommonName: "d"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerify includes the register (revocation) look-up in SQLite.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []Algorithm{ECDSAP256, SM2} {
		b.Run(string(alg), func(b *testing.B) {
			ca := benchCA(b, alg)
			iss, err := ca.Issue(context.Background(), IssueRequest{Role: RoleDevice, CommonName: "d"})
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := ca.Verify(context.Background(), iss.Cert, RoleDevice, time.Time{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoadCA is dominated by argon2id with defaultArgon2 (64 MiB, t=3, p=4).
func BenchmarkLoadCA(b *testing.B) {
	db := sqldbtest.Open(b, sqldbtest.Backends()[0])
	ctx := context.Background()
	if _, err := NewCA(ctx, db, "bench", Options{}, PassphraseKey([]byte("bench passphrase"))); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := LoadCA(ctx, db, "bench", PassphraseKey([]byte("bench passphrase"))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticate is the per-request check of the authorization
// layer: "cached" when the register entry was read less than
// PrincipalCacheTTL ago (the common case for a busy client), "register"
// when it is read from SQLite.
func BenchmarkAuthenticate(b *testing.B) {
	ca := benchCA(b, ECDSAP256)
	ctx := context.Background()
	iss, err := ca.Issue(ctx, IssueRequest{Role: RoleClient, CommonName: "p", Kind: PrincipalPhone})
	if err != nil {
		b.Fatal(err)
	}
	serial := serialText(iss.Cert.SerialNumber)
	for _, cached := range []bool{true, false} {
		name := "register"
		if cached {
			name = "cached"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if !cached {
					ca.cache.forget(serial)
				}
				if _, err := ca.Authenticate(ctx, iss.Cert); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
