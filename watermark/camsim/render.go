package camsim

import (
	"fmt"
	"image"
	"math"
	"math/rand/v2"
	"time"
)

type render struct {
	cam      *Camera
	disp     Display
	w, h     int // output size
	y0       int // first output row's sensor row (rolling shutter)
	fx, fy   []float32
	class    []uint8 // 0 bezel, 1 screen, 2 code
	scale    float64 // pre-filter (virtual) px per output px at the code centre
	modScale float64 // frame px per output px at the code centre
	virt     float64 // virtual px per frame px (1 without a panel structure)
	vw, vh   int     // virtual image size
	panelW   int     // panel pixels across the frame (0: no panel structure)
	panelH   int
	ds       int // pre-filter downsampling factor
	pad      int
	sigma    float64 // residual blur sigma, pre-filtered pixels
	mdx, mdy float64 // motion blur vector in frame pixels
	taps     int
	lumWhite float64 // luminance of the screen's white incl. ambient
	lumLUT   [256]float32
	cache    map[int]*plane
	noise    []float32
	noisy    [2][]uint8 // output bytes of the two constant regions for each noise sample
	fw, fh   int
	// block-aligned bounding box of the code in the output (JPEG region)
	bx0, by0, bx1, by1 int
}

type plane struct {
	w, h int
	pix  []float32
}

type mat3 [9]float64

func (m mat3) apply(x, y float64) (float64, float64, float64) {
	return m[0]*x + m[1]*y + m[2], m[3]*x + m[4]*y + m[5], m[6]*x + m[7]*y + m[8]
}

func (m mat3) inverse() (mat3, bool) {
	a, b, c, d, e, f, g, h, i := m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8]
	det := a*(e*i-f*h) - b*(d*i-f*g) + c*(d*h-e*g)
	if math.Abs(det) < 1e-12 {
		return mat3{}, false
	}
	return mat3{
		(e*i - f*h) / det, (c*h - b*i) / det, (b*f - c*e) / det,
		(f*g - d*i) / det, (a*i - c*g) / det, (c*d - a*f) / det,
		(d*h - e*g) / det, (b*g - a*h) / det, (a*e - b*d) / det,
	}, true
}

