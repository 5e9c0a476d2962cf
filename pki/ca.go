package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/pki/certinfo"
	"github.com/qshield/qshield/sqldb"
)

// Sentinel errors. Verification failures wrap exactly one of ErrUntrusted,
// ErrRevoked, ErrExpired or ErrWrongRole.
var (
	ErrUntrusted   = errors.New("pki: certificate not trusted")
	ErrRevoked     = errors.New("pki: certificate revoked")
	ErrExpired     = errors.New("pki: certificate not valid at this time")
	ErrWrongRole   = errors.New("pki: certificate has the wrong role")
	ErrCAExists    = errors.New("pki: certificate authority already exists")
	ErrCANotFound  = errors.New("pki: certificate authority not found")
	ErrWrongKey    = errors.New("pki: wrong passphrase or key for the sealed private key")
	ErrNoKey       = errors.New("pki: no CA key encryption passphrase or key")
	ErrBadSealed   = errors.New("pki: malformed sealed key")
	ErrUnknownCert = errors.New("pki: certificate not issued by this CA")
	ErrBadRequest  = certinfo.ErrBadRequest
	ErrTLSNotSM2   = errors.New("pki: TLS needs an ECDSA P-256 CA; Go's TLS stack has no SM2 cipher suites")
)

// Algorithm is the CA's signature algorithm.
type Algorithm string

const (
	// ECDSAP256 is ECDSA on NIST P-256 with SHA-256 (the default).
	ECDSAP256 Algorithm = "ecdsa-p256"
	// SM2 is SM2 with SM3 (GB/T 32918, GM/T 0015 certificates) through gmsm.
	SM2 Algorithm = "sm2"
)

// Options configure NewCA.
type Options struct {
	Algorithm Algorithm     // "" means ECDSAP256
	Subject   string        // root common name; "" means "qshield <name> root CA"
	Validity  time.Duration // 0 means DefaultCAValidity
}

const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultLeafValidity = 397 * 24 * time.Hour
	// clockSkew backdates NotBefore so freshly issued certificates verify on
	// peers whose clocks run slightly behind.
	clockSkew = 5 * time.Minute
	// maxNameLen is X.520's ub-common-name.
	maxNameLen = 64
)

// CA is a certification authority whose root certificate and sealed private
// key live in the database. It is safe for concurrent use.
type CA struct {
	db     *sqldb.DB
	name   string
	alg    Algorithm
	cert   *x509.Certificate
	signer crypto.Signer
	pool   *x509.CertPool
	smPool *smx509.CertPool
	id     string
	audit  audit.Recorder // optional, see WithAudit
	actor  string
	cache  *principalCache // Authenticate's register reads, shared by WithAudit copies
	// tlsCache keeps the platform's own service certificates (WithTLSCache).
	tlsCache TLSCache
}

var migrations = []sqldb.Migration{{Version: 1, SQL: `CREATE TABLE pki_cas (
		name TEXT PRIMARY KEY,
		algorithm TEXT NOT NULL,
		cert_der BYTEA NOT NULL,
		key_sealed BYTEA NOT NULL,
		created_at TEXT NOT NULL);
	CREATE TABLE pki_certs (
		ca_name TEXT NOT NULL REFERENCES pki_cas(name),
		serial TEXT NOT NULL,
		role TEXT NOT NULL,
		common_name TEXT NOT NULL,
		subject TEXT NOT NULL,
		device_serial TEXT NOT NULL DEFAULT '',
		not_before TEXT NOT NULL,
		not_after TEXT NOT NULL,
		issued_at TEXT NOT NULL,
		der BYTEA NOT NULL,
		revoked_at TEXT,
		revoke_reason TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (ca_name, serial));
	CREATE INDEX pki_certs_cn ON pki_certs (ca_name, common_name)`},
	// Principals: every certificate's kind, scheme and scope; a client
	// principal's name belongs to one kind; an active device serial is
	// unique per kind.
	{Version: 2, SQL: `ALTER TABLE pki_certs ADD COLUMN kind TEXT NOT NULL DEFAULT '';
	ALTER TABLE pki_certs ADD COLUMN scheme TEXT NOT NULL DEFAULT '';
	ALTER TABLE pki_certs ADD COLUMN scope TEXT NOT NULL DEFAULT '';
	ALTER TABLE pki_certs ADD COLUMN key_hash TEXT NOT NULL DEFAULT '';
	CREATE TABLE pki_names (
		ca_name TEXT NOT NULL,
		common_name TEXT NOT NULL,
		kind TEXT NOT NULL,
		PRIMARY KEY (ca_name, common_name));
	CREATE UNIQUE INDEX pki_certs_device ON pki_certs (ca_name, kind, device_serial)
		WHERE revoked_at IS NULL AND device_serial <> '' AND kind <> ''`}}

