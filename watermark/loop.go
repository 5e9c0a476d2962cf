package watermark

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/qshield/qshield/convcode"
	"github.com/qshield/qshield/shamir"
)

// Loop is a payer's looping payment code: n frames, each a QR code of the same
// T1 (same version, EC level and mask, hence identical modules) carrying one
// coded share of W = T0 in its module rings.
type Loop struct {
	Params Params
	// Handle is T1, the text every frame's QR code carries.
	Handle string
	// Frames are the rendered frames, in share order (index 1..n).
	Frames []*image.Gray
}

// NewLoop derives T1 and the shares from t0 and renders the frames. Randomness
// for the sharing polynomials comes from r (crypto/rand when nil).
func NewLoop(t0 []byte, p Params, r io.Reader) (*Loop, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if len(t0) != p.TokenLen {
		return nil, fmt.Errorf("%w: %d bytes, parameters say %d", ErrToken, len(t0), p.TokenLen)
	}
	t1, err := Handle(t0)
	if err != nil {
		return nil, err
	}
	lay, err := layoutFor(p)
	if err != nil {
		return nil, err
	}
	qr, _, err := qrMatrix(t1, p)
	if err != nil {
		return nil, err
	}
	shares, err := shamir.Split(t0, p.Threshold, p.Shares, r)
	if err != nil {
		return nil, fmt.Errorf("watermark: sharing token: %w", err)
	}
	l := &Loop{Params: p, Handle: t1}
	for _, s := range shares {
		pkt := marshalShare(t1, Share{Index: s.Index, Threshold: byte(p.Threshold), Value: s.Value})
		coded := convcode.Encode(bytesToBits(pkt))
		l.Frames = append(l.Frames, render(qr, lay, coded, p))
	}
	return l, nil
}

// Render draws a QR code of handle carrying the given share under p: exported
// for tests and tools that build frames by hand (for example a forged share).
func Render(handle string, s Share, p Params) (*image.Gray, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	lay, err := layoutFor(p)
	if err != nil {
		return nil, err
	}
	qr, _, err := qrMatrix(handle, p)
	if err != nil {
		return nil, err
	}
	if len(s.Value) != p.TokenLen {
		return nil, fmt.Errorf("%w: share of %d bytes", ErrParams, len(s.Value))
	}
	return render(qr, lay, convcode.Encode(bytesToBits(marshalShare(handle, s))), p), nil
}

func bytesToBits(b []byte) []byte {
	out := make([]byte, 0, 8*len(b))
	for _, c := range b {
		for i := 7; i >= 0; i-- {
			out = append(out, (c>>i)&1)
		}
	}
	return out
}

func bitsToBytes(bits []byte) []byte {
	out := make([]byte, len(bits)/8)
	for i := range out {
		var c byte
		for _, b := range bits[8*i : 8*i+8] {
			c = c<<1 | b&1
		}
		out[i] = c
	}
	return out
}

// render draws one frame. Module (x, y) occupies a ModulePx square; its centre
// third always has the QR colour (black 0, white 255). Function-pattern modules
// are solid. A data module carrying coded bit 1 has its outer ring moved Depth
// of the way (in linear light) towards the opposite colour; a 0 leaves the
// ring solid. Data
// module j of the interleaved order carries coded bit j mod len(coded).
func render(qr []bool, lay *layout, coded []byte, p Params) *image.Gray {
	dim, m, q := lay.dim, p.ModulePx, p.QuietZone
	size := (dim + 2*q) * m
	img := image.NewGray(image.Rect(0, 0, size, size))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	ring := make([]uint8, dim*dim)
	for i, dark := range qr {
		if dark {
			ring[i] = 0
		} else {
			ring[i] = 255
		}
	}
	// Depth is a fraction of linear light: screens and cameras blur in
	// linear light, so equal linear depths give dark and light modules equal
	// signal after the channel. Pixel values are sRGB-like (gamma 2.2).
	darkOne := uint8(math.Round(255 * math.Pow(p.Depth, 1/2.2)))
	lightOne := uint8(math.Round(255 * math.Pow(1-p.Depth, 1/2.2)))
	for j, pos := range lay.data {
		if coded[j%len(coded)] == 1 {
			if qr[pos] {
				ring[pos] = darkOne
			} else {
				ring[pos] = lightOne
			}
		}
	}
	c0, c1 := m/3, 2*m/3
	for y := range dim {
		for x := range dim {
			i := y*dim + x
			centre := uint8(255)
			if qr[i] {
				centre = 0
			}
			ox, oy := (x+q)*m, (y+q)*m
			for py := range m {
				row := img.Pix[(oy+py)*img.Stride+ox : (oy+py)*img.Stride+ox+m]
				for px := range m {
					if px >= c0 && px < c1 && py >= c0 && py < c1 {
						row[px] = centre
					} else {
						row[px] = ring[i]
					}
				}
			}
		}
	}
	return img
}

// WritePNGs writes the frames as dir/frame-01.png ... and returns their paths.
func (l *Loop) WritePNGs(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("watermark: creating %s: %w", dir, err)
	}
	var paths []string
	for i, f := range l.Frames {
		var buf bytes.Buffer
		if err := png.Encode(&buf, f); err != nil {
			return nil, fmt.Errorf("watermark: encoding frame %d: %w", i+1, err)
		}
		path := filepath.Join(dir, fmt.Sprintf("frame-%02d.png", i+1))
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			return nil, fmt.Errorf("watermark: writing %s: %w", path, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// WriteGIF writes the loop as an endlessly looping animated GIF. GIF delays are
// whole hundredths of a second, so the rate is rounded (15 fps → 7 cs, 14.3 fps).
func (l *Loop) WriteGIF(w io.Writer) error {
	pal := make(color.Palette, 256)
	for i := range pal {
		pal[i] = color.Gray{Y: uint8(i)}
	}
	delay := max(2, int(math.Round(100/l.Params.FrameRate)))
	g := &gif.GIF{LoopCount: 0}
	for _, f := range l.Frames {
		p := image.NewPaletted(f.Rect, pal)
		copy(p.Pix, f.Pix) // palette index i is grey level i; strides are equal
		g.Image = append(g.Image, p)
		g.Delay = append(g.Delay, delay)
	}
	if err := gif.EncodeAll(w, g); err != nil {
		return fmt.Errorf("watermark: encoding GIF: %w", err)
	}
	return nil
}

// PlainFrame returns the loop's QR code without watermark (every module solid),
// the reference against which the watermark's effect on decoding is measured.
func PlainFrame(l *Loop) *image.Gray {
	src := l.Frames[0]
	out := image.NewGray(src.Rect)
	m := l.Params.ModulePx
	for y := 0; y < src.Rect.Dy(); y++ {
		for x := 0; x < src.Rect.Dx(); x++ {
			cx, cy := x/m*m+m/2, y/m*m+m/2
			out.Pix[y*out.Stride+x] = src.Pix[cy*src.Stride+cx]
		}
	}
	return out
}
