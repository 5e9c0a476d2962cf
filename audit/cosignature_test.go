package audit

import (
	"bufio"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

type cosigKAT struct {
	seed       []byte
	name       string
	vkey       string
	noteVKey   string
	checkpoint string
	times      []uint64
	lines      []string
}

func readCosigKAT(t *testing.T) cosigKAT {
	t.Helper()
	f, err := os.Open("testdata/cosignature-v1.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var k cosigKAT
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("bad vector line %q", line)
		}
		switch key {
		case "seed":
			k.seed, err = hex.DecodeString(val)
		case "name":
			k.name = val
		case "vkey":
			k.vkey = val
		case "note_vkey":
			k.noteVKey = val
		case "checkpoint":
			var b []byte
			b, err = base64.StdEncoding.DecodeString(val)
			k.checkpoint = string(b)
		case "time":
			var ts uint64
			ts, err = strconv.ParseUint(val, 10, 64)
			k.times = append(k.times, ts)
		case "line":
			k.lines = append(k.lines, val)
		}
		if err != nil {
			t.Fatalf("vector %s: %v", key, err)
		}
	}
	if len(k.times) == 0 || len(k.times) != len(k.lines) {
		t.Fatal("vectors: times and lines do not pair up")
	}
	return k
}

// TestCosignatureKnownAnswers checks Cosigner and NewCosignatureVerifier
// against cosignature/v1 vectors derived independently (testdata/
// cosignature-v1.py, from the C2SP text): key ID, vkey, exact signature
// lines at three timestamps (0, the C2SP example's, 2^63-1), verification
// through golang.org/x/mod/sumdb/note with both key encodings, and the
// timestamp read back.
func TestCosignatureKnownAnswers(t *testing.T) {
	k := readCosigKAT(t)
	key := ed25519.NewKeyFromSeed(k.seed)
	for i, ts := range k.times {
		c, err := NewCosigner(k.name, key, func() time.Time { return time.Unix(int64(ts), 0) })
		if err != nil {
			t.Fatal(err)
		}
		if got := c.VerifierKey(); got != k.vkey {
			t.Fatalf("vkey\n got %s\nwant %s", got, k.vkey)
		}
		msg, err := note.Sign(&note.Note{Text: k.checkpoint}, c)
		if err != nil {
			t.Fatal(err)
		}
		want := k.checkpoint + "\n" + k.lines[i] + "\n"
		if string(msg) != want {
			t.Fatalf("time %d: signed note\n got %q\nwant %q", ts, msg, want)
		}
		for _, vk := range []string{k.vkey, k.noteVKey} {
			v, err := NewCosignatureVerifier(vk)
			if err != nil {
				t.Fatalf("%s: %v", vk, err)
			}
			n, err := note.Open(msg, note.VerifierList(v))
			if err != nil {
				t.Fatalf("time %d, key %s: %v", ts, vk, err)
			}
			got, err := CosignatureTime(n.Sigs[0])
			if err != nil || uint64(got.Unix()) != ts {
				t.Fatalf("timestamp %v %v, want %d", got, err, ts)
			}
		}
		// A cosignature is not a plain note signature of the same key.
		nv, err := note.NewVerifier(k.noteVKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := note.Open(msg, note.VerifierList(nv)); err == nil {
			t.Fatal("a cosignature verified as a plain Ed25519 note signature")
		}
	}
}

// TestCosignatureRejects: tampered text, timestamp or signature, a plain
// note signature offered as a cosignature, a timestamp beyond 2^63-1 and
// malformed keys are all refused.
func TestCosignatureRejects(t *testing.T) {
	k := readCosigKAT(t)
	key := ed25519.NewKeyFromSeed(k.seed)
	v, err := NewCosignatureVerifier(k.vkey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := NewCosigner(k.name, key, func() time.Time { return time.Unix(1679315147, 0) })
	sig, err := c.Sign([]byte(k.checkpoint))
	if err != nil {
		t.Fatal(err)
	}
	if !v.Verify([]byte(k.checkpoint), sig) {
		t.Fatal("own cosignature does not verify")
	}
	for name, mut := range map[string]func(m, s []byte) ([]byte, []byte){
		"text":      func(m, s []byte) ([]byte, []byte) { m[0] ^= 1; return m, s },
		"timestamp": func(m, s []byte) ([]byte, []byte) { s[7] ^= 1; return m, s },
		"signature": func(m, s []byte) ([]byte, []byte) { s[20] ^= 1; return m, s },
		"short":     func(m, s []byte) ([]byte, []byte) { return m, s[:len(s)-1] },
		"no time":   func(m, s []byte) ([]byte, []byte) { return m, s[8:] },
	} {
		m, s := mut([]byte(k.checkpoint), append([]byte(nil), sig...))
		if v.Verify(m, s) {
			t.Errorf("%s tampered: verified", name)
		}
	}
	// Timestamps above 2^63-1 are refused even when correctly signed.
	huge := c.signAt(1<<63, []byte(k.checkpoint))
	if v.Verify([]byte(k.checkpoint), huge) {
		t.Error("timestamp 2^63 verified")
	}
	plainKey := "PRIVATE+KEY+" + k.name + "+" + strings.Split(k.noteVKey, "+")[1] + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, k.seed...))
	ps, err := note.NewSigner(plainKey)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := ps.Sign([]byte(k.checkpoint))
	if v.Verify([]byte(k.checkpoint), plain) {
		t.Error("plain note signature verified as a cosignature")
	}
	for _, bad := range []string{
		"",
		"witness.example/w1",
		"witness.example/w1+eb762cc3+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea", // wrong key ID
		"witness.example/w2+eb762cc2+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea", // other name
		"witness.example/w1+eb762cc2+BdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea",  // short key
		"witness.example/w1+eb762cc2+Bd+damAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1E", // bad base64
		"witness.example/w1+eb762cc2+A9damAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea", // type 0x03
	} {
		if _, err := NewCosignatureVerifier(bad); err == nil {
			t.Errorf("vkey %q accepted", bad)
		}
	}
}

// TestCosignatureInterop checks published values from other
// implementations: a type-0x04 witness vkey in use (accepted by
// transparency-dev/formats, whose key ID this package must recompute), the
// timestamp of a cosignature in formats' tests, and the C2SP example's
// cosignature line, whose timestamp is the example message's
// "time 1679315147".
func TestCosignatureInterop(t *testing.T) {
	const remora = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
	if _, err := NewCosignatureVerifier(remora); err != nil {
		t.Fatalf("remora witness key: %v", err)
	}
	if _, err := NewCosignatureVerifier(strings.Replace(remora, "da77ade7", "da77ade6", 1)); err == nil {
		t.Fatal("remora key with a wrong key ID accepted")
	}
	for b64, want := range map[string]int64{
		"ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==": 1727964367,
		"jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==": 1679315147,
	} {
		got, err := CosignatureTime(note.Signature{Base64: b64})
		if err != nil || got.Unix() != want {
			t.Errorf("%s…: time %v %v, want %d", b64[:12], got, err, want)
		}
	}
	if _, err := CosignatureTime(note.Signature{Base64: "eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY="}); err == nil {
		t.Error("a plain Ed25519 note signature has a cosignature timestamp")
	}
}