func (c *Camera) newRender(s *Scene, pose Pose) (*render, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := s.Display.validate(); err != nil {
		return nil, err
	}
	if s.Source == nil && (len(s.Frames) == 0 || s.Frames[0] == nil) {
		return nil, fmt.Errorf("%w: no frames", ErrParams)
	}
	f0 := s.frame(0)
	if f0 == nil {
		return nil, fmt.Errorf("%w: no frames", ErrParams)
	}
	fb := f0.Rect
	for _, f := range s.Frames {
		if f == nil || f.Rect != fb {
			return nil, fmt.Errorf("%w: frames differ in size", ErrParams)
		}
	}
	if !(pose.DistanceMM >= 20 && pose.DistanceMM <= 20000) || math.Abs(pose.YawDeg) > 80 || math.Abs(pose.PitchDeg) > 80 {
		return nil, fmt.Errorf("%w: pose %+v", ErrParams, pose)
	}
	d := s.Display
	fw, fh := fb.Dx(), fb.Dy()
	mmPerPx := d.CodeWidthMM / float64(fw)
	codeH := mmPerPx * float64(fh)

	// Homography: screen plane (mm, origin at the screen centre, y down) to
	// sensor pixels.
	f := float64(c.SensorW) / 2 / math.Tan(c.HFOVDeg*math.Pi/360)
	yaw, pitch, roll := pose.YawDeg*math.Pi/180, pose.PitchDeg*math.Pi/180, pose.RollDeg*math.Pi/180
	ry := mat3{math.Cos(yaw), 0, math.Sin(yaw), 0, 1, 0, -math.Sin(yaw), 0, math.Cos(yaw)}
	rx := mat3{1, 0, 0, 0, math.Cos(pitch), -math.Sin(pitch), 0, math.Sin(pitch), math.Cos(pitch)}
	rz := mat3{math.Cos(roll), -math.Sin(roll), 0, math.Sin(roll), math.Cos(roll), 0, 0, 0, 1}
	rot := mul3(rz, mul3(rx, ry))
	cx, cy := float64(c.SensorW)/2, float64(c.SensorH)/2
	// columns r1, r2, t
	ext := mat3{rot[0], rot[1], pose.ShiftXMM, rot[3], rot[4], pose.ShiftYMM, rot[6], rot[7], pose.DistanceMM}
	k := mat3{f, 0, cx, 0, f, cy, 0, 0, 1}
	hm := mul3(k, ext)
	proj := func(x, y float64) (float64, float64) {
		u, v, w := hm.apply(x, y)
		return u / w, v / w
	}
	// Output window.
	x0, y0, w, h := 0, 0, c.SensorW, c.SensorH
	if c.Crop {
		minX, minY, maxX, maxY := math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
		half := c.CropMargin / 2
		if half <= 0 {
			half = 0.625
		}
		for _, p := range [][2]float64{{-1, -1}, {1, -1}, {1, 1}, {-1, 1}} {
			u, v := proj(p[0]*d.CodeWidthMM*half, p[1]*codeH*half)
			minX, maxX = math.Min(minX, u), math.Max(maxX, u)
			minY, maxY = math.Min(minY, v), math.Max(maxY, v)
		}
		x0 = max(0, int(math.Floor(minX)))
		y0 = max(0, int(math.Floor(minY)))
		w = min(c.SensorW, int(math.Ceil(maxX))) - x0
		h = min(c.SensorH, int(math.Ceil(maxY))) - y0
		if w < 16 || h < 16 {
			return nil, fmt.Errorf("%w: code covers only %dx%d pixels", ErrParams, max(w, 0), max(h, 0))
		}
	}
	inv, ok := hm.inverse()
	if !ok {
		return nil, fmt.Errorf("%w: degenerate pose", ErrParams)
	}
	r := &render{cam: c, disp: d, w: w, h: h, y0: y0, fw: fw, fh: fh, cache: map[int]*plane{}}
	// With a panel structure, the pre-filter works on a virtual image of
	// 3×3 samples per panel pixel; fx, fy below are in its coordinates.
	r.virt = 1
	if d.PixelPitchMM > 0 {
		r.panelW = max(1, int(math.Round(d.CodeWidthMM/d.PixelPitchMM)))
		r.panelH = max(1, int(math.Round(codeH/d.PixelPitchMM)))
		r.virt = 3 * float64(r.panelW) / float64(fw)
		r.vw, r.vh = 3*r.panelW, 3*r.panelH
	} else {
		r.vw, r.vh = fw, fh
	}
	r.fx = make([]float32, w*h)
	r.fy = make([]float32, w*h)
	r.class = make([]uint8, w*h)
	for oy := range h {
		for ox := range w {
			u, v := float64(ox+x0)+0.5, float64(oy+y0)+0.5
			X, Y, W := inv.apply(u, v)
			i := oy*w + ox
			if W <= 0 {
				continue
			}
			X, Y = X/W, Y/W
			switch {
			case math.Abs(X) <= d.CodeWidthMM/2 && math.Abs(Y) <= codeH/2:
				r.class[i] = 2
				r.fx[i] = float32((X + d.CodeWidthMM/2) / mmPerPx * r.virt)
				r.fy[i] = float32((Y + codeH/2) / mmPerPx * r.virt)
			case math.Abs(X) <= d.ScreenWMM/2 && math.Abs(Y) <= d.ScreenHMM/2:
				r.class[i] = 1
			}
		}
	}
	r.bx0, r.by0, r.bx1, r.by1 = w, h, 0, 0
	for oy := range h {
		for ox := range w {
			if r.class[oy*w+ox] == 2 {
				r.bx0, r.bx1 = min(r.bx0, ox), max(r.bx1, ox+1)
				r.by0, r.by1 = min(r.by0, oy), max(r.by1, oy+1)
			}
		}
	}
	if r.bx1 <= r.bx0 {
		return nil, fmt.Errorf("%w: the code is out of view", ErrParams)
	}
	// JPEG works on independent 8×8 blocks (grey, no subsampling), so
	// compressing a block-aligned region around the code gives the same
	// pixels there as compressing the whole frame; outside it only noise.
	r.bx0, r.by0 = max(0, (r.bx0-16)/8*8), max(0, (r.by0-16)/8*8)
	r.bx1, r.by1 = min(w, (r.bx1+16+7)/8*8), min(h, (r.by1+16+7)/8*8)
	// Local scale at the code centre: output pixels per mm.
	u0, v0 := proj(0, 0)
	u1, v1 := proj(1, 0)
	u2, v2 := proj(0, 1)
	pxPerMM := math.Sqrt(math.Hypot(u1-u0, v1-v0) * math.Hypot(u2-u0, v2-v0))
	r.scale = (1 / mmPerPx) / pxPerMM // frame px per output px
	r.modScale = r.scale
	r.scale *= r.virt // pre-filter (virtual) px per output px
	defocus := 0.0
	if c.FocusMM > 0 {
		defocus = c.DefocusK * math.Abs(1/pose.DistanceMM-1/c.FocusMM)
	} else if c.MinFocusMM > 0 && pose.DistanceMM < c.MinFocusMM {
		defocus = c.DefocusK * math.Abs(1/pose.DistanceMM-1/c.MinFocusMM)
	}
	// Total blur in output pixels (optics, defocus, pixel aperture), then in
	// frame pixels.
	sigOut := math.Sqrt(c.BlurPx*c.BlurPx + defocus*defocus + 1.0/12)
	sigFrame := sigOut * r.scale
	r.ds = max(1, int(math.Floor(r.scale/1.5)))
	resid := sigFrame*sigFrame - float64(r.ds*r.ds-1)/12
	r.sigma = math.Sqrt(math.Max(resid, 0)) / float64(r.ds)
	r.pad = int(math.Ceil(3*r.sigma)) + 2
	// Motion blur: a vector of MotionPx output pixels along MotionDeg,
	// expressed in frame pixels with the local inverse Jacobian.
	if c.MotionPx > 0 {
		a := pose.MotionDeg * math.Pi / 180
		du, dv := c.MotionPx*math.Cos(a), c.MotionPx*math.Sin(a)
		// Jacobian of proj at centre (per mm) → invert 2x2.
		j11, j12, j21, j22 := u1-u0, u2-u0, v1-v0, v2-v0
		det := j11*j22 - j12*j21
		mx := (j22*du - j12*dv) / det
		my := (-j21*du + j11*dv) / det
		r.mdx, r.mdy = mx/mmPerPx*r.virt, my/mmPerPx*r.virt
		r.taps = min(12, int(math.Ceil(c.MotionPx))+1)
	}
	r.lumWhite = d.White + d.Ambient
	for v := range 256 {
		r.lumLUT[v] = float32(d.Black + (d.White-d.Black)*math.Pow(float64(v)/255, d.Gamma) + d.Ambient)
	}
	return r, nil
}

