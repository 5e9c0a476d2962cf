// Package httpsig signs and verifies HTTP requests with HTTP Message
// Signatures (RFC 9421), using ecdsa-p256-sha256 keys, with the body bound
// by Content-Digest (RFC 9530).
//
// It exists for clients that cannot present a TLS client certificate: a
// payer's wallet in a browser keeps a non-extractable WebCrypto ECDSA P-256
// key and signs each request with it; the server looks the key up by its
// key ID (for qshield, the serial of the certificate its CA issued for that
// key, so revocation and kinds work exactly as for mutual TLS).
//
// # What a request must carry
//
// Verifier accepts exactly one signature (one label in Signature-Input and
// Signature) with:
//
//   - covered components: "@method"; "@target-uri", or "@authority" and
//     "@path" (plus "@query" when the request has a query); and
//     "content-digest" whenever the request has a body;
//   - parameters created, expires, nonce and keyid (alg, when present, must
//     be "ecdsa-p256-sha256"); created no later than now plus Skew,
//     expires after now, and expires − created at most MaxAge;
//   - a Content-Digest with sha-256 and/or sha-512 that matches the body
//     (every listed known algorithm must match);
//   - a nonce the key has not used before within MaxAge (NonceStore),
//     checked only once the signature verifies, so a forger cannot burn a
//     legitimate client's nonces.
//
// Component parameters (";sf", ";key", ";req", ";bs", ";name", ";tr") and
// other derived components are refused with a clear error rather than
// half-supported. ECDSA signatures are the raw r‖s form of RFC 9421 §3.3.4
// (which is what WebCrypto produces).
//
// # Test vectors
//
// testdata/rfc9421-b24.txt holds RFC 9421 appendix B.2.4 (a response signed
// with test-key-ecc-p256): the signature base is rebuilt byte for byte and
// the RFC's signature verifies. The B.2.3 and B.2.5 bases check the
// request components, and RFC 9530's examples the digests.
package httpsig

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Algorithm is the one signature algorithm this package accepts.
const Algorithm = "ecdsa-p256-sha256"

// Errors of verification; each wraps one of these.
var (
	// ErrNoSignature: the request carries no Signature-Input header.
	ErrNoSignature = errors.New("httpsig: request is not signed")
	// ErrInvalid: a signature that is malformed, incomplete, out of its
	// time window, over a wrong digest, or that does not verify.
	ErrInvalid = errors.New("httpsig: signature rejected")
	// ErrReplay: a nonce the key already used.
	ErrReplay = errors.New("httpsig: replayed request (nonce already used)")
	// ErrUnknownKey is what a KeyResolver returns (wrapped) for a key ID it
	// does not know or no longer accepts.
	ErrUnknownKey = errors.New("httpsig: unknown or revoked key")
)

// Params are a signature's covered components and parameters, in their
// order on the wire.
type Params struct {
	Label string
	List  InnerList
}

// ParseSignatureInput parses a Signature-Input header into its signatures,
// in order. Only inner lists of strings are accepted as members.
func ParseSignatureInput(v string) ([]Params, error) {
	keys, m, err := dictionary(v, (*parser).innerList)
	if err != nil {
		return nil, err
	}
	out := make([]Params, 0, len(keys))
	for _, k := range keys {
		out = append(out, Params{Label: k, List: m[k]})
	}
	return out, nil
}

// ParseSignature parses a Signature header: label → signature bytes.
func ParseSignature(v string) (map[string][]byte, error) {
	_, m, err := dictionary(v, bytesMember)
	return m, err
}

// Components returns the covered component identifiers.
func (p Params) Components() []string {
	out := make([]string, len(p.List.Items))
	for i, it := range p.List.Items {
		out[i] = it.Value
	}
	return out
}

func (p Params) param(name string) (any, bool) {
	for _, x := range p.List.Params {
		if x.Name == name {
			return x.Value, true
		}
	}
	return nil, false
}

// Int returns an integer parameter.
func (p Params) Int(name string) (int64, bool) {
	v, ok := p.param(name)
	i, isInt := v.(int64)
	return i, ok && isInt
}

// String returns a string parameter.
func (p Params) String(name string) (string, bool) {
	v, ok := p.param(name)
	s, isStr := v.(string)
	return s, ok && isStr
}

