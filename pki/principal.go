package pki

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"
)

// PrincipalKind says what a principal is, and so what it may do: the
// authorization layer (package authz) grants routes to kinds, never to
// names. The kind is recorded in the CA's register when the certificate is
// issued; it is not read from the certificate, so a certificate cannot
// claim a kind it was not issued for.
type PrincipalKind string

// Principal kinds.
const (
	// PrincipalNone is the kind of a certificate issued without one (legacy
	// callers, certificates for tests): it authenticates, and no route
	// grants it anything.
	PrincipalNone       PrincipalKind = "none"
	PrincipalAdmin      PrincipalKind = "admin"      // platform administrator (the admin credential)
	PrincipalOperator   PrincipalKind = "operator"   // a scheme's operator: certifies devices, enrols payers (within its scope)
	PrincipalAuditor    PrincipalKind = "auditor"    // reads the audit trail and registers, changes nothing
	PrincipalGateway    PrincipalKind = "gateway"    // seed 000 QR gateway
	PrincipalPOS        PrincipalKind = "pos"        // seed 004 POS terminal
	PrincipalPhone      PrincipalKind = "phone"      // a payer's phone (any scheme)
	PrincipalScanner    PrincipalKind = "scanner"    // seed 003 merchant scanner
	PrincipalCharger    PrincipalKind = "charger"    // seed 001 key charger
	PrincipalKeyDevice  PrincipalKind = "key-device" // seed 001 key storage device
	PrincipalKMEPeer    PrincipalKind = "kme-peer"   // a key manager talking to its peer
	PrincipalSAE        PrincipalKind = "sae"        // an ETSI GS QKD 014 secure application entity
	PrincipalSettlement PrincipalKind = "settlement" // seed 004 settlement server
	PrincipalServer     PrincipalKind = "server"     // a TLS server
)

var principalKinds = []PrincipalKind{PrincipalNone, PrincipalAdmin, PrincipalOperator, PrincipalAuditor, PrincipalGateway,
	PrincipalPOS, PrincipalPhone, PrincipalScanner, PrincipalCharger, PrincipalKeyDevice, PrincipalKMEPeer, PrincipalSAE,
	PrincipalSettlement, PrincipalServer}

// PrincipalKinds returns every defined kind.
func PrincipalKinds() []PrincipalKind { return slices.Clone(principalKinds) }

// Valid reports whether k is a defined kind.
func (k PrincipalKind) Valid() bool { return slices.Contains(principalKinds, k) }

// Principal statuses.
const (
	StatusActive  = "active"
	StatusRevoked = "revoked"
)

// More sentinel errors of the register.
var (
	// ErrNameTaken: the common name already belongs to a principal of
	// another kind (a phone cannot be called "charger-1" or "KME_B").
	ErrNameTaken = errors.New("pki: name belongs to a principal of another kind")
	// ErrDeviceTaken: an active principal of the same kind already has this
	// device serial (a second POS "SHOP-1" is refused; renew with Replaces).
	ErrDeviceTaken = errors.New("pki: device serial already held by an active principal of this kind")
	// ErrKeyMismatch: the presented certificate is not the one the register
	// holds for its serial.
	ErrKeyMismatch = errors.New("pki: certificate does not match the register entry for its serial")
)

// Principal is who a verified certificate speaks for: the register entry
// made when the CA issued it. Requests are authenticated by serial and
// public key (Authenticate); Name is a display name.
type Principal struct {
	Serial       string        `json:"serial"` // hexadecimal
	KeyHash      string        `json:"key_hash"`
	Kind         PrincipalKind `json:"kind"`
	Scheme       string        `json:"scheme,omitempty"`
	Name         string        `json:"name"`
	Role         Role          `json:"role"`
	DeviceSerial string        `json:"device_serial,omitempty"`
	// Scope lists what the principal may act for: "account:ID",
	// "device:SERIAL", "merchant:N", or "*" for everything of its kind.
	Scope     []string  `json:"scope,omitempty"`
	Status    string    `json:"status"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	IssuedAt  time.Time `json:"issued_at"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Reason    string    `json:"revoke_reason,omitempty"`
}

