package fingerprint_test

import (
	"math"
	"reflect"
	"testing"

	"github.com/qshield/qshield/fingerprint"
)

func TestPlasticRegions(t *testing.T) {
	d := fingerprint.Plastic{CX: 150, CY: 200, RX: 40, RY: 60, K: 80, Rotate: 0.15, DX: 12, DY: -7}
	rigid := func(x, y float64) (float64, float64) {
		c, s := math.Cos(d.Rotate), math.Sin(d.Rotate)
		ex, ey := x-d.CX, y-d.CY
		return ex*c + ey*s + d.CX + d.DX, -ex*s + ey*c + d.CY + d.DY
	}
	// Close contact: not displaced.
	for _, p := range [][2]float64{{150, 200}, {180, 200}, {150, 255}, {120, 170}} {
		if x, y := d.Map(p[0], p[1]); x != p[0] || y != p[1] {
			t.Errorf("contact point %v moved to (%v, %v)", p, x, y)
		}
	}
	// External: exactly the rigid motion.
	for _, p := range [][2]float64{{150 + 40 + 81, 200}, {150, 200 - 60 - 81}, {0, 0}} {
		x, y := d.Map(p[0], p[1])
		rx, ry := rigid(p[0], p[1])
		if math.Hypot(x-rx, y-ry) > 1e-9 {
			t.Errorf("external point %v → (%v, %v), rigid (%v, %v)", p, x, y, rx, ry)
		}
	}
	// Transition: continuous, displacement grows monotonically outwards.
	prev := -1.0
	for s := 0.0; s <= 100; s += 0.5 {
		x0, y0 := 150+40+s, 200.0
		x, y := d.Map(x0, y0)
		disp := math.Hypot(x-x0, y-y0)
		if disp+1e-9 < prev {
			t.Fatalf("displacement shrinks outwards at s=%v: %v < %v", s, disp, prev)
		}
		if prev >= 0 && disp-prev > 1 {
			t.Fatalf("displacement jumps at s=%v: %v → %v", s, prev, disp)
		}
		prev = disp
	}
}

func TestPlasticApply(t *testing.T) {
	master := fingerprint.SyntheticMaster(7, 3)
	before := *master
	before.Minutiae = append([]fingerprint.Minutia(nil), master.Minutiae...)
	r := fingerprint.DefaultPlasticRange()
	d1 := fingerprint.RandomPlastic(master, r, 11)
	if d2 := fingerprint.RandomPlastic(master, r, 11); d1 != d2 {
		t.Fatal("same seed, different distortion")
	}
	if d3 := fingerprint.RandomPlastic(master, r, 12); d3 == d1 {
		t.Fatal("different seeds, same distortion")
	}
	out := d1.Apply(master)
	if !reflect.DeepEqual(*master, before) {
		t.Fatal("Apply modified its input")
	}
	if len(out.Minutiae) == 0 || len(out.Minutiae) > len(master.Minutiae) {
		t.Fatalf("%d minutiae from %d", len(out.Minutiae), len(master.Minutiae))
	}
	for _, m := range out.Minutiae {
		if m.X < 0 || m.Y < 0 || m.X >= master.Width || m.Y >= master.Height {
			t.Fatalf("minutia %+v outside %dx%d", m, master.Width, master.Height)
		}
	}
	if _, err := out.MarshalISO(); err != nil {
		t.Fatalf("distorted template does not encode: %v", err)
	}
	// A shift that pushes everything off the sensor leaves no minutiae.
	off := fingerprint.Plastic{CX: -1000, CY: -1000, RX: 1, RY: 1, K: 1, DX: 5000}
	if n := len(off.Apply(master).Minutiae); n != 0 {
		t.Fatalf("%d minutiae survived a 5000 px shift", n)
	}
}

// TestMatcherToleratesPlasticDistortion: a synthetic finger distorted with
// the test set's model still verifies against its undistorted self, and not
// against another finger.
func TestMatcherToleratesPlasticDistortion(t *testing.T) {
	m := fingerprint.NewMatcher()
	r := fingerprint.DefaultPlasticRange()
	for f := 0; f < 8; f++ {
		master := fingerprint.SyntheticMaster(99, f)
		probe := m.Prepare(fingerprint.RandomPlastic(master, r, uint64(f)).Apply(master))
		if ok, s := m.Verify(m.Prepare(master), probe); !ok {
			t.Errorf("finger %d: distorted genuine score %.3f below threshold %.3f", f, s, m.Threshold())
		}
		other := fingerprint.SyntheticMaster(99, (f+1)%8)
		if ok, s := m.Verify(m.Prepare(other), probe); ok {
			t.Errorf("finger %d: impostor score %.3f at or above threshold", f, s)
		}
	}
}