func mul3(a, b mat3) mat3 {
	var o mat3
	for i := range 3 {
		for j := range 3 {
			o[i*3+j] = a[i*3]*b[j] + a[i*3+1]*b[3+j] + a[i*3+2]*b[6+j]
		}
	}
	return o
}

// prefilter returns frame k as linear luminance, area-downsampled by ds and
// blurred with the residual Gaussian, padded with the page's white.
func (r *render) prefilter(s *Scene, k int) (*plane, error) {
	if p, ok := r.cache[k]; ok {
		return p, nil
	}
	src := s.frame(k)
	if src == nil || src.Rect.Dx() != r.fw || src.Rect.Dy() != r.fh {
		return nil, fmt.Errorf("%w: frame %d missing or of another size", ErrParams, k)
	}
	ds := r.ds
	w, h := r.vw/ds, r.vh/ds
	pw, ph := w+2*r.pad, h+2*r.pad
	white := r.lumLUT[255]
	p := &plane{w: pw, h: ph, pix: make([]float32, pw*ph)}
	for i := range p.pix {
		p.pix[i] = white
	}
	inv := 1 / float32(ds*ds)
	if r.panelW > 0 {
		r.panelPrefilter(src, p, w, h)
	} else {
		for y := range h {
			for x := range w {
				var acc float32
				for yy := y * ds; yy < (y+1)*ds; yy++ {
					row := src.Pix[yy*src.Stride+x*ds : yy*src.Stride+(x+1)*ds]
					for _, v := range row {
						acc += r.lumLUT[v]
					}
				}
				p.pix[(y+r.pad)*pw+x+r.pad] = acc * inv
			}
		}
	}
	if r.sigma > 0.05 {
		gaussBlur(p, r.sigma)
	}
	if len(r.cache) > 64 {
		clear(r.cache)
	}
	r.cache[k] = p
	return p, nil
}

