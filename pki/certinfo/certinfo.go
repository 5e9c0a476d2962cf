// Package certinfo reads and writes qshield's certificate extensions (the
// role and the device information) and parses certificates of either
// algorithm. It imports no database, so the browser wallet compiles it to
// WebAssembly to check a POS certificate as the CLI phone does; package pki
// re-exports it.
package certinfo

import (
	"errors"

	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"github.com/emmansun/gmsm/smx509"
	"sort"
	"unicode/utf8"
)

// Private OIDs. qshield has no registered IANA Private Enterprise Number yet;
// oidArc is a placeholder under the PEN arc (1.3.6.1.4.1) to be replaced by
// the project's own number before production certificates are issued; every
// qshield OID derives from it. Verifiers only compare OIDs, so changing the
// arc needs only a re-issue.
var (
	oidArc        = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 61439, 7400}
	oidRole       = append(append(asn1.ObjectIdentifier(nil), oidArc...), 1)
	oidDeviceInfo = append(append(asn1.ObjectIdentifier(nil), oidArc...), 2)
)

// OIDArc returns the arc under which qshield's private OIDs live.
func OIDArc() asn1.ObjectIdentifier { return append(asn1.ObjectIdentifier(nil), oidArc...) }

// OIDRole returns the OID of the role extension (arc.1, a UTF8String).
func OIDRole() asn1.ObjectIdentifier { return append(asn1.ObjectIdentifier(nil), oidRole...) }

// OIDDeviceInfo returns the OID of the device-information extension (arc.2).
func OIDDeviceInfo() asn1.ObjectIdentifier {
	return append(asn1.ObjectIdentifier(nil), oidDeviceInfo...)
}

// Role is what a certificate may be used for.
type Role string

const (
	RoleServer      Role = "server"      // TLS server (ExtKeyUsageServerAuth)
	RoleClient      Role = "client"      // TLS client (ExtKeyUsageClientAuth)
	RoleDevice      Role = "device"      // phone, POS terminal, U-key… (client auth + signatures)
	RoleApplication Role = "application" // an application, e.g. an ETSI QKD 014 SAE (client auth)
)

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool {
	switch r {
	case RoleServer, RoleClient, RoleDevice, RoleApplication:
		return true
	}
	return false
}

// Device kinds commonly used with DeviceInfo.Kind (free text is allowed).
const (
	KindPhone   = "phone"
	KindPOS     = "pos"
	KindUKey    = "ukey"
	KindGateway = "gateway"
	KindServer  = "server"
)

// Limits on a device-information extension, so a certificate can never carry
// an unbounded blob.
const (
	maxDeviceField = 256
	maxDeviceAttrs = 32
	maxDeviceExt   = MaxDeviceExt
)

// DeviceInfo describes the device a certificate was issued to. It is carried
// in a non-critical extension (OIDDeviceInfo()) encoded in DER as
//
//	DeviceInfo ::= SEQUENCE {
//	    version  INTEGER (1),
//	    serial   UTF8String,
//	    model    UTF8String,
//	    kind     UTF8String,
//	    attrs    SEQUENCE OF SEQUENCE { key UTF8String, value UTF8String }
//	}
//
// with attrs sorted by key and keys unique.
type DeviceInfo struct {
	Serial string            `json:"serial"`
	Model  string            `json:"model,omitempty"`
	Kind   string            `json:"kind"`
	Attrs  map[string]string `json:"attrs,omitempty"`
}

type asn1Attr struct {
	Key   string `asn1:"utf8"`
	Value string `asn1:"utf8"`
}

type asn1Device struct {
	Version int
	Serial  string `asn1:"utf8"`
	Model   string `asn1:"utf8"`
	Kind    string `asn1:"utf8"`
	Attrs   []asn1Attr
}

func checkField(what, s string, required bool) error {
	if required && s == "" {
		return fmt.Errorf("%w: device %s is empty", ErrBadRequest, what)
	}
	if len(s) > maxDeviceField || !utf8.ValidString(s) {
		return fmt.Errorf("%w: device %s must be valid UTF-8 of at most %d bytes", ErrBadRequest, what, maxDeviceField)
	}
	return nil
}

// Validate checks d's fields: serial and kind required, every field UTF-8 of
// at most 256 bytes, at most 32 attributes with non-empty keys.
func (d *DeviceInfo) Validate() error {
	if err := checkField("serial", d.Serial, true); err != nil {
		return err
	}
	if err := checkField("model", d.Model, false); err != nil {
		return err
	}
	if err := checkField("kind", d.Kind, true); err != nil {
		return err
	}
	if len(d.Attrs) > maxDeviceAttrs {
		return fmt.Errorf("%w: more than %d device attributes", ErrBadRequest, maxDeviceAttrs)
	}
	for k, v := range d.Attrs {
		if err := checkField("attribute key", k, true); err != nil {
			return err
		}
		if err := checkField("attribute "+k, v, false); err != nil {
			return err
		}
	}
	return nil
}

