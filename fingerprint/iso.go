package fingerprint

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrFormat is wrapped by every error ParseISO and MarshalISO return for a record
// that is not a well-formed ISO/IEC 19794-2:2005 finger minutiae record.
var ErrFormat = errors.New("fingerprint: malformed ISO/IEC 19794-2 record")

// MinutiaType is the two-bit minutia type of ISO/IEC 19794-2.
type MinutiaType uint8

// Minutia types.
const (
	TypeOther       MinutiaType = 0 // 00: other / unknown
	TypeRidgeEnding MinutiaType = 1 // 01: ridge ending
	TypeBifurcation MinutiaType = 2 // 10: ridge bifurcation
)

func (t MinutiaType) String() string {
	switch t {
	case TypeOther:
		return "other"
	case TypeRidgeEnding:
		return "ending"
	case TypeBifurcation:
		return "bifurcation"
	}
	return fmt.Sprintf("MinutiaType(%d)", uint8(t))
}

// Minutia is one minutia point.
//
// X and Y are pixel coordinates with the origin at the top left and Y pointing
// down. Angle is in radians in [0, 2π), measured counter-clockwise (as seen on
// the image) from the horizontal axis pointing right, as ISO/IEC 19794-2 defines
// it; the record stores it as a byte in units of 2π/256.
type Minutia struct {
	X, Y    int
	Angle   float64
	Type    MinutiaType
	Quality uint8 // 0 = not reported, else 1..100
}

// AngleByte returns the minutia angle quantised to the record's 2π/256 units.
func (m Minutia) AngleByte() uint8 { return angleToByte(m.Angle) }

// AngleFromByte converts a record angle byte to radians.
func AngleFromByte(b uint8) float64 { return float64(b) * (2 * math.Pi / 256) }

func angleToByte(a float64) uint8 {
	if math.IsNaN(a) || math.IsInf(a, 0) {
		return 0
	}
	v := math.Round(a * 256 / (2 * math.Pi))
	v = math.Mod(v, 256)
	if v < 0 {
		v += 256
	}
	return uint8(v)
}

// View is one finger view of a record: one impression of one finger.
type View struct {
	Finger     int // finger position code 0..10 (0 = unknown)
	ViewNumber int // 0..15
	Impression int // impression type 0..15 (0 live-scan plain, 1 rolled, ...)
	Quality    int // finger quality 0..100
	Minutiae   []Minutia
	// Extended is the raw extended data (the bytes after the 2-byte extended data
	// block length), kept so that a record round-trips; nil when there is none.
	Extended []byte
}

// Template is a parsed finger minutiae record. Its first finger view is embedded
// (t.Minutiae, t.Finger, ...); a record with several views keeps the others in
// MoreViews.
type Template struct {
	// CaptureCertified is the 4-bit certification flag, CaptureDevice the 12-bit
	// capture device type ID.
	CaptureCertified int
	CaptureDevice    int
	Width, Height    int // image size in pixels
	ResX, ResY       int // resolution in pixels per centimetre (197 ≈ 500 dpi)
	View
	MoreViews []View
}

const (
	isoHeaderLen     = 24
	isoViewHeaderLen = 4
	isoMinutiaLen    = 6
	maxCoord         = 1<<14 - 1
)

var (
	isoMagic   = [4]byte{'F', 'M', 'R', 0}
	isoVersion = [4]byte{' ', '2', '0', 0}
)

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrFormat}, args...)...)
}

// ParseISO parses an ISO/IEC 19794-2:2005 finger minutiae record. It refuses,
// with an error wrapping ErrFormat, anything that is not exactly one well-formed
// record: a wrong magic or version, a total length that disagrees with len(data),
// a truncated header, a minutiae count or extended data length that overruns the
// record, reserved bits or type codes that are set, out-of-range values, or
// trailing bytes. It never panics and does not retain data.
func ParseISO(data []byte) (*Template, error) {
	if len(data) < isoHeaderLen {
		return nil, formatErr("record of %d bytes is shorter than the %d-byte header", len(data), isoHeaderLen)
	}
	if [4]byte(data[0:4]) != isoMagic {
		return nil, formatErr("bad magic %q", data[0:4])
	}
	if [4]byte(data[4:8]) != isoVersion {
		return nil, formatErr("unsupported version %q (want \" 20\")", data[4:8])
	}
	total := binary.BigEndian.Uint32(data[8:12])
	if uint64(total) != uint64(len(data)) {
		return nil, formatErr("record length field says %d bytes, record has %d", total, len(data))
	}
	t := &Template{}
	ce := binary.BigEndian.Uint16(data[12:14])
	t.CaptureCertified = int(ce >> 12)
	t.CaptureDevice = int(ce & 0x0fff)
	t.Width = int(binary.BigEndian.Uint16(data[14:16]))
	t.Height = int(binary.BigEndian.Uint16(data[16:18]))
	t.ResX = int(binary.BigEndian.Uint16(data[18:20]))
	t.ResY = int(binary.BigEndian.Uint16(data[20:22]))
	nViews := int(data[22])
	if data[23] != 0 {
		return nil, formatErr("reserved header byte is %#x, want 0", data[23])
	}
	if nViews == 0 {
		return nil, formatErr("record has no finger views")
	}
	off := isoHeaderLen
	for v := 0; v < nViews; v++ {
		view, n, err := parseView(data[off:], t.Width, t.Height)
		if err != nil {
			return nil, fmt.Errorf("%w (finger view %d at offset %d)", err, v, off)
		}
		off += n
		if v == 0 {
			t.View = view
		} else {
			t.MoreViews = append(t.MoreViews, view)
		}
	}
	if off != len(data) {
		return nil, formatErr("%d trailing bytes after the last finger view", len(data)-off)
	}
	return t, nil
}