// panelPrefilter resamples src onto the panel's pixels, applies the subpixel
// mask on a 3×3 virtual grid per panel pixel and area-averages ds×ds virtual
// samples into p (w×h inside its padding).
func (r *render) panelPrefilter(src *image.Gray, p *plane, w, h int) {
	d := r.disp
	mask := d.Subpixels
	if mask == ([9]float64{}) {
		mask = [9]float64{1, 1, 1, 1, 1, 1, 1, 1, 1}
	}
	var m32 [9]float32
	for i, v := range mask {
		m32[i] = float32(v)
	}
	// Panel pixel luminances, one panel row at a time.
	lum := make([]float32, r.panelW)
	sx := float64(r.fw) / float64(r.panelW)
	sy := float64(r.fh) / float64(r.panelH)
	panelRow := func(py int) {
		fy := (float64(py) + 0.5) * sy
		for px := range r.panelW {
			fx := (float64(px) + 0.5) * sx
			if !d.Smooth {
				x, y := min(int(fx), r.fw-1), min(int(fy), r.fh-1)
				lum[px] = r.lumLUT[src.Pix[y*src.Stride+x]]
				continue
			}
			x, y := fx-0.5, fy-0.5
			x = math.Max(0, math.Min(float64(r.fw-1), x))
			y = math.Max(0, math.Min(float64(r.fh-1), y))
			x0, y0 := int(x), int(y)
			x1, y1 := min(x0+1, r.fw-1), min(y0+1, r.fh-1)
			ax, ay := float32(x-float64(x0)), float32(y-float64(y0))
			a := r.lumLUT[src.Pix[y0*src.Stride+x0]]*(1-ax) + r.lumLUT[src.Pix[y0*src.Stride+x1]]*ax
			b := r.lumLUT[src.Pix[y1*src.Stride+x0]]*(1-ax) + r.lumLUT[src.Pix[y1*src.Stride+x1]]*ax
			lum[px] = a*(1-ay) + b*ay
		}
	}
	// The mask is separable (column weights × row weights) and constant
	// over each panel pixel's 3×3 virtual samples, so a ds×ds box is a
	// weighted sum over the panel pixels it touches: per box column the
	// panel columns and their summed column weights, likewise for rows.
	ds := r.ds
	inv := 1 / float32(ds*ds)
	var colW, rowW [3]float32
	for c := range 3 {
		for k := range 3 {
			colW[c] += m32[3*k+c] / 3
			rowW[k] += m32[3*k+c] / 3
		}
	}
	// Normalise so that colW[c]·rowW[k] reproduces the mask when it is
	// separable (RGBStripe is); the mean stays 1.
	var cs, rs float32
	for i := range 3 {
		cs += colW[i]
		rs += rowW[i]
	}
	for i := range 3 {
		colW[i] *= 3 / cs
		rowW[i] *= 3 / rs
	}
	type tap struct {
		idx int
		w   float32
	}
	taps := func(n int, wt [3]float32) [][]tap {
		out := make([][]tap, n)
		for x := range n {
			var t []tap
			for v := x * ds; v < (x+1)*ds; v++ {
				if len(t) > 0 && t[len(t)-1].idx == v/3 {
					t[len(t)-1].w += wt[v%3]
				} else {
					t = append(t, tap{v / 3, wt[v%3]})
				}
			}
			out[x] = t
		}
		return out
	}
	cols := taps(w, colW)
	rows := taps(h, rowW)
	acc := make([]float32, w)
	rowSum := make([]float32, w)
	lastPY := -1
	for y := range h {
		clear(acc)
		for _, rt := range rows[y] {
			if rt.idx != lastPY {
				panelRow(min(rt.idx, r.panelH-1))
				lastPY = rt.idx
			}
			for x, ct := range cols {
				var a float32
				for _, c := range ct {
					a += lum[min(c.idx, r.panelW-1)] * c.w
				}
				rowSum[x] = a
			}
			for x := range w {
				acc[x] += rt.w * rowSum[x]
			}
		}
		for x := range w {
			p.pix[(y+r.pad)*p.w+x+r.pad] = acc[x] * inv
		}
	}
}

