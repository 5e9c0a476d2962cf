package trial

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/camsim"
)

func issue(t *testing.T, p watermark.Params) (*watermark.Verifier, []byte, *watermark.Loop) {
	t.Helper()
	store := watermark.NewMemStore()
	t0, _, err := (&watermark.Issuer{Store: store}).Issue(context.Background(), "payer")
	if err != nil {
		t.Fatal(err)
	}
	l, err := watermark.NewLoop(t0, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &watermark.Verifier{Store: store}, t0, l
}

// TestCloseScanPays: the payer's loop, filmed by the merchant scanner, pays.
func TestCloseScanPays(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	rng := rand.New(rand.NewPCG(11, 12))
	prof := WithDisplay(camsim.CloseScan(), p)
	for i := range 3 {
		v, t0, l := issue(t, p)
		r, err := Pay(ctx, l, prof, rng, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK || !bytes.Equal(r.Token, t0) {
			t.Fatalf("payment %d failed: %+v", i, r.Stats)
		}
		if _, err := v.Verify(ctx, r.Handle, r.Token); err != nil {
			t.Fatalf("verify: %v", err)
		}
	}
}

// TestSinglePhotoRefused: even a sharp telephoto photo from 1 m, which does
// carry a valid share, never yields T0.
func TestSinglePhotoRefused(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	rng := rand.New(rand.NewPCG(21, 22))
	prof := WithDisplay(camsim.OnSiteTheft(), p)
	_, _, l := issue(t, p)
	shares := 0
	for range 8 {
		r, err := OnSite(ctx, l, prof, rng, 2, 1000, 1)
		if err != nil {
			t.Fatal(err)
		}
		if r.OK {
			t.Fatal("a single photo recovered T0")
		}
		shares += r.Shares
	}
	if shares == 0 {
		t.Fatal("no photo carried a share: the test no longer exercises the threshold")
	}
}

// TestDistantBurstRefused: a 10-photo burst with the main lens from 2.5 m.
func TestDistantBurstRefused(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	rng := rand.New(rand.NewPCG(31, 32))
	prof := WithDisplay(camsim.OnSiteTheft(), p)
	_, _, l := issue(t, p)
	for range 3 {
		r, err := OnSite(ctx, l, prof, rng, 0, 2500, 10)
		if err != nil {
			t.Fatal(err)
		}
		if r.OK || r.Shares >= p.Threshold {
			t.Fatalf("distant burst: %+v", r)
		}
	}
}

// TestRecapturedPhotoRefused: a burst from 1.5 m (main lens) replayed on
// another phone to a merchant scanner.
func TestRecapturedPhotoRefused(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	rng := rand.New(rand.NewPCG(41, 42))
	thief := WithDisplay(camsim.OnSiteTheft(), p)
	scanner := WithDisplay(camsim.CloseScan(), p)
	_, _, l := issue(t, p)
	for range 2 {
		r, err := Collaborative(ctx, l, thief, scanner, camsim.ReplayDisplay(), rng, 0, 1500, 10, 1)
		if err != nil {
			t.Fatal(err)
		}
		if r.OK || r.Shares >= p.Threshold {
			t.Fatalf("re-capture: %+v", r)
		}
	}
}