// Message gives the values of the components a signature base covers.
type Message interface {
	// Component returns the value of a derived component ("@method", …)
	// or of a header field (lowercase name), and whether it is present.
	Component(name string) (string, bool)
}

// Base builds the signature base (RFC 9421 §2.5) of p over m.
func Base(p Params, m Message) ([]byte, error) {
	var b bytes.Buffer
	seen := map[string]bool{}
	for _, it := range p.List.Items {
		if len(it.Params) > 0 {
			return nil, fmt.Errorf("%w: component parameters (%q;%s) are not supported", ErrInvalid, it.Value, it.Params[0].Name)
		}
		name := it.Value
		if name == "" || name != strings.ToLower(name) || name == "@signature-params" {
			return nil, fmt.Errorf("%w: component identifier %q", ErrInvalid, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: component %q covered twice", ErrInvalid, name)
		}
		seen[name] = true
		v, ok := m.Component(name)
		if !ok {
			return nil, fmt.Errorf("%w: covered component %q is missing from the message", ErrInvalid, name)
		}
		if strings.ContainsAny(v, "\r\n") {
			return nil, fmt.Errorf("%w: component %q has a line break", ErrInvalid, name)
		}
		var sb strings.Builder
		serializeString(&sb, name)
		b.WriteString(sb.String())
		b.WriteString(": ")
		b.WriteString(v)
		b.WriteByte('\n')
	}
	b.WriteString(`"@signature-params": `)
	b.WriteString(p.List.String())
	return b.Bytes(), nil
}

// RequestMessage exposes an HTTP request's components. Scheme is the
// scheme of "@target-uri" ("https" when r.TLS is set, else "http", unless
// given — a server behind a TLS-terminating proxy sets it).
type RequestMessage struct {
	R      *http.Request
	Scheme string
}

// Component implements Message.
func (q RequestMessage) Component(name string) (string, bool) {
	r := q.R
	switch name {
	case "@method":
		return r.Method, true
	case "@authority":
		return strings.ToLower(r.Host), r.Host != ""
	case "@path":
		p := r.URL.EscapedPath()
		if p == "" {
			p = "/"
		}
		return p, true
	case "@query":
		return "?" + r.URL.RawQuery, true
	case "@target-uri":
		scheme := q.Scheme
		if scheme == "" {
			scheme = "http"
			if r.TLS != nil {
				scheme = "https"
			}
		}
		uri := r.URL.RequestURI()
		return scheme + "://" + strings.ToLower(r.Host) + uri, r.Host != ""
	}
	if strings.HasPrefix(name, "@") {
		return "", false
	}
	vs := r.Header.Values(name)
	if len(vs) == 0 {
		return "", false
	}
	for i := range vs {
		vs[i] = strings.Trim(vs[i], " \t")
	}
	return strings.Join(vs, ", "), true
}

// KeyResolver returns the public key of a key ID, or an error wrapping
// ErrUnknownKey.
type KeyResolver interface {
	PublicKey(ctx context.Context, keyID string) (*ecdsa.PublicKey, error)
}

// NonceStore remembers (key ID, nonce) pairs until they expire; Use
// returns an error wrapping ErrReplay when the pair was used before.
type NonceStore interface {
	Use(ctx context.Context, keyID, nonce string, until time.Time) error
}

// Verifier verifies signed requests.
type Verifier struct {
	Keys   KeyResolver
	Nonces NonceStore
	// MaxAge bounds expires − created and how long a nonce is remembered
	// (default 2 minutes); Skew is the clock difference tolerated for
	// created (default 30 s).
	MaxAge, Skew time.Duration
	// MaxBody bounds the body read for the digest (default 64 KiB).
	MaxBody int64
	// Scheme of "@target-uri" (see RequestMessage).
	Scheme string
	Now    func() time.Time
}

// Verified is the outcome of a successful verification.
type Verified struct {
	KeyID   string
	Created time.Time
	Params  Params
}

// Verify checks r's signature and returns its key ID. r's body is read
// (at most MaxBody bytes) and replaced so that handlers can read it again.
func (v *Verifier) Verify(r *http.Request) (*Verified, error) {
	now, maxAge, skew, maxBody := time.Now, v.MaxAge, v.Skew, v.MaxBody
	if v.Now != nil {
		now = v.Now
	}
	if maxAge <= 0 {
		maxAge = 2 * time.Minute
	}
	if skew <= 0 {
		skew = 30 * time.Second
	}
	if maxBody <= 0 {
		maxBody = 64 << 10
	}
	in := strings.Join(r.Header.Values("Signature-Input"), ", ")
	if in == "" {
		return nil, ErrNoSignature
	}
	sigs, err := ParseSignatureInput(in)
	if err != nil {
		return nil, fmt.Errorf("%w: Signature-Input: %v", ErrInvalid, err)
	}
	if len(sigs) != 1 {
		return nil, fmt.Errorf("%w: want exactly one signature, got %d", ErrInvalid, len(sigs))
	}
	p := sigs[0]
	sigVals, err := ParseSignature(strings.Join(r.Header.Values("Signature"), ", "))
	if err != nil {
		return nil, fmt.Errorf("%w: Signature: %v", ErrInvalid, err)
	}
	sig, ok := sigVals[p.Label]
	if !ok || len(sigVals) != 1 {
		return nil, fmt.Errorf("%w: Signature does not carry exactly the signature %q", ErrInvalid, p.Label)
	}
	// Parameters.
	if alg, ok := p.param("alg"); ok && alg != Algorithm {
		return nil, fmt.Errorf("%w: algorithm %v (want %s)", ErrInvalid, alg, Algorithm)
	}
	keyID, ok := p.String("keyid")
	if !ok || keyID == "" || len(keyID) > 128 {
		return nil, fmt.Errorf("%w: missing keyid", ErrInvalid)
	}
	nonce, ok := p.String("nonce")
	if !ok || len(nonce) < 16 || len(nonce) > 128 {
		return nil, fmt.Errorf("%w: missing nonce (16 to 128 characters)", ErrInvalid)
	}
	created, ok1 := p.Int("created")
	expires, ok2 := p.Int("expires")
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%w: created and expires are required", ErrInvalid)
	}
	t := now()
	ct, et := time.Unix(created, 0), time.Unix(expires, 0)
	switch {
	case ct.After(t.Add(skew)):
		return nil, fmt.Errorf("%w: created %s is in the future", ErrInvalid, ct.UTC().Format(time.RFC3339))
	case !et.After(t):
		return nil, fmt.Errorf("%w: signature expired at %s", ErrInvalid, et.UTC().Format(time.RFC3339))
	case et.Before(ct) || et.Sub(ct) > maxAge:
		return nil, fmt.Errorf("%w: validity %s exceeds %s", ErrInvalid, et.Sub(ct), maxAge)
	}
	// Covered components.
	comps := p.Components()
	has := func(c string) bool { return slices.Contains(comps, c) }
	if !has("@method") {
		return nil, fmt.Errorf("%w: @method is not covered", ErrInvalid)
	}
	if !has("@target-uri") && (!has("@authority") || !has("@path") || (r.URL.RawQuery != "" && !has("@query"))) {
		return nil, fmt.Errorf("%w: the target (@target-uri, or @authority, @path and @query) is not covered", ErrInvalid)
	}
	body, err := readBody(r, maxBody)
	if err != nil {
		return nil, err
	}
	if len(body) > 0 || r.Header.Get("Content-Digest") != "" {
		if !has("content-digest") {
			return nil, fmt.Errorf("%w: a request with a body must cover content-digest", ErrInvalid)
		}
		if err := CheckDigest(r.Header.Get("Content-Digest"), body); err != nil {
			return nil, err
		}
	}
	base, err := Base(p, RequestMessage{R: r, Scheme: v.Scheme})
	if err != nil {
		return nil, err
	}
	pub, err := v.Keys.PublicKey(r.Context(), keyID)
	if err != nil {
		return nil, err
	}
	if !VerifyECDSA(pub, base, sig) {
		return nil, fmt.Errorf("%w: signature does not verify under key %s", ErrInvalid, keyID)
	}
	if v.Nonces == nil {
		return nil, errors.New("httpsig: verifier has no nonce store")
	}
	if err := v.Nonces.Use(r.Context(), keyID, nonce, et.Add(skew)); err != nil {
		return nil, err
	}
	return &Verified{KeyID: keyID, Created: ct, Params: p}, nil
}

