package watermark

import (
	"bytes"
	"encoding/hex"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"strings"
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

// TestHardCrispCodes reads codes whose crisp frames ZXing's detector failed
// on at full and half size (testdata/hard-codes.txt): the code without a
// watermark, and a loop's frames, bound to a scanner challenge as a phone
// writes them (qshield watermark code --challenge), from which a scanner
// must recover the token.
func TestHardCrispCodes(t *testing.T) {
	raw, err := os.ReadFile("testdata/hard-codes.txt")
	if err != nil {
		t.Fatal(err)
	}
	p := DefaultParams()
	ex, err := NewExtractor(p, false)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(string(raw)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		n++
		t0, err := hex.DecodeString(line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		// The shares are drawn from a seeded source: with fresh random
		// shares, about one code in 150 loses more than 4 of its 10 frames
		// to a share checksum mismatch (the watermark channel, not the QR
		// decode this test is about; see the closing note of 2026-12-07).
		var seed [32]byte
		copy(seed[:], t0)
		l, err := NewLoop(t0, testKey, p, rand.NewChaCha8(seed))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ex.DecodeQR(PlainFrame(l)); err != nil || got != l.Handle {
			t.Errorf("%s: code without watermark: %q, %v", line, got, err)
		}
		c := ChallengeAt(testKey, testSlot)
		var shares []shamir.Share
		for k := range p.Shares {
			fr, err := ex.Extract(l.FrameBound(k, c))
			if err != nil {
				t.Logf("%s frame %d: %v", line, k, err)
				continue
			}
			shares = append(shares, shamir.Share{Index: fr.Share.Index, Value: fr.Share.Value})
		}
		if len(shares) < p.Threshold {
			t.Errorf("%s: %d of %d frames read, %d needed", line, len(shares), p.Shares, p.Threshold)
			continue
		}
		if sec, err := shamir.Combine(shares[:p.Threshold]); err != nil || !bytes.Equal(sec, t0) {
			t.Errorf("%s: combined %x, %v", line, sec, err)
		}
	}
	if n < 10 {
		t.Fatalf("only %d codes in testdata/hard-codes.txt", n)
	}
}

// TestFinderGate: the further sizes (see decode) are tried for a hard crisp
// code, whose half-size copy shows finder patterns of several pixels a
// module, and not for a frame of noise, which passes for finder patterns of
// about a pixel.
func TestFinderGate(t *testing.T) {
	p := DefaultParams()
	ex, err := NewExtractor(p, false)
	if err != nil {
		t.Fatal(err)
	}
	gate := func(img image.Image) bool {
		pix, w, h := ex.luminance(img)
		half, err := ex.scaledBitmap(pix, w, h, 0.5)
		if err != nil {
			t.Fatal(err)
		}
		return ex.finderPatterns(half, minFinderModulePx/2)
	}
	rng := rand.New(rand.NewPCG(2, 2))
	noise := image.NewGray(image.Rect(0, 0, 1280, 720))
	for i := range noise.Pix {
		noise.Pix[i] = byte(rng.IntN(256))
	}
	if gate(noise) {
		t.Error("a frame of noise opens the gate to the further sizes")
	}
	raw, err := os.ReadFile("testdata/hard-codes.txt")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(raw)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		t0, err := hex.DecodeString(line)
		if err != nil {
			t.Fatal(err)
		}
		l, err := NewLoop(t0, testKey, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !gate(l.FrameBound(0, ChallengeAt(testKey, testSlot))) {
			t.Errorf("%s: a hard crisp code does not open the gate", line)
		}
	}
}

// renderReference is render written pixel by pixel from its description
// (the module's centre third in the QR colour, the rest in the ring's).
func renderReference(qr []bool, lay *layout, coded []byte, p Params) *image.Gray {
	dim, m, q := lay.dim, p.ModulePx, p.QuietZone
	img := image.NewGray(image.Rect(0, 0, (dim+2*q)*m, (dim+2*q)*m))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	darkOne := uint8(math.Round(255 * math.Pow(p.Depth, 1/2.2)))
	lightOne := uint8(math.Round(255 * math.Pow(1-p.Depth, 1/2.2)))
	ring := map[int]uint8{}
	for j, pos := range lay.data {
		if coded[j%len(coded)] == 1 {
			ring[int(pos)] = map[bool]uint8{true: darkOne, false: lightOne}[qr[pos]]
		}
	}
	for i, dark := range qr {
		x, y := i%dim, i/dim
		colour := map[bool]uint8{true: 0, false: 255}[dark]
		r, ok := ring[i]
		if !ok {
			r = colour
		}
		for py := range m {
			for px := range m {
				v := r
				if px >= m/3 && px < 2*m/3 && py >= m/3 && py < 2*m/3 {
					v = colour
				}
				img.SetGray((x+q)*m+px, (y+q)*m+py, color.Gray{Y: v})
			}
		}
	}
	return img
}

// TestRenderMatchesReference compares render with renderReference for
// random codes, shares and module sizes.
func TestRenderMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, px := range []int{3, 6, 9, 12} {
		p := DefaultParams()
		p.ModulePx = px
		lay, err := layoutFor(p)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			qr := make([]bool, lay.dim*lay.dim)
			for i := range qr {
				qr[i] = rng.IntN(2) == 1
			}
			coded := make([]byte, 1+rng.IntN(len(lay.data)))
			for i := range coded {
				coded[i] = byte(rng.IntN(2))
			}
			got, want := render(qr, lay, coded, p), renderReference(qr, lay, coded, p)
			if !got.Bounds().Eq(want.Bounds()) || !bytes.Equal(got.Pix, want.Pix) {
				t.Fatalf("module %d px: render differs from the reference", px)
			}
		}
	}
}

func BenchmarkRender(b *testing.B) {
	p := DefaultParams()
	l, err := NewLoop(bytes.Repeat([]byte{7}, p.TokenLen), testKey, p, nil)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		l.Frame(0, testSlot)
	}
}
