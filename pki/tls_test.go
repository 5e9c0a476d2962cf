package pki

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func testMutualTLS(t *testing.T, db *sqldb.DB) {
	ctx := context.Background()
	ca := mustCA(t, db, "tls", ECDSAP256)
	loop := []net.IP{net.ParseIP("127.0.0.1")}
	srvCert, err := ca.IssueTLS(ctx, RoleServer, "settlement", []string{"settlement.test"}, loop)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn, serial, err := PeerIdentity(r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		if r.TLS.Version != tls.VersionTLS13 {
			http.Error(w, "not TLS 1.3", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, cn+" "+serial.Text(16))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.TLS = ca.ServerTLS(ctx, srvCert)
	srv.StartTLS()
	defer srv.Close()

	newClient := func(cert tls.Certificate, cache tls.ClientSessionCache) *http.Client {
		cfg := ca.ClientTLS(ctx, cert, "settlement.test")
		cfg.ClientSessionCache = cache
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	}
	get := func(c *http.Client) (string, error) {
		resp, err := c.Get(srv.URL)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", errors.New(string(b))
		}
		return string(b), nil
	}

	cli, err := ca.IssueTLS(ctx, RoleApplication, "sae-A", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cache := tls.NewLRUClientSessionCache(4)
	c := newClient(cli, cache)
	body, err := get(c)
	if err != nil {
		t.Fatalf("valid client refused: %v", err)
	}
	if body != "sae-A "+cli.Leaf.SerialNumber.Text(16) {
		t.Fatalf("PeerIdentity gave %q", body)
	}
	resp, err := c.Get(srv.URL) // resumes the TLS 1.3 session
	if err != nil {
		t.Fatalf("second request: %v", err)
	}
	resp.Body.Close()
	if !resp.TLS.DidResume {
		t.Fatal("session was not resumed; the resumed-handshake revocation check below would be untested")
	}

	// Revocation takes effect at the next handshake, resumed or not.
	if err := ca.Revoke(ctx, cli.Leaf.SerialNumber, "key compromise"); err != nil {
		t.Fatal(err)
	}
	if _, err := get(c); err == nil {
		t.Fatal("revoked client accepted on a resumable session")
	}
	if _, err := get(newClient(cli, nil)); err == nil {
		t.Fatal("revoked client accepted on a full handshake")
	}

	// No client certificate, or one from another CA: refused.
	if _, err := get(newClient(tls.Certificate{}, nil)); err == nil {
		t.Fatal("client without certificate accepted")
	}
	other := mustCA(t, db, "other", ECDSAP256)
	foreign, err := other.IssueTLS(ctx, RoleClient, "mallory", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := get(newClient(foreign, nil)); err == nil {
		t.Fatal("client of another CA accepted")
	}
	// A server certificate cannot be used as a client certificate.
	srv2, _ := ca.IssueTLS(ctx, RoleServer, "impostor", []string{"x.test"}, nil)
	if _, err := get(newClient(srv2, nil)); err == nil {
		t.Fatal("server certificate accepted as client")
	}

	// A fresh client works; then revoking the server makes clients refuse it.
	good, _ := ca.IssueTLS(ctx, RoleDevice, "pos-9", nil, nil)
	if _, err := get(newClient(good, nil)); err != nil {
		t.Fatalf("device client refused: %v", err)
	}
	if err := ca.Revoke(ctx, srvCert.Leaf.SerialNumber, "server decommissioned"); err != nil {
		t.Fatal(err)
	}
	_, err = get(newClient(good, nil))
	if err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("client accepted a revoked server: %v", err)
	}
}

func TestTLSConfigShape(t *testing.T) {
	ca := mustCA(t, sqldbtest.Open(t, sqldbtest.Backends()[0]), "shape", ECDSAP256)
	s := ca.ServerTLS(context.Background(), tls.Certificate{})
	c := ca.ClientTLS(context.Background(), tls.Certificate{}, "x")
	for _, cfg := range []*tls.Config{s, c} {
		if cfg.MinVersion != tls.VersionTLS13 || cfg.VerifyConnection == nil || len(cfg.CurvePreferences) != 0 {
			t.Fatalf("config %+v", cfg)
		}
	}
	if s.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatal("server does not require client certificates")
	}
	if _, _, err := PeerIdentity(nil); err == nil {
		t.Fatal("PeerIdentity(nil) succeeded")
	}
	if _, _, err := PeerIdentity(&tls.ConnectionState{HandshakeComplete: true}); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("PeerIdentity without certs: %v", err)
	}
}
