package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/emmansun/gmsm/smx509"
)

// Verify checks cert for use at time at (zero: now): it must be signed by
// this CA's root, be an end-entity certificate valid at at, carry a
// qshield role extension (equal to role unless role is ""), the matching
// extended key usage, and — read from the database on every call — be in the
// CA's register and not revoked. It returns the certificate's device
// information (nil when it has none).
//
// Errors wrap ErrUntrusted, ErrExpired, ErrWrongRole or ErrRevoked.
func (ca *CA) Verify(ctx context.Context, cert *x509.Certificate, role Role, at time.Time) (*DeviceInfo, error) {
	dev, err := ca.verify(ctx, cert, role, at)
	if err != nil && ca.audit != nil && ctx.Err() == nil {
		serial, cn := "", ""
		if cert != nil {
			cn = cert.Subject.CommonName
			if cert.SerialNumber != nil {
				serial = serialText(cert.SerialNumber)
			}
		}
		return nil, ca.auditDenied(ctx, serial, cn, err)
	}
	return dev, err
}

func (ca *CA) verify(ctx context.Context, cert *x509.Certificate, role Role, at time.Time) (*DeviceInfo, error) {
	dev, err := ca.verifyStatic(cert, role, at)
	if err != nil {
		return nil, err
	}
	// 5. Revocation, read from the register on every call.
	revoked, err := ca.IsRevoked(ctx, cert.SerialNumber)
	if errors.Is(err, ErrUnknownCert) {
		return nil, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	if err != nil {
		return nil, err
	}
	if revoked {
		return nil, fmt.Errorf("%w: serial %s (%s)", ErrRevoked, serialText(cert.SerialNumber), cert.Subject.CommonName)
	}
	return dev, nil
}

// verifyStatic is Verify without the register: chain, validity, role, key usage.
func (ca *CA) verifyStatic(cert *x509.Certificate, role Role, at time.Time) (*DeviceInfo, error) {
	if cert == nil {
		return nil, fmt.Errorf("%w: no certificate", ErrUntrusted)
	}
	if at.IsZero() {
		at = time.Now()
	}
	if role != "" && !role.Valid() {
		return nil, fmt.Errorf("%w: unknown role %q requested", ErrWrongRole, role)
	}
	// 1. Signed by our root (checked first, so that an untrusted certificate
	//    is reported as such whatever else is wrong with it).
	if !bytes.Equal(cert.RawIssuer, ca.cert.RawSubject) {
		return nil, fmt.Errorf("%w: issuer %q is not %q", ErrUntrusted, cert.Issuer, ca.cert.Subject)
	}
	if err := ca.checkSignature(cert); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify against root %s: %v", ErrUntrusted, ca.name, err)
	}
	if bytes.Equal(cert.Raw, ca.cert.Raw) || cert.IsCA {
		return nil, fmt.Errorf("%w: a CA certificate is not an end-entity certificate", ErrWrongRole)
	}
	// 2. Validity of the leaf and the root.
	if at.Before(cert.NotBefore) || at.After(cert.NotAfter) {
		return nil, fmt.Errorf("%w: %s valid %s..%s", ErrExpired, serialText(cert.SerialNumber), cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if at.Before(ca.cert.NotBefore) || at.After(ca.cert.NotAfter) {
		return nil, fmt.Errorf("%w: root %s valid until %s", ErrExpired, ca.name, ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	// 3. Full RFC 5280 path validation (critical extensions, constraints…).
	if err := ca.verifyChain(cert, at); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	// 4. Role and key usage.
	got, err := RoleOf(cert)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWrongRole, err)
	}
	if role != "" && got != role {
		return nil, fmt.Errorf("%w: certificate is for %s, need %s", ErrWrongRole, got, role)
	}
	want := x509.ExtKeyUsageClientAuth
	if got == RoleServer {
		want = x509.ExtKeyUsageServerAuth
	}
	if !hasEKU(cert, want) || cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("%w: key usage does not match role %s", ErrWrongRole, got)
	}
	dev, err := DeviceInfoOf(cert)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	return dev, nil
}

func (ca *CA) checkSignature(cert *x509.Certificate) error {
	if ca.alg == SM2 {
		return (*smx509.Certificate)(cert).CheckSignatureFrom((*smx509.Certificate)(ca.cert))
	}
	return cert.CheckSignatureFrom(ca.cert)
}

func (ca *CA) verifyChain(cert *x509.Certificate, at time.Time) error {
	if ca.alg == SM2 {
		_, err := (*smx509.Certificate)(cert).Verify(smx509.VerifyOptions{
			Roots: ca.smPool, CurrentTime: at, KeyUsages: []smx509.ExtKeyUsage{smx509.ExtKeyUsageAny},
		})
		return err
	}
	_, err := cert.Verify(x509.VerifyOptions{
		Roots: ca.pool, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}

func hasEKU(cert *x509.Certificate, want x509.ExtKeyUsage) bool {
	for _, u := range cert.ExtKeyUsage {
		if u == want {
			return true
		}
	}
	return false
}
