package watermark

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	mrand "math/rand/v2"
	"os"
	"testing"
)

// weakT0 is a code whose QR modules lose most frames' watermark at every
// slot and with any shares (4–10 frames of 10 in a sweep of slots and share
// draws); goodT0 reads back.
const (
	weakT0 = "72c03dff9e0c49f341273397430083f8"
	goodT0 = "000102030405060708090a0b0c0d0e0f"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadabilityCheck(t *testing.T) {
	check, err := ReadabilityCheck(DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := check(Code{Token: mustHex(t, weakT0), SlotKey: testKey}); !errors.Is(err, ErrUnreadable) {
			t.Fatalf("weak code: %v, want ErrUnreadable", err)
		}
		if err := check(Code{Token: mustHex(t, goodT0), SlotKey: testKey}); err != nil {
			t.Fatalf("good code: %v", err)
		}
	}
	if err := check(Code{Token: []byte("short"), SlotKey: testKey}); err == nil || errors.Is(err, ErrUnreadable) {
		t.Fatalf("malformed code: %v, want a token error", err)
	}
	if _, err := ReadabilityCheck(Params{}); err == nil {
		t.Fatal("ReadabilityCheck accepted invalid parameters")
	}
}

// TestIssuerRedraws: an issuer with the check draws again when its first
// code is weak and records the second; without it the weak code is issued.
func TestIssuerRedraws(t *testing.T) {
	check, err := ReadabilityCheck(DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	// The good code twice more after the first, so that a false rejection
	// (none in 1,500 checks of it, 30,000 frames) cannot fail the test.
	draws := func() []byte {
		good := append(mustHex(t, goodT0), testKey...)
		return bytes.Join([][]byte{mustHex(t, weakT0), testKey, good, good, good}, nil)
	}
	for _, tc := range []struct {
		name  string
		check func(Code) error
		want  string
	}{{"checked", check, goodT0}, {"unchecked", nil, weakT0}} {
		t.Run(tc.name, func(t *testing.T) {
			store := NewMemStore()
			is := &Issuer{Store: store, Rand: bytes.NewReader(draws()), Check: tc.check}
			code, rec, err := is.Issue(context.Background(), "alice", 100)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(code.Token); got != tc.want {
				t.Fatalf("issued %s, want %s", got, tc.want)
			}
			if _, err := store.Lookup(context.Background(), rec.Handle); err != nil {
				t.Fatalf("issued code not recorded: %v", err)
			}
		})
	}
	// A check that rejects everything ends the draws with its error.
	is := &Issuer{Store: NewMemStore(), Check: func(Code) error { return ErrUnreadable }}
	if _, _, err := is.Issue(context.Background(), "alice", 100); !errors.Is(err, ErrUnreadable) {
		t.Fatalf("always-rejecting check: %v", err)
	}
}

// BenchmarkReadability measures what ReadabilityCheck buys on clean
// rendered frames: b.N codes are drawn from a seeded stream; each is then
// shown as the payer's phone would make it (fresh shares, bound to the
// challenges of three later slots) and counted unreadable when fewer than
// Threshold of its frames read back. Reported per 1,000 codes: codes the
// check rejects, unreadable showings of all codes, and of the codes the
// check accepted. Run with -benchtime=5000x (about 5 minutes).
func BenchmarkReadability(b *testing.B) {
	p := DefaultParams()
	check, err := ReadabilityCheck(p)
	if err != nil {
		b.Fatal(err)
	}
	ex, err := NewExtractor(p, false)
	if err != nil {
		b.Fatal(err)
	}
	// The codes come from a seeded stream: "read" by default, the text of
	// QSHIELD_READABILITY_SEED otherwise (a fresh set of codes for a
	// held-out check of a choice made on the default set).
	var seed [32]byte
	copy(seed[:], cmp.Or(os.Getenv("QSHIELD_READABILITY_SEED"), "read"))
	rng := mrand.NewChaCha8(seed)
	var codes, rejected, showings, unreadAll, unreadKept, badAll, badKept int
	for b.Loop() {
		t0 := make([]byte, p.TokenLen)
		rng.Read(t0)
		codes++
		kept := check(Code{Token: t0, SlotKey: testKey}) == nil
		if !kept {
			rejected++
		}
		for s := int64(1); s <= 3; s++ {
			l, err := NewLoop(t0, testKey, p, rng)
			if err != nil {
				b.Fatal(err)
			}
			c := ChallengeAt(testKey, testSlot+s*7919)
			bad := 0
			for k := range p.Shares {
				if _, err := ex.Extract(l.FrameBound(k, c)); err != nil {
					bad++
				}
			}
			showings++
			badAll += bad
			unread := p.Shares-bad < p.Threshold
			if unread {
				unreadAll++
			}
			if kept {
				badKept += bad
				if unread {
					unreadKept++
				}
			}
		}
	}
	per := func(n, d int) float64 { return 1000 * float64(n) / float64(max(d, 1)) }
	b.ReportMetric(per(rejected, codes), "rejected/1k-codes")
	b.ReportMetric(per(unreadAll, showings), "unreadable-all/1k-showings")
	b.ReportMetric(per(unreadKept, showings-3*rejected), "unreadable-kept/1k-showings")
	b.ReportMetric(per(badAll, showings*p.Shares), "bad-frames-all/1k")
	b.ReportMetric(per(badKept, (showings-3*rejected)*p.Shares), "bad-frames-kept/1k")
}

// BenchmarkReadabilityCheck is the issuer's cost per code drawn.
func BenchmarkReadabilityCheck(b *testing.B) {
	check, err := ReadabilityCheck(DefaultParams())
	if err != nil {
		b.Fatal(err)
	}
	c := Code{Token: mustHex(b, goodT0), SlotKey: testKey}
	for b.Loop() {
		if err := check(c); err != nil {
			b.Fatal(err)
		}
	}
}
