package selfverify

import (
	"fmt"
	"net/url"
	"strings"
)

// VendorCode is what a vendor's till shows as a QR code for a phone to
// pay: the vendor's API base URL and one item of its catalogue. It carries
// no price and no key: the phone fetches the vendor's signed-off identity
// (ID_V, P_V, from which it rebuilds Q_V with the operator's key) and the
// price from the vendor itself, so a forged code can at worst point at
// another registered vendor, whose name the phone shows before paying.
//
// Text form: "SV1|" base URL "|" item, e.g.
// "SV1|https://shop.example:8443|coffee". The URL is https, with a host,
// an optional port and nothing else (the vendor's API is under
// /v1/vendor/ of that origin).
type VendorCode struct {
	URL  string
	Item string
}

const vendorCodePrefix = "SV1|"

// MarshalText returns the code's canonical text.
func (c VendorCode) MarshalText() ([]byte, error) {
	if _, err := ParseVendorCode(vendorCodePrefix + c.URL + "|" + c.Item); err != nil {
		return nil, err
	}
	return []byte(vendorCodePrefix + c.URL + "|" + c.Item), nil
}

// ParseVendorCode reads a vendor's payment code; only the canonical text of
// a code is accepted (an https origin without path, query, fragment or
// user, lower-case scheme and host, and an item ID as ecqv.ValidateID
// allows).
func ParseVendorCode(s string) (*VendorCode, error) {
	rest, ok := strings.CutPrefix(s, vendorCodePrefix)
	if !ok {
		return nil, invalid("not a vendor payment code")
	}
	base, item, ok := strings.Cut(rest, "|")
	if !ok || strings.Contains(item, "|") {
		return nil, invalid("vendor code: want SV1|https://host[:port]|item")
	}
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Hostname() == "" || u.User != nil || u.Opaque != "" ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery || u.String() != base ||
		strings.ToLower(u.Host) != u.Host || strings.HasSuffix(base, ":") {
		return nil, invalid("vendor code: the vendor's address must be https://host[:port]")
	}
	if err := checkText("vendor code item", item, true); err != nil {
		return nil, err
	}
	return &VendorCode{URL: base, Item: item}, nil
}

// String is the code's text.
func (c VendorCode) String() string { return fmt.Sprintf("%s%s|%s", vendorCodePrefix, c.URL, c.Item) }