func gaussBlur(p *plane, sigma float64) {
	rad := int(math.Ceil(3 * sigma))
	k := make([]float32, 2*rad+1)
	var sum float32
	for i := range k {
		x := float64(i - rad)
		k[i] = float32(math.Exp(-x * x / (2 * sigma * sigma)))
		sum += k[i]
	}
	for i := range k {
		k[i] /= sum
	}
	tmp := make([]float32, len(p.pix))
	w, h := p.w, p.h
	for y := range h {
		row := p.pix[y*w : (y+1)*w]
		out := tmp[y*w : (y+1)*w]
		for x := range w {
			var a float32
			if x >= rad && x+rad < w {
				win := row[x-rad : x+rad+1]
				for i, kv := range k {
					a += kv * win[i]
				}
			} else {
				for i, kv := range k {
					a += kv * row[min(max(x+i-rad, 0), w-1)]
				}
			}
			out[x] = a
		}
	}
	// Vertical pass row by row (cache friendly): out row y = Σ k[i]·tmp row y+i-rad.
	for y := range h {
		out := p.pix[y*w : (y+1)*w]
		clear(out)
		for i, kv := range k {
			yy := min(max(y+i-rad, 0), h-1)
			src := tmp[yy*w : (yy+1)*w]
			for x, v := range src {
				out[x] += kv * v
			}
		}
	}
}

func (p *plane) at(x, y float32) float32 {
	x -= 0.5
	y -= 0.5
	if x < 0 {
		x = 0
	}
	if y < 0 {
		y = 0
	}
	if x > float32(p.w-1) {
		x = float32(p.w - 1)
	}
	if y > float32(p.h-1) {
		y = float32(p.h - 1)
	}
	x0, y0 := int(x), int(y)
	x1, y1 := min(x0+1, p.w-1), min(y0+1, p.h-1)
	fx, fy := x-float32(x0), y-float32(y0)
	a := p.pix[y0*p.w+x0]*(1-fx) + p.pix[y0*p.w+x1]*fx
	b := p.pix[y1*p.w+x0]*(1-fx) + p.pix[y1*p.w+x1]*fx
	return a*(1-fy) + b*fy
}

// sample returns the linear luminance of plane p at output pixel i.
func (r *render) sample(p *plane, i int) float32 {
	inv := 1 / float32(r.ds)
	off := float32(r.pad)
	fx, fy := r.fx[i], r.fy[i]
	if r.taps < 2 {
		return p.at(fx*inv+off, fy*inv+off)
	}
	var acc float32
	for t := range r.taps {
		a := float32(t)/float32(r.taps-1) - 0.5
		acc += p.at((fx+a*float32(r.mdx))*inv+off, (fy+a*float32(r.mdy))*inv+off)
	}
	return acc / float32(r.taps)
}

