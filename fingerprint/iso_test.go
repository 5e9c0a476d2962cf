package fingerprint_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/qshield/qshield/fingerprint"
	"github.com/qshield/qshield/fingerprint/fvc"
)

// fvcRoot returns the FVC2002 data directory or skips the test.
func fvcRoot(t testing.TB) string {
	t.Helper()
	dir, err := fvc.DataDir()
	if errors.Is(err, fvc.ErrDataUnset) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// knownRecord is a hand-assembled record: 2 minutiae, one extended data area.
var knownRecord = []byte{
	'F', 'M', 'R', 0, ' ', '2', '0', 0,
	0, 0, 0, 48, // total length
	0x10, 0x2a, // certified 1, device 0x02a
	0x01, 0x2c, 0x01, 0x90, // 300 x 400
	0x00, 0xc5, 0x00, 0xc5, // 197 x 197 px/cm
	1, 0, // one view, reserved
	3, 0x12, 80, 2, // finger 3, view 1, impression 2, quality 80, 2 minutiae
	0x40, 0x0a, 0x00, 0x14, 64, 50, // ending at (10,20), 90°, quality 50
	0x81, 0x00, 0x01, 0x8f, 255, 0, // bifurcation at (256,399), 358.6°, no quality
	0x00, 0x06, // extended data: 6 bytes
	0x00, 0x01, 0x00, 0x06, 0xab, 0xcd, // area type 1, length 6, 2 data bytes
}

func TestParseKnownRecord(t *testing.T) {
	tp, err := fingerprint.ParseISO(knownRecord)
	if err != nil {
		t.Fatal(err)
	}
	if tp.CaptureCertified != 1 || tp.CaptureDevice != 0x2a || tp.Width != 300 || tp.Height != 400 ||
		tp.ResX != 197 || tp.ResY != 197 || tp.Finger != 3 || tp.ViewNumber != 1 || tp.Impression != 2 ||
		tp.Quality != 80 || len(tp.MoreViews) != 0 {
		t.Fatalf("header fields wrong: %+v", tp)
	}
	want := []fingerprint.Minutia{
		{X: 10, Y: 20, Angle: math.Pi / 2, Type: fingerprint.TypeRidgeEnding, Quality: 50},
		{X: 256, Y: 399, Angle: 255 * 2 * math.Pi / 256, Type: fingerprint.TypeBifurcation},
	}
	if len(tp.Minutiae) != len(want) {
		t.Fatalf("got %d minutiae", len(tp.Minutiae))
	}
	for i, m := range tp.Minutiae {
		w := want[i]
		if m.X != w.X || m.Y != w.Y || m.Type != w.Type || m.Quality != w.Quality || math.Abs(m.Angle-w.Angle) > 1e-12 {
			t.Errorf("minutia %d = %+v, want %+v", i, m, w)
		}
	}
	if !bytes.Equal(tp.Extended, []byte{0, 1, 0, 6, 0xab, 0xcd}) {
		t.Errorf("extended = %x", tp.Extended)
	}
	out, err := tp.MarshalISO()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, knownRecord) {
		t.Fatalf("re-encoded record differs:\n got %x\nwant %x", out, knownRecord)
	}
}

