package bioqr

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/qshield/qshield/fsutil"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/emmansun/gmsm/sm2"

	"github.com/qshield/qshield/pki"
)

// SecureUnit is a device's "安全单元" (secure unit) in software: it generates
// the device's two key pairs — one that only signs, one that only decrypts
// (see Credential) — and never lets the private keys out: callers can only
// ask it to sign, to decrypt, and to keep sealed secrets. On disk it is one
// JSON file (mode 0600) holding the private keys sealed with a
// pki.KeyEncryptor (argon2id from the user's PIN, or a raw 256-bit key), the
// CA root, the device's X.509 certificate and compact credential (patent step
// E/d), and named secrets sealed to the unit's own encryption key (step F:
// the payment accounts). A unit with an empty path lives only in memory.
//
// A version 1 file (one key for both uses) is upgraded when opened: a
// decryption key is generated, its secrets are sealed again to it, and the
// file is rewritten as version 2. Its old credential carries no encryption
// key, so nothing can be sealed to the device until it is certified again.
//
// A real deployment puts this behind a SIM/eSE/TEE applet with the same
// small interface; nothing outside this file touches the key.
type SecureUnit struct {
	mu   sync.Mutex
	path string
	enc  pki.KeyEncryptor
	key  crypto.Signer // signing: *ecdsa.PrivateKey (P-256) or *sm2.PrivateKey
	dec  crypto.Signer // decryption only, same algorithm; never signs
	rec  unitFile
	cred *Credential
	cert *x509.Certificate
	root *x509.Certificate
}

type unitFile struct {
	Version    int               `json:"version"`
	Kind       string            `json:"kind"`
	Algorithm  string            `json:"algorithm"`
	Key        []byte            `json:"sealed_key"`
	DecKey     []byte            `json:"sealed_decryption_key,omitempty"` // version 2
	CARoot     []byte            `json:"ca_root,omitempty"`
	Cert       []byte            `json:"cert,omitempty"`
	Credential []byte            `json:"credential,omitempty"`
	Secrets    map[string][]byte `json:"secrets,omitempty"`
}

// maxUnitFile bounds the unit file read from disk.
const maxUnitFile = 1 << 20

// NewSecureUnit generates a key pair (step A / a) for a device of kind with
// algorithm alg (pki.ECDSAP256 or pki.SM2). With a non-empty path the unit
// is written there (the file must not exist) sealed with enc; with an empty
// path it stays in memory and enc may be nil.
func NewSecureUnit(path string, kind DeviceKind, alg pki.Algorithm, enc pki.KeyEncryptor) (*SecureUnit, error) {
	if !kind.Valid() {
		return nil, fmt.Errorf("%w: unknown device kind %d", ErrMalformed, kind)
	}
	if alg == "" {
		alg = pki.ECDSAP256
	}
	key, err := generateKey(alg)
	if err != nil {
		return nil, err
	}
	dec, err := generateKey(alg)
	if err != nil {
		return nil, err
	}
	u := &SecureUnit{path: path, enc: enc, key: key, dec: dec, rec: unitFile{Version: unitVersion, Kind: kind.String(), Algorithm: string(alg)}}
	if path == "" {
		return u, nil
	}
	if enc == nil {
		return nil, fmt.Errorf("bioqr: a secure unit file needs a PIN or key: %w", pki.ErrNoKey)
	}
	sealed, err := pki.SealPrivateKeyPEM(key, enc)
	if err != nil {
		return nil, err
	}
	sealedDec, err := pki.SealPrivateKeyPEM(dec, enc)
	if err != nil {
		return nil, err
	}
	u.rec.Key, u.rec.DecKey = sealed, sealedDec
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("%w: secure unit %s", ErrExists, path)
	}
	if err := u.save(); err != nil {
		return nil, err
	}
	return u, nil
}

