package authz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/pki"
)

// fakeAuth maps a certificate's common name to a principal of that kind
// (CN "phone" → kind phone); CN "revoked" fails with ErrRevoked.
type fakeAuth struct{}

func (fakeAuth) Authenticate(_ context.Context, c *x509.Certificate) (*pki.Principal, error) {
	if c.Subject.CommonName == "revoked" {
		return nil, pki.ErrRevoked
	}
	return &pki.Principal{Serial: c.SerialNumber.Text(16), Name: c.Subject.CommonName, Kind: pki.PrincipalKind(c.Subject.CommonName), Status: pki.StatusActive}, nil
}

func cert(cn string) *x509.Certificate {
	return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, SerialNumber: big.NewInt(int64(len(cn)) + 1000)}
}

func req(method, path, cn string) *http.Request {
	r := httptest.NewRequest(method, path, nil)
	if cn != "" {
		c := cert(cn)
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}, VerifiedChains: [][]*x509.Certificate{{c}}}
	}
	return r
}

func TestPolicyRequired(t *testing.T) {
	rt := New(Options{Auth: fakeAuth{}})
	defer func() {
		if recover() == nil {
			t.Fatal("a route without a policy was registered")
		}
	}()
	rt.Handle("GET /x", Policy{}, http.NotFoundHandler())
}

func TestKindsOwnerAndPrincipal(t *testing.T) {
	var denials []Denial
	rt := New(Options{Auth: fakeAuth{}, Denied: func(_ context.Context, d Denial) { denials = append(denials, d) }})
	own := Allow(pki.PrincipalCharger).Owned("its own charges", func(r *http.Request, p *pki.Principal) error {
		if r.PathValue("owner") != p.Name {
			return ErrNotOwner
		}
		return nil
	})
	var got *pki.Principal
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = PrincipalFrom(r.Context()) })
	rt.Handle("GET /c/{owner}", own, h)
	rt.Handle("GET /pub", Public("test"), h)
	for _, tc := range []struct {
		path, cn string
		want     int
	}{
		{"/c/charger", "charger", 200},
		{"/c/other", "charger", 403},
		{"/c/phone", "phone", 403},
		{"/c/charger", "", 401},
		{"/c/charger", "revoked", 401},
		{"/pub", "", 200},
		{"/pub", "phone", 200},
	} {
		got = nil
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, req("GET", tc.path, tc.cn))
		if w.Code != tc.want {
			t.Errorf("%s as %q: %d, want %d: %s", tc.path, tc.cn, w.Code, tc.want, w.Body)
		}
		if tc.want == 200 && tc.cn != "" && (got == nil || got.Name != tc.cn) {
			t.Errorf("%s as %q: handler saw principal %+v", tc.path, tc.cn, got)
		}
		if tc.want != 200 && !strings.Contains(w.Header().Get("Content-Type"), "problem+json") {
			t.Errorf("%s as %q: refusal is not problem+json", tc.path, tc.cn)
		}
	}
	// Refusals of principals are reported one by one; anonymous ones once per source and minute.
	var named, anon int
	for _, d := range denials {
		if d.Principal != nil {
			named++
		} else {
			anon++
		}
	}
	if named != 2 || anon != 1 {
		t.Fatalf("denials: %d named, %d anonymous (%+v)", named, anon, denials)
	}
}

