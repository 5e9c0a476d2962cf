package watermark

import (
	"bytes"
	"errors"
	"image"
	"image/png"
	"testing"
	"time"

	"github.com/qshield/qshield/shamir"
)

func fixedToken(t *testing.T) []byte {
	t.Helper()
	t0 := make([]byte, 16)
	for i := range t0 {
		t0[i] = byte(i*37 + 11)
	}
	return t0
}

func TestEmbedExtractNoChannel(t *testing.T) {
	p := DefaultParams()
	t0 := fixedToken(t)
	l, err := NewLoop(t0, testKey, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Frames(testSlot)) != p.Shares {
		t.Fatalf("%d frames", len(l.Frames(testSlot)))
	}
	ex, err := NewExtractor(p, false)
	if err != nil {
		t.Fatal(err)
	}
	var got []shamir.Share
	for i, f := range l.Frames(testSlot) {
		fr, err := ex.Extract(f)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if fr.Handle != l.Handle || int(fr.Share.Index) != i+1 || fr.Agreement < 0.99 {
			t.Fatalf("frame %d: %+v", i, fr)
		}
		got = append(got, shamir.Share{Index: fr.Share.Index, Value: fr.Share.Value})
	}
	sec, err := shamir.Combine(got[:p.Threshold])
	if err != nil || !bytes.Equal(sec, t0) {
		t.Fatalf("combine: %x %v", sec, err)
	}
}

func TestPlainQRHasNoShare(t *testing.T) {
	// The same code with every ring solid (no watermark) must not yield a share.
	p := DefaultParams()
	l, _ := NewLoop(fixedToken(t), testKey, p, nil)
	f0 := l.Frame(0, testSlot)
	f := image.NewGray(f0.Rect)
	copy(f.Pix, f0.Pix)
	m := p.ModulePx
	for y := 0; y < f.Rect.Dy(); y++ {
		for x := 0; x < f.Rect.Dx(); x++ {
			// snap every pixel to its module centre's colour
			cx, cy := x/m*m+m/2, y/m*m+m/2
			f.Pix[y*f.Stride+x] = f0.Pix[cy*f.Stride+cx]
		}
	}
	ex, _ := NewExtractor(p, false)
	fr, err := ex.Extract(f)
	if !errors.Is(err, ErrBadShare) || fr.Handle != l.Handle {
		t.Fatalf("plain code: %+v %v", fr, err)
	}
}

func TestExportPNGRoundTrip(t *testing.T) {
	p := DefaultParams()
	l, _ := NewLoop(fixedToken(t), testKey, p, nil)
	paths, err := l.WritePNGs(t.TempDir(), testSlot)
	if err != nil || len(paths) != p.Shares {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := l.WriteGIF(&buf, SlotStart(testSlot), time.Second); err != nil {
		t.Fatal(err)
	}
	var pb bytes.Buffer
	png.Encode(&pb, l.Frames(testSlot)[3])
	img, _ := png.Decode(&pb)
	ex, _ := NewExtractor(p, false)
	fr, err := ex.Extract(img)
	if err != nil || fr.Share.Index != 4 {
		t.Fatal(err)
	}
}

// testKey and testSlot stamp the frames of tests that do not check time.
var testKey = []byte("0123456789abcdef")

const testSlot = 1_796_558_400 // 2026-12-06 12:00:00 UTC