// Is reports whether p is of one of kinds.
func (p *Principal) Is(kinds ...PrincipalKind) bool {
	return p != nil && slices.Contains(kinds, p.Kind)
}

// MayActFor reports whether p's scope covers resource (e.g. "account:alice"):
// an exact entry, or "*".
func (p *Principal) MayActFor(resource string) bool {
	if p == nil {
		return false
	}
	return slices.Contains(p.Scope, "*") || slices.Contains(p.Scope, resource)
}

// ScopeValues returns the values of p's scope entries with prefix (e.g.
// "account:") — the accounts, devices or merchants p acts for.
func (p *Principal) ScopeValues(prefix string) []string {
	var out []string
	for _, s := range p.Scope {
		if v, ok := strings.CutPrefix(s, prefix); ok {
			out = append(out, v)
		}
	}
	return out
}

// KeyHash returns the hex SHA-256 of cert's SubjectPublicKeyInfo.
func KeyHash(cert *x509.Certificate) string {
	h := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(h[:])
}

// defaultKind derives the kind of a request that names none.
func defaultKind(req IssueRequest) PrincipalKind {
	if req.Role == RoleServer {
		return PrincipalServer
	}
	if req.Role == RoleApplication {
		return PrincipalSAE
	}
	if req.Device != nil {
		switch req.Device.Kind {
		case KindPhone:
			return PrincipalPhone
		case KindPOS:
			return PrincipalPOS
		case KindGateway:
			return PrincipalGateway
		case KindUKey:
			return PrincipalKeyDevice
		}
	}
	return PrincipalNone
}

const (
	maxScope      = 64
	maxScopeEntry = 200
)

func checkScope(scope []string) error {
	if len(scope) > maxScope {
		return fmt.Errorf("%w: more than %d scope entries", ErrBadRequest, maxScope)
	}
	for _, s := range scope {
		if s == "" || len(s) > maxScopeEntry || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return fmt.Errorf("%w: bad scope entry %q", ErrBadRequest, s)
		}
	}
	return nil
}

// registerPrincipalTx checks the name and device-serial rules inside the
// issuing transaction.
func (ca *CA) registerPrincipalTx(ctx context.Context, tx *sql.Tx, kind PrincipalKind, name, devSerial string, replaces string) error {
	if kind != PrincipalServer {
		// Claim the name for this kind; a concurrent claim of the same name
		// (two nodes starting at once) waits for the first and then reads
		// its kind instead of failing on the unique key.
		if _, err := tx.ExecContext(ctx, ca.db.Rebind(`INSERT INTO pki_names (ca_name, common_name, kind) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`), ca.name, name, string(kind)); err != nil {
			return err
		}
		var have string
		if err := tx.QueryRowContext(ctx, ca.db.Rebind(`SELECT kind FROM pki_names WHERE ca_name = ? AND common_name = ?`), ca.name, name).Scan(&have); err != nil {
			return err
		}
		if have != string(kind) {
			return fmt.Errorf("%w: %q is a %s", ErrNameTaken, name, have)
		}
	}
	if replaces != "" {
		res, err := tx.ExecContext(ctx, ca.db.Rebind(`UPDATE pki_certs SET revoked_at = ?, revoke_reason = ?
			WHERE ca_name = ? AND serial = ? AND kind = ? AND common_name = ? AND revoked_at IS NULL`),
			fmtTime(time.Now()), "superseded", ca.name, replaces, string(kind), name)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("%w: the certificate to replace (%s) is not an active %s named %q", ErrBadRequest, replaces, kind, name)
		}
		ca.cache.forget(replaces)
	}
	if devSerial != "" {
		var n int
		if err := tx.QueryRowContext(ctx, ca.db.Rebind(`SELECT COUNT(*) FROM pki_certs WHERE ca_name = ? AND kind = ? AND device_serial = ? AND revoked_at IS NULL`),
			ca.name, string(kind), devSerial).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: %s %q", ErrDeviceTaken, kind, devSerial)
		}
	}
	return nil
}

