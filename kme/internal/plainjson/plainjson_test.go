package plainjson

import "testing"

func TestString(t *testing.T) {
	for _, c := range []struct {
		in, str, rest string
		ok            bool
	}{
		{`abc","x"`, "abc", `,"x"`, true},
		{`"`, "", "", true},
		{`a\"b"`, "", "", false},    // an escape: encoding/json's business
		{"a\x1fb\"", "", "", false}, // a control character
		{"é\"", "", "", false},      // not ASCII
		{`abc`, "", "", false},      // no closing quote
	} {
		str, rest, ok := String(c.in)
		if str != c.str || rest != c.rest || ok != c.ok {
			t.Errorf("String(%q) = %q, %q, %v; want %q, %q, %v", c.in, str, rest, ok, c.str, c.rest, c.ok)
		}
	}
}
