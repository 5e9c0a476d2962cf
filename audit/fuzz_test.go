package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func FuzzParseGroupBy(f *testing.F) {
	for _, s := range []string{"event", "event,day", "resource, day ,actor", "", ",", "day;drop table"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		gs, err := ParseGroupBy(s)
		if err != nil {
			return
		}
		for _, g := range gs {
			if _, ok := groupExpr[g]; !ok {
				t.Fatalf("accepted grouping %q", g)
			}
		}
	})
}

func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"2026-11-21T08:00:00Z", "2026-11-21", "24h", "-5m", "", "yesterday", "2026-13-01"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := ParseTime(s, now)
		if err == nil && !tm.IsZero() && tm.After(now) && !bytes.ContainsAny([]byte(s), "0123456789") {
			t.Fatalf("%q parsed to %v", s, tm)
		}
	})
}

// FuzzHashUnambiguous: two records that differ in any field, including by
// moving bytes across a field boundary, never share an encoding.
func FuzzHashUnambiguous(f *testing.F) {
	f.Add("alice", "login", "success", uint8(3))
	f.Add("", "", "", uint8(0))
	f.Fuzz(func(t *testing.T, a, b, c string, cut uint8) {
		r1 := row{seq: 1, time: "t", actor: a, event: b, outcome: c, details: "{}", prev: make([]byte, 32)}
		joined := a + b
		k := int(cut) % (len(joined) + 1)
		r2 := r1
		r2.actor, r2.event = joined[:k], joined[k:]
		same := r1.actor == r2.actor && r1.event == r2.event
		if eq := bytes.Equal(computeHash(&r1), computeHash(&r2)); eq != same {
			t.Fatalf("hash equality %v for fields equal %v", eq, same)
		}
	})
}

// FuzzParseCheckpointText: a parsed checkpoint formats back to the same text.
func FuzzParseCheckpointText(f *testing.F) {
	f.Add("qshield.example/audit\n12\nn4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=\n")
	f.Add("o\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
	f.Add("o\n012\nAAAA\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCheckpointText(s)
		if err != nil {
			return
		}
		if c.Text() != s {
			t.Fatalf("round trip: %q → %q", s, c.Text())
		}
	})
}

// FuzzParseProof: a parsed proof formats back to the same text, ≤ 63 hashes.
func FuzzParseProof(f *testing.F) {
	f.Add([]byte("n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=\n"))
	f.Add([]byte("x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseProof(b)
		if err != nil {
			return
		}
		if len(p) > 63 || FormatProof(p) != string(b) {
			t.Fatalf("round trip: %q → %q", b, FormatProof(p))
		}
	})
}

// FuzzCanonicalDetails: the direct writer of plain details gives exactly
// encoding/json's bytes, whatever the keys and values.
func FuzzCanonicalDetails(f *testing.F) {
	f.Add("from", "acct-1", "amount", "100")
	f.Add("a<", "b&", "\u2028", "\xff")
	f.Add("", "", "k", "v\"")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		d := map[string]string{k1: v1, k2: v2}
		got, err := canonicalDetails(d)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Fatalf("canonicalDetails(%q) = %s, encoding/json %s", d, got, want)
		}
	})
}

// FuzzTextOK: the append path's quick check accepts exactly the text the
// rule allows (valid UTF-8, no NUL, at most max bytes, not empty when
// required), and checkText fails exactly when it refuses.
func FuzzTextOK(f *testing.F) {
	f.Add("ledger.transfer", 256, true)
	f.Add("", 256, true)
	f.Add("caf\u00e9", 4, false)
	f.Add("a\x00b", 10, false)
	f.Add("ok\xff", 10, false)
	f.Add("\u00e9\x00", 10, false)
	f.Fuzz(func(t *testing.T, s string, max int, required bool) {
		want := utf8.ValidString(s) && !strings.ContainsRune(s, 0) && len(s) <= max && (!required || s != "")
		if got := textOK(s, required, max); got != want {
			t.Fatalf("textOK(%q, %v, %d) = %v, want %v", s, required, max, got, want)
		}
		if err := checkText("field", s, required, max); (err == nil) != want || err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("checkText(%q, %v, %d) = %v, want ok %v", s, required, max, err, want)
		}
	})
}
