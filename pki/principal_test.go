package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestPrincipalRecorded(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ca := mustCA(t, db, "p", ECDSAP256)
		iss := issue(t, ca, IssueRequest{Role: RoleDevice, CommonName: "pos SHOP-1", Kind: PrincipalPOS, Scheme: "bioqr",
			Scope: []string{"account:shop"}, Device: &DeviceInfo{Serial: "SHOP-1", Kind: KindPOS}})
		p, err := ca.Authenticate(ctx, iss.Cert)
		if err != nil {
			t.Fatal(err)
		}
		if p.Kind != PrincipalPOS || p.Scheme != "bioqr" || p.DeviceSerial != "SHOP-1" || !p.MayActFor("account:shop") ||
			p.MayActFor("account:other") || p.KeyHash != KeyHash(iss.Cert) || p.Status != StatusActive || p.Serial != iss.Cert.SerialNumber.Text(16) {
			t.Fatalf("principal %+v", p)
		}
		// Kinds derived for legacy callers; a client without a kind gets none.
		for _, c := range []struct {
			req  IssueRequest
			want PrincipalKind
		}{
			{reqFor(RoleServer, "srv"), PrincipalServer},
			{reqFor(RoleApplication, "sae-1"), PrincipalSAE},
			{IssueRequest{Role: RoleClient, CommonName: "phone-1", Device: &DeviceInfo{Serial: "P1", Kind: KindPhone}}, PrincipalPhone},
			{reqFor(RoleClient, "legacy"), PrincipalNone},
		} {
			iss := issue(t, ca, c.req)
			got, err := ca.PrincipalBySerial(ctx, iss.Cert.SerialNumber.Text(16))
			if err != nil || got.Kind != c.want {
				t.Errorf("%s: kind %v (%v), want %s", c.req.CommonName, got, err, c.want)
			}
		}
		ps, err := ca.Principals(ctx, PrincipalFilter{Kind: PrincipalPOS})
		if err != nil || len(ps) != 1 || ps[0].Name != "pos SHOP-1" {
			t.Fatalf("list: %v %+v", err, ps)
		}
	})
}

// Names belong to one kind (red-team finding: "a phone the admin names
// charger-x", "one named KME_SUPERMARKET"); device serials are unique among
// the active principals of a kind (finding: a second POS "SHOP-1").
func TestNamesAndDeviceSerials(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ca := mustCA(t, db, "n", ECDSAP256)
		issue(t, ca, IssueRequest{Role: RoleClient, CommonName: "KME_B", Kind: PrincipalKMEPeer})
		if _, err := ca.Issue(ctx, IssueRequest{Role: RoleClient, CommonName: "KME_B", Kind: PrincipalPhone}); !errors.Is(err, ErrNameTaken) {
			t.Fatalf("phone named like the KME peer: %v", err)
		}
		// The same name again for the same kind is a renewal, allowed; a
		// server certificate may share a client's name (KMEs have both).
		issue(t, ca, IssueRequest{Role: RoleClient, CommonName: "KME_B", Kind: PrincipalKMEPeer})
		issue(t, ca, reqFor(RoleServer, "KME_B"))

		pos := func(name string, replaces *IssueRequest) (*Issued, error) {
			req := IssueRequest{Role: RoleDevice, CommonName: name, Kind: PrincipalPOS, Device: &DeviceInfo{Serial: "SHOP-1", Kind: KindPOS}}
			if replaces != nil {
				req.Replaces = replaces.Replaces
			}
			return ca.Issue(ctx, req)
		}
		first, err := pos("pos SHOP-1", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pos("pos SHOP-1", nil); !errors.Is(err, ErrDeviceTaken) {
			t.Fatalf("second active POS SHOP-1: %v", err)
		}
		if _, err := pos("pos SHOP-1 (attacker)", nil); !errors.Is(err, ErrDeviceTaken) {
			t.Fatalf("second active POS SHOP-1 under another name: %v", err)
		}
		// Another kind may use the same device serial.
		issue(t, ca, IssueRequest{Role: RoleDevice, CommonName: "phone SHOP-1", Kind: PrincipalPhone, Device: &DeviceInfo{Serial: "SHOP-1", Kind: KindPhone}})
		// Renewal supersedes the old certificate in one step.
		second, err := pos("pos SHOP-1", &IssueRequest{Replaces: first.Cert.SerialNumber})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ca.Authenticate(ctx, first.Cert); !errors.Is(err, ErrRevoked) {
			t.Fatalf("superseded certificate: %v", err)
		}
		if _, err := ca.Authenticate(ctx, second.Cert); err != nil {
			t.Fatal(err)
		}
		// Replaces must name an active certificate of the same kind and name.
		if _, err := pos("pos SHOP-1", &IssueRequest{Replaces: first.Cert.SerialNumber}); !errors.Is(err, ErrBadRequest) {
			t.Fatalf("replacing a revoked certificate: %v", err)
		}
		// After revocation the serial is free again.
		if err := ca.Revoke(ctx, second.Cert.SerialNumber, "stolen"); err != nil {
			t.Fatal(err)
		}
		if _, err := pos("pos SHOP-1", nil); err != nil {
			t.Fatalf("POS SHOP-1 after revoking the old one: %v", err)
		}
	})
}

// Authentication is by serial and key: a certificate that is not the one the
// register holds for its serial is refused, and a revocation takes effect on
// the next call (the cache is cleared).
func TestAuthenticateBySerialAndKey(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ca := mustCA(t, db, "a", ECDSAP256)
		iss := issue(t, ca, IssueRequest{Role: RoleClient, CommonName: "op", Kind: PrincipalOperator})
		if _, err := ca.Authenticate(ctx, iss.Cert); err != nil {
			t.Fatal(err)
		}
		// The CA signs a second certificate with the same serial and another
		// key (as a compromised or buggy issuer could): not the register's.
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := *iss.Cert
		tmpl.PublicKey = nil
		for _, e := range iss.Cert.Extensions {
			if hasPrefix(e.Id, oidArc) {
				tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca.Certificate(), &k.PublicKey, ca.Signer())
		if err != nil {
			t.Fatal(err)
		}
		twin, _ := x509.ParseCertificate(der)
		if _, err := ca.Authenticate(ctx, twin); !errors.Is(err, ErrKeyMismatch) {
			t.Fatalf("twin certificate: %v", err)
		}
		if err := ca.Revoke(ctx, iss.Cert.SerialNumber, "lost"); err != nil {
			t.Fatal(err)
		}
		if _, err := ca.Authenticate(ctx, iss.Cert); !errors.Is(err, ErrRevoked) {
			t.Fatalf("revoked, right after Revoke: %v", err)
		}
		other := mustCA(t, db, "other", ECDSAP256)
		foreign := issue(t, other, IssueRequest{Role: RoleClient, CommonName: "op", Kind: PrincipalOperator})
		if _, err := ca.Authenticate(ctx, foreign.Cert); !errors.Is(err, ErrUntrusted) {
			t.Fatalf("foreign certificate: %v", err)
		}
	})
}