func readBody(r *http.Request, max int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	r.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("httpsig: read body: %w", err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: body over %d bytes", ErrInvalid, max)
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	return b, nil
}

// VerifyECDSA verifies a raw r‖s P-256 signature over SHA-256(base).
func VerifyECDSA(pub *ecdsa.PublicKey, base, sig []byte) bool {
	if pub == nil || len(sig) != 64 {
		return false
	}
	h := sha256.Sum256(base)
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}

// Digest returns the Content-Digest value of body (sha-256).
func Digest(body []byte) string {
	h := sha256.Sum256(body)
	return "sha-256=:" + base64.StdEncoding.EncodeToString(h[:]) + ":"
}

// CheckDigest checks a Content-Digest header against body: every sha-256
// and sha-512 member must match, and at least one must be present.
func CheckDigest(header string, body []byte) error {
	if header == "" {
		return fmt.Errorf("%w: missing Content-Digest", ErrInvalid)
	}
	_, m, err := dictionary(header, bytesMember)
	if err != nil {
		return fmt.Errorf("%w: Content-Digest: %v", ErrInvalid, err)
	}
	known := 0
	for alg, got := range m {
		var want []byte
		switch alg {
		case "sha-256":
			h := sha256.Sum256(body)
			want = h[:]
		case "sha-512":
			h := sha512.Sum512(body)
			want = h[:]
		default:
			continue
		}
		known++
		if subtle.ConstantTimeCompare(got, want) != 1 {
			return fmt.Errorf("%w: Content-Digest %s does not match the body", ErrInvalid, alg)
		}
	}
	if known == 0 {
		return fmt.Errorf("%w: Content-Digest has neither sha-256 nor sha-512", ErrInvalid)
	}
	return nil
}

// Sign signs r (whose body is body) with key under keyID, covering
// @method, @target-uri and, with a body, content-digest and content-type;
// it sets Content-Digest, Signature-Input and Signature. The signature is
// valid for validity from now.
func Sign(r *http.Request, body []byte, key *ecdsa.PrivateKey, keyID string, now time.Time, validity time.Duration) error {
	nb := make([]byte, 16)
	if _, err := rand.Read(nb); err != nil {
		return fmt.Errorf("httpsig: nonce: %w", err)
	}
	items := []Item{{Value: "@method"}, {Value: "@target-uri"}}
	if len(body) > 0 {
		r.Header.Set("Content-Digest", Digest(body))
		items = append(items, Item{Value: "content-digest"})
		if r.Header.Get("Content-Type") != "" {
			items = append(items, Item{Value: "content-type"})
		}
	}
	p := Params{Label: "sig1", List: InnerList{Items: items, Params: []Param{
		{"created", now.Unix()}, {"expires", now.Add(validity).Unix()},
		{"nonce", base64.RawURLEncoding.EncodeToString(nb)}, {"keyid", keyID}, {"alg", Algorithm}}}}
	base, err := Base(p, RequestMessage{R: r})
	if err != nil {
		return err
	}
	h := sha256.Sum256(base)
	rr, ss, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		return fmt.Errorf("httpsig: sign: %w", err)
	}
	sig := make([]byte, 64)
	rr.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	r.Header.Set("Signature-Input", p.Label+"="+p.List.String())
	r.Header.Set("Signature", p.Label+"=:"+base64.StdEncoding.EncodeToString(sig)+":")
	return nil
}

// MemoryNonces is a NonceStore for one process (a platform of several
// nodes needs a shared store).
type MemoryNonces struct {
	Now func() time.Time
	mu  sync.Mutex
	m   map[string]time.Time
}

// maxMemoryNonces bounds MemoryNonces; beyond it new nonces are refused
// (fail closed) until old ones expire.
const maxMemoryNonces = 1 << 20

// Use implements NonceStore.
func (s *MemoryNonces) Use(_ context.Context, keyID, nonce string, until time.Time) error {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	t := now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]time.Time{}
	}
	k := keyID + "\x00" + nonce
	if exp, ok := s.m[k]; ok && exp.After(t) {
		return fmt.Errorf("%w: key %s", ErrReplay, keyID)
	}
	if len(s.m) >= maxMemoryNonces {
		for k, exp := range s.m {
			if !exp.After(t) {
				delete(s.m, k)
			}
		}
		if len(s.m) >= maxMemoryNonces {
			return fmt.Errorf("%w: nonce store full", ErrReplay)
		}
	}
	s.m[k] = until
	return nil
}
