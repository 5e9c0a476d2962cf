package watermark

import (
	"errors"
	"fmt"
	"image"
	"image/draw"
	"math"
	"slices"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/common"
	"github.com/makiuchi-d/gozxing/qrcode"
	"github.com/makiuchi-d/gozxing/qrcode/detector"

	"github.com/qshield/qshield/convcode"
)

// Extractor reads T1 and the watermark share from camera frames. It is not safe
// for concurrent use; create one per goroutine.
type Extractor struct {
	p      Params
	lay    *layout
	reader gozxing.Reader
	hints  map[gozxing.DecodeHintType]interface{}
	dec    convcode.Decoder
	// cache of regenerated QR matrices by T1 (a scanner sees few codes).
	cache map[string][]bool

	gray  []byte
	rot   []byte
	soft  []float64
	coded []int8
	dval  [2][]float64
	nb    []float64
}

// NewExtractor returns an extractor for codes made with p. When tryHarder is
// set, the QR decoder spends more time on hard frames (ZXing's TRY_HARDER).
func NewExtractor(p Params, tryHarder bool) (*Extractor, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	lay, err := layoutFor(p)
	if err != nil {
		return nil, err
	}
	e := &Extractor{p: p, lay: lay, reader: qrcode.NewQRCodeReader(), cache: map[string][]bool{}}
	if tryHarder {
		e.hints = map[gozxing.DecodeHintType]interface{}{gozxing.DecodeHintType_TRY_HARDER: true}
	}
	return e, nil
}

// FrameResult is what one frame yielded.
type FrameResult struct {
	// Handle is T1 read from the QR code.
	Handle string
	// Share is the valid share the frame carried.
	Share Share
	// Agreement is the fraction of module centres whose colour matched the QR
	// matrix regenerated from T1 (a sampling-quality measure).
	Agreement float64
	// ModulePx is the module pitch in image pixels at the code's centre.
	ModulePx float64
	// ModuleErrors is the fraction of data modules whose ring, read alone,
	// disagrees with the decoded share re-encoded: the channel's raw error
	// rate, which one more screen-to-camera generation raises. Set for
	// frames whose share decoded (before the Params.MaxModuleErrors gate).
	ModuleErrors float64
}

// luminance returns the frame as 8-bit luma, reusing the extractor's buffer.
func (e *Extractor) luminance(img image.Image) ([]byte, int, int) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	switch m := img.(type) {
	case *image.Gray:
		if m.Stride == w {
			return m.Pix[m.PixOffset(b.Min.X, b.Min.Y):][:w*h], w, h
		}
	case *image.YCbCr:
		if m.YStride == w {
			return m.Y[m.YOffset(b.Min.X, b.Min.Y):][:w*h], w, h
		}
	}
	if cap(e.gray) < w*h {
		e.gray = make([]byte, w*h)
	}
	g := &image.Gray{Pix: e.gray[:w*h], Stride: w, Rect: image.Rect(0, 0, w, h)}
	draw.Draw(g, g.Rect, img, b.Min, draw.Src)
	return g.Pix, w, h
}

