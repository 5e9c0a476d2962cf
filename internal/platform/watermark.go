package platform

import (
	"context"
	"fmt"

	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/watermark/service"
)

// watermarkChallengePurpose labels the platform secret from which every
// scanner's challenge key is derived (watermark.ScannerChallengeKey).
const watermarkChallengePurpose = "watermark-challenge"

// startWatermark runs seed 003's token service and the phone-screen pages.
func (p *Platform) startWatermark(ctx context.Context) error {
	cfg := service.Config{DB: p.DB, Ledger: p.Ledger, Audit: p.Audit, Window: p.Config.WatermarkWindow}
	if !p.Config.WatermarkChallengesOff {
		cfg.ChallengeMaster = p.Secret(watermarkChallengePurpose)
	}
	wm, err := service.New(ctx, cfg)
	if err != nil {
		return fmt.Errorf("platform: watermark service: %w", err)
	}
	p.Watermark = wm
	p.closers = append(p.closers, wm.Close)
	// The service finds the device by its certificate's name in its own
	// enrolment register; the router has already authenticated that
	// certificate as a principal of the right kind (names belong to one kind).
	h := wm.Handler()
	// The browser wallet asks for codes with a signed request.
	p.Router.Handle("POST /v1/watermark/codes", authz.Allow(pki.PrincipalPhone).OrSigned(), h)
	// The browser scanner (/scanner/) pays with a signed request.
	p.Router.Handle("POST /v1/watermark/pay", authz.Allow(pki.PrincipalScanner).OrSigned(), h)
	// A scanner's challenge key (404 challenges_off with
	// Config.WatermarkChallengesOff): only the scanner itself may hold it, or a
	// phone could bind its stamps to a scanner it is not in front of. The
	// browser scanner (/scanner/) fetches it with a signed request, as it
	// pays.
	p.Router.Handle("GET /v1/watermark/challenge-key", authz.Allow(pki.PrincipalScanner).OrSigned(), h)
	p.Router.Handle("GET /watermark/screen/{id}/{file...}", authz.Public("the phone's screen: the looping code a scanner films"), h)
	// What the screen page's front camera read of the scanner's challenge:
	// the screen's unguessable id is the capability, as for the screen
	// itself (bounded body, rate-limited per screen; watermark/service).
	p.Router.Handle("POST /watermark/screen/{id}/challenge", authz.Public("the phone's screen: the scanner challenge its front camera read; the unguessable screen id is the capability"), h)
	p.Router.Handle("POST /v1/watermark/admin/devices", authz.Allow(pki.PrincipalAdmin), enrolHandler(p, "watermark device", func(ctx context.Context, req *WatermarkEnrolment, pub any) (DeviceEnrolled, error) {
		iss, err := p.EnrolWatermarkDevice(ctx, req.Name, req.Role, req.Account, req.EnrolmentCode, pub)
		if err != nil {
			return DeviceEnrolled{}, err
		}
		return DeviceEnrolled{Certificate: iss.Cert.Raw}, nil
	}))
	return nil
}

// WatermarkEnrolment is the body of POST /v1/watermark/admin/devices.
type WatermarkEnrolment struct {
	Name    string `json:"name"`
	Role    string `json:"role"` // "phone" or "scanner"
	Account string `json:"account"`
	// EnrolmentCode is the account holder's consent, required for a phone
	// (a payer device); a scanner is paid into its account and needs none.
	EnrolmentCode string `json:"enrolment_code,omitempty"`
	PublicKey     []byte `json:"public_key"` // PKIX DER, generated on the device
}

// EnrolWatermarkDevice certifies a phone or scanner (pub nil: the CA makes
// the key pair) and binds it to a ledger account. A phone spends from its
// account, so it needs code, the account holder's enrolment code.
func (p *Platform) EnrolWatermarkDevice(ctx context.Context, name, role, account, code string, pub any) (*pki.Issued, error) {
	kind, pkind := pki.KindPhone, pki.PrincipalPhone
	switch role {
	case "scanner":
		kind, pkind = "scanner", pki.PrincipalScanner
	case "phone":
	default:
		return nil, fmt.Errorf("%w: role %q is neither phone nor scanner", pki.ErrBadRequest, role)
	}
	var iss *pki.Issued
	bind := func() error {
		var err error
		iss, err = p.CA.Issue(ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: name, PublicKey: pub, Device: &pki.DeviceInfo{Serial: name, Kind: kind},
			Kind: pkind, Scheme: "watermark", Scope: []string{"account:" + account}})
		if err != nil {
			return err
		}
		if err := p.Watermark.Enrol(ctx, name, role, account); err != nil {
			p.revokeUnbound(ctx, iss)
			return err
		}
		return nil
	}
	if role == "scanner" {
		return iss, bind()
	}
	return iss, p.bindPayerDevice(ctx, "watermark", name, account, code, bind)
}
