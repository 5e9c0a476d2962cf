package qrimg

import (
	"crypto/rand"
	"testing"

	"github.com/qshield/qshield/bioqr/base45"
)

// TestDecodeReliability renders random payment-sized codes at several
// scales: every one must read back (the detector alone misses ~0.3 %).
func TestDecodeReliability(t *testing.T) {
	n := 30
	if testing.Short() {
		n = 5
	}
	for _, size := range []int{300, 700} {
		for i := 0; i < n; i++ {
			raw := make([]byte, size)
			rand.Read(raw)
			text := "QSP1:" + base45.Encode(raw)
			c, err := Encode(text, M)
			if err != nil {
				t.Fatal(err)
			}
			for _, sc := range []int{2, 3, 4} {
				got, err := Decode(c.Image(sc))
				if err != nil || got != text {
					t.Fatalf("%d bytes, version %d, scale %d: %v", size, c.Version, sc, err)
				}
			}
		}
	}
}
