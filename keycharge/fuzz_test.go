package keycharge_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"github.com/qshield/qshield/keycharge"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

var fuzzRoutes = []struct{ method, path, ctype string }{
	{"POST", "/v1/keycharge/devices", "application/json"},
	{"POST", "/v1/keycharge/devices/FZ-1/transitions", "application/json"},
	{"POST", "/v1/keycharge/charges", "application/json"},
	{"POST", "/v1/keycharge/charges/chg-x/authenticate", "application/json"},
	{"POST", "/v1/keycharge/charges/chg-x/commit", "application/json"},
	{"POST", "/v1/keycharge/charges/chg-x/abort", "application/json"},
	{"POST", "/v1/keycharge/pool", "application/json"},
	{"POST", "/v1/keycharge/channel/open", "application/json"},
	{"POST", "/v1/keycharge/channel/message", "application/octet-stream"},
}

// FuzzHandler sends arbitrary bodies to every JSON and frame endpoint as an
// administrator: the answer is a 2xx or a 4xx problem, never a 5xx or a panic.
func FuzzHandler(f *testing.F) {
	ctx := context.Background()
	db := sqldbtest.Open(f, sqldbtest.Backends()[0])
	ca := newCA(f, db, "platform")
	log, err := audit.Open(ctx, db)
	if err != nil {
		f.Fatal(err)
	}
	q, err := keycharge.Open(ctx, keycharge.Config{DB: db, CA: ca, Audit: log, MasterKey: bytes.Repeat([]byte{1}, 32)})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := q.Register(ctx, keycharge.Principal{Name: "qshield-admin", Role: pki.RoleClient, Kind: pki.PrincipalAdmin}, keycharge.RegisterRequest{Serial: "FZ-1"}); err != nil {
		f.Fatal(err)
	}
	admin, err := ca.IssueTLSFor(ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: "qshield-admin", Kind: pki.PrincipalAdmin})
	if err != nil {
		f.Fatal(err)
	}
	h := q.Handler()
	for i, s := range []string{`{"serial":"FZ-2","model":"m"}`, `{"action":"distribute","administrator":"a"}`, `{"serial":"FZ-1","volume":1024,"certificate":"AAAA"}`,
		`{"signature":"AAAA"}`, `{"master_sae":"s","key_ids":["a","b"],"hash":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, `{"reason":"x"}`,
		`{"master_sae":"s","key_ids":["a"]}`, `{"serial":"FZ-1","key_id":"k","offset":0,"alg":"sm4-gcm","client_nonce":"AAAAAAAAAAAAAAAAAAAAAA==","time_ms":0,"signature":"AA==","mac":"AA=="}`, "QKCH\x01\x01"} {
		f.Add(uint8(i), []byte(s))
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := fuzzRoutes[int(route)%len(fuzzRoutes)]
		req := httptest.NewRequest(r.method, r.path, bytes.NewReader(body))
		req.Header.Set("Content-Type", r.ctype)
		req.TLS = &tls.ConnectionState{HandshakeComplete: true}
		req.TLS.PeerCertificates = append(req.TLS.PeerCertificates, admin.Leaf)
		req.TLS.VerifiedChains = [][]*x509.Certificate{{admin.Leaf}}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 && w.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %s %q: %d %s", r.method, r.path, body, w.Code, w.Body.String())
		}
		_ = http.StatusOK
	})
}
