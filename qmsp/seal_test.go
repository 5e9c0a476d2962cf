package qmsp

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/qshield/qshield/seal"
	"golang.org/x/crypto/chacha20poly1305"
)

// TestSealerReadsLegacy: records written before package seal (XChaCha20-
// Poly1305, the context as additional data) still open; new records are
// written in package seal's format; neither opens under another context.
func TestSealerReadsLegacy(t *testing.T) {
	key := bytes.Repeat([]byte{5}, 32)
	s, err := newSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	x, _ := chacha20poly1305.NewX(key)
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	rand.Read(nonce)
	legacy := x.Seal(bytes.Clone(nonce), nonce, []byte("preset key"), []byte("css-pk/GW-1/3"))
	if pt, err := s.open(legacy, "css-pk/GW-1/3"); err != nil || string(pt) != "preset key" {
		t.Fatalf("legacy record: %q %v", pt, err)
	}
	if _, err := s.open(legacy, "css-pk/GW-1/4"); err == nil {
		t.Fatal("legacy record opens under another context")
	}
	cur, err := s.seal([]byte("preset key"), "css-pk/GW-1/3")
	if err != nil || !seal.IsSealed(cur) {
		t.Fatalf("new record not in package seal's format: %v", err)
	}
	if pt, err := s.open(cur, "css-pk/GW-1/3"); err != nil || string(pt) != "preset key" {
		t.Fatalf("new record: %q %v", pt, err)
	}
	if _, err := s.open(cur, "css-pk/GW-2/3"); err == nil {
		t.Fatal("new record opens under another context")
	}
}
