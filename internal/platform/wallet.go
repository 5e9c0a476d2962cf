package platform

import (
	"context"
	"fmt"

	"github.com/qshield/qshield/internal/wallet"
)

// openWallet creates the browser wallet's service before the router: the
// router authenticates signed requests through it.
func (p *Platform) openWallet(ctx context.Context) error {
	scheme := ""
	if p.Config.InsecureHTTP {
		scheme = "https" // behind a TLS-terminating proxy the browser signs https URLs
	}
	w, err := wallet.New(ctx, wallet.Config{DB: p.DB, CA: p.CA, Ledger: p.Ledger, Scheme: scheme, Log: p.Config.Log})
	if err != nil {
		return fmt.Errorf("platform: wallet: %w", err)
	}
	p.Wallet = w
	return nil
}

// startWallet mounts /wallet/ and the wallet API: enrolment with the
// holder's bioqr enrolment code, as a QMSP phone that is also registered as
// the account's watermark phone (one certificate, scoped to the account).
func (p *Platform) startWallet() {
	p.Router.Register(p.Wallet.Routes(&wallet.Enroller{
		EnrolPhone: p.QMSP.EnrolPhone,
		RegisterWatermark: func(ctx context.Context, name, account string) error {
			return p.Watermark.Enrol(ctx, name, "phone", account)
		},
	})...)
	p.Router.Register(p.Wallet.BioQRRoutes(p.BioQR)...) // seed 004 from the browser: enrolment with a code, POS look-ups
}
