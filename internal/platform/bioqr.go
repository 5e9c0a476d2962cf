package platform

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/lease"
	"github.com/qshield/qshield/pki"
)

// startBioQR runs seed 004's settlement server: its secure unit (key pair)
// in the state directory, sealed under a platform secret, and its routes.
func (p *Platform) startBioQR(ctx context.Context) error {
	enc, err := pki.RawKey(p.Secret("bioqr-settlement"))
	if err != nil {
		return err
	}
	// The unit is the platform's settlement identity, the same on every
	// node: its file lives in the database (see adoptStateFile). Nodes
	// starting together take it, certify it and store the certified copy
	// one at a time, so only the first certifies and the others adopt its
	// certified copy (a retry loop here lost the race under load, and in a
	// shared directory one node's adoption could overwrite another's
	// certified file).
	const name = "bioqr-settlement.json"
	path := filepath.Join(p.StateDir, name)
	unlock, err := lease.Lock(ctx, p.DB, "bioqr settlement unit")
	if err != nil {
		return fmt.Errorf("platform: bioqr settlement unit: %w", err)
	}
	defer unlock()
	if err := p.adoptStateFile(ctx, name, path, func() error {
		_, err := bioqr.OpenOrCreateSecureUnit(path, bioqr.KindSettlement, pki.ECDSAP256, enc)
		return err
	}); err != nil {
		return fmt.Errorf("platform: bioqr settlement unit: %w", err)
	}
	su, err := bioqr.OpenOrCreateSecureUnit(path, bioqr.KindSettlement, pki.ECDSAP256, enc)
	if err != nil {
		return fmt.Errorf("platform: bioqr settlement unit: %w", err)
	}
	st, err := bioqr.NewSettlement(ctx, bioqr.SettlementConfig{DB: p.DB, CA: p.CA, Ledger: p.Ledger, Audit: p.Audit, Unit: su, Log: p.Config.Log, Consent: p.Consent})
	if err != nil {
		return fmt.Errorf("platform: bioqr settlement: %w", err)
	}
	if err := p.saveStateFile(ctx, name, path); err != nil { // NewSettlement may have installed a certificate
		return err
	}
	p.BioQR = st
	p.Router.Register(st.Routes()...)
	return nil
}
