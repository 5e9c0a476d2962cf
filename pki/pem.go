package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/qshield/qshield/fsutil"

	"github.com/qshield/qshield/pki/certinfo"
)

const (
	pemCert         = "CERTIFICATE"
	pemKey          = "PRIVATE KEY"
	pemSealedKey    = "QSHIELD SEALED PRIVATE KEY"
	sealedKeyAD     = "qshield pki sealed private key v1"
	maxPEMInputSize = 1 << 20
)

// EncodeCertPEM returns cert as a PEM "CERTIFICATE" block.
func EncodeCertPEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCert, Bytes: cert.Raw})
}

// ParseCertDER parses one DER certificate, ECDSA/RSA/Ed25519 through
// crypto/x509 and SM2 through gmsm's smx509.
func ParseCertDER(der []byte) (*x509.Certificate, error) { return certinfo.ParseCertDER(der) }

// ParseCertPEM parses exactly one PEM "CERTIFICATE" block (surrounding
// whitespace allowed, nothing else).
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	certs, err := ParseCertsPEM(data)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("pki: want one certificate, found %d", len(certs))
	}
	return certs[0], nil
}

// ParseCertsPEM parses one or more PEM "CERTIFICATE" blocks; any other
// content is an error.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	if len(data) > maxPEMInputSize {
		return nil, fmt.Errorf("pki: PEM input larger than %d bytes", maxPEMInputSize)
	}
	var out []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != pemCert {
			return nil, fmt.Errorf("pki: unexpected PEM block %q", b.Type)
		}
		if len(b.Headers) != 0 {
			return nil, fmt.Errorf("pki: PEM certificate with headers")
		}
		c, err := ParseCertDER(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(trimSpace(rest)) != 0 {
		return nil, fmt.Errorf("pki: trailing data after PEM certificates")
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pki: no PEM certificate found")
	}
	return out, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// EncodePrivateKeyPEM returns key as an unencrypted PKCS #8 "PRIVATE KEY"
// block (for handing a freshly issued key to tools such as curl; prefer
// SealPrivateKeyPEM for storage).
func EncodePrivateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := marshalPrivateKey(key)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	return pem.EncodeToMemory(&pem.Block{Type: pemKey, Bytes: der}), nil
}

// SealPrivateKeyPEM returns key's PKCS #8 encoding sealed with enc in a
// "QSHIELD SEALED PRIVATE KEY" PEM block (for device keys at rest).
func SealPrivateKeyPEM(key crypto.Signer, enc KeyEncryptor) ([]byte, error) {
	if enc == nil {
		return nil, ErrNoKey
	}
	der, err := marshalPrivateKey(key)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	sealed, err := enc.Seal(der, []byte(sealedKeyAD))
	if err != nil {
		return nil, fmt.Errorf("pki: seal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemSealedKey, Bytes: sealed}), nil
}

// ParsePrivateKeyPEM parses one "PRIVATE KEY" block, or a "QSHIELD SEALED
// PRIVATE KEY" block opened with enc (required for sealed keys).
func ParsePrivateKeyPEM(data []byte, enc KeyEncryptor) (crypto.Signer, error) {
	if len(data) > maxPEMInputSize {
		return nil, fmt.Errorf("pki: PEM input larger than %d bytes", maxPEMInputSize)
	}
	b, rest := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("pki: no PEM private key found")
	}
	if len(trimSpace(rest)) != 0 {
		return nil, fmt.Errorf("pki: trailing data after the PEM private key")
	}
	switch b.Type {
	case pemKey:
		return parsePrivateKey(b.Bytes)
	case pemSealedKey:
		if enc == nil {
			return nil, fmt.Errorf("%w: the private key is sealed", ErrNoKey)
		}
		der, err := enc.Open(b.Bytes, []byte(sealedKeyAD))
		if err != nil {
			return nil, fmt.Errorf("pki: open sealed private key: %w", err)
		}
		defer clear(der)
		return parsePrivateKey(der)
	}
	return nil, fmt.Errorf("pki: unexpected PEM block %q", b.Type)
}

// LoadPrivateKeyFile reads the PEM private key at path, sealed (opened with
// enc) or not. A key sealed in the legacy format (QSK1, see IsLegacySealed)
// is sealed again with enc and the file replaced atomically (mode 0600)
// before the key is returned, so every key file read is migrated.
func LoadPrivateKeyFile(path string, enc KeyEncryptor) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: read private key: %w", err)
	}
	key, err := ParsePrivateKeyPEM(data, enc)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	if b, _ := pem.Decode(data); b != nil && b.Type == pemSealedKey && IsLegacySealed(b.Bytes) {
		resealed, err := SealPrivateKeyPEM(key, enc)
		if err != nil {
			return nil, err
		}
		if err := fsutil.WriteFileAtomic(path, resealed, 0o600, true); err != nil {
			return nil, fmt.Errorf("pki: reseal %s: %w", path, err)
		}
	}
	return key, nil
}
