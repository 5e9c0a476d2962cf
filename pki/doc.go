// Package pki is qshield's certification authority: a root key and
// certificate kept in the database, X.509 certificates for servers, devices
// (phones, POS terminals, U-keys, gateways) and applications, revocation that
// is checked on every use, and TLS 1.3 mutual-TLS configurations built on it.
// It is seed 004's 认证中心 (certification centre) and the mutual-TLS root of
// the key managers (ETSI GS QKD 014 identifies the calling SAE from its client
// certificate: see PeerIdentity).
//
// # Design
//
// Root. NewCA creates an ECDSA P-256 (default) or SM2 root key and a
// self-signed certificate (pathlen 0: the root signs end-entity certificates
// directly). The certificate and the private key are stored in the table
// pki_cas; the key is PKCS #8, sealed by a KeyEncryptor on qshield's one
// sealer (package seal, purpose "pki key") under a master key that is
// argon2id of a passphrase (RFC 9106 parameters, fresh salt, parameters
// stored with the blob) or a 256-bit key from an environment variable
// (EnvKey). Keys sealed in the earlier XChaCha20-Poly1305 format (QSK1) still
// open and are sealed again on load (IsLegacySealed, LoadCA,
// LoadPrivateKeyFile). The additional data binds the sealed key to
// the CA name and the root certificate's hash, so a key blob cannot be moved
// to another CA row, and LoadCA checks the key matches the certificate. The
// key is never stored in clear; a wrong passphrase is ErrWrongKey.
//
// Certificates. Issue signs a certificate with a 127-bit random serial, a
// role (Role) in a non-critical private extension (OIDRole()) mirrored by the
// extended key usage (server: serverAuth; client, device, application:
// clientAuth), optional device information (DeviceInfo, DER in the
// non-critical extension OIDDeviceInfo()) and caller extensions (e.g. seed
// 004's encrypted fingerprint template). Every certificate is recorded in the
// register pki_certs.
//
// Revocation. The seed's certification centre keeps "the records of all
// certified devices" but says nothing about revocation; a lost phone or a
// stolen POS terminal must stop working at once. Instead of CRLs or OCSP
// (which are cached and so take effect late) every verification — Verify,
// and the VerifyConnection callbacks of ServerTLS and ClientTLS, which run on
// every handshake including resumed ones — reads the register: a revoked
// certificate, or one the register does not know (fail closed), is refused
// immediately.
//
// TLS. ServerTLS and ClientTLS are TLS 1.3 only, with mutual authentication
// against the root alone. They leave the key exchange at Go's defaults, which
// include the hybrid post-quantum X25519MLKEM768, and do not restrict curve
// preferences.
//
// SM2. Go's crypto/x509 and crypto/tls cannot sign or verify SM2, so an SM2 CA
// signs and verifies through github.com/emmansun/gmsm/smx509 (SM2 with SM3).
// It serves non-TLS uses such as seed 004's signed payment messages; the TLS
// helpers need an ECDSA P-256 CA and return or fail with ErrTLSNotSM2.
//
// Audit. CA.WithAudit returns a CA that writes pki.issue and pki.revoke
// records to the audit trail (package audit) in the same transaction as the
// register change, and a pki.verify "denied" record for every refused
// certificate or TLS handshake.
//
// OIDs. The private OIDs sit under OIDArc(), a placeholder in the IANA
// private-enterprise arc until qshield registers its own number.
package pki
