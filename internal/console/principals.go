package console

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"math/big"

	"github.com/go-webauthn/webauthn/protocol/webauthncose"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/qshield/qshield/pki"
)

// Console operators in the principals register.
//
// Every operator is a principal of the platform CA's register, the one
// register of every identity: kind admin, operator or auditor after the
// console role, scheme "console", named "NAME <op_ID>", with the scope the
// invitation gave. Its certificate certifies the operator's passkey public
// key: the key lives in the authenticator, which signs only WebAuthn
// assertions (authenticator data and a hash of browser-built client data),
// never a TLS handshake, so the certificate identifies the operator and
// carries the register's status; it cannot open a mutual-TLS connection.
//
// Signing in maps the passkey to that principal: a revoked principal (from
// the devices view, `qshield admin cert revoke`, or disabling the operator)
// cannot sign in, and its open sessions end at their next request.
// Operators registered before this existed get their principal at their
// next sign-in.

// principalKind is the register kind of a console role.
func principalKind(r Role) pki.PrincipalKind {
	switch r {
	case RoleAdmin:
		return pki.PrincipalAdmin
	case RoleOperator:
		return pki.PrincipalOperator
	}
	return pki.PrincipalAuditor
}

// passkeyPublicKey converts a WebAuthn credential's COSE key.
func passkeyPublicKey(cose []byte) (crypto.PublicKey, error) {
	k, err := webauthncose.ParsePublicKey(cose)
	if err != nil {
		return nil, fmt.Errorf("console: passkey public key: %w", err)
	}
	switch k := k.(type) {
	case webauthncose.EC2PublicKeyData:
		return k.ToECDSA()
	case webauthncose.OKPPublicKeyData:
		if len(k.XCoord) != ed25519.PublicKeySize {
			return nil, errors.New("console: passkey: not an Ed25519 key")
		}
		return ed25519.PublicKey(k.XCoord), nil
	case webauthncose.RSAPublicKeyData:
		e, err := webauthncose.ParseRSAPublicKeyDataExponent(&k)
		if err != nil {
			return nil, fmt.Errorf("console: passkey RSA exponent: %w", err)
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(k.Modulus), E: e}, nil
	}
	return nil, fmt.Errorf("console: passkey key type %T not supported", k)
}

// issueOperatorPrincipal certifies op's passkey as its principal, recorded
// (and audited) by the CA, and returns the serial.
func (c *Console) issueOperatorPrincipal(ctx context.Context, op *Operator, scope []string, cred *webauthn.Credential, by string) (string, error) {
	pub, err := passkeyPublicKey(cred.PublicKey)
	if err != nil {
		return "", err
	}
	ca := c.cfg.CA.WithAudit(c.cfg.Audit, by)
	iss, err := ca.IssuePrincipal(ctx, pki.PrincipalRequest{Kind: principalKind(op.Role), Name: operatorPrincipalName(op),
		Scheme: "console", Scope: scope, PublicKey: pub})
	if err != nil {
		return "", fmt.Errorf("console: register operator %s: %w", op.ID, err)
	}
	return iss.Cert.SerialNumber.Text(16), nil
}

func operatorPrincipalName(op *Operator) string { return op.Name + " <" + op.ID + ">" }

// principalActive reports whether the operator's principal is active
// (an operator without one yet counts as active until its next sign-in).
func (c *Console) principalActive(ctx context.Context, op *Operator) (bool, error) {
	if op.PrincipalSerial == "" {
		return true, nil
	}
	p, err := c.cfg.CA.PrincipalBySerial(ctx, op.PrincipalSerial)
	if err != nil {
		return false, err
	}
	return p.Status == pki.StatusActive && p.Kind == principalKind(op.Role), nil
}

// revokeOperatorPrincipal revokes the operator's principal (disable).
func (c *Console) revokeOperatorPrincipal(ctx context.Context, op *Operator, reason string) error {
	if op.PrincipalSerial == "" {
		return nil
	}
	n, ok := new(big.Int).SetString(op.PrincipalSerial, 16)
	if !ok {
		return fmt.Errorf("console: operator %s has a bad principal serial", op.ID)
	}
	if c.cfg.Revoke != nil {
		return c.cfg.Revoke(ctx, op.PrincipalSerial, reason)
	}
	return c.cfg.CA.Revoke(ctx, n, reason)
}
