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
	"time"

	"github.com/qshield/qshield/convcode"
	"github.com/qshield/qshield/shamir"
)

// Loop is a payer's looping payment code: n shares of W = T0, each shown as a
// QR code of the same T1 (same version, EC level and mask, hence identical
// modules) carrying the coded share, stamped with the current time slot, in
// its module rings. The phone shows share k = (slot·FrameRate + g) mod n in
// display frame g of each slot; frames are rendered on demand because the
// stamp changes every slot.
type Loop struct {
	Params Params
	// Handle is T1, the text every frame's QR code carries.
	Handle string

	shares  []Share
	slotKey []byte
	qr      []bool
	lay     *layout
}

// NewLoop derives T1 and the shares from t0; slotKey is the code's slot key K
// (SlotKeyLen bytes, issued with T0). Randomness for the sharing polynomials
// comes from r (crypto/rand when nil).
func NewLoop(t0, slotKey []byte, p Params, r io.Reader) (*Loop, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if len(t0) != p.TokenLen {
		return nil, fmt.Errorf("%w: %d bytes, parameters say %d", ErrToken, len(t0), p.TokenLen)
	}
	if len(slotKey) != SlotKeyLen {
		return nil, fmt.Errorf("%w: slot key of %d bytes, want %d", ErrToken, len(slotKey), SlotKeyLen)
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
	l := &Loop{Params: p, Handle: t1, slotKey: append([]byte(nil), slotKey...), qr: qr, lay: lay}
	for _, s := range shares {
		l.shares = append(l.shares, Share{Index: s.Index, Value: s.Value})
	}
	return l, nil
}

// Frame renders share k (0-based, k < Shares) stamped with slot.
func (l *Loop) Frame(k int, slot int64) *image.Gray {
	s := l.shares[k%len(l.shares)]
	s.Stamp = NewStamp(l.slotKey, l.Handle, s.Index, slot)
	return render(l.qr, l.lay, convcode.Encode(bytesToBits(marshalShare(l.Handle, s))), l.Params)
}

// FrameBound renders share k (0-based) stamped with a tag bound to the
// scanner challenge c the phone read (see challenge.go); its slot is c's.
func (l *Loop) FrameBound(k int, c Challenge) *image.Gray {
	s := l.shares[k%len(l.shares)]
	s.Stamp = NewBoundStamp(l.slotKey, l.Handle, s.Index, c)
	return render(l.qr, l.lay, convcode.Encode(bytesToBits(marshalShare(l.Handle, s))), l.Params)
}

// Frames renders the n frames of one slot, in share order.
func (l *Loop) Frames(slot int64) []*image.Gray {
	out := make([]*image.Gray, len(l.shares))
	for k := range out {
		out[k] = l.Frame(k, slot)
	}
	return out
}

// perSlot is the number of display frames per slot.
func (l *Loop) perSlot() int64 {
	return int64(math.Round(l.Params.FrameRate * SlotDuration.Seconds()))
}

// frameNumber returns the global display frame number at t (perSlot frames in
// every slot, the first at the slot's start) and its slot.
func (l *Loop) frameNumber(t time.Time) (int64, int64) {
	slot := SlotAt(t)
	g := int64(t.Sub(SlotStart(slot))) * l.perSlot() / int64(SlotDuration)
	return slot*l.perSlot() + g, slot
}

// ShowAt returns the frame the phone shows at time t of its (server-set)
// slot clock.
func (l *Loop) ShowAt(t time.Time) *image.Gray {
	g, slot := l.frameNumber(t)
	k := g % int64(len(l.shares))
	if k < 0 {
		k += int64(len(l.shares))
	}
	return l.Frame(int(k), slot)
}

// ShowBoundAt returns the frame the phone shows at time t of its slot clock
// while it holds scanner challenge c (ChallengeTracker.Current): the share
// ShowAt would show, its stamp bound to c (and so to c's slot).
func (l *Loop) ShowBoundAt(t time.Time, c Challenge) *image.Gray {
	g, _ := l.frameNumber(t)
	n := int64(len(l.shares))
	return l.FrameBound(int(((g%n)+n)%n), c)
}

// Timeline is what the phone shows from a start time on: display frame k
// (k = 0, 1, …, one every 1/FrameRate s) rendered on demand and cached.
type Timeline struct {
	l     *Loop
	g0    int64
	cache map[int]*image.Gray
	// Phase is how long the first frame had been on screen at the start time.
	Phase time.Duration
	// Challenge, when set, tells which scanner challenge the phone holds
	// when it starts showing display frame k (ok false: none yet, the frame
	// is stamped by the slot clock alone). It must return the same answer
	// for the same k (frames are cached).
	Challenge func(k int) (c Challenge, ok bool)
}

// Timeline returns what the phone shows from start (its slot clock's time).
func (l *Loop) Timeline(start time.Time) *Timeline {
	g0, slot0 := l.frameNumber(start)
	per := l.perSlot()
	first := SlotStart(slot0).Add(time.Duration((g0 - slot0*per) * int64(SlotDuration) / per))
	return &Timeline{l: l, g0: g0, cache: map[int]*image.Gray{}, Phase: start.Sub(first)}
}

// Frame returns display frame k of the timeline (k ≥ 0). Not safe for
// concurrent use.
func (tl *Timeline) Frame(k int) *image.Gray {
	if f, ok := tl.cache[k]; ok {
		return f
	}
	g := tl.g0 + int64(max(k, 0))
	per := tl.l.perSlot()
	n := int64(len(tl.l.shares))
	share := int(((g % n) + n) % n)
	var f *image.Gray
	if c, ok := tl.challenge(k); ok {
		f = tl.l.FrameBound(share, c)
	} else {
		f = tl.l.Frame(share, floorDiv(g, per))
	}
	if len(tl.cache) > 256 {
		clear(tl.cache)
	}
	tl.cache[k] = f
	return f
}

func (tl *Timeline) challenge(k int) (Challenge, bool) {
	if tl.Challenge == nil {
		return Challenge{}, false
	}
	return tl.Challenge(k)
}

// Frames renders frames [0, n) of the timeline.
func (tl *Timeline) Frames(n int) []*image.Gray {
	out := make([]*image.Gray, n)
	for k := range out {
		out[k] = tl.Frame(k)
	}
	return out
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Render draws a QR code of handle carrying the given share (its stamp
// included) under p: exported for tests and tools that build frames by hand
// (for example a forged share).
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
	fillWhite(img.Pix)
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
	// Each module row of pixels is drawn once as a ring row (all ring) and
	// a centre row (ring, centre third, ring), then copied down: pixel rows
	// py < c0 and py ≥ c1 of the module row are ring rows, the rest centre
	// rows.
	c0, c1 := m/3, 2*m/3
	ringRow := make([]uint8, dim*m)
	centreRow := make([]uint8, dim*m)
	for y := range dim {
		for x := range dim {
			i := y*dim + x
			centre := uint8(255)
			if qr[i] {
				centre = 0
			}
			r, c := ringRow[x*m:(x+1)*m], centreRow[x*m:(x+1)*m]
			for px := range m {
				r[px] = ring[i]
				if px >= c0 && px < c1 {
					c[px] = centre
				} else {
					c[px] = ring[i]
				}
			}
		}
		oy := (y + q) * m
		for py := range m {
			src := ringRow
			if py >= c0 && py < c1 {
				src = centreRow
			}
			start := (oy+py)*img.Stride + q*m
			copy(img.Pix[start:start+dim*m], src)
		}
	}
	return img
}

// fillWhite sets every byte of b to 255 by doubling copies (a byte loop
// is not turned into a memset for values other than 0).
func fillWhite(b []byte) {
	if len(b) == 0 {
		return
	}
	b[0] = 255
	for n := 1; n < len(b); n *= 2 {
		copy(b[n:], b[:n])
	}
}

// WritePNGs writes the n frames of slot as dir/frame-01.png ... and returns
// their paths. They are accepted only while slot lies within the server's
// window (a few seconds): exported frames are for inspection and tests.
func (l *Loop) WritePNGs(dir string, slot int64) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("watermark: creating %s: %w", dir, err)
	}
	var paths []string
	for i, f := range l.Frames(slot) {
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

// WriteGIF writes what the phone shows from start for d as an animated GIF
// (played once: its stamps are only valid for the slots it covers). GIF
// delays are whole hundredths of a second, so the rate is rounded (15 fps →
// 7 cs, 14.3 fps) and the animation drifts from the slot clock.
func (l *Loop) WriteGIF(w io.Writer, start time.Time, d time.Duration) error {
	pal := make(color.Palette, 256)
	for i := range pal {
		pal[i] = color.Gray{Y: uint8(i)}
	}
	delay := max(2, int(math.Round(100/l.Params.FrameRate)))
	g := &gif.GIF{LoopCount: -1}
	for _, f := range l.Timeline(start).Frames(int(d.Seconds()*l.Params.FrameRate) + 1) {
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
	src := l.Frame(0, 0)
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
