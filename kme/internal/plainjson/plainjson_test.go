package plainjson

import (
	"encoding/json"
	"strings"
	"testing"
)

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

// FuzzString: when String accepts, the body and the rest make up the input
// around one closing quote, and encoding/json decodes the quoted body to
// the same string; when it refuses, the input's string up to its first
// quote (if any) holds an escape, a control character or non-ASCII.
func FuzzString(f *testing.F) {
	for _, s := range []string{`abc","x"`, `"`, `a\"b"`, "a\x1fb\"", "é\"", `abc`, ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		str, rest, ok := String(s)
		if !ok {
			if str != "" || rest != "" {
				t.Fatalf("refused %q but returned %q, %q", s, str, rest)
			}
			body, _, found := strings.Cut(s, `"`)
			if found && strings.IndexFunc(body, func(r rune) bool { return r < 0x20 || r >= 0x7f || r == '\\' }) < 0 {
				t.Fatalf("refused %q whose string %q is plain", s, body)
			}
			return
		}
		if s != str+`"`+rest {
			t.Fatalf("%q split into %q and %q", s, str, rest)
		}
		var dec string
		if err := json.Unmarshal([]byte(`"`+str+`"`), &dec); err != nil || dec != str {
			t.Fatalf("accepted %q, which encoding/json reads as %q (%v)", str, dec, err)
		}
	})
}
