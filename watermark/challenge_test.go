package watermark

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/qshield/qshield/internal/testclock"
)

var testMaster = bytes.Repeat([]byte{0x5a}, ChallengeKeyLen)

func boundStamps(t *testing.T, code Code, handle, scanner string, n int, at time.Time) []Stamp {
	t.Helper()
	k, err := ScannerChallengeKey(testMaster, scanner)
	if err != nil {
		t.Fatal(err)
	}
	c := ChallengeAt(k, SlotAt(at))
	var out []Stamp
	for i := 1; i <= n; i++ {
		out = append(out, NewBoundStamp(code.SlotKey, handle, byte(i), c))
	}
	return out
}

// TestRelayToAnotherScannerRefused is the defence against a close
// re-capture relayed live (issue 18): shares the phone bound to scanner A's
// challenge do not pay at scanner B, nor do unbound shares, even inside the
// window and with the right T0; a refusal does not consume the code, and A
// is then paid. Without ChallengeMaster (the fix removed) B is paid.
func TestRelayToAnotherScannerRefused(t *testing.T) {
	ctx := context.Background()
	ck := testclock.New(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	for _, fix := range []bool{true, false} {
		store := NewMemStore()
		code, rec, err := (&Issuer{Store: store, Now: ck.Now}).Issue(ctx, "payer", 100)
		if err != nil {
			t.Fatal(err)
		}
		v := &Verifier{Store: store, Now: ck.Now}
		if fix {
			v.ChallengeMaster = testMaster
		}
		th := DefaultParams().Threshold
		atA := boundStamps(t, code, rec.Handle, "scanner-A", th, ck.Now())
		if !fix {
			// Before challenges: the relayed (unbound, fresh) stamps pay at B.
			_, err = v.Verify(ctx, Claim{Handle: rec.Handle, Token: code.Token, Stamps: stampsAt(code, rec.Handle, th, ck.Now()), Amount: 50, Scanner: "scanner-B"})
			if err != nil {
				t.Fatalf("without challenges the relay should pay (the attack this test guards against): %v", err)
			}
			continue
		}
		// The relay: the thief's video of a phone bound to A, shown to B.
		_, err = v.Verify(ctx, Claim{Handle: rec.Handle, Token: code.Token, Stamps: atA, Amount: 50, Scanner: "scanner-B"})
		if !errors.Is(err, ErrBadStamp) {
			t.Fatalf("relay of A-bound shares to B: %v, want ErrBadStamp", err)
		}
		// The phone saw no scanner: unbound stamps, fresh.
		_, err = v.Verify(ctx, Claim{Handle: rec.Handle, Token: code.Token, Stamps: stampsAt(code, rec.Handle, th, ck.Now()), Amount: 50, Scanner: "scanner-B"})
		if !errors.Is(err, ErrUnbound) {
			t.Fatalf("unbound shares at B: %v, want ErrUnbound", err)
		}
		// Fewer than MinBoundStamps bound to B, the rest unbound and fresh.
		mixed := boundStamps(t, code, rec.Handle, "scanner-B", MinBoundStamps-1, ck.Now())
		for i := MinBoundStamps; i <= th; i++ {
			mixed = append(mixed, NewStamp(code.SlotKey, rec.Handle, byte(i), SlotAt(ck.Now())))
		}
		if _, err := v.Verify(ctx, Claim{Handle: rec.Handle, Token: code.Token, Stamps: mixed, Amount: 50, Scanner: "scanner-B"}); !errors.Is(err, ErrUnbound) {
			t.Fatalf("too few bound: %v", err)
		}
		// A's bound stamps mixed into an otherwise valid claim at B: refused.
		mixA := append(boundStamps(t, code, rec.Handle, "scanner-A", 1, ck.Now()), mixed[1:]...)
		if _, err := v.Verify(ctx, Claim{Handle: rec.Handle, Token: code.Token, Stamps: mixA, Amount: 50, Scanner: "scanner-B"}); !errors.Is(err, ErrBadStamp) {
			t.Fatalf("A-bound stamp at B: %v", err)
		}
		// A repeated index is refused outright (one guess per index).
		dup := append(boundStamps(t, code, rec.Handle, "scanner-A", th, ck.Now()), boundStamps(t, code, rec.Handle, "scanner-A", 1, ck.Now())...)
		if _, err := v.Verify(ctx, Claim{Handle: rec.Handle, Token: code.Token, Stamps: dup, Amount: 50, Scanner: "scanner-A"}); !errors.Is(err, ErrBadStamp) {
			t.Fatalf("repeated index: %v", err)
		}
		// Bound to A but replayed at A later than the window: stale.
		ck.Add(5 * time.Second)
		if _, err := v.Verify(ctx, Claim{Handle: rec.Handle, Token: code.Token, Stamps: atA, Amount: 50, Scanner: "scanner-A"}); !errors.Is(err, ErrStale) {
			t.Fatalf("A-bound shares 5 s later: %v, want ErrStale", err)
		}
		// The honest scan at A now: the phone read A's challenge after
		// showing t−2 frames unbound.
		honest := boundStamps(t, code, rec.Handle, "scanner-A", th, ck.Now())
		for i := range th - MinBoundStamps {
			honest[i] = NewStamp(code.SlotKey, rec.Handle, byte(i+1), SlotAt(ck.Now()))
		}
		if _, err := v.Verify(ctx, Claim{Handle: rec.Handle, Token: code.Token, Stamps: honest, Amount: 50, Scanner: "scanner-A"}); err != nil {
			t.Fatalf("honest scan at A refused after the relay attempts: %v", err)
		}
		// No scanner name (a claim not from an authenticated scanner).
		if _, err := v.Verify(ctx, Claim{Handle: rec.Handle, Token: code.Token, Stamps: atA, Amount: 50}); err == nil {
			t.Fatal("claim without scanner accepted")
		}
	}
}

func TestChallengeText(t *testing.T) {
	k, err := ScannerChallengeKey(testMaster, "lane-1")
	if err != nil {
		t.Fatal(err)
	}
	c := ChallengeAt(k, 1_796_558_400)
	got, err := ParseChallenge(c.String())
	if err != nil || got != c {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if ChallengeAt(k, c.Slot+1).Nonce == c.Nonce {
		t.Fatal("challenge does not rotate")
	}
	k2, _ := ScannerChallengeKey(testMaster, "lane-2")
	if ChallengeAt(k2, c.Slot).Nonce == c.Nonce {
		t.Fatal("two scanners show the same challenge")
	}
	for _, bad := range []string{"", "QSC1:", "QSW1:" + c.String()[5:], c.String() + "AA", c.String()[:len(c.String())-2]} {
		if _, err := ParseChallenge(bad); !errors.Is(err, ErrChallenge) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if _, err := ScannerChallengeKey(testMaster[:16], "x"); !errors.Is(err, ErrChallenge) {
		t.Errorf("short master: %v", err)
	}
	if _, err := ScannerChallengeKey(testMaster, ""); !errors.Is(err, ErrChallenge) {
		t.Errorf("empty scanner: %v", err)
	}
}

// TestBoundFlagRoundTrip: the bound flag travels in the packet's index byte
// and is covered by the CRC.
func TestBoundFlagRoundTrip(t *testing.T) {
	s := Share{Index: 7, Value: bytes.Repeat([]byte{3}, 16)}
	s.Stamp = NewBoundStamp(testKey16, "QSW1:X", 7, Challenge{Slot: 300})
	b := marshalShare("QSW1:X", s)
	got, err := unmarshalShare("QSW1:X", b, 16)
	if err != nil || got.Index != 7 || got.Stamp != s.Stamp {
		t.Fatalf("%+v %v", got, err)
	}
	b[0] &^= boundFlag // strip the flag: the CRC catches it
	if _, err := unmarshalShare("QSW1:X", b, 16); !errors.Is(err, ErrBadShare) {
		t.Fatalf("flag flipped: %v", err)
	}
}

var testKey16 = []byte("0123456789abcdef")

func FuzzParseChallenge(f *testing.F) {
	f.Add("QSC1:AAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add(ChallengeAt(testMaster, 5).String())
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseChallenge(s)
		if err != nil {
			if !errors.Is(err, ErrChallenge) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		// Invariant: what parses is the one canonical text of a challenge,
		// which parses back to the same challenge.
		if c.String() != s {
			t.Fatalf("accepted %q, whose canonical text is %q", s, c.String())
		}
		c2, err := ParseChallenge(c.String())
		if err != nil || c2 != c {
			t.Fatalf("%q: re-encoded %q gives %+v, %v", s, c.String(), c2, err)
		}
	})
}

// TestChallengeTracker: the phone binds to the one scanner it sees, follows
// its rotation, and binds to nothing while two challenges compete (an
// emitter aimed at the phone beside the real scanner).
func TestChallengeTracker(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	kA, _ := ScannerChallengeKey(testMaster, "A")
	kB, _ := ScannerChallengeKey(testMaster, "B")
	s := SlotAt(t0)
	var ct ChallengeTracker
	if _, ok := ct.Current(t0); ok {
		t.Fatal("challenge before any read")
	}
	ct.Observe(ChallengeAt(kA, s), t0)
	if c, ok := ct.Current(t0.Add(100 * time.Millisecond)); !ok || c != ChallengeAt(kA, s) {
		t.Fatal("A not current")
	}
	ct.Observe(ChallengeAt(kA, s+1), t0.Add(time.Second))
	if c, ok := ct.Current(t0.Add(1100 * time.Millisecond)); !ok || c.Slot != s+1 {
		t.Fatal("rotation not followed")
	}
	// B appears beside A: no binding while both are read.
	ct.Observe(ChallengeAt(kB, s+1), t0.Add(1200*time.Millisecond))
	if _, ok := ct.Current(t0.Add(1300 * time.Millisecond)); ok {
		t.Fatal("bound while two scanners compete")
	}
	ct.Observe(ChallengeAt(kA, s+1), t0.Add(1400*time.Millisecond))
	if _, ok := ct.Current(t0.Add(1500 * time.Millisecond)); ok {
		t.Fatal("bound right after a conflict")
	}
	// A alone for a whole Hold after the last conflict: bound again.
	ct.Observe(ChallengeAt(kA, s+3), t0.Add(3300*time.Millisecond))
	ct.Observe(ChallengeAt(kA, s+4), t0.Add(4000*time.Millisecond))
	if c, ok := ct.Current(t0.Add(4100 * time.Millisecond)); !ok || c != ChallengeAt(kA, s+4) {
		t.Fatal("not bound again after the conflict cleared")
	}
	// Stale: nothing read for Hold.
	if _, ok := ct.Current(t0.Add(7 * time.Second)); ok {
		t.Fatal("stale challenge still current")
	}
}

// TestShowBoundAt: the frame the phone shows while it holds a challenge is
// the share ShowAt shows at that moment, with a stamp bound to the
// challenge (the wallet's loop, issue 18), and its stamps pay only at that
// scanner.
func TestShowBoundAt(t *testing.T) {
	p := DefaultParams()
	l, err := NewLoop(fixedToken(t), testKey, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := NewExtractor(p, false)
	if err != nil {
		t.Fatal(err)
	}
	kA, _ := ScannerChallengeKey(testMaster, "A")
	at := SlotStart(testSlot).Add(340 * time.Millisecond)
	c := ChallengeAt(kA, testSlot-1) // read a slot ago
	plain, err := ex.Extract(l.ShowAt(at))
	if err != nil {
		t.Fatal(err)
	}
	fr, err := ex.Extract(l.ShowBoundAt(at, c))
	if err != nil {
		t.Fatal(err)
	}
	if fr.Share.Index != plain.Share.Index || !bytes.Equal(fr.Share.Value, plain.Share.Value) {
		t.Fatalf("bound frame shows share %d, the loop shows %d", fr.Share.Index, plain.Share.Index)
	}
	if want := NewBoundStamp(testKey, l.Handle, fr.Share.Index, c); fr.Share.Stamp != want || plain.Share.Stamp.Bound {
		t.Fatalf("stamp %+v, want %+v (plain %+v)", fr.Share.Stamp, want, plain.Share.Stamp)
	}
}

// TestBoundTo: BoundTo names the scanner a refused claim's stamps were
// bound to (a relay, wrong_scanner) and nothing for forged, unbound, too few
// or stale stamps.
func TestBoundTo(t *testing.T) {
	now := SlotStart(testSlot).Add(500 * time.Millisecond)
	code := Code{SlotKey: testKey16}
	kA, _ := ScannerChallengeKey(testMaster, "A")
	kB, _ := ScannerChallengeKey(testMaster, "B")
	w := DefaultWindow()
	stA := boundStamps(t, code, "QSW1:X", "A", 3, now)
	if !BoundTo(testKey16, "QSW1:X", stA, now, w, kA) {
		t.Fatal("A's stamps not recognised as A's")
	}
	if BoundTo(testKey16, "QSW1:X", stA, now, w, kB) {
		t.Fatal("A's stamps taken for B's")
	}
	if BoundTo(testKey16, "QSW1:X", stA[:MinBoundStamps-1], now, w, kA) {
		t.Fatal("fewer than MinBoundStamps recognised")
	}
	dup := []Stamp{stA[0], stA[0]}
	if BoundTo(testKey16, "QSW1:X", dup, now, w, kA) {
		t.Fatal("a repeated stamp counted twice")
	}
	forged := append([]Stamp(nil), stA...)
	for i := range forged {
		forged[i].Tag[1] ^= 1
	}
	if BoundTo(testKey16, "QSW1:X", forged, now, w, kA) {
		t.Fatal("forged tags recognised")
	}
	if BoundTo(testKey16, "QSW1:X", stampsAt(code, "QSW1:X", 3, now), now, w, kA) {
		t.Fatal("unbound stamps recognised")
	}
	if BoundTo(testKey16, "QSW1:X", stA, now.Add(10*time.Second), w, kA) {
		t.Fatal("stale stamps recognised")
	}
}