// Migrate creates the pki tables (component "pki"); NewCA and LoadCA call it.
func Migrate(ctx context.Context, db *sqldb.DB) error {
	return db.Migrate(ctx, "pki", migrations)
}

func checkName(what, s string) error {
	if s == "" || len(s) > maxNameLen || !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s must be 1..%d bytes of UTF-8", ErrBadRequest, what, maxNameLen)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s contains a control character", ErrBadRequest, what)
		}
	}
	return nil
}

// keyAD binds a sealed CA key to its CA name and root certificate, so a
// sealed key cannot be moved to another row unnoticed.
func keyAD(name string, certDER []byte) []byte {
	h := sha256.Sum256(certDER)
	return append([]byte("qshield pki ca key\x00"+name+"\x00"), h[:]...)
}

// NewCA creates a root key and self-signed certificate and stores the
// certificate and the key, sealed with keyEnc, under name. It fails with
// ErrCAExists when name is taken.
func NewCA(ctx context.Context, db *sqldb.DB, name string, opts Options, keyEnc KeyEncryptor) (*CA, error) {
	if err := checkName("CA name", name); err != nil {
		return nil, err
	}
	if keyEnc == nil {
		return nil, ErrNoKey
	}
	if opts.Algorithm == "" {
		opts.Algorithm = ECDSAP256
	}
	if opts.Subject == "" {
		opts.Subject = truncate("qshield "+name+" root CA", maxNameLen)
	}
	if err := checkName("CA subject", opts.Subject); err != nil {
		return nil, err
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultCAValidity
	}
	if opts.Validity < time.Hour {
		return nil, fmt.Errorf("%w: CA validity %v too short", ErrBadRequest, opts.Validity)
	}
	if err := Migrate(ctx, db); err != nil {
		return nil, err
	}
	signer, err := generateKey(opts.Algorithm)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.Subject, Organization: []string{"qshield"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := createCertificate(opts.Algorithm, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("pki: create root certificate: %w", err)
	}
	cert, err := ParseCertDER(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse new root certificate: %w", err)
	}
	keyDER, err := marshalPrivateKey(signer)
	if err != nil {
		return nil, err
	}
	sealed, err := keyEnc.Seal(keyDER, keyAD(name, der))
	clear(keyDER)
	if err != nil {
		return nil, fmt.Errorf("pki: seal CA key: %w", err)
	}
	_, err = db.ExecContext(ctx, db.Rebind(`INSERT INTO pki_cas (name, algorithm, cert_der, key_sealed, created_at) VALUES (?, ?, ?, ?, ?)`),
		name, string(opts.Algorithm), der, sealed, now.Format(time.RFC3339Nano))
	if err != nil {
		if sqldb.IsUniqueViolation(err) {
			return nil, fmt.Errorf("%w: %q", ErrCAExists, name)
		}
		return nil, fmt.Errorf("pki: store CA %q: %w", name, err)
	}
	return newCA(db, name, opts.Algorithm, cert, signer), nil
}

// LoadCA loads the CA name and opens its sealed key with keyEnc. A wrong
// passphrase or key gives an error wrapping ErrWrongKey; a missing CA,
// ErrCANotFound.
func LoadCA(ctx context.Context, db *sqldb.DB, name string, keyEnc KeyEncryptor) (*CA, error) {
	if keyEnc == nil {
		return nil, ErrNoKey
	}
	if err := Migrate(ctx, db); err != nil {
		return nil, err
	}
	var alg string
	var der, sealed []byte
	err := db.QueryRowContext(ctx, db.Rebind(`SELECT algorithm, cert_der, key_sealed FROM pki_cas WHERE name = ?`), name).Scan(&alg, &der, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %q", ErrCANotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: load CA %q: %w", name, err)
	}
	a := Algorithm(alg)
	if a != ECDSAP256 && a != SM2 {
		return nil, fmt.Errorf("pki: CA %q has unknown algorithm %q", name, alg)
	}
	cert, err := ParseCertDER(der)
	if err != nil {
		return nil, fmt.Errorf("pki: CA %q root certificate: %w", name, err)
	}
	keyDER, err := keyEnc.Open(sealed, keyAD(name, der))
	if err != nil {
		return nil, fmt.Errorf("pki: open key of CA %q: %w", name, err)
	}
	signer, err := parsePrivateKey(keyDER)
	clear(keyDER)
	if err != nil {
		return nil, fmt.Errorf("pki: CA %q key: %w", name, err)
	}
	if !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("pki: CA %q key does not match its certificate", name)
	}
	if IsLegacySealed(sealed) {
		if err := resealCAKey(ctx, db, name, der, sealed, signer, keyEnc); err != nil {
			return nil, err
		}
	}
	return newCA(db, name, a, cert, signer), nil
}

