package watermark

import (
	"image"
	"math/rand/v2"
	"testing"

	"github.com/qshield/qshield/watermark/camsim"
)

func benchFrame(b *testing.B) (Params, image.Image) {
	p := DefaultParams()
	t0, _ := NewToken(p.TokenLen, nil)
	l, err := NewLoop(t0, testKey, p, nil)
	if err != nil {
		b.Fatal(err)
	}
	prof := camsim.CloseScan()
	prof.Display.CodeWidthMM = 45 * float64(p.FrameModules()) / float64(p.Dimension())
	rng := rand.New(rand.NewPCG(1, 1))
	ex, _ := NewExtractor(p, false)
	for range 50 {
		su, _ := prof.Draw(rng, 0, 150)
		img, err := su.Camera.Capture(&camsim.Scene{Display: prof.Display, Frames: l.Frames(testSlot)[:1]}, su.Pose, 0, rng)
		if err != nil {
			continue
		}
		if _, err := ex.Extract(img); err == nil {
			return p, img
		}
	}
	b.Fatal("no extractable frame")
	return p, nil
}

// BenchmarkExtract1280x720 is the full per-frame scan of a 1280×720 camera
// frame; compare with BenchmarkDecodeQR1280x720 (the QR decode alone).
func BenchmarkExtract1280x720(b *testing.B) {
	p, img := benchFrame(b)
	ex, _ := NewExtractor(p, false)
	for b.Loop() {
		if _, err := ex.Extract(img); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeQR1280x720(b *testing.B) {
	p, img := benchFrame(b)
	ex, _ := NewExtractor(p, false)
	for b.Loop() {
		if _, err := ex.DecodeQR(img); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExtractNoCode1280x720 is a camera frame with no code in view (a
// blank screen, camsim's close-scan camera): every decode attempt runs and
// fails, the cost a scanner pays while it waits for a payer.
func BenchmarkExtractNoCode1280x720(b *testing.B) {
	p := DefaultParams()
	prof := camsim.CloseScan()
	prof.Display.CodeWidthMM = 45 * float64(p.FrameModules()) / float64(p.Dimension())
	rng := rand.New(rand.NewPCG(1, 1))
	blank := image.NewGray(image.Rect(0, 0, 444, 444))
	for i := range blank.Pix {
		blank.Pix[i] = 255
	}
	su, _ := prof.Draw(rng, 0, 150)
	img, err := su.Camera.Capture(&camsim.Scene{Display: prof.Display, Frames: []*image.Gray{blank}}, su.Pose, 0, rng)
	if err != nil {
		b.Fatal(err)
	}
	ex, _ := NewExtractor(p, false)
	for b.Loop() {
		if _, err := ex.Extract(img); !IsNoCode(err) {
			b.Fatalf("extract: %v", err)
		}
	}
}

// BenchmarkExtraSizes1280x720 is the four further sizes decode tries (see
// decode) on a 1280×720 camera frame: what a frame whose finder patterns
// were found but whose code was not read at full and half size (a blurred
// or distant code while the payer aims) pays on top.
func BenchmarkExtraSizes1280x720(b *testing.B) {
	p, img := benchFrame(b)
	ex, _ := NewExtractor(p, false)
	pix, w, h := ex.luminance(img)
	pix = append([]byte(nil), pix...)
	for b.Loop() {
		for _, s := range []float64{0.7, 0.3, 0.6, 0.25} {
			_, _ = ex.decodeScaled(pix, w, h, s)
		}
	}
}

// BenchmarkExtractNoise1280x720 is a frame of random noise (a camera
// pointed at a textured surface): noise can pass for finder patterns, and a
// frame whose finder check passes pays for every further size.
func BenchmarkExtractNoise1280x720(b *testing.B) {
	rng := rand.New(rand.NewPCG(2, 2))
	img := image.NewGray(image.Rect(0, 0, 1280, 720))
	for i := range img.Pix {
		img.Pix[i] = byte(rng.IntN(256))
	}
	ex, _ := NewExtractor(DefaultParams(), false)
	for b.Loop() {
		if _, err := ex.Extract(img); !IsNoCode(err) {
			b.Fatalf("extract: %v", err)
		}
	}
}
