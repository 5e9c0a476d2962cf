package shamir

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

type vectors struct {
	Mul   [][3]string `json:"mul"`
	Inv   [][2]string `json:"inv"`
	Split []struct {
		T, N   int
		Secret string
		Coeffs string
		Shares []string
	} `json:"split"`
}

func hb(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func loadVectors(t *testing.T) vectors {
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestKnownAnswers(t *testing.T) {
	v := loadVectors(t)
	for _, m := range v.Mul {
		a, b, want := hb(t, m[0])[0], hb(t, m[1])[0], hb(t, m[2])[0]
		if got := mul(a, b); got != want {
			t.Errorf("mul(%02x,%02x) = %02x, want %02x", a, b, got, want)
		}
	}
	for _, m := range v.Inv {
		a, want := hb(t, m[0])[0], hb(t, m[1])[0]
		if got := inv(a); got != want {
			t.Errorf("inv(%02x) = %02x, want %02x", a, got, want)
		}
	}
	for _, s := range v.Split {
		shares, err := Split(hb(t, s.Secret), s.T, s.N, bytes.NewReader(hb(t, s.Coeffs)))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, sh := range shares {
			got = append(got, fmt.Sprintf("%02x:%x", sh.Index, sh.Value))
		}
		if strings.Join(got, ",") != strings.Join(s.Shares, ",") {
			t.Errorf("split %s t=%d: got %v want %v", s.Secret, s.T, got, s.Shares)
		}
		sec, err := Combine(shares[:s.T])
		if err != nil || !bytes.Equal(sec, hb(t, s.Secret)) {
			t.Errorf("combine: %x %v", sec, err)
		}
	}
}

// TestFieldAgainstTables cross-checks the constant-time arithmetic against
// classic log/exp tables built from generator 3.
func TestFieldAgainstTables(t *testing.T) {
	var exp [510]byte
	var log [256]int
	x := byte(1)
	for i := range 255 {
		exp[i], exp[i+255] = x, x
		log[x] = i
		x = x ^ xtime(x) // multiply by 3
	}
	for a := 0; a < 256; a++ {
		for b := 0; b < 256; b++ {
			want := byte(0)
			if a != 0 && b != 0 {
				want = exp[log[a]+log[b]]
			}
			if got := mul(byte(a), byte(b)); got != want {
				t.Fatalf("mul(%d,%d)=%d want %d", a, b, got, want)
			}
		}
		if a != 0 && mul(byte(a), inv(byte(a))) != 1 {
			t.Fatalf("inv(%d) wrong", a)
		}
	}
}

func xtime(x byte) byte {
	if x&0x80 != 0 {
		return x<<1 ^ 0x1B
	}
	return x << 1
}

// subsets calls f with every k-subset of 0..n-1.
func subsets(n, k int, f func([]int)) {
	idx := make([]int, k)
	var rec func(start, d int)
	rec = func(start, d int) {
		if d == k {
			f(idx)
			return
		}
		for i := start; i < n; i++ {
			idx[d] = i
			rec(i+1, d+1)
		}
	}
	rec(0, 0)
}

func TestAnyTRecoverTMinusOneDoNot(t *testing.T) {
	for _, p := range []struct{ t, n int }{{2, 2}, {2, 5}, {3, 5}, {4, 8}, {5, 10}} {
		secret := make([]byte, 16)
		rand.Read(secret)
		shares, err := Split(secret, p.t, p.n, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k := p.t; k <= p.n; k++ {
			subsets(p.n, k, func(ix []int) {
				sub := make([]Share, len(ix))
				for i, j := range ix {
					sub[i] = shares[j]
				}
				got, err := Combine(sub)
				if err != nil || !bytes.Equal(got, secret) {
					t.Fatalf("t=%d n=%d subset %v: %x %v", p.t, p.n, ix, got, err)
				}
			})
		}
		subsets(p.n, p.t-1, func(ix []int) {
			if len(ix) == 0 {
				return
			}
			sub := make([]Share, len(ix))
			for i, j := range ix {
				sub[i] = shares[j]
			}
			got, err := Combine(sub)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(got, secret) {
				t.Fatalf("t=%d n=%d: %d shares recovered the secret", p.t, p.n, len(ix))
			}
		})
	}
}

func TestCorruptedShareGivesWrongSecret(t *testing.T) {
	secret := []byte("sixteen byte key")
	shares, _ := Split(secret, 3, 5, nil)
	shares[1].Value[4] ^= 0x01
	got, err := Combine(shares[:3])
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got, secret) {
		t.Fatal("corrupted share still gave the secret")
	}
}

func TestErrors(t *testing.T) {
	if _, err := Split([]byte{1}, 1, 3, nil); !errors.Is(err, ErrParams) {
		t.Errorf("t=1: %v", err)
	}
	if _, err := Split([]byte{1}, 3, 2, nil); !errors.Is(err, ErrParams) {
		t.Errorf("n<t: %v", err)
	}
	if _, err := Split([]byte{1}, 2, 256, nil); !errors.Is(err, ErrParams) {
		t.Errorf("n=256: %v", err)
	}
	if _, err := Split(nil, 2, 3, nil); !errors.Is(err, ErrParams) {
		t.Errorf("empty: %v", err)
	}
	if _, err := Split([]byte{1, 2}, 3, 5, bytes.NewReader([]byte{1})); err == nil {
		t.Error("short randomness accepted")
	}
	if _, err := Combine(nil); !errors.Is(err, ErrNoShares) {
		t.Errorf("nil: %v", err)
	}
	if _, err := Combine([]Share{{0, []byte{1}}}); !errors.Is(err, ErrBadIndex) {
		t.Errorf("index 0: %v", err)
	}
	if _, err := Combine([]Share{{1, []byte{1}}, {1, []byte{2}}}); !errors.Is(err, ErrDuplicate) {
		t.Errorf("dup: %v", err)
	}
	if _, err := Combine([]Share{{1, []byte{1}}, {2, []byte{2, 3}}}); !errors.Is(err, ErrLengthDiffer) {
		t.Errorf("len: %v", err)
	}
}

func FuzzCombine(f *testing.F) {
	f.Add([]byte{1, 3, 2, 5})
	f.Add([]byte{0, 1})
	f.Add([]byte{1, 1, 1, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		// data: pairs (index, value) of one-byte shares.
		var shares []Share
		for i := 0; i+1 < len(data); i += 2 {
			shares = append(shares, Share{Index: data[i], Value: []byte{data[i+1]}})
		}
		got, err := Combine(shares)
		if err == nil && len(got) != 1 {
			t.Fatalf("combine returned %d bytes", len(got))
		}
	})
}
