package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// TLSCache keeps the TLS certificates a platform issues to its own services
// (its HTTPS server, its key managers, their SAE clients), so that a restart
// reuses them instead of issuing a new set every start. Implementations
// must seal what they store: it holds the private key.
type TLSCache interface {
	// Load returns what Store stored under name, or nil and no error.
	Load(ctx context.Context, name string) ([]byte, error)
	Store(ctx context.Context, name string, data []byte) error
}

// WithTLSCache returns a copy of ca whose ServiceTLS reuses certificates
// kept in c.
func (ca *CA) WithTLSCache(c TLSCache) *CA {
	cp := *ca
	cp.tlsCache = c
	return &cp
}

// cachedTLS is what ServiceTLS keeps: the request it was issued for (as a
// digest), the certificate and its PKCS #8 key.
type cachedTLS struct {
	Request [32]byte `json:"request"`
	Cert    []byte   `json:"cert"`
	Key     []byte   `json:"key"`
}

// ServiceTLS returns a certificate with a CA-generated key for one of the
// platform's own services, named name (one name per service and request):
// the one kept in the CA's TLS cache while it was issued for the same
// request, by this CA, is not revoked and has more than a third of its
// validity left; otherwise a new one (IssueTLSFor), which replaces it in
// the cache. Without a cache it is IssueTLSFor.
func (ca *CA) ServiceTLS(ctx context.Context, name string, req IssueRequest) (tls.Certificate, error) {
	if ca.tlsCache == nil {
		return ca.IssueTLSFor(ctx, req)
	}
	digest, err := requestDigest(req)
	if err != nil {
		return tls.Certificate{}, err
	}
	if c, ok, err := ca.cachedServiceTLS(ctx, name, digest); err != nil {
		return tls.Certificate{}, err
	} else if ok {
		return c, nil
	}
	c, err := ca.IssueTLSFor(ctx, req)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: keep service certificate %s: %w", name, err)
	}
	data, err := json.Marshal(cachedTLS{Request: digest, Cert: c.Certificate[0], Key: key})
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := ca.tlsCache.Store(ctx, name, data); err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: keep service certificate %s: %w", name, err)
	}
	return c, nil
}

// cachedServiceTLS returns the cached certificate name if it is still good
// for a request with this digest.
func (ca *CA) cachedServiceTLS(ctx context.Context, name string, digest [32]byte) (tls.Certificate, bool, error) {
	data, err := ca.tlsCache.Load(ctx, name)
	if err != nil || data == nil {
		return tls.Certificate{}, false, err
	}
	var ct cachedTLS
	if err := json.Unmarshal(data, &ct); err != nil || ct.Request != digest {
		return tls.Certificate{}, false, nil // another request, or unreadable: issue anew
	}
	cert, err := x509.ParseCertificate(ct.Cert)
	if err != nil || cert.CheckSignatureFrom(ca.cert) != nil {
		return tls.Certificate{}, false, nil // another CA's
	}
	now := time.Now()
	if now.Before(cert.NotBefore) || cert.NotAfter.Sub(now) < cert.NotAfter.Sub(cert.NotBefore)/3 {
		return tls.Certificate{}, false, nil
	}
	switch revoked, err := ca.IsRevoked(ctx, cert.SerialNumber); {
	case errors.Is(err, ErrUnknownCert):
		return tls.Certificate{}, false, nil
	case err != nil:
		return tls.Certificate{}, false, err
	case revoked:
		return tls.Certificate{}, false, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(ct.Key)
	if err != nil {
		return tls.Certificate{}, false, nil
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return tls.Certificate{}, false, nil
	}
	return tls.Certificate{Certificate: [][]byte{ct.Cert}, PrivateKey: key, Leaf: cert}, true, nil
}

// requestDigest identifies what a service certificate was issued for.
func requestDigest(req IssueRequest) ([32]byte, error) {
	if req.PublicKey != nil || len(req.Extensions) > 0 || req.Replaces != nil {
		return [32]byte{}, fmt.Errorf("%w: a service certificate has a CA-generated key, no extensions and replaces nothing", ErrBadRequest)
	}
	ips := make([]string, len(req.IPAddresses))
	for i, ip := range req.IPAddresses {
		ips[i] = ip.String()
	}
	uris := make([]string, len(req.URIs))
	for i, u := range req.URIs {
		uris[i] = u.String()
	}
	b, err := json.Marshal(struct {
		Role           Role
		CommonName     string
		DNS, IPs, URIs []string
		Device         *DeviceInfo
		Validity       time.Duration
		Kind           PrincipalKind
		Scheme         string
		Scope          []string
	}{req.Role, req.CommonName, req.DNSNames, ips, uris, req.Device, req.Validity, req.Kind, req.Scheme, req.Scope})
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}
