package fingerprint

import (
	"math"
	"math/rand/v2"
)

// Plastic is one instance of the plastic distortion model of Cappelli, Maio
// and Maltoni ("Modelling plastic distortion in fingerprint images", ICAPR
// 2001). A finger pressed on a sensor and then pushed or twisted splits into
// three regions:
//
//   - close contact (an ellipse, centre CX, CY, semi-axes RX, RY): held by
//     friction, not displaced;
//   - external (farther than K pixels outside the ellipse): moves rigidly,
//     by the rotation Rotate about the ellipse centre followed by the
//     translation DX, DY;
//   - transition (in between): the displacement of the rigid motion is
//     damped by brake(s) = (1 − cos(π·s/K))/2, s the distance outside the
//     ellipse, so it grows smoothly from 0 to the full rigid displacement.
//
// A point v moves to v + (T(v) − v)·brake(s(v)), T the rigid motion. s is
// measured along the ray from the centre (|v−c|·(1 − 1/ρ), ρ the ellipse's
// normalised radius at v), a close approximation of the distance to the
// ellipse for the moderate eccentricities used here. The form follows the
// paper as summarised in qshield's reference notes; the paper's own
// parameter ranges could not be checked when this was written, so the ranges
// of RandomPlastic are qshield's choice (documented there and in
// BENCHMARKS.md).
//
// Coordinates are image pixels (y down), Rotate is counter-clockwise on
// screen, like ISO minutia angles.
type Plastic struct {
	CX, CY, RX, RY float64
	K              float64
	Rotate         float64
	DX, DY         float64
}

// brake is the damping of the transition region.
func (d Plastic) brake(x, y float64) float64 {
	ex, ey := x-d.CX, y-d.CY
	r := math.Hypot(ex, ey)
	if r == 0 || d.RX <= 0 || d.RY <= 0 {
		return 0
	}
	rho := math.Hypot(ex/d.RX, ey/d.RY)
	if rho <= 1 {
		return 0
	}
	s := r * (1 - 1/rho)
	if d.K <= 0 || s >= d.K {
		return 1
	}
	return (1 - math.Cos(math.Pi*s/d.K)) / 2
}

// Map returns where the model moves the point (x, y).
func (d Plastic) Map(x, y float64) (float64, float64) {
	b := d.brake(x, y)
	if b == 0 {
		return x, y
	}
	c, s := math.Cos(d.Rotate), math.Sin(d.Rotate)
	ex, ey := x-d.CX, y-d.CY
	// Counter-clockwise on screen with y down.
	tx := ex*c + ey*s + d.CX + d.DX
	ty := -ex*s + ey*c + d.CY + d.DY
	return x + (tx-x)*b, y + (ty-y)*b
}

// Apply returns a new template with every minutia of t moved by the model
// (t is not modified). A minutia's new direction is the direction of the
// mapped segment from it to the point 2 px along its old direction. Minutiae
// that leave the image (Width × Height; kept when the record has no size)
// are dropped, as a sensor would not see them.
func (d Plastic) Apply(t *Template) *Template {
	out := &Template{
		CaptureCertified: t.CaptureCertified, CaptureDevice: t.CaptureDevice,
		Width: t.Width, Height: t.Height, ResX: t.ResX, ResY: t.ResY,
	}
	out.Finger, out.ViewNumber, out.Impression, out.Quality = t.Finger, t.ViewNumber, t.Impression, t.Quality
	for _, m := range t.Minutiae {
		x, y := float64(m.X), float64(m.Y)
		nx, ny := d.Map(x, y)
		tx, ty := d.Map(x+2*math.Cos(m.Angle), y-2*math.Sin(m.Angle))
		ang := math.Atan2(-(ty - ny), tx-nx)
		nx, ny = math.Round(nx), math.Round(ny)
		if nx < 0 || ny < 0 || nx > maxCoord || ny > maxCoord ||
			t.Width > 0 && nx >= float64(t.Width) || t.Height > 0 && ny >= float64(t.Height) {
			continue
		}
		out.Minutiae = append(out.Minutiae, Minutia{
			X: int(nx), Y: int(ny), Angle: AngleFromByte(angleToByte(ang)), Type: m.Type, Quality: m.Quality,
		})
	}
	sortMinutiae(out.Minutiae)
	return out
}

// PlasticRange bounds the parameters RandomPlastic draws (uniformly).
type PlasticRange struct {
	// CentreJitter: the contact centre is the centroid of the minutiae moved
	// by up to this many pixels in x and in y.
	CentreJitter float64
	RXMin, RXMax float64
	RYMin, RYMax float64
	KMin, KMax   float64
	// MaxRotate (radians) and translation magnitude between ShiftMin and
	// ShiftMax pixels, in a uniformly random direction.
	MaxRotate          float64
	ShiftMin, ShiftMax float64
}

// DefaultPlasticRange is the range of the distortion test set of `qshield
// experiment fingerprint` (qshield's choice, see Plastic): a contact ellipse
// of 40–60 × 50–80 px near the centre of the print, a 60–120 px transition
// band, and a rigid motion of the outside of up to ±10° and 10–25 px, so the
// periphery of a print (150 px from the centre) moves by up to about 50 px —
// a heavy, deliberate push-and-twist, not the average impression.
func DefaultPlasticRange() PlasticRange {
	return PlasticRange{
		CentreJitter: 20,
		RXMin:        40, RXMax: 60,
		RYMin: 50, RYMax: 80,
		KMin: 60, KMax: 120,
		MaxRotate: 10 * math.Pi / 180,
		ShiftMin:  10, ShiftMax: 25,
	}
}

// RandomPlastic draws one distortion for t from r with a generator seeded by
// seed (PCG), so that a test set is reproducible from its seeds. It is test
// data, never a secret.
func RandomPlastic(t *Template, r PlasticRange, seed uint64) Plastic {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	u := func(lo, hi float64) float64 { return lo + (hi-lo)*rng.Float64() }
	var cx, cy float64
	if n := len(t.Minutiae); n > 0 {
		for _, m := range t.Minutiae {
			cx += float64(m.X)
			cy += float64(m.Y)
		}
		cx, cy = cx/float64(n), cy/float64(n)
	} else {
		cx, cy = float64(t.Width)/2, float64(t.Height)/2
	}
	d := Plastic{
		CX: cx + u(-r.CentreJitter, r.CentreJitter),
		CY: cy + u(-r.CentreJitter, r.CentreJitter),
		RX: u(r.RXMin, r.RXMax),
		RY: u(r.RYMin, r.RYMax),
		K:  u(r.KMin, r.KMax),
	}
	d.Rotate = u(-r.MaxRotate, r.MaxRotate)
	a := u(0, 2*math.Pi)
	l := u(r.ShiftMin, r.ShiftMax)
	d.DX, d.DY = l*math.Cos(a), l*math.Sin(a)
	return d
}
