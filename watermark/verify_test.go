package watermark

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qshield/qshield/internal/testclock"
)

// stampsAt returns the stamps of the first n shares shown in the slot of at.
func stampsAt(code Code, handle string, n int, at time.Time) []Stamp {
	var out []Stamp
	for i := 1; i <= n; i++ {
		out = append(out, NewStamp(code.SlotKey, handle, byte(i), SlotAt(at)))
	}
	return out
}

func TestIssueVerify(t *testing.T) {
	ctx := context.Background()
	ck := testclock.New(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	store := NewMemStore()
	is := &Issuer{Store: store, Now: ck.Now, TTL: time.Hour} // capped at 60 s
	v := &Verifier{Store: store, Now: ck.Now}
	tt := DefaultParams().Threshold

	code, rec, err := is.Issue(ctx, "alice", 50_00)
	if err != nil {
		t.Fatal(err)
	}
	t0 := code.Token
	if rec.ExpiresAt.Sub(rec.IssuedAt) != MaxTTL {
		t.Fatalf("TTL %v not capped", rec.ExpiresAt.Sub(rec.IssuedAt))
	}
	if h, _ := Handle(t0); h != rec.Handle {
		t.Fatal("record handle is not Handle(T0)")
	}
	stamps := stampsAt(code, rec.Handle, tt, ck.Now())
	claim := func(tok []byte) Claim { return Claim{Handle: rec.Handle, Token: tok, Stamps: stamps, Amount: 42_00} }
	// T1 alone, or any wrong T0, is refused and does not consume the code.
	wrong := append([]byte(nil), t0...)
	wrong[0] ^= 1
	if _, err := v.Verify(ctx, claim(wrong)); !errors.Is(err, ErrWrongToken) {
		t.Fatalf("wrong token: %v", err)
	}
	if _, err := v.Verify(ctx, claim(nil)); !errors.Is(err, ErrWrongToken) {
		t.Fatalf("empty token: %v", err)
	}
	got, err := v.Verify(ctx, claim(t0))
	if err != nil || got.Account != "alice" || got.UsedAt.IsZero() {
		t.Fatalf("verify: %+v %v", got, err)
	}
	if _, err := v.Verify(ctx, claim(t0)); !errors.Is(err, ErrUsed) {
		t.Fatalf("second use: %v", err)
	}
	// Expiry.
	c1, rec1, _ := is.Issue(ctx, "bob", 100)
	ck.Add(MaxTTL)
	st1 := stampsAt(c1, rec1.Handle, tt, ck.Now())
	if _, err := v.Verify(ctx, Claim{Handle: rec1.Handle, Token: c1.Token, Stamps: st1, Amount: 1}); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	// Unknown and malformed handles.
	if _, err := v.Verify(ctx, Claim{Handle: "QSW1:AAAAAAAAAAAAAAAAAAAAAAAAAA", Token: c1.Token}); !errors.Is(err, ErrUnknownToken) {
		t.Fatalf("unknown: %v", err)
	}
	if _, err := v.Verify(ctx, Claim{Handle: "not a handle", Token: c1.Token}); !errors.Is(err, ErrUnknownToken) {
		t.Fatalf("malformed: %v", err)
	}
	if _, _, err := is.Issue(ctx, "", 100); err == nil {
		t.Fatal("empty account accepted")
	}
	for _, lim := range []int64{0, -1} {
		if _, _, err := is.Issue(ctx, "alice", lim); !errors.Is(err, ErrToken) {
			t.Fatalf("limit %d accepted: %v", lim, err)
		}
	}
	if err := store.Insert(ctx, rec); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate insert: %v", err)
	}
}