func TestRateLimits(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	rt := New(Options{Auth: fakeAuth{}, PerPrincipal: 5, PerSource: 2, Burst: 4, Now: func() time.Time { return now }})
	rt.Handle("GET /x", Allow(pki.PrincipalPhone), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	count := func(cn string, n int) (ok, limited int, retry string) {
		for range n {
			w := httptest.NewRecorder()
			rt.ServeHTTP(w, req("GET", "/x", cn))
			switch w.Code {
			case http.StatusTooManyRequests:
				limited++
				retry = w.Header().Get("Retry-After")
			default:
				ok++
			}
		}
		return
	}
	if ok, limited, retry := count("", 10); ok != 4 || limited != 6 || retry == "" {
		t.Fatalf("anonymous: %d through, %d limited (Retry-After %q)", ok, limited, retry)
	}
	if ok, limited, _ := count("phone", 10); ok != 4 || limited != 6 {
		t.Fatalf("principal: %d through, %d limited", ok, limited)
	}
	now = now.Add(time.Second)
	if ok, _, _ := count("phone", 10); ok != 4 {
		t.Fatalf("after 1 s at 5/s with burst 4: %d through", ok)
	}
}

func TestTrustedProxyHeader(t *testing.T) {
	rt := New(Options{Auth: fakeAuth{}, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, ClientCertHeader: "X-Cert"})
	rt.Handle("GET /x", Allow(pki.PrincipalAdmin), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	c := selfSigned(t, "admin")
	for _, tc := range []struct {
		remote string
		want   int
	}{{"10.1.2.3:5555", 200}, {"192.168.1.1:5555", 401}} {
		r := httptest.NewRequest("GET", "/x", nil)
		r.RemoteAddr = tc.remote
		r.Header.Set("X-Cert", string(pki.EncodeCertPEM(c)))
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("from %s: %d, want %d: %s", tc.remote, w.Code, tc.want, w.Body)
		}
	}
}

func TestAnonymousAggregation(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var ds []Denial
	rt := New(Options{Auth: fakeAuth{}, Now: func() time.Time { return now }, Denied: func(_ context.Context, d Denial) { ds = append(ds, d) }})
	rt.Handle("GET /x", Allow(pki.PrincipalAdmin), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for range 300 {
		rt.ServeHTTP(httptest.NewRecorder(), req("GET", "/x", ""))
	}
	rt.Flush(context.Background(), false) // the minute has not ended
	if len(ds) != 1 {
		t.Fatalf("%d records before the minute ended", len(ds))
	}
	now = now.Add(time.Minute)
	rt.Flush(context.Background(), false)
	if len(ds) != 2 || ds[1].Count != 299 || ds[0].Count != 1 {
		t.Fatalf("aggregated: %+v", ds)
	}
}

func TestParseCertHeader(t *testing.T) {
	c := selfSigned(t, "x")
	pemText := string(pki.EncodeCertPEM(c))
	for _, v := range []string{pemText, strings.ReplaceAll(pemText, "\n", "%0A"), b64(c.Raw)} {
		got, err := ParseCertHeader(v)
		if err != nil || !got.Equal(c) {
			t.Errorf("%.30q: %v", v, err)
		}
	}
	for _, v := range []string{"", "%zz", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", strings.Repeat("A", 20000)} {
		if _, err := ParseCertHeader(v); err == nil {
			t.Errorf("%.30q accepted", v)
		}
	}
}

func FuzzParseCertHeader(f *testing.F) {
	f.Add("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	f.Add("%2D%2D%2D")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, v string) {
		c, err := ParseCertHeader(v)
		if (c == nil) == (err == nil) {
			t.Fatalf("certificate %v and error %v", c, err)
		}
		if len(v) > maxCertHeader && err == nil {
			t.Fatal("oversized header accepted")
		}
	})
}

func selfSigned(t *testing.T, cn string) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// Concurrent requests share the limiters and the aggregation safely (run
// with -race).
func TestConcurrentRequests(t *testing.T) {
	var mu sync.Mutex
	denied := 0
	rt := New(Options{Auth: fakeAuth{}, PerPrincipal: 1000, PerSource: 1000, Denied: func(context.Context, Denial) { mu.Lock(); denied++; mu.Unlock() }})
	rt.Handle("GET /x", Allow(pki.PrincipalPhone), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cn := []string{"phone", "", "pos"}[i%3]
			for range 200 {
				rt.ServeHTTP(httptest.NewRecorder(), req("GET", "/x", cn))
			}
		}()
	}
	wg.Wait()
	rt.Flush(context.Background(), true)
	if denied == 0 {
		t.Fatal("no refusal reported")
	}
}

// A Signed route runs its check for every caller, with or without a
// certificate: no certificate is enough, the signature decides.
func TestSignedPolicy(t *testing.T) {
	var denials []Denial
	rt := New(Options{Denied: func(_ context.Context, d Denial) { denials = append(denials, d) }})
	rt.HandleFunc("GET /obj/{id}", Signed("signed by the owner's key", func(r *http.Request) error {
		switch r.Header.Get("Sig") {
		case "":
			return fmt.Errorf("%w: no signature", ErrUnsigned)
		case r.PathValue("id"):
			return nil
		case "boom":
			return errors.New("database down")
		}
		return fmt.Errorf("%w: another key", ErrNotOwner)
	}), func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	for sig, want := range map[string]int{"": http.StatusUnauthorized, "a": http.StatusOK, "b": http.StatusForbidden, "boom": http.StatusInternalServerError} {
		r := httptest.NewRequest(http.MethodGet, "/obj/a", nil)
		r.Header.Set("Sig", sig)
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("signature %q: %d, want %d", sig, w.Code, want)
		}
	}
	if len(denials) == 0 {
		t.Error("refusals not reported")
	}
	if p := rt.Routes()[0].Policy; p.IsPublic() || !p.IsSigned() || p.String() != "signed: signed by the owner's key" {
		t.Errorf("policy %v", p)
	}
}
