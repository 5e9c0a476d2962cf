package pki

// The DER shape of the device-information extension, for tests that build
// non-canonical encodings (the codec is certinfo's).
type asn1Attr struct {
	Key   string `asn1:"utf8"`
	Value string `asn1:"utf8"`
}

type asn1Device struct {
	Version int
	Serial  string `asn1:"utf8"`
	Model   string `asn1:"utf8"`
	Kind    string `asn1:"utf8"`
	Attrs   []asn1Attr
}
