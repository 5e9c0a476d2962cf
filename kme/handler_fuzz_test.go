package kme

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"github.com/qshield/qshield/qkd"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// FuzzHandler sends arbitrary methods, paths, queries and bodies to a KME
// (one site, two local SAEs, a small pool) as an authenticated SAE, and to
// the KME-to-KME endpoints as the peer. Whatever comes in, the answer is
// JSON with a status the specification allows, and a rejected request
// changes neither the pool nor the reservations.
func FuzzHandler(f *testing.F) {
	db := sqldbtest.Open(f, sqldbtest.Backends()[0])
	ca := newCAtb(f, db)
	ctx := context.Background()
	k, err := New(ctx, db, Config{KMEID: "KME_A", SAEs: []string{"SAE_A1", "SAE_A2"}, MasterKey: testMaster, MaxKeyCount: 100000})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { k.Close() })
	// The peer endpoints are reachable on a second KME that has a peer.
	kp, err := New(ctx, db, Config{KMEID: "KME_P", PeerKMEID: "KME_Q", SAEs: []string{"SAE_P"}, MasterKey: testMaster,
		PeerURL: "https://127.0.0.1:1", PeerTLS: &tls.Config{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { kp.Close() })
	for _, kk := range []*KME{k, kp} {
		if err := kk.Deposit(ctx, qkd.RandomKeys(2000, 32)); err != nil {
			f.Fatal(err)
		}
	}
	state := func(cert *x509.Certificate) *tls.ConnectionState {
		return &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert, ca.Certificate()}}}
	}
	issue := func(role pki.Role, cn string) *tls.ConnectionState {
		c, err := ca.IssueTLS(ctx, role, cn, nil, nil)
		if err != nil {
			f.Fatal(err)
		}
		return state(c.Leaf)
	}
	sae, peer := issue(pki.RoleApplication, "SAE_A1"), issue(pki.RoleClient, "KME_Q")
	units := func(x *KME) int {
		x.mu.Lock()
		defer x.mu.Unlock()
		n := x.pool.len()
		for _, g := range x.groups {
			n += len(g.units)
		}
		return n
	}
	for _, s := range []struct{ m, path, body string }{
		{"GET", "/api/v1/keys/SAE_A2/status", ""},
		{"GET", "/api/v1/keys/SAE_A2/enc_keys?number=2&size=512", ""},
		{"POST", "/api/v1/keys/SAE_A2/enc_keys", `{"number":3,"size":64}`},
		{"GET", "/api/v1/keys/SAE_A1/dec_keys?key_ID=bc490419-7d60-487f-adc1-4ddcc177c139", ""},
		{"POST", "/api/v1/keys/SAE_A1/dec_keys", `{"key_IDs":[{"key_ID":"bc490419-7d60-487f-adc1-4ddcc177c139"}]}`},
		{"POST", "/api/v1/kme-sync/reserve", `{"master_SAE_ID":"X","slave_SAE_ID":"SAE_P","mode":"slave","keys":[{"key_ID":"a","size":256,"units":["a"]}]}`},
		{"POST", "/api/v1/kme-sync/release", `{"keys":[{"key_ID":"a","units":["a"]}]}`},
		{"POST", "/api/v1/kme-sync/reconcile", `{"unit_IDs":["a"]}`},
		{"GET", "/api/v1/keys/%2F/status", ""},
	} {
		f.Add(s.m, s.path, s.body)
	}
	f.Fuzz(func(t *testing.T, method, target, body string) {
		if len(target) == 0 || target[0] != '/' {
			target = "/" + target
		}
		req, err := http.NewRequest(method, "https://kme"+target, bytes.NewBufferString(body))
		if err != nil {
			return
		}
		kk, cs := k, sae
		if len(target) > len(SyncPrefix) && target[:len(SyncPrefix)] == SyncPrefix {
			kk, cs = kp, peer
		}
		req.TLS = cs
		before := units(kk)
		rec := httptest.NewRecorder()
		kk.Handler().ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 400, 401, 404, 405, 409, 503:
		default:
			t.Fatalf("%s %s: status %d", method, target, rec.Code)
		}
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("%s %s: body %q is not a JSON object", method, target, rec.Body.Bytes())
		}
		if rec.Code != 200 {
			if _, ok := m["message"].(string); !ok {
				t.Fatalf("%s %s: error without message: %s", method, target, rec.Body.Bytes())
			}
			if after := units(kk); after != before {
				t.Fatalf("%s %s: rejected with %d but units went from %d to %d", method, target, rec.Code, before, after)
			}
		}
	})
}
