package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// ServerTLS returns a TLS 1.3-only server configuration presenting cert that
// requires a client certificate chaining to the root and, on every handshake
// (resumed ones included, through VerifyConnection), verifies it with
// CA.Verify: role client, device or application, not revoked. ctx is used
// for the revocation look-ups and should live as long as the server: once it
// is cancelled every handshake fails (closed).
//
// The key exchange is left at Go's defaults, which prefer the hybrid
// post-quantum X25519MLKEM768. TLS needs an ECDSA P-256 CA; with an SM2 CA
// every handshake fails with ErrTLSNotSM2.
func (ca *CA) ServerTLS(ctx context.Context, cert tls.Certificate) *tls.Config {
	return ca.serverTLS(ctx, cert, true)
}

// ServerTLSOptionalClient is ServerTLS for a server that also serves pages to
// browsers: a client certificate is verified (chain, role, revocation) when
// one is presented, and a connection without one is allowed; handlers that
// need a client identity must check r.TLS.VerifiedChains themselves.
func (ca *CA) ServerTLSOptionalClient(ctx context.Context, cert tls.Certificate) *tls.Config {
	return ca.serverTLS(ctx, cert, false)
}

func (ca *CA) serverTLS(ctx context.Context, cert tls.Certificate, require bool) *tls.Config {
	auth := tls.RequireAndVerifyClientCert
	if !require {
		auth = tls.VerifyClientCertIfGiven
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   auth,
		ClientCAs:    ca.RootPool(),
		VerifyConnection: func(cs tls.ConnectionState) error {
			if ca.alg != ECDSAP256 {
				return ErrTLSNotSM2
			}
			if len(cs.PeerCertificates) == 0 {
				if !require {
					return nil
				}
				return fmt.Errorf("%w: no client certificate", ErrUntrusted)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := ca.Verify(ctx, leaf, "", time.Now()); err != nil {
				return err
			}
			if r, _ := RoleOf(leaf); r == RoleServer {
				return fmt.Errorf("%w: a server certificate cannot authenticate a client", ErrWrongRole)
			}
			return nil
		},
	}
}

// ClientTLS returns a TLS 1.3-only client configuration presenting cert,
// trusting only the root, checking serverName against the server
// certificate and, on every handshake, verifying the server certificate with
// CA.Verify (role server, not revoked). See ServerTLS for ctx.
func (ca *CA) ClientTLS(ctx context.Context, cert tls.Certificate, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca.RootPool(),
		ServerName:   serverName,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if ca.alg != ECDSAP256 {
				return ErrTLSNotSM2
			}
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: no server certificate", ErrUntrusted)
			}
			_, err := ca.Verify(ctx, cs.PeerCertificates[0], RoleServer, time.Now())
			return err
		},
	}
}

// IssueTLS issues a certificate with a fresh key for role and returns it as a
// tls.Certificate (Leaf set), ready for ServerTLS or ClientTLS.
func (ca *CA) IssueTLS(ctx context.Context, role Role, commonName string, dnsNames []string, ips []net.IP) (tls.Certificate, error) {
	if ca.alg != ECDSAP256 {
		return tls.Certificate{}, ErrTLSNotSM2
	}
	iss, err := ca.Issue(ctx, IssueRequest{Role: role, CommonName: commonName, DNSNames: dnsNames, IPAddresses: ips})
	if err != nil {
		return tls.Certificate{}, err
	}
	return TLSCertificate(iss)
}

// TLSCertificate turns an Issued with a CA-generated key into a tls.Certificate.
func TLSCertificate(iss *Issued) (tls.Certificate, error) {
	if iss == nil || iss.Key == nil {
		return tls.Certificate{}, fmt.Errorf("%w: no private key in the issued certificate", ErrBadRequest)
	}
	return tls.Certificate{Certificate: [][]byte{iss.DER}, PrivateKey: iss.Key, Leaf: iss.Cert}, nil
}

// PeerIdentity returns the common name and serial of the verified peer
// certificate of a TLS connection (for example to identify an ETSI QKD 014
// SAE). It fails unless the handshake verified a chain.
func PeerIdentity(state *tls.ConnectionState) (commonName string, serial *big.Int, err error) {
	if state == nil || !state.HandshakeComplete {
		return "", nil, errors.New("pki: no completed TLS handshake")
	}
	if len(state.PeerCertificates) == 0 || len(state.VerifiedChains) == 0 {
		return "", nil, fmt.Errorf("%w: peer presented no verified certificate", ErrUntrusted)
	}
	leaf := state.PeerCertificates[0]
	return leaf.Subject.CommonName, new(big.Int).Set(leaf.SerialNumber), nil
}

// PeerCertificate returns the verified peer leaf certificate of a TLS
// connection, for callers that need more than PeerIdentity (e.g. DeviceInfoOf).
func PeerCertificate(state *tls.ConnectionState) (*x509.Certificate, error) {
	if _, _, err := PeerIdentity(state); err != nil {
		return nil, err
	}
	return state.PeerCertificates[0], nil
}

// IssueTLSFor issues a certificate for req (a fresh key pair when
// req.PublicKey is nil) and returns it as a tls.Certificate: IssueTLS with a
// principal kind, scheme and scope.
func (ca *CA) IssueTLSFor(ctx context.Context, req IssueRequest) (tls.Certificate, error) {
	if ca.alg != ECDSAP256 {
		return tls.Certificate{}, ErrTLSNotSM2
	}
	if req.PublicKey != nil {
		return tls.Certificate{}, fmt.Errorf("%w: IssueTLSFor makes the key pair itself", ErrBadRequest)
	}
	iss, err := ca.Issue(ctx, req)
	if err != nil {
		return tls.Certificate{}, err
	}
	return TLSCertificate(iss)
}

// PostQuantumOnly returns a copy of c that accepts only the hybrid
// post-quantum key exchange X25519MLKEM768 (a peer offering only classical
// groups fails the handshake). Use it where quantum keys travel: the key
// managers, the QKD link, device channels.
func PostQuantumOnly(c *tls.Config) *tls.Config {
	c = c.Clone()
	c.CurvePreferences = []tls.CurveID{tls.X25519MLKEM768}
	return c
}

// PreferPostQuantum returns a copy of c that prefers X25519MLKEM768 and
// still accepts X25519 and P-256 (for browsers and older clients).
func PreferPostQuantum(c *tls.Config) *tls.Config {
	c = c.Clone()
	c.CurvePreferences = []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256}
	return c
}

// IsPostQuantum reports whether a handshake used a post-quantum hybrid key
// exchange.
func IsPostQuantum(cs tls.ConnectionState) bool {
	return cs.CurveID == tls.X25519MLKEM768
}
