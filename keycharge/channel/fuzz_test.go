package channel

import (
	"testing"
)

func FuzzParseFrame(f *testing.F) {
	var id [16]byte
	p, _ := NewSession(id, AES256GCM, make([]byte, SegmentLen), nil, nil, DirToServer)
	fr, _ := p.Seal([]byte("hello"))
	f.Add(fr)
	f.Add([]byte("QKCH"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, _ := NewSession(id, AES256GCM, make([]byte, SegmentLen), nil, nil, DirToPhone)
		h, ct, err := ParseFrame(b)
		if err != nil {
			return
		}
		if h.Seq == 0 || len(ct) < 16 {
			t.Fatal("accepted an impossible frame")
		}
		s.Open(b) // must not panic
	})
}