func (r *render) capture(s *Scene, at time.Duration, rng *rand.Rand) (*image.Gray, error) {
	c := r.cam
	if r.noise == nil {
		r.noise = make([]float32, 1<<16)
		nr := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
		for i := range r.noise {
			r.noise[i] = float32(nr.NormFloat64())
		}
	}
	out := image.NewGray(image.Rect(0, 0, r.w, r.h))
	fullWell := float32(c.FullWell)
	read2 := float32(c.ReadNoise * c.ReadNoise)
	scale := 0.9 / r.lumWhite
	period := time.Duration(0)
	if s.FrameRate > 0 && (s.Source != nil || len(s.Frames) > 1) {
		period = time.Duration(float64(time.Second) / s.FrameRate)
	}
	var tone [4096]uint8 // linear [0, 1] in 1/4095 steps → 8-bit sRGB
	for i := range tone {
		tone[i] = uint8(math.Min(255, math.Round(255*srgbEncode(float64(i)/4095))))
	}
	noff := 0
	// Electrons per unit luminance; constant regions get precomputed noise.
	toE := float32(scale) / 0.9 * fullWell
	eBezel := float32(s.Display.Bezel) * toE
	eScreen := r.lumLUT[255] * toE
	sdBezel := float32(math.Sqrt(float64(eBezel + read2)))
	sdScreen := float32(math.Sqrt(float64(eScreen + read2)))
	if r.noisy[0] == nil {
		for k, ec := range [2][2]float32{{eBezel, sdBezel}, {eScreen, sdScreen}} {
			t := make([]uint8, len(r.noise))
			for i, n := range r.noise {
				lin := 0.9 * (ec[0] + ec[1]*n) / fullWell
				t[i] = tone[min(max(int(lin*4095), 0), 4095)]
			}
			r.noisy[k] = t
		}
	}
	noisyBezel, noisyScreen := r.noisy[0], r.noisy[1]
	for oy := range r.h {
		noff = rng.IntN(len(r.noise))
		// Rolling shutter: this row's exposure window.
		t0 := at + time.Duration(float64(c.Readout)*float64(oy+r.y0)/float64(c.SensorH))
		ka := s.FrameAt(t0)
		kb, wb := ka, float32(0)
		if period > 0 {
			kEnd := s.FrameAt(t0 + c.Exposure)
			if kEnd != ka {
				// time of the change inside the window
				lt := (t0 + s.Phase).Seconds()
				next := (math.Floor(lt*s.FrameRate) + 1) / s.FrameRate
				tc := time.Duration((next - lt) * float64(time.Second))
				kb = kEnd
				wb = float32(float64(c.Exposure-tc) / float64(c.Exposure))
			}
		}
		pa, err := r.prefilter(s, ka)
		if err != nil {
			return nil, err
		}
		var pb *plane
		if wb > 0 {
			if pb, err = r.prefilter(s, kb); err != nil {
				return nil, err
			}
		}
		row := r.class[oy*r.w : (oy+1)*r.w]
		for ox, cls := range row {
			i := oy*r.w + ox
			noff++
			if noff >= len(r.noise) {
				noff = 0
			}
			var e, sd float32
			switch cls {
			case 0:
				out.Pix[oy*out.Stride+ox] = noisyBezel[noff]
				continue
			case 1:
				out.Pix[oy*out.Stride+ox] = noisyScreen[noff]
				continue
			default:
				lum := r.sample(pa, i)
				if pb != nil {
					lum = lum*(1-wb) + r.sample(pb, i)*wb
				}
				e = lum * toE
				sd = float32(math.Sqrt(float64(e + read2)))
			}
			e += sd * r.noise[noff]
			lin := 0.9 * e / fullWell
			idx := int(lin * 4095)
			if idx < 0 {
				idx = 0
			} else if idx > 4095 {
				idx = 4095
			}
			out.Pix[oy*out.Stride+ox] = tone[idx]
		}
	}
	if c.JPEGQuality > 0 {
		sub := out.SubImage(image.Rect(r.bx0, r.by0, r.bx1, r.by1)).(*image.Gray)
		cp := image.NewGray(image.Rect(0, 0, r.bx1-r.bx0, r.by1-r.by0))
		for y := range cp.Rect.Dy() {
			copy(cp.Pix[y*cp.Stride:(y+1)*cp.Stride], sub.Pix[y*sub.Stride:y*sub.Stride+cp.Stride])
		}
		j, err := encodeJPEG(cp, c.JPEGQuality)
		if err != nil {
			return nil, err
		}
		for y := range cp.Rect.Dy() {
			copy(out.Pix[(r.by0+y)*out.Stride+r.bx0:(r.by0+y)*out.Stride+r.bx1], j.Pix[y*j.Stride:y*j.Stride+cp.Stride])
		}
	}
	return out, nil
}

// srgbEncode is the sRGB transfer function (IEC 61966-2-1): linear toe below
// 0.0031308, power 1/2.4 above. Cameras encode with it (or close tone curves);
// its linear toe keeps dark-area noise from being amplified without bound.
func srgbEncode(v float64) float64 {
	if v <= 0.0031308 {
		return 12.92 * v
	}
	return 1.055*math.Pow(v, 1/2.4) - 0.055
}