func TestRoundTripRealFiles(t *testing.T) {
	root := fvcRoot(t)
	files, err := filepath.Glob(filepath.Join(root, "DB*_B", "*.iso"))
	if err != nil || len(files) == 0 {
		t.Skipf("no .iso files under %s", root)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tp, err := fingerprint.ParseISO(data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(tp.Minutiae) == 0 {
			t.Errorf("%s: no minutiae", f)
		}
		out, err := tp.MarshalISO()
		if err != nil {
			t.Errorf("%s: marshal: %v", f, err)
			continue
		}
		if !bytes.Equal(out, data) {
			t.Errorf("%s: round trip differs", f)
		}
	}
}

func TestRoundTripSynthetic(t *testing.T) {
	for f := 0; f < 10; f++ {
		for i := 0; i < 4; i++ {
			tp := fingerprint.Synthetic(7, f, i)
			data, err := tp.MarshalISO()
			if err != nil {
				t.Fatalf("finger %d impression %d: %v", f, i, err)
			}
			back, err := fingerprint.ParseISO(data)
			if err != nil {
				t.Fatalf("finger %d impression %d: %v", f, i, err)
			}
			if len(back.Minutiae) != len(tp.Minutiae) {
				t.Fatalf("minutiae count %d, want %d", len(back.Minutiae), len(tp.Minutiae))
			}
			for k, m := range back.Minutiae {
				o := tp.Minutiae[k]
				if m.X != o.X || m.Y != o.Y || m.Type != o.Type || m.AngleByte() != o.AngleByte() {
					t.Fatalf("minutia %d: %+v vs %+v", k, m, o)
				}
			}
			again, err := back.MarshalISO()
			if err != nil || !bytes.Equal(again, data) {
				t.Fatalf("second round trip differs (%v)", err)
			}
		}
	}
}

func TestMultipleViewsRoundTrip(t *testing.T) {
	tp := fingerprint.Synthetic(3, 1, 1)
	tp.MoreViews = []fingerprint.View{{Finger: 2, ViewNumber: 1, Quality: 40, Minutiae: fingerprint.Synthetic(3, 2, 1).Minutiae[:5]}}
	data, err := tp.MarshalISO()
	if err != nil {
		t.Fatal(err)
	}
	back, err := fingerprint.ParseISO(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.MoreViews) != 1 || len(back.MoreViews[0].Minutiae) != 5 || back.MoreViews[0].Finger != 2 {
		t.Fatalf("second view lost: %+v", back.MoreViews)
	}
}

// mutate returns a copy of knownRecord changed by f.
func mutate(f func([]byte) []byte) []byte {
	return f(append([]byte(nil), knownRecord...))
}

func setLen(b []byte) []byte {
	binary.BigEndian.PutUint32(b[8:12], uint32(len(b)))
	return b
}

func TestParseRejectsMalformed(t *testing.T) {
	cases := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"truncated header", knownRecord[:20]},
		{"header only", setLen(append([]byte(nil), knownRecord[:24]...))},
		{"bad magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"bad version", mutate(func(b []byte) []byte { b[5] = '3'; return b })},
		{"length field too long", mutate(func(b []byte) []byte { b[11]++; return b })},
		{"length field too short", mutate(func(b []byte) []byte { b[11]--; return b })},
		{"length field huge", mutate(func(b []byte) []byte { b[8] = 0xff; return b })},
		{"truncated record, honest length", setLen(append([]byte(nil), knownRecord[:40]...))},
		{"truncated record, original length", knownRecord[:len(knownRecord)-1]},
		{"minutiae count overruns", mutate(func(b []byte) []byte { b[27] = 200; return b })},
		{"minutiae count overruns by one", mutate(func(b []byte) []byte { b[27] = 3; return b })},
		{"minutiae count 255, tiny record", mutate(func(b []byte) []byte { b[27] = 255; return b })},
		{"extended length overruns", mutate(func(b []byte) []byte { b[41] = 7; return b })},
		{"extended length 0xffff", mutate(func(b []byte) []byte { b[40], b[41] = 0xff, 0xff; return b })},
		{"extended area length lies", mutate(func(b []byte) []byte { b[45] = 9; return b })},
		{"extended area length < 4", mutate(func(b []byte) []byte { b[45] = 2; return b })},
		{"extended area type 0", mutate(func(b []byte) []byte { b[43] = 0; return b })},
		{"trailing bytes", setLen(append(append([]byte(nil), knownRecord...), 0, 0))},
		{"zero views", mutate(func(b []byte) []byte { b[22] = 0; return b })},
		{"two views declared, one present", mutate(func(b []byte) []byte { b[22] = 2; return b })},
		{"reserved header byte", mutate(func(b []byte) []byte { b[23] = 1; return b })},
		{"finger position 11", mutate(func(b []byte) []byte { b[24] = 11; return b })},
		{"finger quality 101", mutate(func(b []byte) []byte { b[26] = 101; return b })},
		{"minutia type 3", mutate(func(b []byte) []byte { b[28] |= 0xc0; return b })},
		{"minutia reserved bits", mutate(func(b []byte) []byte { b[30] |= 0x40; return b })},
		{"minutia quality 101", mutate(func(b []byte) []byte { b[33] = 101; return b })},
		{"minutia outside image", mutate(func(b []byte) []byte { b[30], b[31] = 0x01, 0x90; return b })},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tp, err := fingerprint.ParseISO(c.data)
			if err == nil {
				t.Fatalf("accepted: %+v", tp)
			}
			if !errors.Is(err, fingerprint.ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			if tp != nil {
				t.Fatal("returned a template with an error")
			}
		})
	}
}

