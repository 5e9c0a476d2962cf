package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
)

type vector struct {
	Comment   string   `json:"comment"`
	Master    string   `json:"master"`
	Purpose   string   `json:"purpose"`
	ID        []string `json:"id"`
	Nonce     string   `json:"nonce"`
	Plaintext string   `json:"plaintext"`
	Sealed    string   `json:"sealed"`
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reference seals as the package doc specifies, with the standard library
// only, so the known answers check the documented format and not merely
// this package against itself.
func reference(t *testing.T, master []byte, purpose string, id []string, nonce, pt []byte) []byte {
	t.Helper()
	k, err := hkdf.Key(sha256.New, master, nil, "qshield seal v1 "+purpose, 32)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := aes.NewCipher(k)
	g, _ := cipher.NewGCM(blk)
	hdr := []byte{'Q', 'S', 'L', 1}
	ad := append([]byte{}, hdr...)
	for _, p := range append([]string{purpose}, id...) {
		ad = append(ad, byte(len(p)>>8), byte(len(p)))
		ad = append(ad, p...)
	}
	return g.Seal(append(append([]byte{}, hdr...), nonce...), nonce, pt, ad)
}

func TestKnownAnswers(t *testing.T) {
	raw, err := os.ReadFile("testdata/v1.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range vs {
		t.Run(v.Comment, func(t *testing.T) {
			master, nonce, pt, want := unhex(t, v.Master), unhex(t, v.Nonce), unhex(t, v.Plaintext), unhex(t, v.Sealed)
			if ref := reference(t, master, v.Purpose, v.ID, nonce, pt); !bytes.Equal(ref, want) {
				t.Fatalf("the vector does not follow the documented format:\nref  %x\nwant %x", ref, want)
			}
			s, err := New(master, v.Purpose)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.sealWithNonce(nonce, pt, v.ID)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Seal = %x, %v\nwant   %x", got, err, want)
			}
			back, err := s.Open(want, v.ID...)
			if err != nil || !bytes.Equal(back, pt) {
				t.Fatalf("Open = %x, %v", back, err)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	master := bytes.Repeat([]byte{0x42}, 32)
	s, err := New(master, "kme unit")
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal([]byte("key material"), "KME_A", "unit-1")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := New(master, "keycharge key")
	otherMaster, _ := New(bytes.Repeat([]byte{0x43}, 32), "kme unit")
	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 1
		return b
	}
	v2 := bytes.Clone(sealed)
	v2[3] = 2
	for _, tc := range []struct {
		name   string
		s      *Sealer
		sealed []byte
		id     []string
		want   error
	}{
		{"another row", s, sealed, []string{"KME_A", "unit-2"}, ErrOpen},
		{"parts moved", s, sealed, []string{"KME_Aunit-1"}, ErrOpen},
		{"parts split elsewhere", s, sealed, []string{"KME_", "Aunit-1"}, ErrOpen},
		{"no identity", s, sealed, nil, ErrOpen},
		{"another purpose", other, sealed, []string{"KME_A", "unit-1"}, ErrOpen},
		{"another master key", otherMaster, sealed, []string{"KME_A", "unit-1"}, ErrOpen},
		{"nonce changed", s, flip(header), []string{"KME_A", "unit-1"}, ErrOpen},
		{"ciphertext changed", s, flip(header + nonceSize), []string{"KME_A", "unit-1"}, ErrOpen},
		{"tag changed", s, flip(len(sealed) - 1), []string{"KME_A", "unit-1"}, ErrOpen},
		{"unknown version", s, v2, []string{"KME_A", "unit-1"}, ErrFormat},
		{"not sealed", s, []byte("plain old bytes!............"), []string{"KME_A", "unit-1"}, ErrFormat},
		{"truncated", s, sealed[:Overhead-1], []string{"KME_A", "unit-1"}, ErrFormat},
		{"empty", s, nil, nil, ErrFormat},
	} {
		if _, err := tc.s.Open(tc.sealed, tc.id...); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := New(master[:31], "x"); err == nil {
		t.Error("short master key accepted")
	}
	if _, err := New(master, ""); err == nil {
		t.Error("empty purpose accepted")
	}
	if _, err := s.Seal(nil, string(make([]byte, 70000))); err == nil {
		t.Error("oversized identity part accepted")
	}
	a, _ := s.Seal([]byte("x"), "id")
	b, _ := s.Seal([]byte("x"), "id")
	if bytes.Equal(a, b) {
		t.Error("two seals of the same record are equal (nonce reuse)")
	}
}

// FuzzOpen: arbitrary bytes never panic and never open; a sealed record
// opens to its plaintext and stops opening when any byte changes.
func FuzzOpen(f *testing.F) {
	s, _ := New(bytes.Repeat([]byte{1}, 32), "fuzz")
	good, _ := s.Seal([]byte("seed"), "a", "b")
	f.Add(good, []byte("seed"), "a", 0)
	f.Add([]byte("QSL\x01"), []byte{}, "", 3)
	f.Fuzz(func(t *testing.T, junk, pt []byte, id string, at int) {
		if _, err := s.Open(junk, id); err == nil && !bytes.Equal(junk, good) {
			t.Fatalf("forged record opened: %x", junk)
		}
		sealed, err := s.Seal(pt, id)
		if err != nil {
			return // identity too long
		}
		back, err := s.Open(sealed, id)
		if err != nil || !bytes.Equal(back, pt) {
			t.Fatalf("round trip: %x, %v", back, err)
		}
		if at < 0 {
			at = -at
		}
		sealed[at%len(sealed)] ^= 0x80
		if _, err := s.Open(sealed, id); err == nil {
			t.Fatalf("record opened after byte %d changed", at%len(sealed))
		}
	})
}
