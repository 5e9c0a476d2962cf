package watermark

import (
	"context"
	"errors"
	"github.com/qshield/qshield/internal/testclock"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestIssueVerify(t *testing.T) {
	ctx := context.Background()
	ck := testclock.New(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	store := NewMemStore()
	is := &Issuer{Store: store, Now: ck.Now, TTL: time.Hour} // capped at 60 s
	v := &Verifier{Store: store, Now: ck.Now}

	t0, rec, err := is.Issue(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if rec.ExpiresAt.Sub(rec.IssuedAt) != MaxTTL {
		t.Fatalf("TTL %v not capped", rec.ExpiresAt.Sub(rec.IssuedAt))
	}
	if h, _ := Handle(t0); h != rec.Handle {
		t.Fatal("record handle is not Handle(T0)")
	}
	// T1 alone, or any wrong T0, is refused and does not consume the code.
	wrong := append([]byte(nil), t0...)
	wrong[0] ^= 1
	if _, err := v.Verify(ctx, rec.Handle, wrong); !errors.Is(err, ErrWrongToken) {
		t.Fatalf("wrong token: %v", err)
	}
	if _, err := v.Verify(ctx, rec.Handle, nil); !errors.Is(err, ErrWrongToken) {
		t.Fatalf("empty token: %v", err)
	}
	got, err := v.Verify(ctx, rec.Handle, t0)
	if err != nil || got.Account != "alice" || got.UsedAt.IsZero() {
		t.Fatalf("verify: %+v %v", got, err)
	}
	if _, err := v.Verify(ctx, rec.Handle, t0); !errors.Is(err, ErrUsed) {
		t.Fatalf("second use: %v", err)
	}
	// Expiry.
	t1, rec1, _ := is.Issue(ctx, "bob")
	ck.Add(MaxTTL)
	if _, err := v.Verify(ctx, rec1.Handle, t1); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	// Unknown and malformed handles.
	if _, err := v.Verify(ctx, "QSW1:AAAAAAAAAAAAAAAAAAAAAAAAAA", t1); !errors.Is(err, ErrUnknownToken) {
		t.Fatalf("unknown: %v", err)
	}
	if _, err := v.Verify(ctx, "not a handle", t1); !errors.Is(err, ErrUnknownToken) {
		t.Fatalf("malformed: %v", err)
	}
	if _, _, err := is.Issue(ctx, ""); err == nil {
		t.Fatal("empty account accepted")
	}
	if err := store.Insert(ctx, rec); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate insert: %v", err)
	}
}

func TestVerifyConcurrentSingleUse(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	t0, rec, _ := (&Issuer{Store: store}).Issue(ctx, "carol")
	v := &Verifier{Store: store}
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := v.Verify(ctx, rec.Handle, t0); err == nil {
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
