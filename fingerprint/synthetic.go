package fingerprint

import (
	"math"
	"math/rand/v2"
)

// Synthetic image geometry: 500 dpi, the size the FVC2002 records declare.
const (
	synthWidth  = 300
	synthHeight = 400
	synthRes    = 197
)

// Distortion describes how Distort turns a master finger into an impression.
type Distortion struct {
	Rotate       float64 // radians, about the image centre
	DX, DY       float64 // translation in pixels
	Elastic      float64 // peak elastic displacement in pixels
	PosNoise     float64 // standard deviation of position noise, pixels
	AngleNoise   float64 // standard deviation of direction noise, radians
	Drop         float64 // probability that a minutia is missed
	Spurious     float64 // expected spurious minutiae, as a share of the count
	TypeFlip     float64 // probability that ending/bifurcation is swapped
	CropW, CropH float64 // share of the image kept (1 = all), window at random
	ScrambleSeed uint64  // seed for the random parts (noise, drops, crop)
}

// SyntheticMaster returns the master minutiae of synthetic finger `finger` in
// family `seed`: 40–60 minutiae spread over the image with a minimum spacing,
// directions following a smooth ridge-orientation field with a core, types
// mixed. The same (seed, finger) always gives the same master.
//
// Synthetic data is for tests and demos only; it uses a seeded math/rand/v2
// PCG generator on purpose (reproducibility), never for anything secret.
func SyntheticMaster(seed int64, finger int) *Template {
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(finger)*0x9e3779b97f4a7c15+1))
	n := 40 + rng.IntN(21)
	cx := synthWidth*0.3 + rng.Float64()*synthWidth*0.4
	cy := synthHeight*0.3 + rng.Float64()*synthHeight*0.4
	swirl := rng.Float64()*math.Pi - math.Pi/2
	t := &Template{Width: synthWidth, Height: synthHeight, ResX: synthRes, ResY: synthRes}
	t.Finger = finger % 11
	const minGap = 14.0
	for tries := 0; len(t.Minutiae) < n && tries < 20000; tries++ {
		x := 15 + rng.Float64()*(synthWidth-30)
		y := 15 + rng.Float64()*(synthHeight-30)
		ok := true
		for _, m := range t.Minutiae {
			if math.Hypot(float64(m.X)-x, float64(m.Y)-y) < minGap {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		// Ridge orientation around a core: half the polar angle plus a swirl
		// that fades with distance; minutia direction is the orientation or
		// its opposite.
		phi := math.Atan2(-(y - cy), x-cx)
		dist := math.Hypot(x-cx, y-cy)
		o := phi/2 + swirl*math.Exp(-dist/150) + math.Pi/2
		if rng.IntN(2) == 0 {
			o += math.Pi
		}
		typ := TypeRidgeEnding
		if rng.Float64() < 0.4 {
			typ = TypeBifurcation
		}
		t.Minutiae = append(t.Minutiae, Minutia{
			X: int(x), Y: int(y), Angle: AngleFromByte(angleToByte(o)), Type: typ,
		})
	}
	return t
}

// Synthetic returns impression `impression` of synthetic finger `finger` in
// family `seed`: the master (SyntheticMaster) under a random rotation (±30°),
// translation (±30 px), elastic distortion (up to 8 px), position and angle
// noise, about 12% missed and 8% spurious minutiae, 5% type flips and a crop
// to the image. Impression 0 is the undistorted master. Deterministic.
func Synthetic(seed int64, finger, impression int) *Template {
	master := SyntheticMaster(seed, finger)
	if impression == 0 {
		return master
	}
	rng := rand.New(rand.NewPCG(uint64(seed)^0x5bd1e995, uint64(finger)<<20|uint64(impression)))
	d := Distortion{
		Rotate:       (rng.Float64()*2 - 1) * 30 * math.Pi / 180,
		DX:           (rng.Float64()*2 - 1) * 30,
		DY:           (rng.Float64()*2 - 1) * 30,
		Elastic:      4 + rng.Float64()*4,
		PosNoise:     1.5,
		AngleNoise:   4 * math.Pi / 180,
		Drop:         0.12,
		Spurious:     0.08,
		TypeFlip:     0.05,
		CropW:        1,
		CropH:        1,
		ScrambleSeed: rng.Uint64(),
	}
	return Distort(master, d)
}

// Distort applies d to t and returns a new template (t is not modified).
// Minutiae that end outside the image (or outside the crop window) are
// dropped, as a sensor would not see them.
func Distort(t *Template, d Distortion) *Template {
	rng := rand.New(rand.NewPCG(d.ScrambleSeed, 0x2545f4914f6cdd1d))
	out := &Template{
		CaptureCertified: t.CaptureCertified, CaptureDevice: t.CaptureDevice,
		Width: t.Width, Height: t.Height, ResX: t.ResX, ResY: t.ResY,
	}
	out.Finger, out.ViewNumber, out.Impression, out.Quality = t.Finger, t.ViewNumber, t.Impression, t.Quality
	w, h := float64(t.Width), float64(t.Height)
	if w == 0 || h == 0 {
		w, h = synthWidth, synthHeight
	}
	cx, cy := w/2, h/2
	// Elastic field: a sum of three smooth Gaussian bumps with random
	// displacement vectors, scaled so its peak is about d.Elastic.
	type bump struct{ x, y, dx, dy, s float64 }
	var bumps [3]bump
	for i := range bumps {
		a := rng.Float64() * 2 * math.Pi
		bumps[i] = bump{rng.Float64() * w, rng.Float64() * h, math.Cos(a) * d.Elastic, math.Sin(a) * d.Elastic, 60 + rng.Float64()*60}
	}
	field := func(x, y float64) (float64, float64) {
		var fx, fy float64
		for _, b := range bumps {
			g := math.Exp(-((x-b.x)*(x-b.x) + (y-b.y)*(y-b.y)) / (2 * b.s * b.s))
			fx += g * b.dx
			fy += g * b.dy
		}
		return fx, fy
	}
	cosR, sinR := math.Cos(d.Rotate), math.Sin(d.Rotate)
	// Image coordinates have y down; a counter-clockwise rotation on screen by
	// Rotate is (x, y) → (x cos + y sin, −x sin + y cos) about the centre, and
	// it adds Rotate to ISO angles (counter-clockwise on screen).
	warp := func(x, y float64) (float64, float64) {
		ex, ey := field(x, y)
		x, y = x+ex-cx, y+ey-cy
		return x*cosR + y*sinR + cx + d.DX, -x*sinR + y*cosR + cy + d.DY
	}
	cropW, cropH := d.CropW, d.CropH
	if cropW <= 0 || cropW > 1 {
		cropW = 1
	}
	if cropH <= 0 || cropH > 1 {
		cropH = 1
	}
	x0 := rng.Float64() * w * (1 - cropW)
	y0 := rng.Float64() * h * (1 - cropH)
	x1, y1 := x0+w*cropW, y0+h*cropH
	keep := func(x, y float64) bool {
		return x >= x0 && x < x1 && y >= y0 && y < y1 && x >= 0 && y >= 0 && x < w && y < h
	}
	for _, m := range t.Minutiae {
		if rng.Float64() < d.Drop {
			continue
		}
		x, y := float64(m.X), float64(m.Y)
		nx, ny := warp(x, y)
		// The direction follows the local Jacobian of the warp: map a point a
		// few pixels along the minutia direction and measure the new angle.
		tx, ty := warp(x+4*math.Cos(m.Angle), y-4*math.Sin(m.Angle))
		ang := math.Atan2(-(ty-ny), tx-nx) + rng.NormFloat64()*d.AngleNoise
		nx = math.Round(nx + rng.NormFloat64()*d.PosNoise)
		ny = math.Round(ny + rng.NormFloat64()*d.PosNoise)
		if !keep(nx, ny) {
			continue
		}
		typ := m.Type
		if typ != TypeOther && rng.Float64() < d.TypeFlip {
			typ = 3 - typ
		}
		out.Minutiae = append(out.Minutiae, Minutia{
			X: int(nx), Y: int(ny),
			Angle: AngleFromByte(angleToByte(ang)), Type: typ, Quality: m.Quality,
		})
	}
	nSpur := int(math.Round(d.Spurious * float64(len(t.Minutiae)) * (0.5 + rng.Float64())))
	for i := 0; i < nSpur; i++ {
		x := x0 + rng.Float64()*(x1-x0)
		y := y0 + rng.Float64()*(y1-y0)
		if x >= w || y >= h {
			continue
		}
		out.Minutiae = append(out.Minutiae, Minutia{
			X: int(x), Y: int(y), Angle: AngleFromByte(uint8(rng.IntN(256))),
			Type: MinutiaType(1 + rng.IntN(2)),
		})
	}
	if len(out.Minutiae) > 255 {
		out.Minutiae = out.Minutiae[:255]
	}
	// Keep minutiae ordered by position, as extractors do, so that list order
	// carries no information about the correspondence.
	sortMinutiae(out.Minutiae)
	return out
}

func sortMinutiae(ms []Minutia) {
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && (ms[j].Y < ms[j-1].Y || ms[j].Y == ms[j-1].Y && ms[j].X < ms[j-1].X); j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
}
