package cli

import (
	"net/url"
	"testing"
)

func TestPageImage(t *testing.T) {
	base, _ := url.Parse("https://localhost:8443/qmsp/gateways/GW-0001/")
	for _, tc := range []struct{ page, want string }{
		{`<img id="qr" src="qr.png" alt="payment code">`, "https://localhost:8443/qmsp/gateways/GW-0001/qr.png"},
		{`<IMG SRC='/x/y.png?a=1&amp;b=2'>`, "https://localhost:8443/x/y.png?a=1&b=2"},
		{`<img alt=x src="http://127.0.0.1:8480/qr.png">`, "http://127.0.0.1:8480/qr.png"},
	} {
		got, err := pageImage([]byte(tc.page), base)
		if err != nil || got != tc.want {
			t.Errorf("pageImage(%q) = %q, %v; want %q", tc.page, got, err, tc.want)
		}
	}
	for _, bad := range []string{``, `<p>no image</p>`, `<img src="file:///etc/passwd">`, `<img src="javascript:alert(1)">`} {
		if got, err := pageImage([]byte(bad), base); err == nil {
			t.Errorf("pageImage(%q) = %q, want an error", bad, got)
		}
	}
}

// FuzzPageImage: whatever the page, the link followed is an absolute
// http(s) URL (never a file or another scheme).
func FuzzPageImage(f *testing.F) {
	f.Add(`<img id="qr" src="qr.png">`)
	f.Add(`<img src="//evil.example/x.png">`)
	f.Add(`<img src="file:///etc/passwd">`)
	base, _ := url.Parse("https://localhost:8443/qmsp/gateways/GW-0001/")
	f.Fuzz(func(t *testing.T, page string) {
		got, err := pageImage([]byte(page), base)
		if err != nil {
			return
		}
		u, perr := url.Parse(got)
		if perr != nil || !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") {
			t.Fatalf("pageImage(%q) = %q: not an absolute http(s) URL", page, got)
		}
	})
}
