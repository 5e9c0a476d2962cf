package console

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/http"
	"testing"

	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/qshield/qshield/pki"
)

func passkey(t *testing.T) (*ecdsa.PrivateKey, *webauthn.Credential) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	raw, _ := k.PublicKey.Bytes() // 0x04 ‖ X ‖ Y
	cose, err := webauthncbor.Marshal(webauthncose.EC2PublicKeyData{
		PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.EllipticKey), Algorithm: int64(webauthncose.AlgES256)},
		Curve:         1, XCoord: raw[1:33], YCoord: raw[33:]})
	if err != nil {
		t.Fatal(err)
	}
	return k, &webauthn.Credential{ID: []byte("cred"), PublicKey: cose}
}

// TestOperatorPrincipal: an operator is a principal of the CA's register
// whose certificate certifies its passkey; revoking the principal ends its
// session; disabling the operator revokes the principal.
func TestOperatorPrincipal(t *testing.T) {
	clk := newClock()
	c := newConsole(t, clk)
	ctx := context.Background()
	ck, s := signIn(t, c, "Olga", RoleOperator)
	key, cred := passkey(t)
	serial, err := c.issueOperatorPrincipal(ctx, s.Operator, []string{"merchant:1"}, cred, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.st.setPrincipal(ctx, s.Operator.ID, serial); err != nil {
		t.Fatal(err)
	}
	p, err := c.cfg.CA.PrincipalBySerial(ctx, serial)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := c.cfg.CA.CertificateDER(ctx, serial)
	cert, _ := x509.ParseCertificate(der)
	if p.Kind != pki.PrincipalOperator || p.Scheme != "console" || !p.MayActFor("merchant:1") || p.Name != "Olga <"+s.Operator.ID+">" ||
		!key.PublicKey.Equal(cert.PublicKey) {
		t.Fatalf("principal %+v", p)
	}
	if w := request(c, http.MethodGet, "/console/", ck, "", nil); w.Code != http.StatusOK {
		t.Fatalf("active principal: %d", w.Code)
	}
	n, _ := new(big.Int).SetString(serial, 16)
	if err := c.cfg.CA.Revoke(ctx, n, "test"); err != nil {
		t.Fatal(err)
	}
	if w := request(c, http.MethodGet, "/console/", ck, "", nil); w.Code != http.StatusSeeOther {
		t.Fatalf("revoked principal's session: %d, want a redirect to sign in", w.Code)
	}
	// Disabling an operator revokes its principal.
	ack, as := signIn(t, c, "Ada", RoleAdmin)
	ck2, s2 := signIn(t, c, "Otto", RoleAuditor)
	_, cred2 := passkey(t)
	serial2, err := c.issueOperatorPrincipal(ctx, s2.Operator, nil, cred2, "test")
	if err != nil || c.st.setPrincipal(ctx, s2.Operator.ID, serial2) != nil {
		t.Fatal(err)
	}
	if p, _ := c.cfg.CA.PrincipalBySerial(ctx, serial2); p.Kind != pki.PrincipalAuditor {
		t.Fatalf("auditor's principal kind %s", p.Kind)
	}
	if w := request(c, http.MethodPost, "/console/operators/"+s2.Operator.ID+"/disable", ck2, s2.CSRF, nil); w.Code != http.StatusForbidden {
		t.Fatalf("auditor disabling: %d", w.Code)
	}
	if w := request(c, http.MethodPost, "/console/operators/"+s2.Operator.ID+"/disable", ack, as.CSRF, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("disable: %d %s", w.Code, w.Body)
	}
	if p, _ := c.cfg.CA.PrincipalBySerial(ctx, serial2); p.Status != pki.StatusRevoked {
		t.Fatalf("disabled operator's principal is %s", p.Status)
	}
}
