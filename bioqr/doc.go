// Package bioqr implements seed 004, patent CN103985036A "a QR-code payment
// method with biometric features": a certification centre (the platform CA)
// certifies a phone, a POS terminal and a settlement server; the POS shows a
// consumption QR carrying its certificate and a random perturbation code
// (RandCodeP); the phone verifies the POS and answers with a payment QR
// encrypted to the POS's key; the POS checks the RandCode, adds a
// fingerprint probe if the phone sent none, re-encrypts everything to the
// settlement server, which verifies the phone's certificate, matches the
// probe against the owner's enrolled template and pays through the ledger.
//
// # Roles and where they run
//
//   - Certification centre (认证中心 4): the platform CA (package pki) plus
//     [Certifier], which issues for every device both an X.509 certificate
//     (role device, recorded in the CA register, revocable, used for mutual
//     TLS) and a compact [Credential] signed with the same CA key.
//   - Phone (移动设备 1): [Phone] over a [SecureUnit]; `qshield phone bioqr`.
//   - POS (支付设备 2): [POS] over a [SecureUnit] and a [RandStore];
//     `qshield pos`, plus the page [Settlement.PageHandler] in `serve`.
//   - Settlement server (支付结算服务器 3): [Settlement], inside `serve`
//     ([Settlement.Handler] at /v1/bioqr/ over mutual TLS).
//
// # The patent's steps in code
//
// Certification of the phone (claim 2, [0015]):
//
//	A  NewSecureUnit generates the key pair inside the unit; only Public leaves it.
//	B  The owner template (ISO/IEC 19794-2) is sealed to the settlement server's
//	   key: SealTemplate / NewEnrolRequest; the server validates and stores it (Settlement.Enrol).
//	C  NewCertRequest: public key, device information and the template commitment,
//	   signed by the unit (proof of possession); sent with POST /v1/bioqr/enrol.
//	D  Certifier.Certify: X.509 certificate + Credential = PriA(InforA+InforC+InforFp+PubC),
//	   where InforFp is the commitment SHA-256(sealed template).
//	E  Certified.Install stores the CA root, certificate and credential in the unit.
//	F  Phone.SetAccounts stores the paying accounts in the unit, sealed to PubC.
//
// Certification of the POS and the settlement server (claim 3, [0016]):
// a NewSecureUnit; b NewCertRequest (POST /v1/bioqr/pos, with the merchant
// account as a certificate attribute; NewSettlement for the server itself);
// c Certifier.Certify; d Certified.Install.
//
// Payment (claim 1, [0014]):
//
//	1      the certifications above.
//	2–3    POS.NewConsumption: amount, RandCodeP (128 bits, kept in the RandStore),
//	       expiry, the POS certificate's serial, signed by the POS, as an EMVCo payload.
//	4–5    Phone.ReadConsumption: EMVCo parse and CRC; the POS certificate, fetched
//	       by serial (Phone.Certificates), signed by the CA, a POS device
//	       certificate for the QR's merchant account, valid, not revoked
//	       (RevocationChecker), registering an encryption key; POS signature,
//	       expiry; otherwise ErrIllegalPOS ("支付设备非法").
//	6–7    Phone.Pay: PaymentMessage (Sum, InforCn, RandCodeC, phone credential,
//	       optional probe InforFpN) signed in the unit, HPKE-sealed to the POS's
//	       encryption key from its certificate (never its signing key PubP),
//	       shown as the payment QR (Base45, alphanumeric mode).
//	8–10   POS.Accept: key ID check (ErrWrongPOS), decryption (ErrDecrypt),
//	       RandStore.Take — single use, unexpired, same amount/payee as issued.
//	11     probe from the message, else POS.Sensor, else ErrNoFingerprint.
//	12     POS.SealEnvelope: the phone-signed message and the POS probe sealed
//	       to PubS (fetched with GET /v1/bioqr/credential and verified against the CA).
//	13     POST /v1/bioqr/settle over mutual TLS; Settlement.Settle decrypts.
//	14     phone credential against the CA, enrolment, certificate not revoked,
//	       commitment matches the stored sealed template, phone signature,
//	       Matcher.Match(owner template, probe).
//	15     ledger transfer payer → merchant, idempotent on the RandCode; the
//	       result (or refusal code) goes back to the POS; every step is audited.
//
// # Where the template lives, and why
//
// The patent puts the owner's fingerprint template inside the CA-signed
// certificate, which then travels in every payment QR. We keep it at the
// settlement server instead, sealed (HPKE) to the settlement server's key
// and bound to the certificate: the phone's credential carries only
// SHA-256 of the sealed template, and the server refuses a payment whose
// stored template does not hash to the commitment the CA signed. Compared
// with encrypting the template into a certificate extension this (1) keeps
// the template out of every QR code and certificate copy, so a template
// cannot be harvested even if the settlement key leaks later from old
// photos of payment codes; (2) keeps the payment QR smaller (the phone
// credential is 189 bytes, not ~900); (3) lets the template be deleted or
// re-enrolled by revoking one certificate (erasure, GDPR art. 17); and (4)
// loses nothing of the patent's binding, since the CA still signs
// InforFp — as a commitment. The template is decrypted only inside
// Settlement for matching and cleared afterwards; logs and audit records
// never contain templates or probes.
//
// # Where the seed is weak, and the standard fixes added
//
//   - The phone signs nothing in the patent, so a copy of a phone's
//     certificate plus a finger (a latent print) would pay. The payment
//     message is signed by the phone's secure unit: possession (the key that
//     never leaves the unit) and inherence (the finger) are both required.
//   - "Encrypt with the public key" becomes authenticated hybrid encryption
//     with labels and additional data: RFC 9180 HPKE (DHKEM P-256,
//     HKDF-SHA256, AES-128-GCM) or, for SM2 keys, SM2 key encapsulation with
//     SM4-GCM (Suite). The payment QR's ciphertext is bound to the POS key ID,
//     the envelope to the POS certificate serial authenticated by mutual TLS.
//   - The consumption QR is signed by the POS, so the phone detects an
//     altered amount or payee before paying; the POS also checks the paid
//     amount and payee against the RandCode it issued, and the settlement
//     server checks the payee against the POS certificate's merchant account.
//   - RandCodes are 128-bit, single use even when the payment fails, and
//     expire (2 minutes by default, like wallets' one-minute codes); the
//     settlement server records the outcome per RandCode, so a replay to it
//     returns the first answer and never pays twice.
//   - Revocation: the patent's CA keeps device records but never withdraws
//     a certificate; a stolen POS or phone is revoked in the CA register,
//     checked on every use (phone → status endpoint; server → register,
//     and at every TLS handshake).
//   - Repeated wrong fingers lock the phone (5 failures in 15 minutes).
//   - Two keys per device (issue #12). The patent's single key pair would
//     both sign (ECDSA) and decrypt (ECDH in HPKE); every unit instead holds
//     a signing key and a separate decryption key, both certified: the
//     certificate registers the encryption key as device attribute
//     AttrEncryptionKey (CertificateEncryptionKey never falls back to the
//     signing key) and the credential carries it too (version 2). The POS's
//     credential no longer travels in the consumption QR, which names the
//     POS certificate by serial instead: the phone fetches that certificate
//     (it is online anyway for the revocation check), verifies it against
//     its CA root and seals to the encryption key it registers.
//
// # Codes
//
// The consumption QR is an EMVCo merchant-presented dynamic payload
// (package emvqr): 00=01, 01=12, 26 (GUI DEV.QSHIELD, merchant account),
// 52, 53, 54, 58, 59, 60, the scheme data (version 2, expiry, RandCodeP, POS
// signature, POS certificate serial; base64url) split over unreserved
// templates 80+ (each starting with GUI DEV.QSHIELD), and the CRC 63. It
// stays well within EMVCo's 512 characters: about 300 with the demo
// merchant (version 13 at error correction M) and 375 (version 15) with
// every field at its longest (25-character name, 15-character city,
// 64-character account, 13-character amount;
// TestConsumptionQRAtMaximumLengths). The payment QR is "QSP1:" followed by
// Base45 (RFC 9285) of key ID ‖ ciphertext: about 680 characters (version
// 17) without a probe and about 870 (version 19) with the demo's ISO probe.
//
// # The phone's code, in the browser too
//
// Everything the phone computes — the consumption QR's parsing and POS
// signature, the POS certificate check against the CA root, the credential,
// the payment message and payment QR, the certification request, the
// sealing of the owner template, the HPKE/SM2 suites — is package
// bioqr/phonecode, which imports no database; this package re-exports its
// names. The browser wallet (internal/wallet) compiles it to WebAssembly
// and signs with a WebCrypto key where the CLI phone's secure unit signs.
//
// # Tests and the harness
//
// The harness that runs the 15 steps in-process — a settlement server, a
// POS and a phone certified by one CA on one ledger, with FVC2002 or
// synthetic fingerprint templates — is lab.NewBioqr in internal/lab, not
// part of this library. The package's tests are external (package
// bioqr_test) and use that harness; export_test.go gives the test binary
// the few unexported parts they check (the sealing and signature helpers,
// the payment AAD, the unit's identity, the page's status helpers).
package bioqr