// PrincipalCacheTTL is how long Authenticate trusts a register entry it has
// read. A revocation on this node clears the entry at once; another node
// sharing the database sees it within this time.
const PrincipalCacheTTL = 500 * time.Millisecond

const maxCached = 50000

type principalCache struct {
	mu sync.Mutex
	m  map[string]cachedPrincipal
}

type cachedPrincipal struct {
	p   *Principal
	der []byte
	at  time.Time
}

func newPrincipalCache() *principalCache { return &principalCache{m: map[string]cachedPrincipal{}} }

func (c *principalCache) get(serial string, now time.Time) (cachedPrincipal, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[serial]
	if !ok || now.Sub(e.at) >= PrincipalCacheTTL || now.Before(e.at) {
		return cachedPrincipal{}, false
	}
	return e, true
}

func (c *principalCache) put(serial string, e cachedPrincipal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxCached {
		clear(c.m)
	}
	c.m[serial] = e
}

func (c *principalCache) forget(serial string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, serial)
}

// Authenticate returns the principal a client certificate speaks for: the
// certificate must verify against the root (chain, validity, role, key
// usage, as in Verify) and be exactly the certificate the register holds
// under its serial (same public key), and the principal must be active.
// While a register entry is cached, the same certificate bytes are not
// verified again (only their validity period is checked).
// Every request should call it — not only the TLS handshake — so that a
// revocation also ends kept-alive connections; register reads are cached
// for at most PrincipalCacheTTL and a Revoke on this CA clears them at once.
//
// Errors wrap ErrUntrusted, ErrExpired, ErrWrongRole, ErrRevoked or
// ErrKeyMismatch. Unlike Verify, a refusal is not written to the audit
// trail here: it runs on every request, and its caller (package authz)
// audits refusals aggregated per source and minute, so a flood of requests
// with a revoked certificate cannot grow the trail without bound.
func (ca *CA) Authenticate(ctx context.Context, cert *x509.Certificate) (*Principal, error) {
	return ca.authenticate(ctx, cert)
}

func (ca *CA) authenticate(ctx context.Context, cert *x509.Certificate) (*Principal, error) {
	now := time.Now()
	if cert == nil || cert.SerialNumber == nil {
		return nil, fmt.Errorf("%w: no certificate", ErrUntrusted)
	}
	serial := serialText(cert.SerialNumber)
	e, ok := ca.cache.get(serial, now)
	if ok && len(e.der) == len(cert.Raw) && subtle.ConstantTimeCompare(e.der, cert.Raw) == 1 {
		// The very bytes verified when the entry was read: only time can
		// have changed the outcome.
		if now.Before(cert.NotBefore) || now.After(cert.NotAfter) || now.After(ca.cert.NotAfter) {
			return nil, fmt.Errorf("%w: %s valid %s..%s", ErrExpired, serial, cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
		}
	} else {
		if _, err := ca.verifyStatic(cert, "", now); err != nil {
			return nil, err
		}
		p, der, err := ca.loadPrincipal(ctx, serial)
		if err != nil {
			return nil, err
		}
		if len(der) != len(cert.Raw) || subtle.ConstantTimeCompare(der, cert.Raw) != 1 {
			return nil, fmt.Errorf("%w: serial %s", ErrKeyMismatch, serial)
		}
		e = cachedPrincipal{p: p, der: der, at: now}
		ca.cache.put(serial, e)
	}
	if e.p.Status != StatusActive {
		return nil, fmt.Errorf("%w: serial %s (%s %q)", ErrRevoked, serial, e.p.Kind, e.p.Name)
	}
	out := *e.p
	out.Scope = slices.Clone(e.p.Scope)
	return &out, nil
}

const principalCols = `serial, role, common_name, device_serial, not_before, not_after, issued_at, revoked_at, revoke_reason, kind, scheme, scope, key_hash`

func scanPrincipal(row interface{ Scan(...any) error }, der *[]byte) (*Principal, error) {
	var p Principal
	var role, nb, na, ia, kind, scope string
	var ra sql.NullString
	dest := []any{&p.Serial, &role, &p.Name, &p.DeviceSerial, &nb, &na, &ia, &ra, &p.Reason, &kind, &p.Scheme, &scope, &p.KeyHash}
	if der != nil {
		dest = append(dest, der)
	}
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	p.Role, p.Kind = Role(role), PrincipalKind(kind)
	if p.Kind == "" {
		p.Kind = PrincipalNone // issued before principals were recorded
	}
	p.NotBefore, _ = time.Parse(time.RFC3339Nano, nb)
	p.NotAfter, _ = time.Parse(time.RFC3339Nano, na)
	p.IssuedAt, _ = time.Parse(time.RFC3339Nano, ia)
	p.Status = StatusActive
	if ra.Valid {
		p.Status = StatusRevoked
		p.RevokedAt, _ = time.Parse(time.RFC3339Nano, ra.String)
	}
	if scope != "" {
		if err := json.Unmarshal([]byte(scope), &p.Scope); err != nil {
			return nil, fmt.Errorf("pki: principal %s: bad scope in register: %w", p.Serial, err)
		}
	}
	return &p, nil
}

func (ca *CA) loadPrincipal(ctx context.Context, serial string) (*Principal, []byte, error) {
	var der []byte
	p, err := scanPrincipal(ca.db.QueryRowContext(ctx, ca.db.Rebind(`SELECT `+principalCols+`, der FROM pki_certs WHERE ca_name = ? AND serial = ?`),
		ca.name, serial), &der)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("%w: %v: serial %s", ErrUntrusted, ErrUnknownCert, serial)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("pki: read principal %s: %w", serial, err)
	}
	return p, der, nil
}

