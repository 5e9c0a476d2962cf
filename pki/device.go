package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"

	"github.com/qshield/qshield/pki/certinfo"
)

// The certificate extensions live in package certinfo, which imports no
// database so that the browser wallet can compile it to WebAssembly; these
// are the names pki has always exported.

var (
	oidArc        = certinfo.OIDArc()
	oidRole       = certinfo.OIDRole()
	oidDeviceInfo = certinfo.OIDDeviceInfo()
)

const maxDeviceExt = certinfo.MaxDeviceExt

// OIDArc returns the arc under which qshield's private OIDs live.
func OIDArc() asn1.ObjectIdentifier { return certinfo.OIDArc() }

// OIDRole returns the OID of the role extension (arc.1, a UTF8String).
func OIDRole() asn1.ObjectIdentifier { return certinfo.OIDRole() }

// OIDDeviceInfo returns the OID of the device-information extension (arc.2).
func OIDDeviceInfo() asn1.ObjectIdentifier { return certinfo.OIDDeviceInfo() }

// Role is what a certificate may be used for (certinfo.Role).
type Role = certinfo.Role

const (
	RoleServer      = certinfo.RoleServer
	RoleClient      = certinfo.RoleClient
	RoleDevice      = certinfo.RoleDevice
	RoleApplication = certinfo.RoleApplication
)

// Device kinds commonly used with DeviceInfo.Kind (free text is allowed).
const (
	KindPhone   = certinfo.KindPhone
	KindPOS     = certinfo.KindPOS
	KindUKey    = certinfo.KindUKey
	KindGateway = certinfo.KindGateway
	KindServer  = certinfo.KindServer
)

// DeviceInfo describes the device a certificate was issued to (certinfo.DeviceInfo).
type DeviceInfo = certinfo.DeviceInfo

// MarshalDeviceInfo returns the DER encoding of d (the extension value).
func MarshalDeviceInfo(d *DeviceInfo) ([]byte, error) { return certinfo.MarshalDeviceInfo(d) }

// ParseDeviceInfo decodes a device-information extension value. It accepts
// only the canonical DER that MarshalDeviceInfo produces.
func ParseDeviceInfo(der []byte) (*DeviceInfo, error) { return certinfo.ParseDeviceInfo(der) }

// DeviceInfoOf returns the device information in cert, or nil (and no
// error) when it has none. It does not verify cert; use CA.Verify for that.
func DeviceInfoOf(cert *x509.Certificate) (*DeviceInfo, error) { return certinfo.DeviceInfoOf(cert) }

// RoleOf returns the role recorded in cert's role extension.
func RoleOf(cert *x509.Certificate) (Role, error) { return certinfo.RoleOf(cert) }

// ParseRole decodes a role extension value (a DER UTF8String naming a Role).
func ParseRole(der []byte) (Role, error) { return certinfo.ParseRole(der) }

func roleExtension(r Role) (pkix.Extension, error) { return certinfo.RoleExtension(r) }