// decode runs the QR reader on a luma buffer.
func (e *Extractor) decode(pix []byte, w, h int) (*gozxing.Result, error) {
	src, err := gozxing.NewPlanarYUVLuminanceSource(pix, w, h, 0, 0, w, h, false)
	if err != nil {
		return nil, fmt.Errorf("watermark: luminance source: %w", err)
	}
	bmp, err := gozxing.NewBinaryBitmap(gozxing.NewHybridBinarizer(src))
	if err != nil {
		return nil, fmt.Errorf("watermark: binarizing: %w", err)
	}
	res, err := e.reader.Decode(bmp, e.hints)
	if err == nil {
		return res, nil
	}
	// ZXing's detector estimates module sizes along pixel rows and columns and
	// often fails on codes rolled by about 45°, which a payer laying a phone on
	// a scan box produces as often as any other angle. Retry once on a copy
	// rotated by 45° and map the points back.
	if res2, err2 := e.decodeRotated(pix, w, h); err2 == nil {
		return res2, nil
	}
	// Very crisp or very large codes (exported PNG frames, a telephoto at
	// close range) sometimes defeat the detector's module-size estimate;
	// a half-size copy usually decodes.
	finderIn, finderScale := bmp, 1.0
	if w >= 84 && h >= 84 {
		half, err3 := e.scaledBitmap(pix, w, h, 0.5)
		if err3 == nil {
			if res3, err3 := e.decodeBitmap(half, 0.5); err3 == nil {
				return res3, nil
			}
			// The finder-pattern check below runs on the half-size copy,
			// whose binarized matrix the decode just computed: a quarter of
			// the pixels to search.
			finderIn, finderScale = half, 0.5
		}
	}
	// About one crisp code in 100 — a matter of its module pattern; the
	// code without a watermark fails too — still fails at half size: the
	// detector finds the three finder patterns, then reports an impossible
	// dimension or samples a wrong grid. Other sizes read it: of 3,000
	// generated codes at 12 px a module, 28 failed at full and half size,
	// and every one of them read at one of the sizes below (tried in order
	// of how many they read). Only a frame whose finder patterns are there
	// pays for them; a frame with no code in view does not.
	if e.finderPatterns(finderIn, minFinderModulePx*finderScale) {
		for _, s := range []float64{0.7, 0.3, 0.6, 0.25} {
			if float64(min(w, h))*s < 42 {
				continue
			}
			if res4, err4 := e.decodeScaled(pix, w, h, s); err4 == nil {
				return res4, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: %v", ErrNoCode, err)
}

// minFinderModulePx is the smallest module size, in pixels of the frame,
// of finder patterns that earn the further sizes: those only shrink the
// code, and a code under 4 px a module does not read smaller. Noise passes
// for finder patterns of about a pixel.
const minFinderModulePx = 4

// finderPatterns reports whether ZXing's detector finds a QR code's three
// finder patterns in bmp, each at least minModule pixels (of bmp) a module.
func (e *Extractor) finderPatterns(bmp *gozxing.BinaryBitmap, minModule float64) bool {
	bits, err := bmp.GetBlackMatrix()
	if err != nil {
		return false
	}
	info, err := detector.NewFinderPatternFinder(bits, nil).Find(e.hints)
	if err != nil {
		return false
	}
	for _, p := range []*detector.FinderPattern{info.GetBottomLeft(), info.GetTopLeft(), info.GetTopRight()} {
		if p.GetEstimatedModuleSize() < minModule {
			return false
		}
	}
	return true
}

// decodeScaled decodes a copy of the frame scaled by s (0 < s < 1, each
// pixel the mean of the source pixels its footprint touches) and returns
// the result with its points in the original frame's coordinates.
func (e *Extractor) decodeScaled(pix []byte, w, h int, s float64) (*gozxing.Result, error) {
	bmp, err := e.scaledBitmap(pix, w, h, s)
	if err != nil {
		return nil, err
	}
	return e.decodeBitmap(bmp, s)
}

// scaledBitmap returns a copy of the frame scaled by s (0 < s < 1, each
// pixel the mean of the source pixels its footprint touches), ready to
// binarize. The copy lives in the extractor's scratch buffer: it is valid
// until the next scaled or rotated decode.
func (e *Extractor) scaledBitmap(pix []byte, w, h int, s float64) (*gozxing.BinaryBitmap, error) {
	sw, sh := int(float64(w)*s), int(float64(h)*s)
	if cap(e.rot) < sw*sh {
		e.rot = make([]byte, sw*sh)
	}
	small := e.rot[:sw*sh]
	span := func(i, n int) (int, int) {
		lo, hi := int(float64(i)/s), int(math.Ceil(float64(i+1)/s))
		return lo, min(hi, n)
	}
	for y := range sh {
		y0, y1 := span(y, h)
		for x := range sw {
			x0, x1 := span(x, w)
			sum := 0
			for yy := y0; yy < y1; yy++ {
				for _, v := range pix[yy*w+x0 : yy*w+x1] {
					sum += int(v)
				}
			}
			n := (y1 - y0) * (x1 - x0)
			small[y*sw+x] = byte((sum + n/2) / n)
		}
	}
	src, err := gozxing.NewPlanarYUVLuminanceSource(small, sw, sh, 0, 0, sw, sh, false)
	if err != nil {
		return nil, err
	}
	return gozxing.NewBinaryBitmap(gozxing.NewHybridBinarizer(src))
}

// decodeBitmap decodes bmp, a copy of the frame scaled by s, and returns
// the result with its points in the original frame's coordinates.
func (e *Extractor) decodeBitmap(bmp *gozxing.BinaryBitmap, s float64) (*gozxing.Result, error) {
	res, err := e.reader.Decode(bmp, e.hints)
	if err != nil {
		return nil, err
	}
	pts := res.GetResultPoints()
	out := make([]gozxing.ResultPoint, len(pts))
	for i, p := range pts {
		x, y := p.GetX()/s, p.GetY()/s
		if _, ok := p.(*detector.AlignmentPattern); ok {
			out[i] = detector.NewAlignmentPattern(x, y, 0)
		} else {
			out[i] = gozxing.NewResultPoint(x, y)
		}
	}
	return gozxing.NewResult(res.GetText(), res.GetRawBytes(), out, res.GetBarcodeFormat()), nil
}

// decodeRotated decodes a 45°-rotated copy of the frame (nearest-neighbour,
// same size, same centre) and returns the result with its points in the
// original frame's coordinates.
func (e *Extractor) decodeRotated(pix []byte, w, h int) (*gozxing.Result, error) {
	if cap(e.rot) < w*h {
		e.rot = make([]byte, w*h)
	}
	rot := e.rot[:w*h]
	cx, cy := float64(w)/2, float64(h)/2
	const c = math.Sqrt2 / 2
	for y := range h {
		dy := float64(y) + 0.5 - cy
		for x := range w {
			dx := float64(x) + 0.5 - cx
			// source = R(-45°)·(dx, dy)
			sx := int(cx + c*dx + c*dy)
			sy := int(cy - c*dx + c*dy)
			v := byte(255)
			if sx >= 0 && sy >= 0 && sx < w && sy < h {
				v = pix[sy*w+sx]
			}
			rot[y*w+x] = v
		}
	}
	src, err := gozxing.NewPlanarYUVLuminanceSource(rot, w, h, 0, 0, w, h, false)
	if err != nil {
		return nil, err
	}
	bmp, err := gozxing.NewBinaryBitmap(gozxing.NewHybridBinarizer(src))
	if err != nil {
		return nil, err
	}
	res, err := e.reader.Decode(bmp, e.hints)
	if err != nil {
		return nil, err
	}
	back := func(x, y float64) (float64, float64) {
		dx, dy := x-cx, y-cy
		return cx + c*dx + c*dy, cy - c*dx + c*dy
	}
	pts := res.GetResultPoints()
	out := make([]gozxing.ResultPoint, len(pts))
	for i, p := range pts {
		x, y := back(p.GetX(), p.GetY())
		if _, ok := p.(*detector.AlignmentPattern); ok {
			out[i] = detector.NewAlignmentPattern(x, y, 0)
		} else {
			out[i] = gozxing.NewResultPoint(x, y)
		}
	}
	return gozxing.NewResult(res.GetText(), res.GetRawBytes(), out, res.GetBarcodeFormat()), nil
}

// DecodeQR only decodes the QR code (the baseline the watermark's cost is
// measured against).
func (e *Extractor) DecodeQR(img image.Image) (string, error) {
	pix, w, h := e.luminance(img)
	if w < 21 || h < 21 {
		return "", fmt.Errorf("%w: image %dx%d too small", ErrNoCode, w, h)
	}
	res, err := e.decode(pix, w, h)
	if err != nil {
		return "", err
	}
	return res.GetText(), nil
}

// Extract decodes T1 and the frame's share. Errors: ErrNoCode (no readable QR),
// ErrForeignCode (a QR that is not a qshield code), ErrBadShare (the code was
// read, FrameResult.Handle is set, but no valid share came out).
func (e *Extractor) Extract(img image.Image) (FrameResult, error) {
	pix, w, h := e.luminance(img)
	if w < 21 || h < 21 {
		return FrameResult{}, fmt.Errorf("%w: image %dx%d too small", ErrNoCode, w, h)
	}
	res, err := e.decode(pix, w, h)
	if err != nil {
		return FrameResult{}, err
	}
	t1 := res.GetText()
	if err := ParseHandle(t1); err != nil {
		return FrameResult{}, err
	}
	fr := FrameResult{Handle: t1}
	qr, ok := e.cache[t1]
	if !ok {
		var dim int
		qr, dim, err = qrMatrix(t1, e.p)
		if err != nil || dim != e.lay.dim {
			return fr, fmt.Errorf("%w: cannot regenerate code layout: %v", ErrBadShare, err)
		}
		if len(e.cache) > 16 {
			clear(e.cache)
		}
		e.cache[t1] = qr
	}
	tr, err := e.transform(res.GetResultPoints())
	if err != nil {
		return fr, err
	}
	fr.ModulePx = modulePitch(tr, e.lay.dim)
	if e.p.MinModulePx > 0 && fr.ModulePx < e.p.MinModulePx {
		return fr, fmt.Errorf("%w: %.1f px per module, below %.1f (too far, or a downscaled copy)", ErrBadShare, fr.ModulePx, e.p.MinModulePx)
	}
	share, agree, merr, err := e.readShare(pix, w, h, tr, qr, t1)
	fr.Agreement, fr.ModuleErrors = agree, merr
	if err != nil {
		return fr, err
	}
	if e.p.MaxModuleErrors > 0 && merr > e.p.MaxModuleErrors {
		return fr, fmt.Errorf("%w: %.0f %% of rings misread, above %.0f %% (a re-captured screen?)", ErrBadShare, 100*merr, 100*e.p.MaxModuleErrors)
	}
	fr.Share = share
	return fr, nil
}

// transform rebuilds the detector's module-to-image perspective transform from
// the result points (bottom-left, top-left, top-right finder centres and the
// alignment pattern when found), exactly as ZXing's Detector does.
func (e *Extractor) transform(pts []gozxing.ResultPoint) (*common.PerspectiveTransform, error) {
	if len(pts) < 3 {
		return nil, fmt.Errorf("%w: detector returned %d points", ErrBadShare, len(pts))
	}
	var align *detector.AlignmentPattern
	if len(pts) > 3 {
		align, _ = pts[3].(*detector.AlignmentPattern)
	}
	return detector.Detector_createTransform(pts[1], pts[2], pts[0], align, e.lay.dim), nil
}

var (
	centreOffsets = [][2]float64{{0, 0}, {-0.09, 0}, {0.09, 0}, {0, -0.09}, {0, 0.09}}
	ringOffsets   = [][2]float64{{-0.34, 0}, {0.34, 0}, {0, -0.34}, {0, 0.34},
		{-0.34, -0.34}, {0.34, -0.34}, {-0.34, 0.34}, {0.34, 0.34}}
)

// bilinear samples the linearised luma at (x, y); outside the image it clamps.
func bilinear(pix []byte, w, h int, x, y float64) float64 {
	x -= 0.5
	y -= 0.5
	x = math.Max(0, math.Min(float64(w-1), x))
	y = math.Max(0, math.Min(float64(h-1), y))
	x0, y0 := int(x), int(y)
	x1, y1 := min(x0+1, w-1), min(y0+1, h-1)
	fx, fy := x-float64(x0), y-float64(y0)
	a := linLUT[pix[y0*w+x0]]*(1-fx) + linLUT[pix[y0*w+x1]]*fx
	b := linLUT[pix[y1*w+x0]]*(1-fx) + linLUT[pix[y1*w+x1]]*fx
	return a*(1-fy) + b*fy
}

// linLUT undoes the camera's tone curve (sRGB, IEC 61966-2-1, which camera
// pipelines use or approximate) so that differences are taken in linear light,
// where blur acts. In the gamma domain a blurred dark module's centre brightens
// faster than its ring and the bit appears inverted. Scaled to 0..255.
var linLUT = func() (t [256]float64) {
	for i := range t {
		v := float64(i) / 255
		if v <= 0.04045 {
			v /= 12.92
		} else {
			v = math.Pow((v+0.055)/1.055, 2.4)
		}
		t[i] = 255 * v
	}
	return
}()

// readShare samples every data module's centre and ring, turns their
// difference into soft coded bits, Viterbi-decodes and checks the share.
func (e *Extractor) readShare(pix []byte, w, h int, tr *common.PerspectiveTransform,
	qr []bool, t1 string) (Share, float64, float64, error) {
	dim := e.lay.dim
	n := len(e.lay.data)
	codedLen := convcode.CodedLen(8 * shareLen(e.p.TokenLen))
	if cap(e.soft) < n {
		e.soft = make([]float64, n)
	}
	d := e.soft[:n]
	centres := make([]float64, 0, 2*n)
	var cDark, cLight float64
	var nDark, nLight int
	pts := make([]float64, 2*(len(centreOffsets)+len(ringOffsets)))
	agree := 0
	for j, pos := range e.lay.data {
		mx, my := float64(int(pos)%dim)+0.5, float64(int(pos)/dim)+0.5
		k := 0
		for _, o := range centreOffsets {
			pts[k], pts[k+1] = mx+o[0], my+o[1]
			k += 2
		}
		for _, o := range ringOffsets {
			pts[k], pts[k+1] = mx+o[0], my+o[1]
			k += 2
		}
		tr.TransformPoints(pts)
		var c, r float64
		for i := range centreOffsets {
			c += bilinear(pix, w, h, pts[2*i], pts[2*i+1])
		}
		c /= float64(len(centreOffsets))
		for i := range ringOffsets {
			k := 2 * (len(centreOffsets) + i)
			r += bilinear(pix, w, h, pts[k], pts[k+1])
		}
		r /= float64(len(ringOffsets))
		if qr[pos] {
			d[j] = r - centreWeight*c
			cDark += c
			nDark++
		} else {
			d[j] = centreWeight*c - r
			cLight += c
			nLight++
		}
		centres = append(centres, c)
	}
	if nDark == 0 || nLight == 0 {
		return Share{}, 0, 0, fmt.Errorf("%w: degenerate code", ErrBadShare)
	}
	// Centre agreement against the midpoint of the two centre means.
	mid := (cDark/float64(nDark) + cLight/float64(nLight)) / 2
	for j, pos := range e.lay.data {
		if (centres[j] < mid) == qr[pos] {
			agree++
		}
	}
	agreement := float64(agree) / float64(n)
	if agreement < 0.8 {
		return Share{}, agreement, 0, fmt.Errorf("%w: module grid misaligned (%.0f%% centres agree)", ErrBadShare, 100*agreement)
	}
	// Per-class adaptive slicing: the channel (gamma, blur, exposure) shifts
	// and shrinks the ring-centre difference differently for dark and light
	// modules. The coded bits are about balanced, so the sorted values of a
	// class split into a lower half (mostly 0s) and an upper half (mostly 1s):
	// the threshold is the midpoint of the two halves' means and the scale
	// half their distance (a one-step 2-means).
	// Inter-symbol interference and illumination: blur leaks the opposite
	// colour of neighbouring modules into a module's ring, more the more such
	// neighbours it has, and light falls off across the screen. The coded bits
	// are independent of both, so a least-squares fit of d on the neighbour
	// count and the module position, per class, estimates them; the fit is
	// subtracted.
	nb := e.neighbours(qr)
	for cls := range 2 {
		var ata [4][4]float64
		var atb [4]float64
		cnt := 0
		for j, pos := range e.lay.data {
			if qr[pos] != (cls == 1) {
				continue
			}
			f := [4]float64{1, nb[j], float64(int(pos)%dim)/float64(dim) - 0.5, float64(int(pos)/dim)/float64(dim) - 0.5}
			for a := range 4 {
				for b := range 4 {
					ata[a][b] += f[a] * f[b]
				}
				atb[a] += f[a] * d[j]
			}
			cnt++
		}
		coef, ok := solve4(ata, atb)
		if cnt < 16 || !ok {
			continue
		}
		for j, pos := range e.lay.data {
			if qr[pos] == (cls == 1) {
				f1, f2, f3 := nb[j], float64(int(pos)%dim)/float64(dim)-0.5, float64(int(pos)/dim)/float64(dim)-0.5
				d[j] -= coef[1]*f1 + coef[2]*f2 + coef[3]*f3
			}
		}
	}
	for cls := range 2 {
		e.dval[cls] = e.dval[cls][:0]
	}
	for j, pos := range e.lay.data {
		cls := 0
		if qr[pos] {
			cls = 1
		}
		e.dval[cls] = append(e.dval[cls], d[j])
	}
	var med, mad [2]float64
	for cls := range 2 {
		v := e.dval[cls]
		if len(v) < 8 {
			return Share{}, agreement, 0, fmt.Errorf("%w: too few modules of one colour", ErrBadShare)
		}
		slices.Sort(v)
		half := len(v) / 2
		var lo, hi float64
		for _, x := range v[:half] {
			lo += x
		}
		for _, x := range v[half:] {
			hi += x
		}
		lo /= float64(half)
		hi /= float64(len(v) - half)
		med[cls] = (lo + hi) / 2
		mad[cls] = math.Max((hi-lo)/2, 1e-3)
	}
	acc := make([]float64, codedLen)
	for j, pos := range e.lay.data {
		cls := 0
		if qr[pos] {
			cls = 1
		}
		acc[j%codedLen] += 32 * (d[j] - med[cls]) / mad[cls]
	}
	if cap(e.coded) < codedLen {
		e.coded = make([]int8, codedLen)
	}
	coded := e.coded[:codedLen]
	for i, v := range acc {
		coded[i] = int8(math.Max(-127, math.Min(127, math.Round(v))))
	}
	bits, err := e.dec.Decode(coded)
	if err != nil {
		return Share{}, agreement, 0, fmt.Errorf("watermark: viterbi: %w", err)
	}
	s, err := unmarshalShare(t1, bitsToBytes(bits), e.p.TokenLen)
	if err != nil {
		return Share{}, agreement, 0, err
	}
	if int(s.Index) > e.p.Shares {
		return Share{}, agreement, 0, fmt.Errorf("%w: index %d of %d shares", ErrBadShare, s.Index, e.p.Shares)
	}
	// Raw module error rate against the decoded share, re-encoded.
	re := convcode.Encode(bits)
	bad := 0
	for j, pos := range e.lay.data {
		cls := 0
		if qr[pos] {
			cls = 1
		}
		if (d[j] > med[cls]) != (re[j%codedLen] == 1) {
			bad++
		}
	}
	return s, agreement, float64(bad) / float64(n), nil
}

// modulePitch returns the module pitch in pixels at the symbol's centre.
func modulePitch(tr *common.PerspectiveTransform, dim int) float64 {
	c := float64(dim) / 2
	pts := []float64{c - 0.5, c, c + 0.5, c, c, c - 0.5, c, c + 0.5}
	tr.TransformPoints(pts)
	return math.Sqrt(math.Hypot(pts[2]-pts[0], pts[3]-pts[1]) * math.Hypot(pts[6]-pts[4], pts[7]-pts[5]))
}

// neighbours returns, for each data module in interleaved order, the number of
// neighbours of the opposite colour (edge neighbours 1, diagonal ones 0.5;
// outside the symbol is the light quiet zone).
func (e *Extractor) neighbours(qr []bool) []float64 {
	dim := e.lay.dim
	if cap(e.nb) < len(e.lay.data) {
		e.nb = make([]float64, len(e.lay.data))
	}
	nb := e.nb[:len(e.lay.data)]
	dark := func(x, y int) bool {
		if x < 0 || y < 0 || x >= dim || y >= dim {
			return false
		}
		return qr[y*dim+x]
	}
	for j, pos := range e.lay.data {
		x, y := int(pos)%dim, int(pos)/dim
		me := qr[pos]
		var n float64
		for dy := -1; dy <= 1; dy++ {
			for dx := -1; dx <= 1; dx++ {
				if (dx == 0 && dy == 0) || dark(x+dx, y+dy) == me {
					continue
				}
				if dx == 0 || dy == 0 {
					n++
				} else {
					n += 0.5
				}
			}
		}
		nb[j] = n
	}
	return nb
}

// IsNoCode reports whether err means the frame held no readable qshield code.
func IsNoCode(err error) bool {
	return errors.Is(err, ErrNoCode) || errors.Is(err, ErrForeignCode)
}

// centreWeight is how much of the centre level is subtracted from the ring
// level in the decision feature. 1 is the pure ring-centre contrast: a fine
// detail that dies once a module spans fewer than about 8 pixels (fragile,
// semi-robust, but it also fails close scans at 20 cm); 0 is the ring's
// absolute level, which survives down to about 3 pixels per module (robust
// enough for distant thieves). 0.5 keeps close scans reliable over 10–20 cm
// and loses most 1x-lens captures from 1 m (see the watermark experiment).
const centreWeight = 0.5

// solve4 solves the 4×4 normal equations by Gaussian elimination.
func solve4(a [4][4]float64, b [4]float64) ([4]float64, bool) {
	for c := range 4 {
		p := c
		for r := c + 1; r < 4; r++ {
			if math.Abs(a[r][c]) > math.Abs(a[p][c]) {
				p = r
			}
		}
		if math.Abs(a[p][c]) < 1e-9 {
			return [4]float64{}, false
		}
		a[c], a[p] = a[p], a[c]
		b[c], b[p] = b[p], b[c]
		for r := c + 1; r < 4; r++ {
			f := a[r][c] / a[c][c]
			for k := c; k < 4; k++ {
				a[r][k] -= f * a[c][k]
			}
			b[r] -= f * b[c]
		}
	}
	var x [4]float64
	for r := 3; r >= 0; r-- {
		v := b[r]
		for k := r + 1; k < 4; k++ {
			v -= a[r][k] * x[k]
		}
		x[r] = v / a[r][r]
	}
	return x, true
}
