package emvqr

import (
	"bufio"
	"errors"
	"os"
	"strings"
	"testing"
)

func TestCRC16KnownAnswer(t *testing.T) {
	if got := CRC16([]byte("123456789")); got != 0x29B1 {
		t.Fatalf("CRC16(123456789) = %04X, want 29B1", got)
	}
	if got := CRC16(nil); got != 0xFFFF {
		t.Fatalf("CRC16(empty) = %04X, want FFFF", got)
	}
}

func publishedVectors(t *testing.T) []string {
	f, err := os.Open("testdata/published.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func TestPublishedPayloadCRCs(t *testing.T) {
	vs := publishedVectors(t)
	if len(vs) < 2 {
		t.Fatal("missing vectors")
	}
	for _, v := range vs {
		crc := CRC16([]byte(v[:len(v)-4]))
		if got := v[len(v)-4:]; got != strings.ToUpper(strings.TrimSpace(hex4(crc))) {
			t.Errorf("CRC of %q: computed %s, published %s", v[:30], hex4(crc), got)
		}
	}
	// The QRIS example splits cleanly but lacks the mandatory merchant
	// category code 52; the other has a 16-character city. Both are refused
	// as malformed, never as a CRC error.
	objs, err := ParseObjects(vs[0])
	if err != nil {
		t.Fatalf("ParseObjects(QRIS example): %v", err)
	}
	if v, _ := Lookup(objs, IDAmount); v != "144000" {
		t.Errorf("amount %q", v)
	}
	for _, v := range vs {
		if _, err := Parse(v); !errors.Is(err, ErrFormat) || errors.Is(err, ErrCRC) {
			t.Errorf("Parse(%.20q…) = %v, want ErrFormat", v, err)
		}
	}
}

func hex4(v uint16) string {
	const h = "0123456789ABCDEF"
	return string([]byte{h[v>>12], h[v>>8&15], h[v>>4&15], h[v&15]})
}

func sample(t *testing.T) string {
	amt := "25.50"
	s, err := Encode([]DataObject{
		{"00", "01"}, {"01", "12"},
		{"26", mustObjs(t, []DataObject{{"00", "DEV.QSHIELD"}, {"01", "shop-1"}})},
		{"52", "5411"}, {"53", "156"}, {"54", amt}, {"58", "CN"}, {"59", "Corner Shop"}, {"60", "Hangzhou"},
		{"80", mustObjs(t, []DataObject{{"00", "DEV.QSHIELD"}, {"01", "abc"}})},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustObjs(t *testing.T, o []DataObject) string {
	s, err := EncodeObjects(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEncodeParseRoundTrip(t *testing.T) {
	s := sample(t)
	p, err := Parse(s)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if v, _ := p.Get("54"); v != "25.50" {
		t.Fatalf("amount %q", v)
	}
	if p.Offset("80") <= 0 || !strings.HasPrefix(s[p.Offset("80"):], "80") {
		t.Fatalf("offset of 80 wrong: %d", p.Offset("80"))
	}
	for _, ok := range []string{"25.5", "100", "0.001"} {
		if err := CheckAmount(ok); err != nil {
			t.Errorf("CheckAmount(%q) = %v", ok, err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	good := sample(t)
	fix := func(s string) string { // recompute the CRC so that only the structure is wrong
		body := s[:len(s)-4]
		return body + hex4(CRC16([]byte(body)))
	}
	cases := map[string]struct {
		in   string
		want error
	}{
		"empty":             {"", ErrFormat},
		"flipped amount":    {strings.Replace(good, "25.50", "95.50", 1), ErrCRC},
		"lower-case CRC":    {good[:len(good)-4] + strings.ToLower(good[len(good)-4:]), ErrFormat},
		"CRC dropped zeros": {good[:len(good)-4] + "1", ErrFormat},
		"no format first":   {fix("0102120002" + good[10:]), ErrFormat},
		"length overrun":    {fix(strings.Replace(good, "5911Corner", "5999Corner", 1)), ErrFormat},
		"repeated ID":       {fix(strings.Replace(good, "5802CN", "5802CN5802CN", 1)), ErrFormat},
		"bad initiation":    {fix(strings.Replace(good, "010212", "010213", 1)), ErrFormat},
		"bad amount":        {fix(strings.Replace(good, "540525.50", "54052,.50", 1)), ErrFormat},
		"template sans GUI": {fix(strings.Replace(good, "0011DEV.QSHIELD0103abc", "0103abc0011DEV.QSHIELD", 1)), ErrFormat},
		"control character": {fix(strings.Replace(good, "Corner Shop", "Corner\nShop", 1)), ErrFormat},
		"missing name":      {fix(strings.Replace(good, "5911Corner Shop", "", 1)), ErrFormat},
		"too long":          {strings.Repeat("0", MaxPayload+1), ErrFormat},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(c.in)
			if !errors.Is(err, c.want) {
				t.Fatalf("Parse = %v, want %v", err, c.want)
			}
		})
	}
}

func TestEncodeRejects(t *testing.T) {
	if _, err := Encode([]DataObject{{"01", "12"}}); err == nil {
		t.Fatal("payload without 00 first accepted")
	}
	if _, err := Encode([]DataObject{{"00", "01"}, {"59", strings.Repeat("x", 100)}}); err == nil {
		t.Fatal("value of 100 characters accepted")
	}
	for _, bad := range []string{"", ".5", "1.2.3", "1,000", "12345678901234", "-1"} {
		if err := CheckAmount(bad); err == nil {
			t.Errorf("CheckAmount(%q) accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("00020101021226380016ID.CO.SHOPEE.WWW010201020815863724530336054061440005802ID5921PT. SHOPPEE INDONESIA6007JAKARTA62180814gen by go-qris63049635")
	f.Add("000201630400")
	f.Add("0002016304")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		// A parsed payload re-encodes to itself.
		again, err := Encode(p.Objects)
		if err != nil {
			t.Fatalf("re-encode of accepted payload failed: %v", err)
		}
		if again != s {
			t.Fatalf("re-encode differs:\n%q\n%q", again, s)
		}
	})
}
