package platform

import (
	"context"
	"fmt"

	"github.com/qshield/qshield/keycharge"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/pki"
)

// startKeyCharge runs seed 001's quantum key management platform and its
// quantum secure service centre (QSSC). The QSSC is the slave SAE "qssc" at
// site B: it fetches by ID the keys the charger (master SAE "charger-1" at
// site A) wrote into a device.
func (p *Platform) startKeyCharge(ctx context.Context) error {
	cert, err := p.CA.ServiceTLS(ctx, "keycharge-qssc", pki.IssueRequest{Role: pki.RoleApplication, CommonName: SAEQSSC, Kind: pki.PrincipalSAE, Scheme: "keycharge"})
	if err != nil {
		return err
	}
	kc, err := keycharge.Open(ctx, keycharge.Config{
		DB: p.DB, CA: p.CA, Audit: p.Audit, MasterKey: p.Secret("keycharge"),
		QSSC: etsi014.New(p.KME.BURL, pki.PostQuantumOnly(p.CA.ClientTLS(ctx, cert, "127.0.0.1"))),
		Log:  p.Config.Log,
	})
	if err != nil {
		return fmt.Errorf("platform: key charging platform: %w", err)
	}
	p.KeyCharge = kc
	p.Router.Register(kc.Routes()...)
	return nil
}
