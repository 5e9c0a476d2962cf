package channel

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

func pair(t *testing.T, alg Alg) (*Session, *Session) {
	t.Helper()
	seg := make([]byte, SegmentLen)
	rand.Read(seg)
	var id [16]byte
	rand.Read(id[:])
	cn, sn := []byte("client-nonce-123"), []byte("server-nonce-456")
	p, err := NewSession(id, alg, seg, cn, sn, DirToServer)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSession(id, alg, seg, cn, sn, DirToPhone)
	if err != nil {
		t.Fatal(err)
	}
	return p, s
}

func TestSessionBothAlgs(t *testing.T) {
	for _, alg := range []Alg{AES256GCM, SM4GCM} {
		p, s := pair(t, alg)
		for i := 0; i < 3; i++ {
			f, err := p.Seal([]byte("pay 10 CNY"))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(f, []byte("pay 10")) {
				t.Fatal("plaintext visible in frame")
			}
			m, err := s.Open(f)
			if err != nil || string(m) != "pay 10 CNY" {
				t.Fatalf("%s: %q %v", alg, m, err)
			}
			// Replay refused.
			if _, err := s.Open(f); !errors.Is(err, ErrReplay) {
				t.Fatalf("replay: %v", err)
			}
			r, _ := s.Seal([]byte("ok"))
			// Reflection of the server's own frame refused.
			if _, err := s.Open(r); err == nil {
				t.Fatal("reflected frame accepted")
			}
			if m, err := p.Open(r); err != nil || string(m) != "ok" {
				t.Fatal(err)
			}
		}
		// Tampering.
		f, _ := p.Seal([]byte("x"))
		f[len(f)-1] ^= 1
		if _, err := s.Open(f); !errors.Is(err, ErrAuth) {
			t.Fatalf("tampered: %v", err)
		}
	}
	// AES and SM4 sessions from the same segment do not interoperate.
	if _, err := ParseAlg("des"); !errors.Is(err, ErrAlg) {
		t.Fatal(err)
	}
}

// SM4 known-answer test (GB/T 32907-2016 appendix A.1) through the same
// cipher constructor the channel uses.
func TestSM4KnownAnswer(t *testing.T) {
	key := []byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10}
	want := []byte{0x68, 0x1e, 0xdf, 0x34, 0xd2, 0x06, 0x96, 0x5e, 0x86, 0xb3, 0xe9, 0x4f, 0x53, 0x6e, 0x42, 0x46}
	g, err := newAEAD(SM4GCM, key)
	if err != nil || g.NonceSize() != 12 {
		t.Fatal(err)
	}
	b, _ := smBlock(key)
	out := make([]byte, 16)
	b.Encrypt(out, key)
	if !bytes.Equal(out, want) {
		t.Fatalf("SM4 KAT: %x", out)
	}
}
