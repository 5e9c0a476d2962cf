package watermark

import (
	"fmt"
	"math/rand/v2"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode/decoder"
	"github.com/makiuchi-d/gozxing/qrcode/encoder"
)

// layout is the parameter-dependent geometry shared by every frame: which
// modules carry watermark bits, and in which order.
type layout struct {
	dim  int
	fn   []bool  // fn[y*dim+x]: function-pattern module (never modulated)
	data []int32 // data modules (y*dim+x) in interleaved order
}

// layoutFor computes the layout of p (no validation beyond the version).
func layoutFor(p Params) (*layout, error) {
	v, err := decoder.Version_GetVersionForNumber(p.Version)
	if err != nil {
		return nil, fmt.Errorf("%w: version %d: %v", ErrParams, p.Version, err)
	}
	dim := v.GetDimensionForVersion()
	fn := make([]bool, dim*dim)
	region := func(left, top, w, h int) {
		for y := top; y < top+h; y++ {
			for x := left; x < left+w; x++ {
				fn[y*dim+x] = true
			}
		}
	}
	// Finder patterns, separators and format information (as ZXing's
	// Version.buildFunctionPattern).
	region(0, 0, 9, 9)
	region(dim-8, 0, 8, 9)
	region(0, dim-8, 9, 8)
	centers := v.GetAlignmentPatternCenters()
	last := len(centers) - 1
	for xi, cx := range centers {
		for yi, cy := range centers {
			if (xi == 0 && (yi == 0 || yi == last)) || (xi == last && yi == 0) {
				continue
			}
			region(cy-2, cx-2, 5, 5)
		}
	}
	region(6, 9, 1, dim-17)
	region(9, 6, dim-17, 1)
	if p.Version > 6 {
		region(dim-11, 0, 3, 6)
		region(0, dim-11, 6, 3)
	}
	var data []int32
	for i, f := range fn {
		if !f {
			data = append(data, int32(i))
		}
	}
	// A fixed pseudo-random interleaver spreads each coded bit's modules and
	// neighbouring coded bits across the whole code, so a local defect (glare,
	// a finger, a blended band) becomes scattered erasures the Viterbi decoder
	// corrects. Not secret: security rests on the threshold, not on the order.
	r := rand.New(rand.NewPCG(0x7173686965, 0x6c64))
	r.Shuffle(len(data), func(i, j int) { data[i], data[j] = data[j], data[i] })
	return &layout{dim: dim, fn: fn, data: data}, nil
}

// qrMatrix encodes t1 with p's fixed version, EC level and mask and returns the
// module matrix (true = dark), dim×dim without quiet zone.
func qrMatrix(t1 string, p Params) ([]bool, int, error) {
	ec, err := decoder.ErrorCorrectionLevel_ValueOf(p.ECLevel)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: EC level %q", ErrParams, p.ECLevel)
	}
	hints := map[gozxing.EncodeHintType]interface{}{
		gozxing.EncodeHintType_QR_VERSION:      p.Version,
		gozxing.EncodeHintType_QR_MASK_PATTERN: p.Mask,
	}
	code, werr := encoder.Encoder_encode(t1, ec, hints)
	if werr != nil {
		return nil, 0, fmt.Errorf("watermark: encoding QR for %q: %w", t1, werr)
	}
	if code.GetMaskPattern() != p.Mask || code.GetVersion().GetVersionNumber() != p.Version {
		return nil, 0, fmt.Errorf("watermark: encoder ignored fixed mask/version")
	}
	m := code.GetMatrix()
	dim := m.GetWidth()
	out := make([]bool, dim*dim)
	for y := range dim {
		for x := range dim {
			out[y*dim+x] = m.Get(x, y) == 1
		}
	}
	return out, dim, nil
}
