package authz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/qshield/qshield/httpsig"
	"github.com/qshield/qshield/pki"
)

// signedAuth verifies with httpsig against one key whose principal is a
// phone (key "phone-1") or an admin (key "admin-1").
type signedAuth struct {
	v *httpsig.Verifier
}

type oneKey map[string]*ecdsa.PublicKey

func (k oneKey) PublicKey(_ context.Context, id string) (*ecdsa.PublicKey, error) {
	if p, ok := k[id]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("%w: %s", httpsig.ErrUnknownKey, id)
}

func (a signedAuth) AuthenticateSigned(r *http.Request) (*pki.Principal, *x509.Certificate, error) {
	v, err := a.v.Verify(r)
	if err != nil {
		return nil, nil, err
	}
	kind := pki.PrincipalKind(strings.TrimSuffix(v.KeyID, "-1"))
	return &pki.Principal{Serial: v.KeyID, Name: v.KeyID, Kind: kind, Status: pki.StatusActive}, nil, nil
}

// TestSignedRequests: a route that opts in accepts a request signed by a
// phone's key in place of a client certificate; the kind check still
// applies; a replayed, tampered or unsigned request is 401; a route that
// does not opt in ignores the signature.
func TestSignedRequests(t *testing.T) {
	phoneKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	adminKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	v := &httpsig.Verifier{Keys: oneKey{"phone-1": &phoneKey.PublicKey, "admin-1": &adminKey.PublicKey}, Nonces: &httpsig.MemoryNonces{}}
	var denials []Denial
	rt := New(Options{Auth: fakeAuth{}, Signed: signedAuth{v}, Denied: func(_ context.Context, d Denial) { denials = append(denials, d) }})
	var got *pki.Principal
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = PrincipalFrom(r.Context()) })
	rt.Handle("POST /pay", Allow(pki.PrincipalPhone).OrSigned(), h)
	rt.Handle("POST /mtls-only", Allow(pki.PrincipalPhone), h)
	body := `{"amount":1}`
	signed := func(path string, key *ecdsa.PrivateKey, id string) *http.Request {
		r := httptest.NewRequest("POST", "https://example.com"+path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		if err := httpsig.Sign(r, []byte(body), key, id, time.Now(), time.Minute); err != nil {
			t.Fatal(err)
		}
		return r
	}
	serve := func(r *http.Request) int {
		got = nil
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, r)
		return w.Code
	}
	r := signed("/pay", phoneKey, "phone-1")
	replay := r.Clone(context.Background())
	replay.Body = httptest.NewRequest("POST", "/", strings.NewReader(body)).Body
	if c := serve(r); c != 200 || got == nil || got.Name != "phone-1" {
		t.Fatalf("signed phone request: %d, principal %+v", c, got)
	}
	if c := serve(replay); c != 401 || got != nil {
		t.Fatalf("replayed signed request: %d", c)
	}
	if c := serve(signed("/pay", adminKey, "admin-1")); c != 403 {
		t.Fatalf("signed admin on a phone route: %d", c)
	}
	if c := serve(signed("/mtls-only", phoneKey, "phone-1")); c != 401 || got != nil {
		t.Fatalf("signed request on a route that did not opt in: %d", c)
	}
	tampered := signed("/pay", phoneKey, "phone-1")
	tampered.Body = httptest.NewRequest("POST", "/", strings.NewReader(`{"amount":9}`)).Body
	if c := serve(tampered); c != 401 {
		t.Fatalf("tampered body: %d", c)
	}
	if c := serve(httptest.NewRequest("POST", "/pay", strings.NewReader(body))); c != 401 {
		t.Fatalf("unsigned: %d", c)
	}
	// A certificate still works on the same route.
	cr := req("POST", "/pay", "phone")
	if c := serve(cr); c != 200 || got == nil || got.Kind != pki.PrincipalPhone {
		t.Fatalf("mTLS on a route accepting both: %d", c)
	}
	if s := Allow(pki.PrincipalPhone).OrSigned().String(); !strings.Contains(s, "signed request") {
		t.Errorf("policy string %q does not say it accepts signed requests", s)
	}
	if len(denials) == 0 {
		t.Error("refusals were not reported")
	}
}
