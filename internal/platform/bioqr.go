package platform

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/qshield/qshield/fsutil"
	"path/filepath"
	"time"

	"github.com/qshield/qshield/bioqr"
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
	// node: its file lives in the database (see adoptStateFile).
	const name = "bioqr-settlement.json"
	path := filepath.Join(p.StateDir, name)
	if err := p.adoptStateFile(ctx, name, path, func() error {
		_, err := bioqr.OpenOrCreateSecureUnit(path, bioqr.KindSettlement, pki.ECDSAP256, enc)
		return err
	}); err != nil {
		return fmt.Errorf("platform: bioqr settlement unit: %w", err)
	}
	// Nodes starting together share the unit but only one certifies it:
	// the others find the certificate taken, take the certified unit the
	// first one stored, and try again.
	var st *bioqr.Settlement
	adopted, err := p.stateFile(ctx, name)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		su, err := bioqr.OpenOrCreateSecureUnit(path, bioqr.KindSettlement, pki.ECDSAP256, enc)
		if err != nil {
			return fmt.Errorf("platform: bioqr settlement unit: %w", err)
		}
		st, err = bioqr.NewSettlement(ctx, bioqr.SettlementConfig{DB: p.DB, CA: p.CA, Ledger: p.Ledger, Audit: p.Audit, Unit: su, Log: p.Config.Log, Consent: p.Consent})
		if err == nil {
			break
		}
		if !errors.Is(err, pki.ErrDeviceTaken) || attempt == 50 {
			return fmt.Errorf("platform: bioqr settlement: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		// Take the database's copy only once the winner stored its
		// certified unit (it differs from what was adopted); writing the
		// old copy could undo the winner's certificate in a shared directory.
		data, rerr := p.stateFile(ctx, name)
		if rerr != nil {
			return rerr
		}
		if !bytes.Equal(data, adopted) {
			if werr := fsutil.WriteFileAtomic(path, data, 0o600, true); werr != nil {
				return werr
			}
		}
	}
	if err := p.saveStateFile(ctx, name, path); err != nil { // NewSettlement may have installed a certificate
		return err
	}
	p.BioQR = st
	p.Router.Register(st.Routes()...)
	return nil
}
