package platform

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qmsp"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestEnrolHandler: the one admin enrolment endpoint refuses callers that
// are not the admin, bodies without a PKIX key, and maps enrolment errors to
// stable codes without leaking internal ones; enrol runs only for an admin
// with a well-formed request.
func TestEnrolHandler(t *testing.T) {
	ctx := context.Background()
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	enc, _ := pki.RawKey(bytes.Repeat([]byte{3}, 32))
	ca, err := pki.OpenOrCreateCA(ctx, db, "enrol-test", pki.Options{}, enc)
	if err != nil {
		t.Fatal(err)
	}
	p := &Platform{CA: ca, Config: Config{Log: slog.New(slog.DiscardHandler)}}
	peer := func(cn string, kind pki.PrincipalKind) *tls.ConnectionState {
		c, err := ca.IssueTLSFor(ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: cn, Kind: kind})
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(c.Certificate[0])
		return &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, ca.Certificate()}}}
	}
	admin, other := peer(AdminName, pki.PrincipalAdmin), peer("someone-else", pki.PrincipalOperator)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(key.Public())

	var calls int
	var fail error
	inner := enrolHandler(p, "test", func(_ context.Context, req *PhoneEnrolment, pub any) (DeviceEnrolled, error) {
		calls++
		if !key.PublicKey.Equal(pub) || req.Phone != "ph-1" {
			return DeviceEnrolled{}, fmt.Errorf("wrong request %+v", req)
		}
		return DeviceEnrolled{Certificate: []byte{1, 2, 3}}, fail
	})
	// As the platform registers it: on the router, for the admin principal.
	rt := authz.New(authz.Options{Auth: ca})
	rt.Handle("POST /v1/qmsp/admin/phones", authz.Allow(pki.PrincipalAdmin), inner)
	h := rt
	body := func(pk []byte) string {
		b, _ := json.Marshal(PhoneEnrolment{Phone: "ph-1", Payer: 7, Account: "acct", PublicKey: pk})
		return string(b)
	}
	for _, tc := range []struct {
		name   string
		tls    *tls.ConnectionState
		body   string
		fail   error
		status int
		code   string
		called bool
	}{
		{"no certificate", nil, body(der), nil, 401, "client_certificate_required", false},
		{"not the admin", other, body(der), nil, 403, "forbidden", false},
		{"not a public key", admin, body([]byte("junk")), nil, 400, "malformed", false},
		{"unknown field", admin, `{"phone":"ph-1","admin":true}`, nil, 400, "malformed_json", false},
		{"too large", admin, `{"phone":"` + strings.Repeat("x", 9<<10) + `"}`, nil, 413, "body_too_large", false},
		{"exists", admin, body(der), fmt.Errorf("x: %w", qmsp.ErrGatewayExists), 409, "exists", true},
		{"no key", admin, body(der), qmsp.ErrNoQuantumKey, 503, "no_quantum_key", true},
		{"internal", admin, body(der), errors.New("disk on fire"), 500, "internal", true},
		{"enrolled", admin, body(der), nil, 201, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls, fail = 0, tc.fail
			r := httptest.NewRequest(http.MethodPost, "/v1/qmsp/admin/phones", strings.NewReader(tc.body))
			r.TLS = tc.tls
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.status || (calls == 1) != tc.called {
				t.Fatalf("status %d (enrol called %d times), want %d (called %v): %s", w.Code, calls, tc.status, tc.called, w.Body)
			}
			if tc.code != "" {
				var pr httpx.Problem
				if err := json.Unmarshal(w.Body.Bytes(), &pr); err != nil || pr.Code != tc.code {
					t.Fatalf("problem %+v (%v), want code %s", pr, err, tc.code)
				}
				if strings.Contains(pr.Detail, "disk on fire") {
					t.Fatal("internal error text disclosed")
				}
				return
			}
			var out DeviceEnrolled
			if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || !bytes.Equal(out.CA, ca.Certificate().Raw) || len(out.Certificate) != 3 {
				t.Fatalf("answer %+v (%v)", out, err)
			}
		})
	}
}
