package convcode

import (
	"bufio"
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

func bitsOf(s string) []byte {
	out := make([]byte, len(s))
	for i, c := range s {
		out[i] = byte(c - '0')
	}
	return out
}

func TestIEEE80211SignalVector(t *testing.T) {
	f, err := os.Open("testdata/ieee80211_signal.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var in, coded []byte
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 2 && fs[0] == "input" {
			in = bitsOf(fs[1])
		}
		if len(fs) == 2 && fs[0] == "coded" {
			coded = bitsOf(fs[1])
		}
	}
	// The vector includes the 6 tail bits; Encode appends them itself.
	msg := in[:len(in)-TailBits]
	got := Encode(msg)
	// 802.11 emits the 133 output first; this package emits 171 first.
	for i := 0; i < len(got); i += 2 {
		got[i], got[i+1] = got[i+1], got[i]
	}
	if !bytes.Equal(got, coded) {
		t.Fatalf("encode:\n got %v\nwant %v", got, coded)
	}
	// And the decoder inverts it.
	soft := HardToSoft(Encode(msg))
	dec, err := Decode(soft)
	if err != nil || !bytes.Equal(dec, msg) {
		t.Fatalf("decode: %v %v", dec, err)
	}
}

func TestImpulseResponse(t *testing.T) {
	// A single 1 walks through the register: outputs are the generator taps,
	// newest first: 171 = 1111001, 133 = 1011011.
	got := Encode([]byte{1})
	want := bitsOf("11" + "10" + "11" + "11" + "00" + "01" + "11")
	if !bytes.Equal(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
	if CodedLen(1) != 14 {
		t.Fatal("CodedLen")
	}
}

func TestLinearity(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		a, b := randBits(r, 40), randBits(r, 40)
		x := make([]byte, 40)
		for i := range x {
			x[i] = a[i] ^ b[i]
		}
		ea, eb, ex := Encode(a), Encode(b), Encode(x)
		for i := range ex {
			if ex[i] != ea[i]^eb[i] {
				t.Fatal("code is not linear")
			}
		}
	}
}

func randBits(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.IntN(2))
	}
	return b
}

func TestCorrectsSparseHardErrors(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var d Decoder
	for trial := range 300 {
		msg := randBits(r, 176)
		coded := Encode(msg)
		// Up to 4 errors anywhere: any wrong path is at Hamming distance
		// >= d_free = 10 from the sent one, so ML decoding must correct them.
		for _, p := range r.Perm(len(coded))[:1+trial%4] {
			coded[p] ^= 1
		}
		got, err := d.Decode(HardToSoft(coded))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("trial %d: not corrected", trial)
		}
	}
}

func TestFiveAdjacentErrorsCanFail(t *testing.T) {
	// Sanity check that the test above can fail: a burst of errors beyond the
	// code's power must produce a wrong message for some inputs.
	r := rand.New(rand.NewPCG(5, 6))
	failures := 0
	for range 50 {
		msg := randBits(r, 64)
		coded := Encode(msg)
		for i := 20; i < 32; i++ {
			coded[i] ^= 1
		}
		got, _ := Decode(HardToSoft(coded))
		if !bytes.Equal(got, msg) {
			failures++
		}
	}
	if failures == 0 {
		t.Fatal("12 adjacent errors were always corrected: the test harness is broken")
	}
}

func TestSoftDecisionGaussian(t *testing.T) {
	// BPSK over AWGN at Eb/N0 = 4 dB (Es/N0 = 1 dB): hard decisions see about
	// 5.6% raw errors; the soft Viterbi decoder's bit error rate there is about
	// 1e-5, so at most a few of 200 frames of 176 bits may fail.
	r := rand.New(rand.NewPCG(7, 8))
	sigma := 0.63 // sqrt(1/(2·10^0.1))
	bad, rawErr, total := 0, 0, 0
	for range 200 {
		msg := randBits(r, 176)
		coded := Encode(msg)
		soft := make([]int8, len(coded))
		for i, c := range coded {
			v := -1.0
			if c == 1 {
				v = 1
			}
			y := v + sigma*r.NormFloat64()
			if (y > 0) != (c == 1) {
				rawErr++
			}
			total++
			q := y * 40
			q = max(-127, min(127, q))
			soft[i] = int8(q)
		}
		got, _ := Decode(soft)
		if !bytes.Equal(got, msg) {
			bad++
		}
	}
	if rawErr == 0 {
		t.Fatal("channel produced no errors")
	}
	if bad > 3 {
		t.Fatalf("%d/200 frames wrong at Eb/N0 4 dB (raw BER %.3f)", bad, float64(rawErr)/float64(total))
	}
}

func TestErasures(t *testing.T) {
	msg := randBits(rand.New(rand.NewPCG(9, 9)), 100)
	soft := HardToSoft(Encode(msg))
	for i := 0; i < len(soft); i += 5 { // erase 20%
		soft[i] = 0
	}
	got, _ := Decode(soft)
	if !bytes.Equal(got, msg) {
		t.Fatal("20% spread erasures not corrected")
	}
}

func TestLengthErrors(t *testing.T) {
	for _, n := range []int{0, 1, 11, 13} {
		if _, err := Decode(make([]int8, n)); !errors.Is(err, ErrLength) {
			t.Errorf("len %d: %v", n, err)
		}
	}
	got, err := Decode(make([]int8, 12))
	if err != nil || len(got) != 0 {
		t.Errorf("tail only: %v %v", got, err)
	}
	got, err = Decode([]int8{-128, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128})
	if err != nil || len(got) != 1 || got[0] != 0 {
		t.Errorf("-128: %v %v", got, err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 12))
	f.Add(bytes.Repeat([]byte{0x7f, 0x81}, 20))
	f.Fuzz(func(t *testing.T, data []byte) {
		soft := make([]int8, len(data))
		for i, b := range data {
			soft[i] = int8(b)
		}
		msg, err := Decode(soft)
		if err != nil {
			if !errors.Is(err, ErrLength) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(msg) != len(data)/2-TailBits {
			t.Fatalf("len %d for %d coded", len(msg), len(data))
		}
		// Re-encoding the decision and decoding it hard must be a fixed point.
		again, err := Decode(HardToSoft(Encode(msg)))
		if err != nil || !bytes.Equal(again, msg) {
			t.Fatal("decode(encode(m)) != m")
		}
	})
}

func BenchmarkDecode176(b *testing.B) {
	msg := randBits(rand.New(rand.NewPCG(1, 1)), 176)
	soft := HardToSoft(Encode(msg))
	var d Decoder
	for b.Loop() {
		d.Decode(soft)
	}
}