// OpenSecureUnit loads a unit file and opens its key with enc; a wrong PIN
// or key wraps ErrWrongKey.
func OpenSecureUnit(path string, enc pki.KeyEncryptor) (*SecureUnit, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bioqr: open secure unit: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxUnitFile+1))
	if err != nil {
		return nil, fmt.Errorf("bioqr: read secure unit: %w", err)
	}
	if len(data) > maxUnitFile {
		return nil, fmt.Errorf("%w: secure unit file larger than %d bytes", ErrMalformed, maxUnitFile)
	}
	var rec unitFile
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("%w: secure unit %s: %v", ErrMalformed, path, err)
	}
	if rec.Version != 1 && rec.Version != unitVersion {
		return nil, fmt.Errorf("%w: secure unit version %d", ErrMalformed, rec.Version)
	}
	if _, err := ParseDeviceKind(rec.Kind); err != nil {
		return nil, err
	}
	openKey := func(what string, pemKey []byte) (crypto.Signer, error) {
		k, err := pki.ParsePrivateKeyPEM(pemKey, enc)
		if err != nil {
			if errors.Is(err, pki.ErrWrongKey) || errors.Is(err, pki.ErrNoKey) {
				return nil, fmt.Errorf("%w: %v", ErrWrongKey, err)
			}
			return nil, fmt.Errorf("bioqr: secure unit %s: %w", what, err)
		}
		if _, ok := k.(*ecdsa.PrivateKey); !ok {
			if _, ok := k.(*sm2.PrivateKey); !ok {
				return nil, fmt.Errorf("%w: secure unit %s is a %T", ErrMalformed, what, k)
			}
		}
		return k, nil
	}
	key, err := openKey("key", rec.Key)
	if err != nil {
		return nil, err
	}
	u := &SecureUnit{path: path, enc: enc, key: key, rec: rec}
	if rec.Version == 1 {
		if err := u.upgrade(); err != nil {
			return nil, err
		}
	} else if u.dec, err = openKey("decryption key", rec.DecKey); err != nil {
		return nil, err
	}
	if err := u.loadCerts(); err != nil {
		return nil, err
	}
	return u, nil
}

// unitVersion is the unit file's version: 2 holds two keys.
const unitVersion = 2

func generateKey(alg pki.Algorithm) (crypto.Signer, error) {
	var key crypto.Signer
	var err error
	switch alg {
	case pki.ECDSAP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case pki.SM2:
		key, err = sm2.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("%w: unknown algorithm %q", ErrMalformed, alg)
	}
	if err != nil {
		return nil, fmt.Errorf("bioqr: generate key: %w", err)
	}
	return key, nil
}

// upgrade turns a version 1 unit (one key) into version 2: a new
// decryption key, the secrets sealed again to it, the file rewritten.
func (u *SecureUnit) upgrade() error {
	alg := pki.Algorithm(u.rec.Algorithm)
	if alg == "" {
		alg = pki.ECDSAP256
	}
	dec, err := generateKey(alg)
	if err != nil {
		return err
	}
	sealedDec, err := pki.SealPrivateKeyPEM(dec, u.enc)
	if err != nil {
		return err
	}
	u.dec = dec
	secrets := make(map[string][]byte, len(u.rec.Secrets))
	for name, ct := range u.rec.Secrets {
		pt, err := open(u.key, []byte(secretInfo), []byte(name), ct)
		if err != nil {
			return fmt.Errorf("bioqr: upgrade secure unit: secret %q: %w", name, err)
		}
		if secrets[name], err = seal(u.EncryptionPublic(), []byte(secretInfo), []byte(name), pt); err != nil {
			return err
		}
		clear(pt)
	}
	u.rec.Version, u.rec.DecKey, u.rec.Secrets = unitVersion, sealedDec, secrets
	return u.save()
}

