package qmsp

import (
	"bytes"
	"context"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
)

// ErrGatewayInUse is a registration that cannot be resumed: the gateway has
// asked the CSS for keys (its preset key is spent). Another merchant than
// the registered one is ErrGatewayExists.
var ErrGatewayInUse = errors.New("qmsp: gateway registered and in use")

// UnusedPresetKey returns gateway gi's preset key while the gateway has
// never asked for a key: epoch 0, no delivery pending. It lets a setup run
// that registered the gateway and stopped before the device stored its
// state (a crash, a lost connection) finish with the key it was given,
// instead of leaving the identity registered and unusable. Only the party
// that ran that registration may call it (the platform resuming its own
// provisioning); a gateway that has asked for keys is ErrGatewayInUse.
func (c *CSS) UnusedPresetKey(ctx context.Context, gi string, merchant uint32) ([PresetKeySize]byte, error) {
	var pk [PresetKeySize]byte
	var status string
	var m, epoch, pending int64
	var sealed []byte
	err := c.cfg.DB.QueryRowContext(ctx, c.cfg.DB.Rebind(`SELECT merchant, status, epoch, pending_epoch, pk FROM qmsp_css_gateways WHERE gi = ?`), gi).Scan(&m, &status, &epoch, &pending, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return pk, fmt.Errorf("%w: %s", ErrUnknownGateway, gi)
	}
	if err != nil {
		return pk, fmt.Errorf("qmsp: read gateway %s: %w", gi, err)
	}
	if m != int64(merchant) {
		return pk, fmt.Errorf("%w: %s is registered for merchant %d", ErrGatewayExists, gi, m)
	}
	if status != "active" || epoch != 0 || pending != 0 {
		return pk, fmt.Errorf("%w: %s (status %s, epoch %d, pending %d)", ErrGatewayInUse, gi, status, epoch, pending)
	}
	raw, err := c.seal.open(sealed, "css-pk/"+gi+"/"+strconv.FormatInt(epoch, 10))
	if err != nil {
		return pk, err
	}
	copy(pk[:], raw)
	return pk, nil
}

// registeredAs reports whether the PPS already holds gateway gi exactly as
// given (merchant, account, public key): a repeated registration.
func (p *PPS) registeredAs(ctx context.Context, gi string, merchant uint32, merchantAccount string, pub []byte) (bool, error) {
	var m int64
	var acct string
	var have []byte
	err := p.cfg.DB.QueryRowContext(ctx, p.cfg.DB.Rebind(`SELECT merchant, merchant_account, public_key FROM qmsp_pps_gateways WHERE gi = ? AND status = 'active'`), gi).Scan(&m, &acct, &have)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("qmsp: read gateway %s: %w", gi, err)
	}
	return m == int64(merchant) && acct == merchantAccount && bytes.Equal(have, pub), nil
}

// gatewayPublicKey is the PKIX encoding of cert's key.
func gatewayPublicKey(cert *x509.Certificate) ([]byte, error) {
	return x509.MarshalPKIXPublicKey(cert.PublicKey)
}
