// Package plainjson holds the scanning step shared by the fast JSON paths of
// the key manager (kme) and its ETSI GS QKD 014 client (kme/etsi014): both
// read the common case of a message — strings of printable ASCII without
// escapes — without encoding/json, and fall back to it for anything else.
package plainjson

// String splits s after the body of a JSON string made of printable ASCII
// other than '"' and '\\' (which decodes to itself) and its closing quote.
// ok is false when s holds anything else before the quote, or no quote: the
// caller then decodes the message with encoding/json.
func String(s string) (str, rest string, ok bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return s[:i], s[i+1:], true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return "", "", false
		}
	}
	return "", "", false
}
