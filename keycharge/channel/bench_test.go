package channel

import (
	"crypto/rand"
	"testing"
)

func benchSession(b *testing.B, alg Alg, size int) {
	seg := make([]byte, SegmentLen)
	rand.Read(seg)
	var id [16]byte
	p, _ := NewSession(id, alg, seg, nil, nil, DirToServer)
	s, _ := NewSession(id, alg, seg, nil, nil, DirToPhone)
	msg := make([]byte, size)
	b.SetBytes(int64(size))
	for i := 0; i < b.N; i++ {
		f, _ := p.Seal(msg)
		if _, err := s.Open(f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAES64K(b *testing.B) { benchSession(b, AES256GCM, 64<<10) }
func BenchmarkSM464K(b *testing.B) { benchSession(b, SM4GCM, 64<<10) }
