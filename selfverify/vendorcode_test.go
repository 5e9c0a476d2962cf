package selfverify

import (
	"errors"
	"testing"
)

func TestParseVendorCode(t *testing.T) {
	c, err := ParseVendorCode("SV1|https://shop.example:8443|coffee")
	if err != nil || c.URL != "https://shop.example:8443" || c.Item != "coffee" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []string{
		"", "SV1|", "SV1|https://shop.example", "SV2|https://shop.example|tea",
		"SV1|http://shop.example|tea", "SV1|https://shop.example/|tea", "SV1|https://shop.example/x|tea",
		"SV1|https://shop.example?a=1|tea", "SV1|https://u@shop.example|tea", "SV1|https://Shop.example|tea",
		"SV1|https://shop.example|", "SV1|https://shop.example|tea|x", "SV1|https://shop.example:|tea",
		"SV1|https://|tea", "SV1|https://shop.example#f|tea", "SV1|javascript:alert(1)|tea",
	} {
		if _, err := ParseVendorCode(bad); !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// FuzzParseVendorCode: an accepted code is canonical (its text is the
// input) and its URL is an https origin.
func FuzzParseVendorCode(f *testing.F) {
	for _, s := range []string{"SV1|https://shop.example:8443|coffee", "SV1|https://[::1]:1|a", "SV1|https://a|b|c", "SV1|http://a|b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseVendorCode(s)
		if err != nil {
			return
		}
		if c.String() != s {
			t.Fatalf("accepted %q, which reads back as %q", s, c.String())
		}
		b, err := c.MarshalText()
		if err != nil || string(b) != s {
			t.Fatalf("marshal of accepted %q: %q %v", s, b, err)
		}
		if len(c.URL) < 9 || c.URL[:8] != "https://" {
			t.Fatalf("accepted a non-https vendor %q", c.URL)
		}
	})
}