func (u *SecureUnit) loadCerts() error {
	if len(u.rec.CARoot) > 0 {
		r, err := pki.ParseCertDER(u.rec.CARoot)
		if err != nil {
			return fmt.Errorf("%w: CA root in secure unit: %v", ErrMalformed, err)
		}
		u.root = r
	}
	if len(u.rec.Cert) > 0 {
		c, err := pki.ParseCertDER(u.rec.Cert)
		if err != nil {
			return fmt.Errorf("%w: certificate in secure unit: %v", ErrMalformed, err)
		}
		u.cert = c
	}
	if len(u.rec.Credential) > 0 {
		c, err := ParseCredential(u.rec.Credential)
		if err != nil {
			return err
		}
		u.cred = c
	}
	return nil
}

func (u *SecureUnit) save() error {
	if u.path == "" {
		return nil
	}
	data, err := json.MarshalIndent(u.rec, "", "  ")
	if err != nil {
		return fmt.Errorf("bioqr: encode secure unit: %w", err)
	}
	return writeFileAtomic(u.path, data, 0o600)
}

// Kind is the device kind the unit was created for.
func (u *SecureUnit) Kind() DeviceKind { k, _ := ParseDeviceKind(u.rec.Kind); return k }

// Public returns the unit's signing public key (exportable, step A).
func (u *SecureUnit) Public() *ecdsa.PublicKey { return publicOf(u.key) }

// EncryptionPublic returns the public key of the unit's decryption key:
// what others seal to.
func (u *SecureUnit) EncryptionPublic() *ecdsa.PublicKey { return publicOf(u.dec) }

func publicOf(k crypto.Signer) *ecdsa.PublicKey {
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return &k.PublicKey
	case *sm2.PrivateKey:
		return &k.PublicKey
	}
	return nil
}

// KeyID is the first 8 bytes of SHA-256 of the compressed public key: the
// clear-text label a payment QR carries so a POS can tell at once whether a
// code was made for it.
func (u *SecureUnit) KeyID() [8]byte { return keyID(u.Public()) }

// Sign signs msg (ECDSA P-256 with SHA-256, or SM2 with SM3 and the default
// user ID) and returns an ASN.1 DER signature.
func (u *SecureUnit) Sign(msg []byte) ([]byte, error) {
	return signWith(u.key, msg)
}

func signWith(key crypto.Signer, msg []byte) ([]byte, error) {
	switch k := key.(type) {
	case *sm2.PrivateKey:
		sig, err := k.Sign(rand.Reader, msg, sm2.NewSM2SignerOption(true, nil))
		if err != nil {
			return nil, fmt.Errorf("bioqr: SM2 sign: %w", err)
		}
		return sig, nil
	default:
		d := sha256.Sum256(msg)
		sig, err := key.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("bioqr: sign: %w", err)
		}
		return sig, nil
	}
}

// Decrypt opens a ciphertext sealed to this unit's encryption key (with the
// same info and aad) with the decryption key — never the signing key; any
// failure wraps ErrDecrypt.
func (u *SecureUnit) Decrypt(info, aad, ct []byte) ([]byte, error) {
	return open(u.dec, info, aad, ct)
}

