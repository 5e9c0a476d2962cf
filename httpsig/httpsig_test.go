package httpsig

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// mapMessage is a Message from a map (responses, fixed vectors).
type mapMessage map[string]string

func (m mapMessage) Component(name string) (string, bool) { v, ok := m[name]; return v, ok }

func readVector(t *testing.T, path string) (map[string]string, []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string]string{}
	var base []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("bad line %q", line)
		}
		if k == "base" {
			base = append(base, v)
			continue
		}
		kv[k] = v
	}
	return kv, base
}

func b64url(t *testing.T, s string) []byte {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("coordinate %q: %v", s, err)
	}
	return b
}

// TestRFC9421B24 rebuilds the signature base of RFC 9421 B.2.4 byte for
// byte and verifies the RFC's ECDSA signature with test-key-ecc-p256.
func TestRFC9421B24(t *testing.T) {
	kv, wantBase := readVector(t, "testdata/rfc9421-b24.txt")
	var sigs []Params
	pt := append(append([]byte{4}, b64url(t, kv["x"])...), b64url(t, kv["y"])...)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt)
	if err != nil {
		t.Fatal(err)
	}
	sigs, err = ParseSignatureInput(kv["signature-input"])
	if err != nil || len(sigs) != 1 || sigs[0].Label != "sig-b24" {
		t.Fatalf("parse Signature-Input: %v %+v", err, sigs)
	}
	msg := mapMessage{"@status": kv["status"], "content-type": kv["content-type"], "content-digest": kv["content-digest"], "content-length": kv["content-length"]}
	base, err := Base(sigs[0], msg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(base), strings.Join(wantBase, "\n"); got != want {
		t.Fatalf("signature base:\n%s\nwant:\n%s", got, want)
	}
	sv, err := ParseSignature(kv["signature"])
	if err != nil {
		t.Fatal(err)
	}
	if !VerifyECDSA(pub, base, sv["sig-b24"]) {
		t.Fatal("the RFC's B.2.4 signature does not verify")
	}
	// One changed byte of the base and it must not.
	base[10] ^= 1
	if VerifyECDSA(pub, base, sv["sig-b24"]) {
		t.Fatal("a modified base verifies")
	}
	// The response body of B.2 is {"message": "good dog"}; RFC 9530's
	// sha-512 of it is the content-digest above.
	if err := CheckDigest(kv["content-digest"], []byte(`{"message": "good dog"}`)); err != nil {
		t.Fatal(err)
	}
}

// TestRFC9421RequestBases: the bases of B.2.3 (request components) and
// B.2.5, from an http.Request like the RFC's test-request.
func TestRFC9421RequestBases(t *testing.T) {
	body := `{"hello": "world"}`
	r := httptest.NewRequest("POST", "https://example.com/foo?param=Value&Pet=dog", strings.NewReader(body))
	r.Header.Set("Date", "Tue, 20 Apr 2021 02:07:55 GMT")
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Content-Digest", "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:")
	r.Header.Set("Content-Length", "18")
	want, err := os.ReadFile("testdata/rfc9421-b23-base.txt")
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := ParseSignatureInput(`sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss"`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Base(sigs[0], RequestMessage{R: r})
	if err != nil || string(got) != string(want) {
		t.Fatalf("B.2.3 base (%v):\n%s\nwant:\n%s", err, got, want)
	}
	sigs, _ = ParseSignatureInput(`sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"`)
	got, _ = Base(sigs[0], RequestMessage{R: r})
	if want := "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@authority\": example.com\n\"content-type\": application/json\n\"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\""; string(got) != want {
		t.Fatalf("B.2.5 base:\n%s", got)
	}
	// RFC 9530 / RFC 9421 B.2: both digests of the test-request body.
	if err := CheckDigest("sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:", []byte(body)); err != nil {
		t.Fatal(err)
	}
	if Digest([]byte(body)) != "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:" {
		t.Fatal("Digest differs from RFC 9530's sha-256 example")
	}
}

type keys map[string]*ecdsa.PublicKey

func (k keys) PublicKey(_ context.Context, id string) (*ecdsa.PublicKey, error) {
	if p, ok := k[id]; ok {
		return p, nil
	}
	return nil, ErrUnknownKey
}

type fixture struct {
	key  *ecdsa.PrivateKey
	v    *Verifier
	now  time.Time
	body string
}

func newFixture(t *testing.T) *fixture {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{key: k, now: time.Unix(1_800_000_000, 0), body: `{"amount":100}`}
	f.v = &Verifier{Keys: keys{"k1": &k.PublicKey}, Nonces: &MemoryNonces{Now: func() time.Time { return f.now }}, Now: func() time.Time { return f.now }}
	return f
}

func (f *fixture) request(t *testing.T) *http.Request {
	r := httptest.NewRequest("POST", "https://pay.example/v1/qmsp/pay", strings.NewReader(f.body))
	r.Header.Set("Content-Type", "application/json")
	if err := Sign(r, []byte(f.body), f.key, "k1", f.now, time.Minute); err != nil {
		t.Fatal(err)
	}
	return r
}

func clone(t *testing.T, r *http.Request, body string) *http.Request {
	c := r.Clone(context.Background())
	c.Body = http.NoBody
	if body != "" {
		c.Body = ioNop(body)
	}
	return c
}

func ioNop(s string) *readCloser { return &readCloser{bytes.NewReader([]byte(s))} }

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

func TestSignVerifyAndReplay(t *testing.T) {
	f := newFixture(t)
	r := f.request(t)
	replay := clone(t, r, f.body)
	got, err := f.v.Verify(r)
	if err != nil {
		t.Fatal(err)
	}
	if got.KeyID != "k1" {
		t.Fatalf("key %q", got.KeyID)
	}
	// The handler can still read the body.
	var buf bytes.Buffer
	buf.ReadFrom(r.Body)
	if buf.String() != f.body {
		t.Fatalf("body after Verify: %q", buf.String())
	}
	if _, err := f.v.Verify(replay); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v, want ErrReplay", err)
	}
}