func TestMarshalRejectsUnencodable(t *testing.T) {
	base := func() *fingerprint.Template { return fingerprint.Synthetic(1, 1, 1) }
	cases := []struct {
		name string
		f    func(*fingerprint.Template)
	}{
		{"negative x", func(t *fingerprint.Template) { t.Minutiae[0].X = -1 }},
		{"x beyond 14 bits", func(t *fingerprint.Template) { t.Width = 0; t.Minutiae[0].X = 1 << 14 }},
		{"x outside image", func(t *fingerprint.Template) { t.Minutiae[0].X = t.Width }},
		{"type 3", func(t *fingerprint.Template) { t.Minutiae[0].Type = 3 }},
		{"NaN angle", func(t *fingerprint.Template) { t.Minutiae[0].Angle = math.NaN() }},
		{"quality 101", func(t *fingerprint.Template) { t.Quality = 101 }},
		{"finger 11", func(t *fingerprint.Template) { t.Finger = 11 }},
		{"256 minutiae", func(t *fingerprint.Template) {
			t.Minutiae = make([]fingerprint.Minutia, 256)
		}},
		{"width too big", func(t *fingerprint.Template) { t.Width = 70000 }},
		{"bad extended data", func(t *fingerprint.Template) { t.Extended = []byte{0, 1, 0} }},
		{"device id too big", func(t *fingerprint.Template) { t.CaptureDevice = 0x1000 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tp := base()
			c.f(tp)
			if _, err := tp.MarshalISO(); !errors.Is(err, fingerprint.ErrFormat) {
				t.Fatalf("got %v, want ErrFormat", err)
			}
		})
	}
	var nilT *fingerprint.Template
	if _, err := nilT.MarshalISO(); !errors.Is(err, fingerprint.ErrFormat) {
		t.Fatalf("nil template: %v", err)
	}
}

func TestAngleByte(t *testing.T) {
	for b := 0; b < 256; b++ {
		m := fingerprint.Minutia{Angle: fingerprint.AngleFromByte(uint8(b))}
		if m.AngleByte() != uint8(b) {
			t.Fatalf("angle byte %d round-trips to %d", b, m.AngleByte())
		}
	}
	if got := (fingerprint.Minutia{Angle: -math.Pi / 2}).AngleByte(); got != 192 {
		t.Fatalf("-90° → %d, want 192", got)
	}
	if got := (fingerprint.Minutia{Angle: 2*math.Pi - 0.001}).AngleByte(); got != 0 {
		t.Fatalf("359.9° → %d, want 0", got)
	}
}

func FuzzParseISO(f *testing.F) {
	f.Add(knownRecord)
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*.iso"))
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("FMR\x00 20\x00\x00\x00\x00\x18"))
	m := fingerprint.NewMatcher()
	ref := m.Prepare(fingerprint.Synthetic(1, 1, 1))
	mp := fingerprint.DefaultParams()
	mp.MergeMinPairs, mp.MergeStrain = 4, 0.25
	merge := fingerprint.NewMatcher(fingerprint.WithParams(mp))
	f.Fuzz(func(t *testing.T, data []byte) {
		tp, err := fingerprint.ParseISO(data)
		if err != nil {
			if !errors.Is(err, fingerprint.ErrFormat) {
				t.Fatalf("error does not wrap ErrFormat: %v", err)
			}
			return
		}
		out, err := tp.MarshalISO()
		if err != nil {
			t.Fatalf("parsed record does not re-encode: %v", err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("round trip differs:\n got %x\nwant %x", out, data)
		}
		// Whatever parses must also be matchable without trouble.
		p := m.Prepare(tp)
		s := m.Score(p, ref)
		if math.IsNaN(s) || math.IsInf(s, 0) || s < 0 {
			t.Fatalf("score %v", s)
		}
		if r := m.Score(ref, p); r != s {
			t.Fatalf("Score not symmetric: %v vs %v", s, r)
		}
		if c := m.CylinderScore(p, p); math.IsNaN(c) || c < 0 || c > 1 {
			t.Fatalf("cylinder self-score %v outside [0, 1]", c)
		}
		// Graph merging (Params.MergeMinPairs) keeps the same invariants.
		for _, q := range []*fingerprint.Prepared{ref, p} {
			g := merge.GraphScore(p, q)
			if math.IsNaN(g) || math.IsInf(g, 0) || g < 0 || merge.GraphScore(q, p) != g {
				t.Fatalf("merged graph score %v (reverse %v)", g, merge.GraphScore(q, p))
			}
		}
	})
}