// Install stores what the CA returned (step E / d): its root, the device
// certificate and the compact credential. The certificate's and the
// credential's keys must be this unit's key.
func (u *SecureUnit) Install(root *x509.Certificate, certDER, credential []byte) error {
	cert, err := pki.ParseCertDER(certDER)
	if err != nil {
		return fmt.Errorf("%w: certificate: %v", ErrMalformed, err)
	}
	cred, err := ParseCredential(credential)
	if err != nil {
		return err
	}
	pub := u.Public()
	if !pub.Equal(cert.PublicKey) || !pub.Equal(cred.PublicKey) {
		return fmt.Errorf("%w: the certificate is not for this secure unit's key", ErrMalformed)
	}
	certEnc, err := CertificateEncryptionKey(cert)
	if err != nil {
		return err
	}
	if !u.EncryptionPublic().Equal(certEnc) {
		return fmt.Errorf("%w: the certificate's encryption key is not this secure unit's", ErrMalformed)
	}
	if cred.EncryptionKey == nil {
		return ErrNoEncryptionKey
	}
	if !u.EncryptionPublic().Equal(cred.EncryptionKey) {
		return fmt.Errorf("%w: the credential's encryption key is not this secure unit's", ErrMalformed)
	}
	if cred.Kind != u.Kind() {
		return fmt.Errorf("%w: credential is for a %s, unit is a %s", ErrMalformed, cred.Kind, u.Kind())
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	old := u.rec
	u.rec.CARoot, u.rec.Cert, u.rec.Credential = root.Raw, certDER, credential
	if err := u.save(); err != nil {
		u.rec = old
		return err
	}
	u.root, u.cert, u.cred = root, cert, cred
	return nil
}

// Root, Certificate and Credential return what Install stored (nil before).
func (u *SecureUnit) Root() *x509.Certificate {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.root
}

// Certificate returns the device's X.509 certificate.
func (u *SecureUnit) Certificate() *x509.Certificate {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cert
}

// Credential returns the device's compact credential.
func (u *SecureUnit) Credential() *Credential {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cred
}

// TLSCertificate returns the device certificate with a signer backed by the
// unit, for mutual TLS (the private key stays inside).
func (u *SecureUnit) TLSCertificate() (tls.Certificate, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cert == nil {
		return tls.Certificate{}, ErrNotCertified
	}
	return tls.Certificate{Certificate: [][]byte{u.cert.Raw}, PrivateKey: unitSigner{u.key}, Leaf: u.cert}, nil
}

// unitSigner exposes only Public and Sign of the unit key.
type unitSigner struct{ k crypto.Signer }

func (s unitSigner) Public() crypto.PublicKey { return s.k.Public() }
func (s unitSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return s.k.Sign(r, d, o)
}

const secretInfo = "qshield bioqr secure unit secret v1"

// PutSecret stores value under name, sealed to the unit's own encryption key.
func (u *SecureUnit) PutSecret(name string, value []byte) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%w: secret name must be 1..64 bytes", ErrMalformed)
	}
	ct, err := seal(u.EncryptionPublic(), []byte(secretInfo), []byte(name), value)
	if err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	old := u.rec.Secrets
	next := make(map[string][]byte, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[name] = ct
	u.rec.Secrets = next
	if err := u.save(); err != nil {
		u.rec.Secrets = old
		return err
	}
	return nil
}

// Secret returns the secret stored under name (ErrNotFound when absent).
func (u *SecureUnit) Secret(name string) ([]byte, error) {
	u.mu.Lock()
	ct, ok := u.rec.Secrets[name]
	u.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: secret %q", ErrNotFound, name)
	}
	return u.Decrypt([]byte(secretInfo), []byte(name), ct)
}

// SecretNames lists the stored secret names.
func (u *SecureUnit) SecretNames() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for k := range u.rec.Secrets {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// writeFileAtomic creates path's directory and replaces path durably.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bioqr: create %s: %w", dir, err)
	}
	if err := fsutil.WriteFileAtomic(path, data, perm, true); err != nil {
		return fmt.Errorf("bioqr: %w", err)
	}
	return nil
}

// OpenOrCreateSecureUnit opens the unit at path, creating it (with a fresh
// key) when the file does not exist — what `qshield serve` does for the
// settlement server's unit in its state directory.
func OpenOrCreateSecureUnit(path string, kind DeviceKind, alg pki.Algorithm, enc pki.KeyEncryptor) (*SecureUnit, error) {
	u, err := OpenSecureUnit(path, enc)
	if errors.Is(err, os.ErrNotExist) {
		u, err = NewSecureUnit(path, kind, alg, enc)
		if errors.Is(err, ErrExists) { // created concurrently
			return OpenSecureUnit(path, enc)
		}
	}
	if err != nil {
		return nil, err
	}
	if u.Kind() != kind {
		return nil, fmt.Errorf("%w: %s is a %s unit, want %s", ErrMalformed, path, u.Kind(), kind)
	}
	return u, nil
}
