package watermark

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/makiuchi-d/gozxing/qrcode/decoder"

	"github.com/qshield/qshield/convcode"
)

// Sentinel errors.
var (
	// ErrParams reports invalid Params.
	ErrParams = errors.New("watermark: invalid parameters")
	// ErrToken reports a malformed T0.
	ErrToken = errors.New("watermark: invalid token")
	// ErrNoCode reports a frame in which no QR code could be decoded.
	ErrNoCode = errors.New("watermark: no QR code in frame")
	// ErrForeignCode reports a QR code that is not a qshield watermarked code.
	ErrForeignCode = errors.New("watermark: QR code is not a qshield payment code")
	// ErrBadShare reports a watermark that did not decode to a share with a
	// valid checksum (too weak, corrupted, or a blend of two frames).
	ErrBadShare = errors.New("watermark: no valid share in frame")
	// ErrMismatch reports a reconstructed T0 that does not derive T1.
	ErrMismatch = errors.New("watermark: reconstructed token does not match its handle")
)

// Params fixes the layout of a payment-code loop. Payer and scanner must use the
// same Params; DefaultParams is what qshield uses everywhere.
type Params struct {
	// Threshold t and Shares n of the (t, n) sharing: t distinct frames recover T0.
	Threshold, Shares int
	// TokenLen is the length of T0 in bytes (16..32).
	TokenLen int
	// Version, ECLevel ("L", "M", "Q", "H") and Mask (0..7) are fixed for every
	// frame, so module positions are identical across the loop.
	Version int
	ECLevel string
	Mask    int
	// ModulePx is the rendered size of a module in pixels; a multiple of 3 so the
	// centre third is a whole number of pixels.
	ModulePx int
	// QuietZone is the margin in modules (4 per ISO/IEC 18004).
	QuietZone int
	// Depth is the ring modulation depth as a fraction of full contrast in
	// linear light: a "1" moves the ring of a module this far towards the
	// opposite colour.
	Depth float64
	// MinModulePx and MaxModuleErrors are the scanner's acceptance policy
	// for a frame's share (0 disables each): a share read at fewer pixels
	// per module than MinModulePx, or with more than MaxModuleErrors of its
	// rings misread before error correction, is dropped. Direct scans at
	// 10–20 cm see 7–14 px per module and few misread rings; a downscaled
	// copy or a re-captured screen is coarser or noisier. A policy of the
	// honest scanner, not a property of the signal: it stops what is shown
	// to a merchant's scanner, not a thief's own software.
	MinModulePx     float64
	MaxModuleErrors float64
	// FrameRate is the display loop rate in whole frames per second (so every
	// time slot holds the same frames); it should divide the screen refresh
	// rate (60 Hz) and be at most half the scanner's rate.
	FrameRate float64
}

// DefaultParams returns qshield's parameters (see the package doc for the
// reasoning): t = 6 of n = 10 frames at 15 frames/s, version 3-M, mask 2,
// 12 px modules, depth 0.2; the scanner accepts shares read at 5 px per
// module or more with at most 6 % of rings misread. The last two were chosen
// on the tuning seed of `qshield experiment watermark` (direct scans at 10–20
// cm: median 0.7 %, p99 12 % misread rings per share; live re-captures:
// median 5.8 %): 6 % left every direct scan paying within 400 ms and cut
// re-captures that rebuild T0 from 94 % to 75 % — a small gain, not a
// defence on its own (see BENCHMARKS.md).
func DefaultParams() Params {
	return Params{
		Threshold: 6, Shares: 10, TokenLen: 16,
		Version: 3, ECLevel: "M", Mask: 2,
		ModulePx: 12, QuietZone: 4, Depth: 0.2, FrameRate: 15,
		MinModulePx: 5, MaxModuleErrors: 0.06,
	}
}

// FramePeriod is the display time of one frame.
func (p Params) FramePeriod() time.Duration {
	return time.Duration(float64(time.Second) / p.FrameRate)
}

// Validate checks p.
func (p Params) Validate() error {
	switch {
	case p.Threshold < 2 || p.Shares < p.Threshold || p.Shares > maxShareIndex:
		return fmt.Errorf("%w: t=%d n=%d", ErrParams, p.Threshold, p.Shares)
	case p.TokenLen < 16 || p.TokenLen > 32:
		return fmt.Errorf("%w: token length %d (16..32)", ErrParams, p.TokenLen)
	case p.Version < 2 || p.Version > 10:
		return fmt.Errorf("%w: QR version %d (2..10)", ErrParams, p.Version)
	case p.Mask < 0 || p.Mask > 7:
		return fmt.Errorf("%w: mask %d", ErrParams, p.Mask)
	case p.ModulePx < 3 || p.ModulePx%3 != 0 || p.ModulePx > 60:
		return fmt.Errorf("%w: module size %d px (multiple of 3, 3..60)", ErrParams, p.ModulePx)
	case p.QuietZone < 1 || p.QuietZone > 10:
		return fmt.Errorf("%w: quiet zone %d", ErrParams, p.QuietZone)
	case !(p.Depth > 0 && p.Depth <= 0.5):
		return fmt.Errorf("%w: depth %v (0..0.5]", ErrParams, p.Depth)
	case !(p.MinModulePx >= 0 && p.MinModulePx <= 60 && p.MaxModuleErrors >= 0 && p.MaxModuleErrors < 0.5):
		return fmt.Errorf("%w: scanner policy %.2f px, %.2f errors", ErrParams, p.MinModulePx, p.MaxModuleErrors)
	case !(p.FrameRate >= 1 && p.FrameRate <= 60 && p.FrameRate == math.Trunc(p.FrameRate)):
		return fmt.Errorf("%w: frame rate %v", ErrParams, p.FrameRate)
	}
	if _, err := decoder.ErrorCorrectionLevel_ValueOf(p.ECLevel); err != nil {
		return fmt.Errorf("%w: EC level %q", ErrParams, p.ECLevel)
	}
	lay, err := layoutFor(p)
	if err != nil {
		return err
	}
	if need := convcode.CodedLen(8 * shareLen(p.TokenLen)); need > len(lay.data) {
		return fmt.Errorf("%w: %d coded bits do not fit %d data modules of version %d",
			ErrParams, need, len(lay.data), p.Version)
	}
	return nil
}

// Dimension returns the number of modules per side of the symbol (without the
// quiet zone).
func (p Params) Dimension() int { return 17 + 4*p.Version }

// FrameModules returns the number of modules per side of a rendered frame,
// quiet zone included.
func (p Params) FrameModules() int { return p.Dimension() + 2*p.QuietZone }
