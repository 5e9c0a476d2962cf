package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/internal/client"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/pki"
)

// deviceDir is a device's credentials on disk: storage.key (the device's
// storage key, 0600), key.pem (its private key sealed under it), cert.pem and
// ca.pem. The QMSP phone and gateway and the watermark phone and scanner
// keep theirs in one; each kind has its own default (DefaultDir).
type deviceDir string

func (d deviceDir) path(name string) string { return filepath.Join(string(d), name) }

func (d deviceDir) storageKey(create bool) ([]byte, error) {
	if create {
		if err := os.MkdirAll(string(d), 0o700); err != nil {
			return nil, err
		}
		return fsutil.LoadOrCreateKey(d.path("storage.key"))
	}
	b, err := os.ReadFile(d.path("storage.key"))
	if err != nil {
		return nil, fmt.Errorf("device directory %s (enrol the device first?): %w", d, err)
	}
	k, err := fsutil.DecodeKey32(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.path("storage.key"), err)
	}
	return k, nil
}

// enrolled reports whether d already holds an enrolled device (a
// certificate): enrolling again would replace its key.
func (d deviceDir) enrolled() bool {
	_, err := os.Stat(d.path("cert.pem"))
	return err == nil
}

// sealKey seals key under the device's storage key (created if needed).
func (d deviceDir) sealKey(key *ecdsa.PrivateKey) ([]byte, error) {
	sk, err := d.storageKey(true)
	if err != nil {
		return nil, err
	}
	enc, err := pki.RawKey(sk)
	if err != nil {
		return nil, err
	}
	return pki.SealPrivateKeyPEM(key, enc)
}

// save writes the sealed key, the certificate and the CA root.
func (d deviceDir) save(sealedKey, certDER, caDER []byte) error {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return fmt.Errorf("server sent a bad certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("server sent a bad CA certificate: %w", err)
	}
	if err := fsutil.WriteFileAtomic(d.path("key.pem"), sealedKey, 0o600, true); err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(d.path("ca.pem"), pki.EncodeCertPEM(ca), 0o644, true); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(d.path("cert.pem"), pki.EncodeCertPEM(cert), 0o644, true)
}

// roots returns the platform CA the device trusts (ca.pem).
func (d deviceDir) roots() (*x509.CertPool, error) {
	_, pool, err := loadRoot(d.path("ca.pem"))
	if err != nil {
		return nil, fmt.Errorf("device directory %s: %w", d, err)
	}
	return pool, nil
}

// load returns the device's key and a TLS 1.3 configuration presenting its
// certificate and trusting only the platform CA.
func (d deviceDir) load() (*ecdsa.PrivateKey, *tls.Config, error) {
	sk, err := d.storageKey(false)
	if err != nil {
		return nil, nil, err
	}
	enc, err := pki.RawKey(sk)
	if err != nil {
		return nil, nil, err
	}
	k, err := pki.LoadPrivateKeyFile(d.path("key.pem"), enc) // reseals a legacy (QSK1) key file
	if err != nil {
		return nil, nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, errors.New("device key is not ECDSA P-256")
	}
	cb, err := os.ReadFile(d.path("cert.pem"))
	if err != nil {
		return nil, nil, err
	}
	cert, err := pki.ParseCertPEM(cb)
	if err != nil {
		return nil, nil, err
	}
	pool, err := d.roots()
	if err != nil {
		return nil, nil, err
	}
	// The platform's server certificate always names localhost (and any
	// --host given to serve).
	return key, pki.TLSClientConfig(pool, "localhost", tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}), nil
}

// enrolDevice has the server's admin API at path certify a fresh key pair
// for the device in d (body builds the request around the PKIX public key)
// and stores the sealed key, the certificate and the CA root in d. It
// refuses a directory that already holds an enrolled device, and writes
// nothing but the storage key before the server has answered.
func enrolDevice(ctx context.Context, server, adminDir string, d deviceDir, path string, body func(pub []byte) any) (*platform.DeviceEnrolled, error) {
	if d.enrolled() {
		return nil, Usagef("%s already holds an enrolled device (cert.pem); choose another --dir or remove it first", d)
	}
	ac, err := adminClient(server, adminDir)
	if err != nil {
		return nil, err
	}
	defer ac.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sealed, err := d.sealKey(key)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	var out platform.DeviceEnrolled
	if _, err := ac.Do(ctx, http.MethodPost, path, nil, body(pub), &out); err != nil {
		return nil, err
	}
	return &out, d.save(sealed, out.Certificate, out.CA)
}

// adminClient talks to the server with the operator's credentials (--admin).
func adminClient(server, adminDir string) (*client.Client, error) {
	tc, _, err := adminTLS(adminDir, server)
	if err != nil {
		return nil, err
	}
	return client.New(server, tc), nil
}
