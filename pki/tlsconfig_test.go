package pki

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// TestTLSConfigsAreTLS13 pins the helpers the command line builds every TLS
// configuration with to TLS 1.3 (three commands used to allow TLS 1.2).
func TestTLSConfigsAreTLS13(t *testing.T) {
	pool := x509.NewCertPool()
	for name, cfg := range map[string]*tls.Config{
		"client":        TLSClientConfig(pool, "localhost"),
		"server":        TLSServerConfig(nil),
		"mutual server": TLSServerConfig(pool),
	} {
		if cfg.MinVersion != tls.VersionTLS13 || cfg.MaxVersion != tls.VersionTLS13 {
			t.Errorf("%s: versions %x..%x, want TLS 1.3 only", name, cfg.MinVersion, cfg.MaxVersion)
		}
	}
	if c := TLSServerConfig(pool); c.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("mutual server: ClientAuth %v", c.ClientAuth)
	}
	if c := TLSServerConfig(nil); c.ClientAuth != tls.NoClientCert {
		t.Errorf("server: ClientAuth %v", c.ClientAuth)
	}
}