// parseView parses one finger view from the start of b and returns it and the
// number of bytes it occupies.
func parseView(b []byte, width, height int) (View, int, error) {
	var v View
	if len(b) < isoViewHeaderLen {
		return v, 0, formatErr("truncated finger view header")
	}
	v.Finger = int(b[0])
	if v.Finger > 10 {
		return v, 0, formatErr("finger position %d out of range 0..10", v.Finger)
	}
	v.ViewNumber = int(b[1] >> 4)
	v.Impression = int(b[1] & 0x0f)
	v.Quality = int(b[2])
	if v.Quality > 100 {
		return v, 0, formatErr("finger quality %d out of range 0..100", v.Quality)
	}
	n := int(b[3])
	need := isoViewHeaderLen + n*isoMinutiaLen + 2
	if len(b) < need {
		return v, 0, formatErr("%d minutiae need %d bytes, only %d remain", n, need, len(b))
	}
	v.Minutiae = make([]Minutia, n)
	p := isoViewHeaderLen
	for i := range v.Minutiae {
		xw := binary.BigEndian.Uint16(b[p:])
		yw := binary.BigEndian.Uint16(b[p+2:])
		typ := MinutiaType(xw >> 14)
		if typ > TypeBifurcation {
			return v, 0, formatErr("minutia %d has reserved type code 3", i)
		}
		if yw>>14 != 0 {
			return v, 0, formatErr("minutia %d has reserved bits set", i)
		}
		m := Minutia{
			X:       int(xw & maxCoord),
			Y:       int(yw & maxCoord),
			Angle:   AngleFromByte(b[p+4]),
			Type:    typ,
			Quality: b[p+5],
		}
		if m.Quality > 100 {
			return v, 0, formatErr("minutia %d quality %d out of range 0..100", i, m.Quality)
		}
		if (width > 0 && m.X >= width) || (height > 0 && m.Y >= height) {
			return v, 0, formatErr("minutia %d at (%d,%d) outside the %dx%d image", i, m.X, m.Y, width, height)
		}
		v.Minutiae[i] = m
		p += isoMinutiaLen
	}
	extLen := int(binary.BigEndian.Uint16(b[p:]))
	p += 2
	if len(b)-p < extLen {
		return v, 0, formatErr("extended data length %d overruns the record (%d bytes remain)", extLen, len(b)-p)
	}
	if extLen > 0 {
		ext := b[p : p+extLen]
		if err := checkExtended(ext); err != nil {
			return v, 0, err
		}
		v.Extended = append([]byte(nil), ext...)
	}
	return v, p + extLen, nil
}

// checkExtended checks that ext is a sequence of extended data areas, each a
// 2-byte type ID, a 2-byte length counting the 4-byte area header, and data.
func checkExtended(ext []byte) error {
	for off := 0; off < len(ext); {
		if len(ext)-off < 4 {
			return formatErr("truncated extended data area header")
		}
		typ := binary.BigEndian.Uint16(ext[off:])
		l := int(binary.BigEndian.Uint16(ext[off+2:]))
		if typ == 0 {
			return formatErr("extended data area with reserved type 0")
		}
		if l < 4 || l > len(ext)-off {
			return formatErr("extended data area length %d invalid (%d bytes remain)", l, len(ext)-off)
		}
		off += l
	}
	return nil
}