// MarshalDeviceInfo returns the DER encoding of d (the extension value).
func MarshalDeviceInfo(d *DeviceInfo) ([]byte, error) {
	if d == nil {
		return nil, fmt.Errorf("%w: nil device info", ErrBadRequest)
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	v := asn1Device{Version: 1, Serial: d.Serial, Model: d.Model, Kind: d.Kind, Attrs: []asn1Attr{}}
	for k, val := range d.Attrs {
		v.Attrs = append(v.Attrs, asn1Attr{k, val})
	}
	sort.Slice(v.Attrs, func(i, j int) bool { return v.Attrs[i].Key < v.Attrs[j].Key })
	der, err := asn1.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("pki: encode device info: %w", err)
	}
	return der, nil
}

// ParseDeviceInfo decodes a device-information extension value. It accepts
// only the canonical DER that MarshalDeviceInfo produces.
func ParseDeviceInfo(der []byte) (*DeviceInfo, error) {
	if len(der) > maxDeviceExt {
		return nil, fmt.Errorf("pki: device info extension of %d bytes is too large", len(der))
	}
	var v asn1Device
	rest, err := asn1.Unmarshal(der, &v)
	if err != nil {
		return nil, fmt.Errorf("pki: decode device info: %w", err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("pki: decode device info: %d trailing bytes", len(rest))
	}
	if v.Version != 1 {
		return nil, fmt.Errorf("pki: device info version %d unsupported", v.Version)
	}
	d := &DeviceInfo{Serial: v.Serial, Model: v.Model, Kind: v.Kind}
	if len(v.Attrs) > maxDeviceAttrs {
		return nil, fmt.Errorf("pki: decode device info: more than %d attributes", maxDeviceAttrs)
	}
	if len(v.Attrs) > 0 {
		d.Attrs = make(map[string]string, len(v.Attrs))
	}
	for i, a := range v.Attrs {
		if i > 0 && v.Attrs[i-1].Key >= a.Key {
			return nil, fmt.Errorf("pki: decode device info: attributes not sorted or duplicated at %q", a.Key)
		}
		d.Attrs[a.Key] = a.Value
	}
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("pki: decode device info: %w", err)
	}
	// Canonical form only: a second encoding of the same value is rejected.
	again, err := MarshalDeviceInfo(d)
	if err != nil || string(again) != string(der) {
		return nil, fmt.Errorf("pki: decode device info: not in canonical DER form")
	}
	return d, nil
}

// DeviceInfoOf returns the device information in cert, or nil (and no
// error) when it has none. It does not verify cert; use CA.Verify for that.
func DeviceInfoOf(cert *x509.Certificate) (*DeviceInfo, error) {
	ext, err := findExt(cert, oidDeviceInfo)
	if err != nil || ext == nil {
		return nil, err
	}
	return ParseDeviceInfo(ext.Value)
}

// RoleOf returns the role recorded in cert's role extension.
func RoleOf(cert *x509.Certificate) (Role, error) {
	ext, err := findExt(cert, oidRole)
	if err != nil {
		return "", err
	}
	if ext == nil {
		return "", fmt.Errorf("pki: certificate has no qshield role extension")
	}
	return ParseRole(ext.Value)
}

// ParseRole decodes a role extension value (a DER UTF8String naming a Role).
func ParseRole(der []byte) (Role, error) {
	var s string
	rest, err := asn1.UnmarshalWithParams(der, &s, "utf8")
	if err != nil {
		return "", fmt.Errorf("pki: decode role: %w", err)
	}
	if len(rest) != 0 {
		return "", fmt.Errorf("pki: decode role: trailing bytes")
	}
	r := Role(s)
	if !r.Valid() {
		return "", fmt.Errorf("pki: unknown role %q", s)
	}
	return r, nil
}

func roleExtension(r Role) (pkix.Extension, error) {
	v, err := asn1.MarshalWithParams(string(r), "utf8")
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("pki: encode role: %w", err)
	}
	return pkix.Extension{Id: oidRole, Value: v}, nil
}

func findExt(cert *x509.Certificate, oid asn1.ObjectIdentifier) (*pkix.Extension, error) {
	if cert == nil {
		return nil, fmt.Errorf("pki: nil certificate")
	}
	var found *pkix.Extension
	for i := range cert.Extensions {
		if cert.Extensions[i].Id.Equal(oid) {
			if found != nil {
				return nil, fmt.Errorf("pki: extension %v appears twice", oid)
			}
			found = &cert.Extensions[i]
		}
	}
	return found, nil
}

// ErrBadRequest is an invalid device information (pki.ErrBadRequest).
var ErrBadRequest = errors.New("pki: invalid request")

// RoleExtension returns the role extension for r.
func RoleExtension(r Role) (pkix.Extension, error) { return roleExtension(r) }

// ParseCertDER parses one DER certificate, ECDSA/RSA/Ed25519 through
// crypto/x509 and SM2 through gmsm's smx509.
func ParseCertDER(der []byte) (*x509.Certificate, error) {
	c, err := x509.ParseCertificate(der)
	if err == nil {
		return c, nil
	}
	sc, err2 := smx509.ParseCertificate(der)
	if err2 != nil {
		return nil, fmt.Errorf("pki: parse certificate: %w", err)
	}
	return sc.ToX509(), nil
}

// MaxDeviceExt bounds the value of a device-information extension (and of
// any extra extension the CA adds).
const MaxDeviceExt = 16 << 10