// resealCAKey rewrites a CA key sealed in the legacy format (QSK1) in the
// current one; a concurrent loader that resealed it first wins.
func resealCAKey(ctx context.Context, db *sqldb.DB, name string, certDER, old []byte, signer crypto.Signer, keyEnc KeyEncryptor) error {
	keyDER, err := marshalPrivateKey(signer)
	if err != nil {
		return err
	}
	defer clear(keyDER)
	sealed, err := keyEnc.Seal(keyDER, keyAD(name, certDER))
	if err != nil {
		return fmt.Errorf("pki: reseal key of CA %q: %w", name, err)
	}
	if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE pki_cas SET key_sealed = ? WHERE name = ? AND key_sealed = ?`), sealed, name, old); err != nil {
		return fmt.Errorf("pki: reseal key of CA %q: %w", name, err)
	}
	return nil
}

// OpenOrCreateCA loads the CA name, creating it with opts when it does not
// exist yet (also when another process creates it concurrently).
func OpenOrCreateCA(ctx context.Context, db *sqldb.DB, name string, opts Options, keyEnc KeyEncryptor) (*CA, error) {
	ca, err := LoadCA(ctx, db, name, keyEnc)
	if !errors.Is(err, ErrCANotFound) {
		return ca, err
	}
	ca, err = NewCA(ctx, db, name, opts, keyEnc)
	if errors.Is(err, ErrCAExists) {
		return LoadCA(ctx, db, name, keyEnc)
	}
	return ca, err
}

func newCA(db *sqldb.DB, name string, alg Algorithm, cert *x509.Certificate, signer crypto.Signer) *CA {
	ca := &CA{db: db, name: name, alg: alg, cert: cert, signer: signer, pool: x509.NewCertPool(), smPool: smx509.NewCertPool(), cache: newPrincipalCache()}
	ca.pool.AddCert(cert)
	ca.smPool.AddCert((*smx509.Certificate)(cert))
	sum := sha256.Sum256(cert.Raw)
	ca.id = hex.EncodeToString(sum[:])
	return ca
}

// Certificate returns the root certificate (do not modify it).
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// RootPool returns a new pool holding only the root certificate.
func (ca *CA) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// ID is the hex SHA-256 fingerprint of the root certificate.
func (ca *CA) ID() string { return ca.id }

// Name is the CA's name in the database.
func (ca *CA) Name() string { return ca.name }

// Algorithm is the CA's signature algorithm.
func (ca *CA) Algorithm() Algorithm { return ca.alg }

// Signer returns the CA's private key, for callers that must sign protocol
// messages as the CA (for example seed 004's certification records).
func (ca *CA) Signer() crypto.Signer { return ca.signer }

func generateKey(a Algorithm) (crypto.Signer, error) {
	switch a {
	case ECDSAP256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("pki: generate P-256 key: %w", err)
		}
		return k, nil
	case SM2:
		k, err := sm2.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("pki: generate SM2 key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("%w: unknown algorithm %q", ErrBadRequest, a)
}

func createCertificate(a Algorithm, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) ([]byte, error) {
	if a == SM2 {
		return smx509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	}
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
}

// newSerial returns a random positive 127-bit serial (RFC 5280: ≤ 20 octets;
// CA/B Forum: ≥ 64 bits of CSPRNG output).
func newSerial() (*big.Int, error) {
	max := new(big.Int).Lsh(big.NewInt(1), 127)
	for {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			return nil, fmt.Errorf("pki: serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func marshalPrivateKey(k crypto.Signer) ([]byte, error) {
	der, err := smx509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal private key: %w", err)
	}
	return der, nil
}

func parsePrivateKey(der []byte) (crypto.Signer, error) {
	k, err := smx509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: private key of type %T cannot sign", k)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return strings.TrimSpace(s)
}
