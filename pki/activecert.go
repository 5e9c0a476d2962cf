package pki

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
)

// ActiveCertFor returns the newest active certificate of kind named name
// (its common name) whose key is pub, with its register entry, or nil and
// nil when there is none: for a setup resumed after a crash, which must
// find the certificate it had issued for its own key instead of asking for
// a second (a device serial has one active principal of a kind).
func (ca *CA) ActiveCertFor(ctx context.Context, kind PrincipalKind, name string, pub crypto.PublicKey) (*x509.Certificate, *Principal, error) {
	want, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil, nil, fmt.Errorf("pki: key of type %T", pub)
	}
	ps, err := ca.Principals(ctx, PrincipalFilter{Kind: kind, Name: name, ActiveOnly: true})
	if err != nil {
		return nil, nil, err
	}
	for _, p := range ps {
		der, err := ca.CertificateDER(ctx, p.Serial)
		if err != nil {
			return nil, nil, err
		}
		c, err := ParseCertDER(der)
		if err != nil {
			return nil, nil, fmt.Errorf("pki: certificate %s: %w", p.Serial, err)
		}
		if want.Equal(c.PublicKey) {
			return c, p, nil
		}
	}
	return nil, nil, nil
}
