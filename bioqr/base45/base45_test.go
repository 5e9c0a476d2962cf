package base45

import (
	"bytes"
	"errors"
	"testing"
)

// Test vectors of RFC 9285, section 4.
func TestRFC9285Vectors(t *testing.T) {
	for _, v := range []struct{ plain, enc string }{
		{"AB", "BB8"},
		{"Hello!!", "%69 VD92EX0"},
		{"base-45", "UJCLQE7W581"},
		{"ietf!", "QED8WEX0"},
		{"", ""},
	} {
		if got := Encode([]byte(v.plain)); got != v.enc {
			t.Errorf("Encode(%q) = %q, want %q", v.plain, got, v.enc)
		}
		got, err := Decode(v.enc)
		if err != nil || string(got) != v.plain {
			t.Errorf("Decode(%q) = %q, %v", v.enc, got, err)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, s := range []string{"GGW", "ZZZ", "A", "abc", "BB8A", "::"} {
		if _, err := Decode(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("Decode(%q) accepted: %v", s, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("%69 VD92EX0")
	f.Add("GGW")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := Decode(s)
		if err != nil {
			return
		}
		if Encode(b) != s {
			t.Fatalf("non-canonical encoding %q accepted", s)
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{0, 255, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Decode(Encode(b))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("round trip of %x: %x, %v", b, got, err)
		}
	})
}
