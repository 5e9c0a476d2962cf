package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/emmansun/gmsm/sm2"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/sqldb"
)

// IssueRequest asks the CA for an end-entity certificate.
type IssueRequest struct {
	Role        Role
	CommonName  string
	DNSNames    []string
	IPAddresses []net.IP
	URIs        []*url.URL
	// PublicKey is the subject's key; nil makes the CA generate a key pair
	// (of the CA's algorithm) and return it in Issued.Key.
	PublicKey crypto.PublicKey
	// Device, when set, goes into a non-critical extension (oidDeviceInfo).
	Device *DeviceInfo
	// Validity defaults to DefaultLeafValidity and is capped at the root's NotAfter.
	Validity time.Duration
	// Extensions are extra caller extensions (e.g. seed 004's encrypted
	// fingerprint template): non-critical, at most 16 of at most 16 KiB each,
	// and not under qshield's oidArc or X.509's own id-ce arc.
	Extensions []pkix.Extension
	// Kind is the principal the certificate makes (see PrincipalKind); ""
	// derives it from Role and Device.Kind, or PrincipalNone. A client
	// principal's CommonName belongs to one kind for good: the same name
	// cannot be issued to another kind. Device.Serial is unique among the
	// active principals of a kind.
	Kind PrincipalKind
	// Scheme names the payment scheme the principal belongs to ("qmsp",
	// "bioqr", "keycharge", "selfverify", "watermark", "kme", "" = platform).
	Scheme string
	// Scope lists what the principal may act for ("account:ID",
	// "device:SERIAL", "merchant:N", "*").
	Scope []string
	// Replaces, when set, is the serial of an active certificate of the same
	// kind and name that this one supersedes; it is revoked ("superseded")
	// in the same transaction (renewal keeps a device serial unique).
	Replaces *big.Int
}

// Issued is a newly issued certificate.
type Issued struct {
	Cert *x509.Certificate
	DER  []byte
	Key  crypto.Signer // only when the CA generated the key pair
}

// CertRecord is the CA's register entry for an issued certificate.
type CertRecord struct {
	Serial       *big.Int
	Role         Role
	CommonName   string
	Subject      string
	DeviceSerial string
	NotBefore    time.Time
	NotAfter     time.Time
	IssuedAt     time.Time
	Revoked      bool
	RevokedAt    time.Time
	RevokeReason string
}

const maxExtraExtensions = 16