// TestLimitRefused: a claim above the payer's limit is refused and does not
// consume the code; the limit itself is accepted (issue 12, item 5).
func TestLimitRefused(t *testing.T) {
	ctx := context.Background()
	ck := testclock.New(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	store := NewMemStore()
	v := &Verifier{Store: store, Now: ck.Now}
	code, rec, err := (&Issuer{Store: store, Now: ck.Now}).Issue(ctx, "alice", 10_00)
	if err != nil {
		t.Fatal(err)
	}
	st := stampsAt(code, rec.Handle, DefaultParams().Threshold, ck.Now())
	if _, err := v.Verify(ctx, Claim{Handle: rec.Handle, Token: code.Token, Stamps: st, Amount: 10_01}); !errors.Is(err, ErrOverLimit) {
		t.Fatalf("over the limit: %v", err)
	}
	if _, err := v.Verify(ctx, Claim{Handle: rec.Handle, Token: code.Token, Stamps: st, Amount: 10_00}); err != nil {
		t.Fatalf("at the limit (code must not have been consumed): %v", err)
	}
}

// TestReplayLaterRefused is the time binding's regression test: the stamps
// of frames filmed at time T pay at T (+ processing) but not once the window
// has passed, at any later time within the code's life; nor do forged or
// moved stamps, nor fewer than t fresh ones.
func TestReplayLaterRefused(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2026, 1, 1, 12, 0, 0, 300e6, time.UTC)
	ck := testclock.New(start)
	store := NewMemStore()
	tt := DefaultParams().Threshold
	v := &Verifier{Store: store, Now: ck.Now}
	code, rec, err := (&Issuer{Store: store, Now: ck.Now}).Issue(ctx, "alice", 50_00)
	if err != nil {
		t.Fatal(err)
	}
	filmed := stampsAt(code, rec.Handle, tt, start)
	claim := Claim{Handle: rec.Handle, Token: code.Token, Stamps: filmed, Amount: 1_00}
	w := DefaultWindow()
	// Later than the window: refused at every delay up to the expiry, and
	// the code is not consumed.
	for d := w.MaxAge + SlotDuration; d < MaxTTL; d += 700 * time.Millisecond {
		ck.Set(start.Add(d))
		if _, err := v.Verify(ctx, claim); !errors.Is(err, ErrStale) {
			t.Fatalf("replayed %v later: %v", d, err)
		}
	}
	// A stamp with a wrong tag, or moved to another slot or index, fails.
	ck.Set(start.Add(200 * time.Millisecond))
	for i, mut := range []func(*Stamp){
		func(s *Stamp) { s.Tag[0] ^= 1 },
		func(s *Stamp) { s.Slot++ },
		func(s *Stamp) { s.Index = byte(tt + 3) },
	} {
		bad := append([]Stamp(nil), filmed...)
		mut(&bad[2])
		if _, err := v.Verify(ctx, Claim{Handle: rec.Handle, Token: code.Token, Stamps: bad, Amount: 1_00}); !errors.Is(err, ErrBadStamp) {
			t.Fatalf("mutation %d: %v", i, err)
		}
	}
	// t−1 fresh stamps (or t stamps of t−1 indices) are not enough.
	if _, err := v.Verify(ctx, Claim{Handle: rec.Handle, Token: code.Token, Stamps: filmed[:tt-1], Amount: 1_00}); !errors.Is(err, ErrStale) {
		t.Fatalf("t-1 stamps: %v", err)
	}
	// A repeated index is refused outright: one guess per index per claim.
	dup := append(append([]Stamp(nil), filmed[:tt-1]...), filmed[0])
	if _, err := v.Verify(ctx, Claim{Handle: rec.Handle, Token: code.Token, Stamps: dup, Amount: 1_00}); !errors.Is(err, ErrBadStamp) {
		t.Fatalf("duplicate index: %v", err)
	}
	// The honest, prompt claim pays.
	if _, err := v.Verify(ctx, claim); err != nil {
		t.Fatalf("prompt claim: %v", err)
	}
}

func TestWindowEdges(t *testing.T) {
	key := []byte("0123456789abcdef")
	const h = "QSW1:BOF72HAOLBN5WEXRGCMPJHTYDY"
	w := DefaultWindow()
	slot := int64(1_796_558_400)
	st := []Stamp{NewStamp(key, h, 1, slot), NewStamp(key, h, 2, slot)}
	end := SlotStart(slot).Add(SlotDuration)
	for _, c := range []struct {
		now time.Time
		ok  bool
	}{
		{SlotStart(slot).Add(-w.MaxLead), true},
		{SlotStart(slot).Add(-w.MaxLead - time.Millisecond), false},
		{end.Add(w.MaxAge), true},
		{end.Add(w.MaxAge + time.Millisecond), false},
		{end.Add(255 * time.Second), false}, // same low byte, 256 slots later
		{end.Add(256 * time.Second), false},
	} {
		err := CheckStamps(key, h, 2, st, c.now, w, Binding{})
		if (err == nil) != c.ok {
			t.Errorf("now %v: %v, want ok=%v", c.now.Sub(SlotStart(slot)), err, c.ok)
		}
	}
	if err := CheckStamps(nil, h, 2, st, end, w, Binding{}); !errors.Is(err, ErrBadStamp) {
		t.Errorf("no key: %v", err)
	}
}

func FuzzCheckStamps(f *testing.F) {
	key := []byte("0123456789abcdef")
	f.Add([]byte{1, 2, 3, 4, 5}, int64(1_796_558_400_000))
	f.Fuzz(func(t *testing.T, raw []byte, nowMS int64) {
		var st []Stamp
		for len(raw) >= 5 {
			st = append(st, Stamp{Index: raw[0], Slot: raw[1], Tag: [TagLen]byte{raw[2], raw[3], raw[4]}})
			raw = raw[5:]
		}
		// Random stamps must (essentially) never pass with t = 2: each needs
		// a 24-bit tag; the fuzzer does not know the key.
		if err := CheckStamps(key, "QSW1:X", 2, st, time.UnixMilli(nowMS), DefaultWindow(), Binding{}); err == nil {
			t.Fatalf("forged stamps accepted: %+v", st)
		}
	})
}

func TestVerifyConcurrentSingleUse(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	// A manual clock: under load the goroutines may start seconds apart,
	// which must not move the code out of its window or past its TTL.
	ck := testclock.New(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	code, rec, _ := (&Issuer{Store: store, Now: ck.Now}).Issue(ctx, "carol", 100)
	v := &Verifier{Store: store, Now: ck.Now}
	c := Claim{Handle: rec.Handle, Token: code.Token, Stamps: stampsAt(code, rec.Handle, DefaultParams().Threshold, ck.Now()), Amount: 100}
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := v.Verify(ctx, c); err == nil {
				ok.Add(1)
			} else if !errors.Is(err, ErrUsed) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d concurrent verifications succeeded", ok.Load())
	}
}
