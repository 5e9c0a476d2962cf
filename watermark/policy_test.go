package watermark

import (
	"errors"
	"image"
	"math/rand/v2"
	"testing"
)

// boxDown averages f×f blocks (an exact, aligned integer downscale).
func boxDown(g *image.Gray, f int) *image.Gray {
	w, h := g.Rect.Dx()/f, g.Rect.Dy()/f
	out := image.NewGray(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			s := 0
			for yy := range f {
				for xx := range f {
					s += int(g.Pix[(y*f+yy)*g.Stride+x*f+xx])
				}
			}
			out.Pix[y*out.Stride+x] = uint8((s + f*f/2) / (f * f))
		}
	}
	return out
}

// TestPolicyRefusesCoarseCopies: a frame downscaled to exactly 25 % (3
// pixels per module, phase-aligned: the finding) still carries the
// share, and the scanner's MinModulePx policy refuses it whatever the
// phase; removing the policy lets it through.
func TestPolicyRefusesCoarseCopies(t *testing.T) {
	p := DefaultParams()
	l, err := NewLoop(fixedToken(t), testKey, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	small := boxDown(l.Frame(2, testSlot), 4)
	free := p
	free.MinModulePx, free.MaxModuleErrors = 0, 0
	exFree, _ := NewExtractor(free, true)
	fr, err := exFree.Extract(small)
	if err != nil {
		t.Skipf("the 25%% copy did not yield a share without the policy (%v): nothing to refuse", err)
	}
	if fr.ModulePx < 2.9 || fr.ModulePx > 3.1 {
		t.Fatalf("module pitch %.2f, want 3", fr.ModulePx)
	}
	ex, _ := NewExtractor(p, true)
	if _, err := ex.Extract(small); !errors.Is(err, ErrBadShare) {
		t.Fatalf("policy let a 3 px/module copy through: %v", err)
	}
	// The full-size frame passes the policy.
	if _, err := ex.Extract(l.Frame(2, testSlot)); err != nil {
		t.Fatalf("full-size frame: %v", err)
	}
}

// TestPolicyRefusesNoisyRings: heavy noise on the rings leaves a share the
// Viterbi decoder still corrects, but with many misread rings; a
// MaxModuleErrors policy refuses it.
func TestPolicyRefusesNoisyRings(t *testing.T) {
	p := DefaultParams()
	l, err := NewLoop(fixedToken(t), testKey, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := l.Frame(1, testSlot)
	g := image.NewGray(f.Rect)
	copy(g.Pix, f.Pix)
	rng := rand.New(rand.NewPCG(1, 2))
	m := p.ModulePx
	for i, v := range g.Pix {
		x, y := i%g.Stride, i/g.Stride
		if x%m >= m/3 && x%m < 2*m/3 && y%m >= m/3 && y%m < 2*m/3 {
			continue // module centres keep the QR readable
		}
		n := int(v) + int(rng.NormFloat64()*70)
		g.Pix[i] = uint8(min(255, max(0, n)))
	}
	free := p
	free.MaxModuleErrors = 0
	exFree, _ := NewExtractor(free, false)
	fr, err := exFree.Extract(g)
	if err != nil {
		t.Skipf("noisy frame did not decode without the policy: %v", err)
	}
	if fr.ModuleErrors < 0.03 {
		t.Fatalf("noisy frame: only %.3f rings misread", fr.ModuleErrors)
	}
	strict := p
	strict.MaxModuleErrors = fr.ModuleErrors / 2
	ex, _ := NewExtractor(strict, false)
	if _, err := ex.Extract(g); !errors.Is(err, ErrBadShare) {
		t.Fatalf("policy let a noisy share through: %v", err)
	}
	clean, err := ex.Extract(f)
	if err != nil || clean.ModuleErrors > 0.01 {
		t.Fatalf("clean frame: %v (%.3f misread)", err, clean.ModuleErrors)
	}
}
