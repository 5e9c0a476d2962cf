package qkd

import (
	"errors"
	"strings"
	"testing"
)

func TestKeyID(t *testing.T) {
	// RFC 9562 example UUID.
	const s = "919108f7-52d1-4320-9bac-f847db4148a8"
	b, err := ParseKeyID(strings.ToUpper(s))
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 0x91 || b[15] != 0xa8 || FormatKeyID(b) != s {
		t.Fatalf("round trip: % x → %s", b, FormatKeyID(b))
	}
	for _, bad := range []string{"", s[:35], s + "0", strings.Replace(s, "-", "_", 1), strings.Replace(s, "9", "g", 1), "919108f7-52d1-4320-9bac0f847db4148a8"} {
		if _, err := ParseKeyID(bad); !errors.Is(err, ErrKeyID) {
			t.Errorf("%q accepted", bad)
		}
	}
	id := NewKeyID()
	v, err := ParseKeyID(id)
	if err != nil || v[6]>>4 != 4 || v[8]>>6 != 2 {
		t.Fatalf("NewKeyID %s is not a version-4 UUID (%v)", id, err)
	}
	keys := RandomKeys(3, 32)
	if len(keys) != 3 || len(keys[2].Bytes) != 32 || keys[0].ID == keys[1].ID {
		t.Fatal("RandomKeys")
	}
}

func FuzzParseKeyID(f *testing.F) {
	f.Add("919108f7-52d1-4320-9bac-f847db4148a8")
	f.Add("919108F7-52D1-4320-9BAC-F847DB4148A8")
	f.Add("--------------------------------")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseKeyID(s)
		if err != nil {
			return
		}
		if !strings.EqualFold(FormatKeyID(b), s) {
			t.Fatalf("%q parsed to % x, formats as %s", s, b, FormatKeyID(b))
		}
	})
}
