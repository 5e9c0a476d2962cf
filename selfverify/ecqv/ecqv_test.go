package ecqv

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

// drbg is a deterministic byte stream SHA-256(seed ‖ counter) for known-answer
// tests only.
type drbg struct {
	seed []byte
	ctr  uint64
	buf  []byte
}

func (d *drbg) Read(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if len(d.buf) == 0 {
			h := sha256.New()
			h.Write(d.seed)
			h.Write(binary.BigEndian.AppendUint64(nil, d.ctr))
			d.ctr++
			d.buf = h.Sum(nil)
		}
		c := copy(p, d.buf)
		p, d.buf = p[c:], d.buf[c:]
	}
	return n, nil
}

type vector struct {
	Curve string `json:"curve"`
	Seed  string `json:"seed"`
	DN    string `json:"d_N"`
	QN    string `json:"Q_N"`
	ID    string `json:"id"`
	KX    string `json:"k_X"`
	RX    string `json:"R_X"`
	K     string `json:"k"`
	PX    string `json:"P_X"`
	E     string `json:"e"`
	R     string `json:"r"`
	DX    string `json:"d_X"`
	QX    string `json:"Q_X"`
}

func hx(b []byte) string { return hex.EncodeToString(b) }

// makeVector runs registration with randomness drawn from seed.
func makeVector(t *testing.T, c *Curve, seed, id string) vector {
	t.Helper()
	rnd := &drbg{seed: []byte(seed)}
	dN, err := c.RandomScalar(rnd)
	if err != nil {
		t.Fatal(err)
	}
	nk, err := c.privateKey(dN)
	if err != nil {
		t.Fatal(err)
	}
	req, sec, err := NewRequest(c, rnd, id)
	if err != nil {
		t.Fatal(err)
	}
	// Issue draws k from the stream next; record it by replaying the stream.
	snapshot := *rnd
	k, _ := c.RandomScalar(&snapshot)
	resp, err := NewIssuer(nk).Issue(rnd, req)
	if err != nil {
		t.Fatal(err)
	}
	dX, err := Complete(sec, resp, nk.Public())
	if err != nil {
		t.Fatal(err)
	}
	qX, err := Reconstruct(c, id, resp.P, nk.Public())
	if err != nil {
		t.Fatal(err)
	}
	return vector{Curve: c.Name(), Seed: seed, DN: hx(c.EncodeScalar(dN)), QN: hx(nk.Public().Bytes()), ID: id,
		KX: hx(c.EncodeScalar(sec.k)), RX: hx(req.R.Bytes()), K: hx(c.EncodeScalar(k)), PX: hx(resp.P.Bytes()),
		E: hx(c.EncodeScalar(CertHash(c, id, resp.P))), R: hx(c.EncodeScalar(resp.R)), DX: hx(dX.Bytes()), QX: hx(qX.Bytes())}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func scalar(t *testing.T, s string) *big.Int { return new(big.Int).SetBytes(unhex(t, s)) }

// TestKnownAnswer checks the stored vectors step by step with plain big-integer
// arithmetic, independently of Issue/Complete, and checks the ECQV equation
// d_X·G = e·P_X + Q_N.
func TestKnownAnswer(t *testing.T) {
	path := filepath.Join("testdata", "vectors.json")
	if *update {
		var vs []vector
		for _, c := range []*Curve{P256(), SM2()} {
			vs = append(vs, makeVector(t, c, "qshield ecqv vector 1", "alice@qshield"))
			vs = append(vs, makeVector(t, c, "qshield ecqv vector 2", "shop-7 红茶"))
		}
		b, _ := json.MarshalIndent(vs, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) != 4 {
		t.Fatalf("want 4 vectors, got %d", len(vs))
	}
	for _, v := range vs {
		t.Run(v.Curve+"/"+v.ID, func(t *testing.T) {
			c, err := CurveByName(v.Curve)
			if err != nil {
				t.Fatal(err)
			}
			n := c.Order()
			dN, kX, k := scalar(t, v.DN), scalar(t, v.KX), scalar(t, v.K)
			qN, _ := c.BaseMul(dN)
			if hx(qN.Bytes()) != v.QN {
				t.Fatalf("Q_N mismatch")
			}
			rX, _ := c.BaseMul(kX)
			if hx(rX.Bytes()) != v.RX {
				t.Fatalf("R_X mismatch")
			}
			kG, _ := c.BaseMul(k)
			pX, _ := rX.Add(kG)
			if hx(pX.Bytes()) != v.PX {
				t.Fatalf("P_X mismatch")
			}
			e := CertHash(c, v.ID, pX)
			if hx(c.EncodeScalar(e)) != v.E {
				t.Fatalf("e mismatch")
			}
			r := new(big.Int).Mul(e, k)
			r.Add(r, dN).Mod(r, n)
			if hx(c.EncodeScalar(r)) != v.R {
				t.Fatalf("r mismatch")
			}
			dX := new(big.Int).Mul(e, kX)
			dX.Add(dX, r).Mod(dX, n)
			if hx(c.EncodeScalar(dX)) != v.DX {
				t.Fatalf("d_X mismatch")
			}
			lhs, _ := c.BaseMul(dX)
			ep, _ := pX.Mul(e)
			rhs, _ := ep.Add(qN)
			if !lhs.Equal(rhs) || hx(lhs.Bytes()) != v.QX {
				t.Fatalf("d_X·G ≠ e·P_X + Q_N")
			}
			// And through the API.
			qNk, _ := c.ParsePublicKey(unhex(t, v.QN))
			pt, _ := c.ParsePoint(unhex(t, v.PX))
			qX, err := Reconstruct(c, v.ID, pt, qNk)
			if err != nil || hx(qX.Bytes()) != v.QX {
				t.Fatalf("Reconstruct: %v", err)
			}
		})
	}
}

func curves() []*Curve { return []*Curve{P256(), SM2()} }

func register(t *testing.T, c *Curve, id string) (*PrivateKey, *Response, *PrivateKey) {
	t.Helper()
	nk, err := c.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	req, sec, err := NewRequest(c, rand.Reader, id)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := NewIssuer(nk).Issue(rand.Reader, req)
	if err != nil {
		t.Fatal(err)
	}
	dX, err := Complete(sec, resp, nk.Public())
	if err != nil {
		t.Fatal(err)
	}
	return nk, resp, dX
}

func TestRegisterSignAgree(t *testing.T) {
	for _, c := range curves() {
		t.Run(c.Name(), func(t *testing.T) {
			nk, resp, dX := register(t, c, "alice")
			qX, err := Reconstruct(c, "alice", resp.P, nk.Public())
			if err != nil {
				t.Fatal(err)
			}
			if !qX.Equal(dX.Public()) {
				t.Fatal("reconstructed key differs from d_X·G")
			}
			msg := []byte("withdraw 100")
			sig, err := dX.Sign(rand.Reader, msg)
			if err != nil {
				t.Fatal(err)
			}
			if !qX.Verify(msg, sig) {
				t.Fatal("valid signature rejected")
			}
			if qX.Verify([]byte("withdraw 101"), sig) {
				t.Fatal("signature accepted for another message")
			}
			// Reconstructing under another identity gives another key.
			other, _ := Reconstruct(c, "mallory", resp.P, nk.Public())
			if other.Verify(msg, sig) {
				t.Fatal("signature verified under a different identity")
			}
			// ECDH both ways.
			eph, _ := c.GenerateKey(rand.Reader)
			z1, err := eph.ECDH(qX)
			if err != nil {
				t.Fatal(err)
			}
			z2, err := dX.ECDH(eph.Public())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(z1, z2) {
				t.Fatal("ECDH secrets differ")
			}
			k1, _ := c.DeriveKey(z1, []byte("salt"), "info", 32)
			k2, _ := c.DeriveKey(z2, []byte("salt"), "info", 32)
			if !bytes.Equal(k1, k2) || len(k1) != 32 {
				t.Fatal("derived keys differ")
			}
		})
	}
}

// TestForgedResponse: a response whose P_X or r was altered in transit is
// refused by Complete.
func TestForgedResponse(t *testing.T) {
	for _, c := range curves() {
		t.Run(c.Name(), func(t *testing.T) {
			nk, _ := c.GenerateKey(rand.Reader)
			req, sec, _ := NewRequest(c, rand.Reader, "bob")
			resp, _ := NewIssuer(nk).Issue(rand.Reader, req)
			evil, _ := c.GenerateKey(rand.Reader)
			forgedP := &Response{P: evil.Public().Point(), R: resp.R}
			if _, err := Complete(sec, forgedP, nk.Public()); !errors.Is(err, ErrInvalidResponse) {
				t.Fatalf("forged P_X: err = %v", err)
			}
			forgedR := &Response{P: resp.P, R: new(big.Int).Add(resp.R, big.NewInt(1))}
			if _, err := Complete(sec, forgedR, nk.Public()); !errors.Is(err, ErrInvalidResponse) {
				t.Fatalf("forged r: err = %v", err)
			}
			// A response issued by another "operator" is refused as well.
			if _, err := Complete(sec, resp, evil.Public()); !errors.Is(err, ErrInvalidResponse) {
				t.Fatalf("wrong Q_N: err = %v", err)
			}
		})
	}
}

// TestForgedPointUnusable: an attacker who publishes P' = k'·G for identity
// "alice" (without N) gets Q' = e'·P' + Q_N, and none of the keys she can
// compute (k', e'·k') signs for Q'.
func TestForgedPointUnusable(t *testing.T) {
	for _, c := range curves() {
		t.Run(c.Name(), func(t *testing.T) {
			nk, _ := c.GenerateKey(rand.Reader)
			kp, _ := c.RandomScalar(rand.Reader)
			pF, _ := c.BaseMul(kp)
			qF, err := Reconstruct(c, "alice", pF, nk.Public())
			if err != nil {
				t.Fatal(err)
			}
			e := CertHash(c, "alice", pF)
			guess := new(big.Int).Mul(e, kp)
			guess.Mod(guess, c.Order())
			msg := []byte("pay")
			for _, d := range []*big.Int{kp, guess} {
				k, err := c.privateKey(d)
				if err != nil {
					continue
				}
				sig, _ := k.Sign(rand.Reader, msg)
				if qF.Verify(msg, sig) {
					t.Fatal("forger signed under the forged public point")
				}
				if k.Public().Equal(qF) {
					t.Fatal("forger knows the reconstructed key")
				}
			}
		})
	}
}

func TestParsePointRejects(t *testing.T) {
	c := P256()
	k, _ := c.GenerateKey(rand.Reader)
	good := k.Public().Bytes()
	bad := [][]byte{nil, {0}, {2}, append([]byte{5}, good[1:]...), good[:32],
		append(append([]byte{}, good...), 0), bytes.Repeat([]byte{0xff}, 33)}
	for i, b := range bad {
		if _, err := c.ParsePoint(b); err == nil {
			t.Errorf("case %d: accepted %x", i, b)
		}
	}
	if p, err := c.ParsePoint(k.Public().Point().Uncompressed()); err != nil || !p.Equal(k.Public().Point()) {
		t.Fatalf("uncompressed round trip: %v", err)
	}
	if _, err := c.ParseScalar(c.EncodeScalar(c.Order())[:32]); err == nil {
		t.Fatal("scalar n accepted")
	}
	if _, err := c.ParseScalar(make([]byte, 32)); err == nil {
		t.Fatal("zero scalar accepted")
	}
	if err := ValidateID("a\nb"); err == nil {
		t.Fatal("control character accepted")
	}
}

func FuzzParseResponse(f *testing.F) {
	c := P256()
	k, _ := c.GenerateKey(rand.Reader)
	f.Add(k.Public().Bytes(), k.Bytes())
	f.Add(k.Public().Point().Uncompressed(), make([]byte, 32))
	f.Add([]byte{2}, []byte{1})
	f.Fuzz(func(t *testing.T, p, r []byte) {
		for _, c := range curves() {
			resp, err := ParseResponse(c, p, r)
			if err != nil {
				continue
			}
			if !bytes.Equal(resp.P.Bytes(), p) && !bytes.Equal(resp.P.Uncompressed(), p) {
				t.Fatalf("point does not round trip")
			}
			if _, err := Reconstruct(c, "fuzz", resp.P, k.Public()); err != nil && c == nil {
				t.Fatal(err)
			}
		}
	})
}

// The issuer's and the holder's scalar arithmetic (#12: off math/big onto
// constant-time bigmod) agrees with math/big on edge and random values of
// both curves, and refuses values not reduced mod n.
func TestMulAddModAgreesWithBig(t *testing.T) {
	for _, c := range []*Curve{P256(), SM2()} {
		n := c.Order()
		nm1 := new(big.Int).Sub(n, big.NewInt(1))
		vals := []*big.Int{big.NewInt(0), big.NewInt(1), big.NewInt(2), nm1, new(big.Int).Rsh(n, 1)}
		for i := 0; i < 20; i++ {
			k, err := c.RandomScalar(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			vals = append(vals, k)
		}
		for i, a := range vals {
			b, d := vals[(i*7+3)%len(vals)], vals[(i*5+1)%len(vals)]
			got, err := c.mulAddMod(a, b, d)
			if err != nil {
				t.Fatal(err)
			}
			want := new(big.Int).Mul(a, b)
			want.Add(want, d).Mod(want, n)
			if got.Cmp(want) != 0 {
				t.Fatalf("%s: %x·%x + %x = %x, want %x", c.Name(), a, b, d, got, want)
			}
		}
		for _, bad := range []*big.Int{n, new(big.Int).Add(n, big.NewInt(5)), big.NewInt(-1)} {
			if _, err := c.mulAddMod(bad, big.NewInt(1), big.NewInt(1)); !errors.Is(err, ErrInvalidScalar) {
				t.Errorf("%s: unreduced %v accepted: %v", c.Name(), bad, err)
			}
		}
	}
}
