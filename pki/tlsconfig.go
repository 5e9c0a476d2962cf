package pki

import (
	"crypto/tls"
	"crypto/x509"
)

// TLSClientConfig returns a TLS 1.3-only client configuration for a process
// that holds the CA's root certificate but not the CA itself (a device, an
// operator's command line): it trusts only roots, checks serverName against
// the server certificate and presents certs, if any. Every client TLS
// configuration of the command line is built here or by CA.ClientTLS, so
// that none can be weaker than TLS 1.3.
func TLSClientConfig(roots *x509.CertPool, serverName string, certs ...tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		RootCAs:      roots,
		ServerName:   serverName,
		Certificates: certs,
	}
}

// TLSServerConfig returns a TLS 1.3-only server configuration presenting
// certs. With clientCAs it requires and verifies a client certificate
// chaining to them; with nil it asks for none (a public vendor page). A
// server holding the CA uses CA.ServerTLS instead, which also checks roles
// and revocation.
func TLSServerConfig(clientCAs *x509.CertPool, certs ...tls.Certificate) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: certs,
	}
	if clientCAs != nil {
		cfg.ClientCAs, cfg.ClientAuth = clientCAs, tls.RequireAndVerifyClientCert
	}
	return cfg
}
