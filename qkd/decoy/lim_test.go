package decoy

import (
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
)

// TestFiniteVectors checks Finite and KeyLength against test vectors computed
// by an independent Python evaluation of the paper's Eqs. (1)–(5)
// (testdata/lim2014_vectors.py). The paper publishes curves, not tables, so
// these are derived vectors, not published numbers.
func TestFiniteVectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/lim2014_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Vectors []struct {
			Mu1, Mu2, P1, P2, EpsSec     float64
			NX, NZ, MZ                   [3]float64
			Leak                         float64
			SX0, SX1, SZ0, SZ1, VZ1, Phi float64
			Ell                          float64
		}
	}
	// Field names in the JSON are the Python ones.
	dec := strings.NewReplacer(`"mu1"`, `"Mu1"`, `"mu2"`, `"Mu2"`, `"p1"`, `"P1"`, `"p2"`, `"P2"`, `"eps_sec"`, `"EpsSec"`,
		`"leak"`, `"Leak"`, `"sX0"`, `"SX0"`, `"sX1"`, `"SX1"`, `"sZ0"`, `"SZ0"`, `"sZ1"`, `"SZ1"`, `"vZ1"`, `"VZ1"`, `"phiX"`, `"Phi"`, `"ell"`, `"Ell"`)
	if err := json.Unmarshal([]byte(dec.Replace(string(raw))), &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) < 5 {
		t.Fatalf("%d vectors", len(file.Vectors))
	}
	close := func(got, want float64) bool { return math.Abs(got-want) <= 1e-9*math.Max(1, math.Abs(want)) }
	for i, v := range file.Vectors {
		b, err := Finite(FiniteInput{Intensities: [3]float64{v.Mu1, v.Mu2, 2e-4}, Probabilities: [3]float64{v.P1, v.P2, 1 - v.P1 - v.P2},
			NX: v.NX, NZ: v.NZ, MZ: v.MZ, EpsSec: v.EpsSec})
		if err != nil {
			t.Fatalf("vector %d: %v", i, err)
		}
		for _, c := range []struct {
			name      string
			got, want float64
		}{{"s_X,0", b.SX0, v.SX0}, {"s_X,1", b.SX1, v.SX1}, {"s_Z,0", b.SZ0, v.SZ0}, {"s_Z,1", b.SZ1, v.SZ1}, {"v_Z,1", b.VZ1, v.VZ1}, {"φ_X", b.PhiX, v.Phi}} {
			if !close(c.got, c.want) {
				t.Errorf("vector %d: %s = %.10g, want %.10g", i, c.name, c.got, c.want)
			}
		}
		if l := b.KeyLength(v.Leak); math.Abs(float64(l)-v.Ell) > 1 {
			t.Errorf("vector %d: ℓ = %d, want %.0f", i, l, v.Ell)
		}
	}
}

// The published curves of Lim et al. (2014), Fig. 1, are reproduced in
// package limfig (TestLimFig1Anchors).

// FuzzFinite: for any counts the bound is either an error or a key length
// between 0 and the number of key bits, with φ_X in [0, 1/2], and more
// disclosed bits never give a longer key.
func FuzzFinite(f *testing.F) {
	f.Add(0.4, 0.2, 0.3, 0.5, uint32(300000), uint32(500000), uint32(200), uint32(20000), uint32(30000), uint32(12), uint32(700), uint32(1000), uint32(6), uint8(10))
	f.Add(0.5, 0.1, 0.8, 0.1, uint32(0), uint32(1000000), uint32(0), uint32(0), uint32(100000), uint32(0), uint32(0), uint32(0), uint32(0), uint8(30))
	f.Fuzz(func(t *testing.T, mu1, mu2, p1, p2 float64, x0, x1, x2, z0, z1, z2, m0, m1, m2 uint32, e uint8) {
		in := FiniteInput{Intensities: [3]float64{mu1, mu2, 0}, Probabilities: [3]float64{p1, p2, 1 - p1 - p2},
			NX: [3]float64{float64(x0), float64(x1), float64(x2)}, NZ: [3]float64{float64(z0), float64(z1), float64(z2)},
			MZ: [3]float64{float64(m0), float64(m1), float64(m2)}, EpsSec: math.Pow(10, -float64(e%40))}
		b, err := Finite(in)
		if err != nil {
			return
		}
		nX := in.NX[0] + in.NX[1] + in.NX[2]
		if !(b.PhiX >= 0 && b.PhiX <= 0.5) || b.SX0 < 0 || b.SX1 < 0 || b.SX0+b.SX1 > nX+1e-6 {
			t.Fatalf("bounds out of range: %+v", b)
		}
		l0, l1 := b.KeyLength(0), b.KeyLength(1000)
		if l0 < 0 || float64(l0) > nX || l1 > l0 {
			t.Fatalf("key lengths %d, %d for %g key bits", l0, l1, nX)
		}
	})
}