// Issue signs a certificate for req and records its serial, subject, role and
// validity in the database (the register Verify checks revocation against).
func (ca *CA) Issue(ctx context.Context, req IssueRequest) (*Issued, error) {
	tmpl, err := ca.template(req)
	if err != nil {
		return nil, err
	}
	var key crypto.Signer
	pub := req.PublicKey
	if pub == nil {
		if key, err = generateKey(ca.alg); err != nil {
			return nil, err
		}
		pub = key.Public()
	} else if err := ca.checkSubjectKey(pub); err != nil {
		return nil, err
	}
	der, err := createCertificate(ca.alg, tmpl, ca.cert, pub, ca.signer)
	if err != nil {
		return nil, fmt.Errorf("pki: sign certificate for %q: %w", req.CommonName, err)
	}
	cert, err := ParseCertDER(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse issued certificate: %w", err)
	}
	devSerial := ""
	if req.Device != nil {
		devSerial = req.Device.Serial
	}
	kind := req.Kind
	if kind == "" {
		kind = defaultKind(req)
	}
	scope := ""
	if len(req.Scope) > 0 {
		b, _ := json.Marshal(req.Scope)
		scope = string(b)
	}
	replaces := ""
	if req.Replaces != nil {
		replaces = serialText(req.Replaces)
	}
	now := time.Now().UTC()
	serial := serialText(cert.SerialNumber)
	err = ca.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := ca.registerPrincipalTx(ctx, tx, kind, req.CommonName, devSerial, replaces); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, ca.db.Rebind(`INSERT INTO pki_certs
			(ca_name, serial, role, common_name, subject, device_serial, not_before, not_after, issued_at, der, kind, scheme, scope, key_hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			ca.name, serial, string(req.Role), req.CommonName, cert.Subject.String(), devSerial,
			fmtTime(cert.NotBefore), fmtTime(cert.NotAfter), fmtTime(now), der,
			string(kind), req.Scheme, scope, KeyHash(cert)); err != nil {
			if sqldb.IsUniqueViolation(err) && devSerial != "" {
				return fmt.Errorf("%w: %s %q", ErrDeviceTaken, kind, devSerial)
			}
			return err
		}
		return ca.auditTx(ctx, tx, "pki.issue", audit.OutcomeSuccess, serial, map[string]string{
			"role": string(req.Role), "kind": string(kind), "scheme": req.Scheme, "scope": scope, "replaces": replaces,
			"common_name": req.CommonName, "device_serial": devSerial, "not_after": fmtTime(cert.NotAfter)})
	})
	if err != nil {
		return nil, fmt.Errorf("pki: record certificate %s: %w", serial, err)
	}
	return &Issued{Cert: cert, DER: der, Key: key}, nil
}

// template checks req and builds the certificate the CA signs for it: the
// request's names, a validity window inside the CA's, and the extensions.
func (ca *CA) template(req IssueRequest) (*x509.Certificate, error) {
	if err := checkIssueNames(req); err != nil {
		return nil, err
	}
	now, notAfter, err := ca.validity(req)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	exts, err := issueExtensions(req)
	if err != nil {
		return nil, err
	}
	eku := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if req.Role == RoleServer {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: req.CommonName, Organization: []string{"qshield"}, OrganizationalUnit: []string{string(req.Role)}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPAddresses,
		URIs:                  req.URIs,
		ExtraExtensions:       exts,
	}, nil
}

// checkIssueNames checks req's role, principal kind, scheme, scope, common
// name and subject alternative names.
func checkIssueNames(req IssueRequest) error {
	if !req.Role.Valid() {
		return fmt.Errorf("%w: unknown role %q", ErrBadRequest, req.Role)
	}
	if req.Kind != "" && !req.Kind.Valid() {
		return fmt.Errorf("%w: unknown principal kind %q", ErrBadRequest, req.Kind)
	}
	if (req.Kind == PrincipalServer) != (req.Role == RoleServer) && req.Kind != "" {
		return fmt.Errorf("%w: principal kind %s does not go with role %s", ErrBadRequest, req.Kind, req.Role)
	}
	if len(req.Scheme) > maxNameLen {
		return fmt.Errorf("%w: scheme name too long", ErrBadRequest)
	}
	if err := checkScope(req.Scope); err != nil {
		return err
	}
	if err := checkName("common name", req.CommonName); err != nil {
		return err
	}
	if req.Role == RoleServer && len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 {
		return fmt.Errorf("%w: a server certificate needs a DNS name or IP address", ErrBadRequest)
	}
	for _, n := range req.DNSNames {
		if n == "" || len(n) > 253 || strings.ContainsFunc(n, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			return fmt.Errorf("%w: bad DNS name %q", ErrBadRequest, n)
		}
	}
	for _, ip := range req.IPAddresses {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return fmt.Errorf("%w: bad IP address %v", ErrBadRequest, ip)
		}
	}
	for _, u := range req.URIs {
		if u == nil || u.Scheme == "" {
			return fmt.Errorf("%w: URIs need a scheme", ErrBadRequest)
		}
	}
	return nil
}

// validity is the window of a certificate issued now for req: its
// requested validity (DefaultLeafValidity if none), cut at the CA's own
// expiry.
func (ca *CA) validity(req IssueRequest) (now, notAfter time.Time, err error) {
	validity := req.Validity
	if validity == 0 {
		validity = DefaultLeafValidity
	}
	if validity < time.Minute {
		return now, notAfter, fmt.Errorf("%w: validity %v too short", ErrBadRequest, validity)
	}
	now = time.Now().UTC()
	notAfter = now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	if !notAfter.After(now) {
		return now, notAfter, fmt.Errorf("%w: the CA certificate has expired", ErrBadRequest)
	}
	return now, notAfter, nil
}

// issueExtensions are the extensions of a certificate for req: the role,
// the device information if any, and the caller's extra extensions, each
// checked (not reserved, not critical, not repeated, not too large).
func issueExtensions(req IssueRequest) ([]pkix.Extension, error) {
	roleExt, err := roleExtension(req.Role)
	if err != nil {
		return nil, err
	}
	exts := []pkix.Extension{roleExt}
	if req.Device != nil {
		v, err := MarshalDeviceInfo(req.Device)
		if err != nil {
			return nil, err
		}
		exts = append(exts, pkix.Extension{Id: oidDeviceInfo, Value: v})
	}
	if len(req.Extensions) > maxExtraExtensions {
		return nil, fmt.Errorf("%w: more than %d extra extensions", ErrBadRequest, maxExtraExtensions)
	}
	seen := map[string]bool{}
	for _, e := range req.Extensions {
		if len(e.Id) < 2 {
			return nil, fmt.Errorf("%w: extension with an invalid OID", ErrBadRequest)
		}
		if hasPrefix(e.Id, oidArc) || (len(e.Id) >= 3 && e.Id[0] == 2 && e.Id[1] == 5 && e.Id[2] == 29) {
			return nil, fmt.Errorf("%w: extension %v is reserved", ErrBadRequest, e.Id)
		}
		if e.Critical {
			return nil, fmt.Errorf("%w: extension %v is critical; verifiers would reject it (mark it non-critical)", ErrBadRequest, e.Id)
		}
		if seen[e.Id.String()] {
			return nil, fmt.Errorf("%w: extension %v given twice", ErrBadRequest, e.Id)
		}
		if len(e.Value) > maxDeviceExt {
			return nil, fmt.Errorf("%w: extension %v larger than %d bytes", ErrBadRequest, e.Id, maxDeviceExt)
		}
		seen[e.Id.String()] = true
		exts = append(exts, e)
	}
	return exts, nil
}

func (ca *CA) checkSubjectKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		if k.Curve == sm2.P256() {
			if ca.alg != SM2 {
				return fmt.Errorf("%w: only an SM2 CA certifies SM2 keys", ErrBadRequest)
			}
			return nil
		}
		return fmt.Errorf("%w: unsupported curve %s", ErrBadRequest, k.Curve.Params().Name)
	case ed25519.PublicKey:
		if ca.alg == SM2 {
			return fmt.Errorf("%w: an SM2 CA does not certify Ed25519 keys", ErrBadRequest)
		}
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("%w: RSA key shorter than 2048 bits", ErrBadRequest)
		}
		return nil
	}
	return fmt.Errorf("%w: unsupported public key type %T", ErrBadRequest, pub)
}

func hasPrefix(oid, prefix []int) bool {
	if len(oid) < len(prefix) {
		return false
	}
	for i := range prefix {
		if oid[i] != prefix[i] {
			return false
		}
	}
	return true
}

func serialText(n *big.Int) string { return n.Text(16) }

// timeLayout is fixed-width so that stored times sort correctly as text.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

func fmtTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// Revoke marks serial revoked with reason; it takes effect for every later
// Verify and TLS handshake. Revoking twice keeps the first reason and is not
// an error; an unknown serial is ErrUnknownCert.
func (ca *CA) Revoke(ctx context.Context, serial *big.Int, reason string) error {
	if serial == nil || serial.Sign() <= 0 {
		return fmt.Errorf("%w: bad serial", ErrBadRequest)
	}
	if reason == "" || len(reason) > 256 {
		return fmt.Errorf("%w: a revocation reason of 1..256 bytes is required", ErrBadRequest)
	}
	var n int64
	err := ca.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, ca.db.Rebind(`UPDATE pki_certs SET revoked_at = ?, revoke_reason = ?
			WHERE ca_name = ? AND serial = ? AND revoked_at IS NULL`),
			fmtTime(time.Now()), reason, ca.name, serialText(serial))
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil || n != 1 {
			return err
		}
		return ca.auditTx(ctx, tx, "pki.revoke", audit.OutcomeSuccess, serialText(serial), map[string]string{"reason": reason})
	})
	ca.cache.forget(serialText(serial))
	if err != nil {
		return fmt.Errorf("pki: revoke %s: %w", serialText(serial), err)
	}
	if n == 1 {
		return nil
	}
	// Nothing updated: unknown serial (error) or already revoked (no-op).
	if _, err := ca.IsRevoked(ctx, serial); err != nil {
		return err
	}
	return nil
}

// IsRevoked reports whether serial is revoked, reading the database every
// time. A serial the CA never issued is ErrUnknownCert.
func (ca *CA) IsRevoked(ctx context.Context, serial *big.Int) (bool, error) {
	if serial == nil {
		return false, fmt.Errorf("%w: nil serial", ErrBadRequest)
	}
	var revokedAt sql.NullString
	err := ca.db.QueryRowContext(ctx, ca.db.Rebind(`SELECT revoked_at FROM pki_certs WHERE ca_name = ? AND serial = ?`),
		ca.name, serialText(serial)).Scan(&revokedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("%w: serial %s", ErrUnknownCert, serialText(serial))
	}
	if err != nil {
		return false, fmt.Errorf("pki: revocation status of %s: %w", serialText(serial), err)
	}
	return revokedAt.Valid, nil
}

// Certificates lists the register, newest first (limit ≤ 0: all).
func (ca *CA) Certificates(ctx context.Context, limit int) ([]CertRecord, error) {
	q := `SELECT serial, role, common_name, subject, device_serial, not_before, not_after, issued_at, revoked_at, revoke_reason
		FROM pki_certs WHERE ca_name = ? ORDER BY issued_at DESC, serial`
	args := []any{ca.name}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := ca.db.QueryContext(ctx, ca.db.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("pki: list certificates: %w", err)
	}
	defer rows.Close()
	var out []CertRecord
	for rows.Next() {
		var r CertRecord
		var serial, role, nb, na, ia string
		var ra sql.NullString
		if err := rows.Scan(&serial, &role, &r.CommonName, &r.Subject, &r.DeviceSerial, &nb, &na, &ia, &ra, &r.RevokeReason); err != nil {
			return nil, fmt.Errorf("pki: list certificates: %w", err)
		}
		var ok bool
		if r.Serial, ok = new(big.Int).SetString(serial, 16); !ok {
			return nil, fmt.Errorf("pki: list certificates: bad serial %q in database", serial)
		}
		r.Role = Role(role)
		r.NotBefore, _ = time.Parse(time.RFC3339Nano, nb)
		r.NotAfter, _ = time.Parse(time.RFC3339Nano, na)
		r.IssuedAt, _ = time.Parse(time.RFC3339Nano, ia)
		if ra.Valid {
			r.Revoked = true
			r.RevokedAt, _ = time.Parse(time.RFC3339Nano, ra.String)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
