package scan

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/draw"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/qshield/qshield/shamir"
	"github.com/qshield/qshield/watermark"
)

// newLoop makes a reproducible loop from seed. The tests feed crisp rendered
// frames to gozxing, whose detector misreads about 0.7 % of crisp synthetic
// QR codes (plain ones too; blurred camera frames and zbar are fine), so the
// tokens are fixed rather than random, and checked to decode.
func newLoop(t *testing.T, p watermark.Params, seed byte) ([]byte, *watermark.Loop) {
	t.Helper()
	r := rand.NewChaCha8([32]byte{seed, 's', 'c', 'a', 'n'})
	t0, err := watermark.NewToken(p.TokenLen, r)
	if err != nil {
		t.Fatal(err)
	}
	l, err := watermark.NewLoop(t0, testKey, p, r)
	if err != nil {
		t.Fatal(err)
	}
	ex, _ := watermark.NewExtractor(p, false)
	for i, f := range l.Frames(testSlot) {
		if _, err := ex.Extract(f); err != nil {
			t.Fatalf("seed %d frame %d does not read back: %v", seed, i, err)
		}
	}
	return t0, l
}

func TestReconstructFromLoop(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	t0, l := newLoop(t, p, 1)
	s, err := NewSession(p, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A blank frame and a repeated frame first.
	blank := image.NewGray(image.Rect(0, 0, 200, 200))
	draw.Draw(blank, blank.Rect, image.White, image.Point{}, draw.Src)
	ev, _ := s.Add(ctx, blank)
	if ev.Err == nil || ev.Handle != "" {
		t.Fatalf("blank frame: %+v", ev)
	}
	var res *Result
	// Frame 3 twice, then the loop from the start: frame 3 comes again
	// (a duplicate) and the 6th distinct share is frame 5, the 8th frame.
	for i, f := range append([]*image.Gray{l.Frames(testSlot)[3], l.Frames(testSlot)[3]}, l.Frames(testSlot)...) {
		ev, err := s.Add(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Result != nil {
			res = ev.Result
			if i != 7 {
				t.Fatalf("completed at frame %d, want 7", i)
			}
			break
		}
	}
	if res == nil || !bytes.Equal(res.Token, t0) || res.Handle != l.Handle || res.Shares != p.Threshold {
		t.Fatalf("result %+v", res)
	}
	st := s.Stats()
	if st.NoCode != 1 || st.Duplicate != 2 || st.NewShares != p.Threshold {
		t.Fatalf("stats %+v", st)
	}
}

func TestFewerThanThresholdNeverCompletes(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	_, l := newLoop(t, p, 2)
	s, _ := NewSession(p, false, nil)
	for range 3 { // the same t-1 frames, many times
		for _, f := range l.Frames(testSlot)[:p.Threshold-1] {
			ev, _ := s.Add(ctx, f)
			if ev.Result != nil {
				t.Fatal("completed with t-1 shares")
			}
		}
	}
}

// TestMixedTokensNeverCombine interleaves frames of two payers' codes: each
// group completes only with its own shares, into its own token.
func TestMixedTokensNeverCombine(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	ta, la := newLoop(t, p, 3)
	tb, lb := newLoop(t, p, 4)
	s, _ := NewSession(p, false, nil)
	// t-1 of A and t-1 of B (2t-2 shares in total, more than t): nothing.
	for i := range p.Threshold - 1 {
		for _, f := range []*image.Gray{la.Frames(testSlot)[i], lb.Frames(testSlot)[i+1]} {
			ev, _ := s.Add(ctx, f)
			if ev.Result != nil {
				t.Fatalf("completed from mixed shares: %+v", ev.Result)
			}
		}
	}
	ev, _ := s.Add(ctx, lb.Frames(testSlot)[0]) // B's t-th share
	if ev.Result == nil || ev.Result.Handle != lb.Handle || !bytes.Equal(ev.Result.Token, tb) {
		t.Fatalf("B: %+v", ev)
	}
	ev, _ = s.Add(ctx, la.Frames(testSlot)[p.Threshold]) // A's t-th share
	if ev.Result == nil || ev.Result.Handle != la.Handle || !bytes.Equal(ev.Result.Token, ta) {
		t.Fatalf("A: %+v", ev)
	}
}

// TestForgedShareNeverCombines renders B's share under A's code with a CRC
// valid for A (as a forger could): the reconstruction does not derive A's T1,
// so nothing is returned, and a further genuine share lets the subset search
// leave the forged one out.
func TestForgedShareNeverCombines(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	_, la := newLoop(t, p, 5)
	tb, _ := newLoop(t, p, 6)
	sh, _ := shamir.Split(tb, p.Threshold, p.Shares, rand.NewChaCha8([32]byte{9}))
	// A frame whose QR says A but whose share (with B's CRC) belongs to B.
	img, err := watermark.Render(la.Handle, watermark.Share{Index: sh[0].Index, Value: sh[0].Value}, p)
	if err != nil {
		t.Fatal(err)
	}
	// Render computes the CRC over A's handle (a forger can), so the share
	// passes the CRC: the defence is the reconstruction check.
	ex, _ := watermark.NewExtractor(p, false)
	if _, err := ex.Extract(img); err != nil {
		t.Fatalf("extract: %v", err)
	}
	s, _ := NewSession(p, false, nil)
	s.Add(ctx, img)
	fa := la.Frames(testSlot)
	for i, f := range fa[1:p.Threshold] {
		ev, _ := s.Add(ctx, f)
		if ev.Result != nil {
			t.Fatalf("reconstructed with a foreign share: %+v", ev.Result)
		}
		if i == p.Threshold-2 && !errors.Is(ev.Err, ErrNoConsistentSubset) {
			t.Fatalf("want ErrNoConsistentSubset, got %v", ev.Err)
		}
	}
	// One more genuine share: the subset search excludes the forged one.
	ev, _ := s.Add(ctx, fa[p.Threshold])
	if ev.Result == nil || ev.Result.Handle != la.Handle {
		t.Fatalf("no recovery after a genuine extra share: %+v", ev)
	}
}

// TestCorruptedFrameDropped damages a frame's watermark: its share is dropped
// (CRC) and the session still completes from the other frames.
func TestCorruptedFrameDropped(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	t0, l := newLoop(t, p, 7)
	f0 := l.Frame(0, testSlot)
	bad := image.NewGray(f0.Rect)
	copy(bad.Pix, f0.Pix)
	// Flip the ring signal of a band of 15 module rows (grey rings become
	// solid, solid rings grey), keeping every module centre.
	m := p.ModulePx
	for y := 10 * m; y < 25*m; y++ {
		for x := 0; x < bad.Rect.Dx(); x++ {
			if (x%m < m/3 || x%m >= 2*m/3) || (y%m < m/3 || y%m >= 2*m/3) {
				v := bad.Pix[y*bad.Stride+x]
				if v != 0 && v != 255 {
					if v < 128 {
						bad.Pix[y*bad.Stride+x] = 0
					} else {
						bad.Pix[y*bad.Stride+x] = 255
					}
				} else if v == 0 {
					bad.Pix[y*bad.Stride+x] = 60
				} else {
					bad.Pix[y*bad.Stride+x] = 200
				}
			}
		}
	}
	s, _ := NewSession(p, false, nil)
	ev, _ := s.Add(ctx, bad)
	if !errors.Is(ev.Err, watermark.ErrBadShare) || ev.Handle != l.Handle {
		t.Fatalf("corrupted frame: %+v", ev)
	}
	var res *Result
	for _, f := range l.Frames(testSlot)[1 : p.Threshold+1] {
		ev, _ := s.Add(ctx, f)
		if ev.Result != nil {
			res = ev.Result
		}
	}
	if res == nil || !bytes.Equal(res.Token, t0) {
		t.Fatalf("no result after dropping the corrupted frame: %+v", res)
	}
}

func TestContextCancelled(t *testing.T) {
	p := watermark.DefaultParams()
	s, _ := NewSession(p, false, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Add(ctx, image.NewGray(image.Rect(0, 0, 10, 10))); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

func FuzzAdd(f *testing.F) {
	p := watermark.DefaultParams()
	f.Add(uint16(40), uint16(40), []byte{0, 255, 128})
	f.Add(uint16(1), uint16(1), []byte{})
	f.Fuzz(func(t *testing.T, w, h uint16, pix []byte) {
		w, h = w%300+1, h%300+1
		img := image.NewGray(image.Rect(0, 0, int(w), int(h)))
		for i := range img.Pix {
			if len(pix) > 0 {
				img.Pix[i] = pix[i%len(pix)]
			}
		}
		s, _ := NewSession(p, false, nil)
		ev, err := s.Add(context.Background(), img)
		if err != nil || ev.Result != nil {
			t.Fatalf("random frame: %+v %v", ev, err)
		}
	})
}

var testKey = []byte("0123456789abcdef")

const testSlot = 1_796_558_400

// TestStampsAreLatest: a scan spanning two slots forwards, for each share,
// the stamp of the latest frame that carried it, and the stamps verify
// under the code's key.
func TestStampsAreLatest(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	_, l := newLoop(t, p, 3)
	s, _ := NewSession(p, false, nil)
	old := l.Frames(testSlot)
	// Shares 1..t-1 in slot S, then shares 1 and t in slot S+1.
	for _, f := range old[:p.Threshold-1] {
		s.Add(ctx, f)
	}
	s.Add(ctx, l.Frame(0, testSlot+1))
	ev, _ := s.Add(ctx, l.Frame(p.Threshold-1, testSlot+1))
	if ev.Result == nil {
		t.Fatalf("no result: %+v", ev)
	}
	if len(ev.Result.Stamps) != p.Threshold {
		t.Fatalf("%d stamps", len(ev.Result.Stamps))
	}
	for _, st := range ev.Result.Stamps {
		slot := int64(testSlot)
		if st.Index == 1 || int(st.Index) == p.Threshold {
			slot++
		}
		if st != watermark.NewStamp(testKey, l.Handle, st.Index, slot) {
			t.Errorf("stamp %+v, want slot %d", st, slot)
		}
	}
	now := watermark.SlotStart(testSlot + 1).Add(500 * time.Millisecond)
	if err := watermark.CheckStamps(testKey, l.Handle, p.Threshold, ev.Result.Stamps, now, watermark.DefaultWindow(), watermark.Binding{}); err != nil {
		t.Fatalf("stamps do not verify: %v", err)
	}
}

// TestRequireBoundWaitsForChallenge: a scanner that shows a challenge does
// not submit until watermark.MinBoundStamps of its shares' stamps are bound,
// and keeps a bound stamp over a later unbound one of the same share.
func TestRequireBoundWaitsForChallenge(t *testing.T) {
	ctx := context.Background()
	p := watermark.DefaultParams()
	_, l := newLoop(t, p, 4)
	s, _ := NewSession(p, false, nil)
	s.RequireBound = true
	ch := watermark.Challenge{Slot: testSlot, Nonce: [watermark.ChallengeLen]byte{1, 2, 3}}
	// All n shares unbound (shown before the phone read the challenge).
	for k := range p.Shares {
		if ev, _ := s.Add(ctx, l.Frame(k, testSlot)); ev.Result != nil {
			t.Fatal("result from unbound shares")
		}
	}
	// MinBoundStamps−1 bound, then an unbound repeat of the first: waiting.
	for k := range watermark.MinBoundStamps - 1 {
		if ev, _ := s.Add(ctx, l.FrameBound(k, ch)); ev.Result != nil {
			t.Fatalf("result after %d bound shares", k+1)
		}
	}
	if ev, _ := s.Add(ctx, l.Frame(0, testSlot+1)); ev.Result != nil {
		t.Fatal("unbound repeat completed the scan")
	}
	ev, _ := s.Add(ctx, l.FrameBound(watermark.MinBoundStamps-1, ch))
	if ev.Result == nil {
		t.Fatalf("no result with %d bound shares: %+v", watermark.MinBoundStamps, ev)
	}
	bound := 0
	for _, st := range ev.Result.Stamps {
		if st.Bound {
			bound++
			if st.Slot != byte(testSlot%256) || st.Index > watermark.MinBoundStamps {
				t.Fatalf("bound stamp %+v", st)
			}
		}
	}
	if bound != watermark.MinBoundStamps || len(ev.Result.Stamps) != p.Shares {
		t.Fatalf("%d bound of %d stamps", bound, len(ev.Result.Stamps))
	}
}
