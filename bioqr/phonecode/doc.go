// Package phonecode is the phone's side of seed 004 (package bioqr) without
// database or network: the consumption QR (EMVCo payload, POS signature),
// the compact credential, the POS certificate check against the CA root,
// the payment message and payment QR, the certification request and the
// sealing of the owner template to the settlement server, the HPKE / SM2
// suites, and the sentinel errors. Package bioqr re-exports every name, so
// the CLI phone, the POS, the settlement server and the browser wallet
// (compiled to WebAssembly, internal/wallet/wasm) run the same code.
//
// Signing is a parameter (a func returning an ASN.1 DER signature): in the
// CLI phone it is the secure unit (bioqr.SecureUnit.Sign), in the browser
// the wallet's non-extractable WebCrypto key. Nothing here holds a private
// key.
package phonecode
