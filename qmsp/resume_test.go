package qmsp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// A setup resumed after a crash registers the gateway at the PPS again with
// the same key, merchant and account: that succeeds and changes nothing.
// Anything else under the same identity stays ErrGatewayExists, and the
// CSS's preset key is handed out again only while the gateway is unused.
func TestRegistrationResume(t *testing.T) {
	sqldbtest.Each(t, testRegistrationResume)
}

func testRegistrationResume(t *testing.T, db *sqldb.DB) {
	e := newEnv(t, db, 200)
	ctx := context.Background()
	pk, err := e.css.RegisterGateway(ctx, "GW-R", 7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.css.RegisterGateway(ctx, "GW-R", 7); !errors.Is(err, ErrGatewayExists) {
		t.Fatalf("second CSS registration: %v, want ErrGatewayExists", err)
	}
	again, err := e.css.UnusedPresetKey(ctx, "GW-R", 7)
	if err != nil || again != pk {
		t.Fatalf("UnusedPresetKey: %v (same key: %v)", err, again == pk)
	}
	if _, err := e.css.UnusedPresetKey(ctx, "GW-R", 8); !errors.Is(err, ErrGatewayExists) {
		t.Fatalf("UnusedPresetKey for another merchant: %v, want ErrGatewayExists", err)
	}
	iss, err := e.ca.Issue(ctx, pki.IssueRequest{Role: pki.RoleDevice, CommonName: "GW-R", PublicKey: e.gwKey.Public()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := e.pps.RegisterGateway(ctx, "GW-R", 7, "market", iss.Cert); err != nil {
			t.Fatalf("PPS registration %d: %v", i+1, err)
		}
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss2, err := e.ca.Issue(ctx, pki.IssueRequest{Role: pki.RoleDevice, CommonName: "GW-R2", PublicKey: other.Public()})
	if err != nil {
		t.Fatal(err)
	}
	for name, reg := range map[string]func() error{
		"another key":      func() error { return e.pps.RegisterGateway(ctx, "GW-R", 7, "market", iss2.Cert) },
		"another merchant": func() error { return e.pps.RegisterGateway(ctx, "GW-R", 8, "market", iss.Cert) },
		"another account":  func() error { return e.pps.RegisterGateway(ctx, "GW-R", 7, "alice", iss.Cert) },
	} {
		if err := reg(); !errors.Is(err, ErrGatewayExists) {
			t.Errorf("%s: %v, want ErrGatewayExists", name, err)
		}
	}
	// Once the gateway has asked for a key, its preset key is spent.
	g := e.gateway("GW-U")
	if _, err := g.Current(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.css.UnusedPresetKey(ctx, "GW-U", 7); !errors.Is(err, ErrGatewayInUse) {
		t.Fatalf("UnusedPresetKey of a used gateway: %v, want ErrGatewayInUse", err)
	}
}