// PrincipalBySerial returns the register entry for serial (hexadecimal).
func (ca *CA) PrincipalBySerial(ctx context.Context, serial string) (*Principal, error) {
	n, ok := new(big.Int).SetString(strings.TrimPrefix(strings.ToLower(serial), "0x"), 16)
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("%w: serial %q is not hexadecimal", ErrBadRequest, serial)
	}
	p, _, err := ca.loadPrincipal(ctx, serialText(n))
	if errors.Is(err, ErrUntrusted) {
		return nil, fmt.Errorf("%w: serial %s", ErrUnknownCert, serialText(n))
	}
	return p, err
}

// PrincipalFilter selects register entries for Principals.
type PrincipalFilter struct {
	Kind       PrincipalKind // "" = any
	Name       string        // "" = any
	ActiveOnly bool
	Limit      int // ≤ 0: 1000
}

// Principals lists register entries, newest first.
func (ca *CA) Principals(ctx context.Context, f PrincipalFilter) ([]*Principal, error) {
	q := `SELECT ` + principalCols + ` FROM pki_certs WHERE ca_name = ?`
	args := []any{ca.name}
	if f.Kind != "" {
		q += ` AND kind = ?`
		args = append(args, string(f.Kind))
	}
	if f.Name != "" {
		q += ` AND common_name = ?`
		args = append(args, f.Name)
	}
	if f.ActiveOnly {
		q += ` AND revoked_at IS NULL`
	}
	if f.Limit <= 0 || f.Limit > 100000 {
		f.Limit = 1000
	}
	q += ` ORDER BY issued_at DESC, serial LIMIT ?`
	args = append(args, f.Limit)
	rows, err := ca.db.QueryContext(ctx, ca.db.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("pki: list principals: %w", err)
	}
	defer rows.Close()
	var out []*Principal
	for rows.Next() {
		p, err := scanPrincipal(rows, nil)
		if err != nil {
			return nil, fmt.Errorf("pki: list principals: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// CertificateDER returns the DER of the certificate with serial (hex).
func (ca *CA) CertificateDER(ctx context.Context, serial string) ([]byte, error) {
	p, err := ca.PrincipalBySerial(ctx, serial)
	if err != nil {
		return nil, err
	}
	_, der, err := ca.loadPrincipal(ctx, p.Serial)
	return bytes.Clone(der), err
}