func TestRefusals(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name string
		mod  func(r *http.Request) *http.Request
	}{
		{"body changed", func(r *http.Request) *http.Request { return clone(t, r, `{"amount":999}`) }},
		{"digest swapped with body", func(r *http.Request) *http.Request {
			c := clone(t, r, `{"amount":999}`)
			c.Header.Set("Content-Digest", Digest([]byte(`{"amount":999}`)))
			return c
		}},
		{"method changed", func(r *http.Request) *http.Request { c := clone(t, r, f.body); c.Method = "PUT"; return c }},
		{"path changed", func(r *http.Request) *http.Request {
			c := clone(t, r, f.body)
			c.URL.Path = "/v1/other"
			return c
		}},
		{"host changed", func(r *http.Request) *http.Request { c := clone(t, r, f.body); c.Host = "evil.example"; return c }},
		{"unknown key", func(r *http.Request) *http.Request {
			c := clone(t, r, f.body)
			c.Header.Set("Signature-Input", strings.Replace(c.Header.Get("Signature-Input"), `keyid="k1"`, `keyid="k2"`, 1))
			return c
		}},
		{"no signature header", func(r *http.Request) *http.Request { c := clone(t, r, f.body); c.Header.Del("Signature"); return c }},
		{"two signatures", func(r *http.Request) *http.Request {
			c := clone(t, r, f.body)
			c.Header.Add("Signature-Input", strings.Replace(c.Header.Get("Signature-Input"), "sig1=", "sig2=", 1))
			return c
		}},
		{"component parameter", func(r *http.Request) *http.Request {
			c := clone(t, r, f.body)
			c.Header.Set("Signature-Input", strings.Replace(c.Header.Get("Signature-Input"), `"@method"`, `"@method";req`, 1))
			return c
		}},
		{"digest not covered", func(r *http.Request) *http.Request {
			c := clone(t, r, f.body)
			c.Header.Set("Signature-Input", strings.Replace(c.Header.Get("Signature-Input"), ` "content-digest"`, ``, 1))
			return c
		}},
	}
	for _, c := range cases {
		r := f.request(t)
		if _, err := f.v.Verify(c.mod(r)); !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnknownKey) {
			t.Errorf("%s: %v, want a refusal", c.name, err)
		}
	}
	// Time window.
	r := f.request(t)
	f.now = f.now.Add(61 * time.Second)
	if _, err := f.v.Verify(r); !errors.Is(err, ErrInvalid) {
		t.Errorf("expired: %v", err)
	}
	r = f.request(t)
	f.now = f.now.Add(-time.Minute)
	if _, err := f.v.Verify(r); !errors.Is(err, ErrInvalid) {
		t.Errorf("created in the future: %v", err)
	}
	// A refused forgery does not burn the nonce: the genuine request with
	// the same nonce still passes.
	f = newFixture(t)
	r = f.request(t)
	forged := clone(t, r, `{"amount":999}`)
	if _, err := f.v.Verify(forged); err == nil {
		t.Fatal("forged body accepted")
	}
	if _, err := f.v.Verify(r); err != nil {
		t.Fatalf("genuine request after a forgery with its nonce: %v", err)
	}
	// No signature at all is ErrNoSignature (the caller may fall back).
	if _, err := f.v.Verify(httptest.NewRequest("GET", "/", nil)); !errors.Is(err, ErrNoSignature) {
		t.Fatalf("unsigned: %v", err)
	}
}

func TestParseSignatureInputRefusals(t *testing.T) {
	for _, s := range []string{
		`sig1=("@method"`, `sig1=("@method");created=1.5`, `sig1=(@method)`, `Sig1=("@method")`,
		`sig1=("@method"),`, `sig1`, `sig1=("a""b")`, `sig1=("\x")`, `sig1=("@method");created=1234567890123456`,
	} {
		if _, err := ParseSignatureInput(s); !errors.Is(err, ErrSyntax) {
			t.Errorf("%q: %v, want ErrSyntax", s, err)
		}
	}
}

// FuzzParseSignatureInput: the parser never panics, and whatever it
// accepts serializes to a form that parses back to the same serialization
// (the "@signature-params" line a verifier rebuilds is stable).
func FuzzParseSignatureInput(f *testing.F) {
	f.Add(`sig-b24=("@status" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-ecc-p256"`)
	f.Add(`sig1=("@method" "@target-uri" "content-digest");created=1;expires=2;nonce="abc\"d";alg="ecdsa-p256-sha256", sig2=();tag=tok;x=?0`)
	f.Add(`a=("x";req;key="k")`)
	f.Fuzz(func(t *testing.T, s string) {
		sigs, err := ParseSignatureInput(s)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v does not wrap ErrSyntax", err)
			}
			return
		}
		var parts []string
		for _, p := range sigs {
			parts = append(parts, p.Label+"="+p.List.String())
		}
		ser := strings.Join(parts, ", ")
		again, err := ParseSignatureInput(ser)
		if err != nil {
			t.Fatalf("serialization %q of %q does not parse: %v", ser, s, err)
		}
		for i := range again {
			if again[i].Label != sigs[i].Label || again[i].List.String() != sigs[i].List.String() {
				t.Fatalf("round trip changed %q into %q", sigs[i].List.String(), again[i].List.String())
			}
		}
	})
}