// MarshalISO encodes t as an ISO/IEC 19794-2:2005 finger minutiae record. It
// refuses (with an error wrapping ErrFormat) a template that cannot be encoded
// exactly: values out of range, more than 255 minutiae in a view, or an
// oversized extended data block. A record produced by ParseISO round-trips
// byte for byte.
func (t *Template) MarshalISO() ([]byte, error) {
	if t == nil {
		return nil, formatErr("nil template")
	}
	for _, c := range []struct {
		name     string
		val, max int
	}{
		{"certification flag", t.CaptureCertified, 15},
		{"capture device type", t.CaptureDevice, 0x0fff},
		{"width", t.Width, math.MaxUint16},
		{"height", t.Height, math.MaxUint16},
		{"x resolution", t.ResX, math.MaxUint16},
		{"y resolution", t.ResY, math.MaxUint16},
	} {
		if c.val < 0 || c.val > c.max {
			return nil, formatErr("%s %d out of range 0..%d", c.name, c.val, c.max)
		}
	}
	views := append([]View{t.View}, t.MoreViews...)
	if len(views) > 255 {
		return nil, formatErr("%d finger views, at most 255", len(views))
	}
	size := isoHeaderLen
	for i := range views {
		size += isoViewHeaderLen + len(views[i].Minutiae)*isoMinutiaLen + 2 + len(views[i].Extended)
	}
	if size > math.MaxUint32 {
		return nil, formatErr("record too long")
	}
	out := make([]byte, isoHeaderLen, size)
	copy(out[0:4], isoMagic[:])
	copy(out[4:8], isoVersion[:])
	binary.BigEndian.PutUint32(out[8:12], uint32(size))
	binary.BigEndian.PutUint16(out[12:14], uint16(t.CaptureCertified<<12|t.CaptureDevice))
	binary.BigEndian.PutUint16(out[14:16], uint16(t.Width))
	binary.BigEndian.PutUint16(out[16:18], uint16(t.Height))
	binary.BigEndian.PutUint16(out[18:20], uint16(t.ResX))
	binary.BigEndian.PutUint16(out[20:22], uint16(t.ResY))
	out[22] = byte(len(views))
	out[23] = 0
	for vi := range views {
		v := &views[vi]
		switch {
		case v.Finger < 0 || v.Finger > 10:
			return nil, formatErr("view %d: finger position %d out of range 0..10", vi, v.Finger)
		case v.ViewNumber < 0 || v.ViewNumber > 15:
			return nil, formatErr("view %d: view number %d out of range 0..15", vi, v.ViewNumber)
		case v.Impression < 0 || v.Impression > 15:
			return nil, formatErr("view %d: impression type %d out of range 0..15", vi, v.Impression)
		case v.Quality < 0 || v.Quality > 100:
			return nil, formatErr("view %d: quality %d out of range 0..100", vi, v.Quality)
		case len(v.Minutiae) > 255:
			return nil, formatErr("view %d: %d minutiae, at most 255", vi, len(v.Minutiae))
		case len(v.Extended) > math.MaxUint16:
			return nil, formatErr("view %d: extended data of %d bytes, at most 65535", vi, len(v.Extended))
		}
		if err := checkExtended(v.Extended); err != nil {
			return nil, fmt.Errorf("%w (view %d)", err, vi)
		}
		out = append(out, byte(v.Finger), byte(v.ViewNumber<<4|v.Impression), byte(v.Quality), byte(len(v.Minutiae)))
		for i, m := range v.Minutiae {
			switch {
			case m.X < 0 || m.X > maxCoord || m.Y < 0 || m.Y > maxCoord:
				return nil, formatErr("view %d minutia %d: coordinates (%d,%d) out of range 0..%d", vi, i, m.X, m.Y, maxCoord)
			case t.Width > 0 && m.X >= t.Width, t.Height > 0 && m.Y >= t.Height:
				return nil, formatErr("view %d minutia %d: (%d,%d) outside the %dx%d image", vi, i, m.X, m.Y, t.Width, t.Height)
			case m.Type > TypeBifurcation:
				return nil, formatErr("view %d minutia %d: invalid type %d", vi, i, m.Type)
			case m.Quality > 100:
				return nil, formatErr("view %d minutia %d: quality %d out of range 0..100", vi, i, m.Quality)
			case math.IsNaN(m.Angle) || math.IsInf(m.Angle, 0):
				return nil, formatErr("view %d minutia %d: angle is not finite", vi, i)
			}
			out = binary.BigEndian.AppendUint16(out, uint16(m.Type)<<14|uint16(m.X))
			out = binary.BigEndian.AppendUint16(out, uint16(m.Y))
			out = append(out, angleToByte(m.Angle), m.Quality)
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(v.Extended)))
		out = append(out, v.Extended...)
	}
	return out, nil
}
