package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"slices"
	"testing"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestIssuePrincipal(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ca := mustCA(t, db, "p", ECDSAP256)
		for _, k := range []PrincipalKind{PrincipalNone, PrincipalServer, "root"} {
			if _, err := ca.IssuePrincipal(ctx, PrincipalRequest{Kind: k, Name: "x-" + string(k)}); !errors.Is(err, ErrBadRequest) {
				t.Errorf("kind %q: %v, want ErrBadRequest", k, err)
			}
		}
		if _, err := ca.IssuePrincipal(ctx, PrincipalRequest{Kind: PrincipalAuditor}); !errors.Is(err, ErrBadRequest) {
			t.Errorf("no name: %v", err)
		}
		// The caller's own key: the CA never sees the private key.
		priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		iss, err := ca.IssuePrincipal(ctx, PrincipalRequest{Kind: PrincipalCharger, Name: "charger-9", Scheme: "keycharge", Scope: []string{"*"}, PublicKey: &priv.PublicKey})
		if err != nil {
			t.Fatal(err)
		}
		if iss.Key != nil || !priv.PublicKey.Equal(iss.Cert.PublicKey) {
			t.Fatal("the certificate is not for the caller's key, or the CA returned a key")
		}
		p, err := ca.Authenticate(ctx, iss.Cert)
		if err != nil {
			t.Fatal(err)
		}
		if p.Kind != PrincipalCharger || p.Role != RoleApplication || p.Scheme != "keycharge" || !p.MayActFor("anything") {
			t.Fatalf("principal %+v", p)
		}
		// Without a key the CA makes one.
		iss, err = ca.IssuePrincipal(ctx, PrincipalRequest{Kind: PrincipalAuditor, Name: "audrey"})
		if err != nil || iss.Key == nil {
			t.Fatalf("generated key: %v", err)
		}
		if slices.Contains(IssuableKinds(), PrincipalServer) || !slices.Contains(IssuableKinds(), PrincipalOperator) {
			t.Fatal(IssuableKinds())
		}
	})
}
