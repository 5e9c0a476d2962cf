package trial

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/camsim"
)

// testProcessing is the simulated time a scanner takes per frame in these
// tests (Clock.Processing), so that their outcomes do not depend on how
// fast this machine runs the scan (the race detector makes it several
// times slower).
const testProcessing = 40 * time.Millisecond

// simClock is the verifier's clock, set to each claim's simulated receipt.
type simClock struct{ t time.Time }

func (c *simClock) now() time.Time { return c.t }

func issue(t *testing.T, p watermark.Params) (*watermark.Verifier, *simClock, []byte, *watermark.Loop) {
	t.Helper()
	store := watermark.NewMemStore()
	ck := &simClock{t: DefaultEpoch}
	code, _, err := (&watermark.Issuer{Store: store, Now: ck.now}).Issue(context.Background(), "payer", 100_00)
	if err != nil {
		t.Fatal(err)
	}
	l, err := watermark.NewLoop(code.Token, code.SlotKey, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &watermark.Verifier{Store: store, Now: ck.now}, ck, code.Token, l
}

// TestCloseScanPays: the payer's loop, filmed by the merchant scanner, pays.
func TestCloseScanPays(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	rng := rand.New(rand.NewPCG(11, 12))
	prof := WithDisplay(camsim.CloseScan(), p)
	skews := []time.Duration{0, 1500 * time.Millisecond, -1500 * time.Millisecond}
	if raceEnabled {
		// The simulated clock advances by the scanner's measured CPU time,
		// which the race detector inflates several times; a phone 1.5 s
		// behind then leaves no margin in the ±2 s window. The skew
		// tolerance is measured by the watermark experiment, not here.
		skews = skews[:2]
	}
	for i, skew := range skews {
		v, ck, t0, l := issue(t, p)
		r, err := Pay(ctx, l, prof, rng, 3*time.Second, Clock{Processing: testProcessing, Start: DefaultEpoch.Add(10 * time.Second), Skew: skew, Latency: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK || !bytes.Equal(r.Token, t0) {
			t.Fatalf("payment %d failed: %+v", i, r.Stats)
		}
		ck.t = r.Submitted
		if _, err := v.Verify(ctx, r.Claim(42_00)); err != nil {
			t.Fatalf("verify (skew %v): %v", skew, err)
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
	_, _, _, l := issue(t, p)
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
	_, _, _, l := issue(t, p)
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
	_, _, _, l := issue(t, p)
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

// TestRecordingReplayedLaterRefused: a close video relayed live to a
// merchant scanner can pay (within the window: reported by the experiment),
// but the same video shown 10 s later is refused by the server even though
// the scanner rebuilds T0.
func TestRecordingReplayedLaterRefused(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	rng := rand.New(rand.NewPCG(51, 52))
	v, ck, t0, l := issue(t, p)
	rl := Relay{Thief: WithDisplay(camsim.RecaptureVideo(), p), Lens: 1, DistanceMM: 220,
		Scanner: WithDisplay(camsim.CloseScan(), p), Replay: camsim.ReplayDisplay(),
		Delay: 10 * time.Second, Timeout: 3 * time.Second, Clock: Clock{Processing: testProcessing, Start: DefaultEpoch.Add(5 * time.Second)}}
	// Perfect frames stand in for the recording when the simulated one
	// loses the watermark: the server's decision must not depend on that.
	r, err := Recapture(ctx, l, rl, rng)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK {
		t.Logf("re-captured video lost the watermark (%+v); replaying perfect frames instead", r.Stats)
		r, err = Pay(ctx, l, WithDisplay(camsim.CloseScan(), p), rng, 3*time.Second, Clock{Processing: testProcessing, Start: rl.Clock.Start})
		if err != nil || !r.OK {
			t.Fatalf("direct scan: %v %+v", err, r.Stats)
		}
		r.Submitted = r.Submitted.Add(rl.Delay)
	}
	if !bytes.Equal(r.Token, t0) {
		t.Fatal("wrong token")
	}
	ck.t = r.Submitted
	if _, err := v.Verify(ctx, r.Claim(1_00)); !errors.Is(err, watermark.ErrStale) {
		t.Fatalf("recording replayed %v later: %v", rl.Delay, err)
	}
}

var testMaster = bytes.Repeat([]byte{0xa5}, watermark.ChallengeKeyLen)

func scannerKey(t *testing.T, name string) []byte {
	t.Helper()
	k, err := watermark.ScannerChallengeKey(testMaster, name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestChallengeBoundScanPays: with scanner challenges on, the phone binds its
// frames to the challenge it reads, the scanner waits for t bound stamps, and
// the server (which requires them) pays.
func TestChallengeBoundScanPays(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	rng := rand.New(rand.NewPCG(61, 62))
	v, ck, t0, l := issue(t, p)
	v.ChallengeMaster = testMaster
	r, err := Pay(ctx, l, WithDisplay(camsim.CloseScan(), p), rng, 3*time.Second,
		Clock{Processing: testProcessing, Start: DefaultEpoch.Add(10 * time.Second), Latency: 100 * time.Millisecond, ScannerKey: scannerKey(t, "lane-A"), ChallengeDelay: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK || !bytes.Equal(r.Token, t0) {
		t.Fatalf("payment failed: %+v", r.Stats)
	}
	bound := 0
	for _, st := range r.Stamps {
		if st.Bound {
			bound++
		}
	}
	if bound < watermark.MinBoundStamps {
		t.Fatalf("%d bound stamps forwarded", bound)
	}
	ck.t = r.Submitted
	c := r.Claim(42_00)
	c.Scanner = "lane-A"
	if _, err := v.Verify(ctx, c); err != nil {
		t.Fatalf("verify: %v", err)
	}
}

// TestLiveRelayRefused: a thief films, from 15 cm, a phone held to scanner A
// and relays the video live to scanner B of the same platform. B rebuilds
// T0 but the stamps are bound to A's challenge: refused, and the code still
// pays at A. (Fails with the challenge requirement removed: the
// re-capture relayed live paid 5 of 10 times before.)
func TestLiveRelayRefused(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	rng := rand.New(rand.NewPCG(71, 72))
	v, ck, t0, l := issue(t, p)
	v.ChallengeMaster = testMaster
	start := DefaultEpoch.Add(5 * time.Second)
	rl := Relay{Thief: WithDisplay(camsim.RecaptureVideo(), p), Lens: 0, DistanceMM: 150,
		Scanner: WithDisplay(camsim.CloseScan(), p), Replay: camsim.ReplayDisplay(),
		Delay: 300 * time.Millisecond, Timeout: 3 * time.Second,
		Clock:        Clock{Processing: testProcessing, Start: start, Latency: 100 * time.Millisecond, ScannerKey: scannerKey(t, "lane-B"), ChallengeDelay: 100 * time.Millisecond},
		PayerScanner: scannerKey(t, "lane-A")}
	r, err := Recapture(ctx, l, rl, rng)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK {
		// The server's decision must not depend on the simulated camera:
		// stand in the exact frames the phone showed to A.
		t.Logf("re-captured video lost the watermark (%+v); relaying the phone's own frames instead", r.Stats)
		r, err = Pay(ctx, l, WithDisplay(camsim.CloseScan(), p), rng, 3*time.Second,
			Clock{Processing: testProcessing, Start: start, Latency: 100 * time.Millisecond, ScannerKey: scannerKey(t, "lane-A"), ChallengeDelay: 100 * time.Millisecond})
		if err != nil || !r.OK {
			t.Fatalf("direct scan: %v %+v", err, r.Stats)
		}
	}
	if !bytes.Equal(r.Token, t0) {
		t.Fatal("wrong token")
	}
	ck.t = r.Submitted
	c := r.Claim(1_00)
	c.Scanner = "lane-B"
	if _, err := v.Verify(ctx, c); !errors.Is(err, watermark.ErrBadStamp) {
		t.Fatalf("live relay to B: %v, want ErrBadStamp", err)
	}
	// The same stamps at A (the scanner the phone faced) pay: it is the
	// binding, not a failed reconstruction, that refused B.
	c.Scanner = "lane-A"
	if _, err := v.Verify(ctx, c); err != nil {
		t.Fatalf("at A: %v", err)
	}
}
