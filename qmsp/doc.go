// Package qmsp implements the quantum key-based mobile security payment scheme
// of Zhu, Li, Wu and Song (2019) — seed 000 — on qshield's key managers (ETSI
// GS QKD 014), ledger, CA and audit trail.
//
// # Roles
//
//   - CSS, the commercial supermarket server: the master SAE at the
//     supermarket's key manager. It registers gateways and serves their key
//     acquisitions ([CSS], [CSS.Handler]).
//   - PPS, the payment platform server: the slave SAE at the platform's key
//     manager. It fetches the same quantum keys by ID, verifies payments and
//     moves the money through the ledger ([PPS], [PPS.Handler]).
//   - The quantum key gateway GI_i: a device holding the preset key PK that
//     shows one payment code at a time ([Gateway], [GatewayPage]).
//   - The phone: reads the code and pays ([Phone]). The code's wire format
//     and the phone's cryptographic step are package
//     [github.com/qshield/qshield/qmsp/paycode] (no database), which the
//     browser wallet also compiles to WebAssembly; this package re-exports
//     its types ([Display], [PaymentInfo], [PaymentRequest]).
//
// # Seed steps in code
//
// Setup (§3.3, "quantum key gateway setup"):
//
//	(1) GI_i                          the gateway identifier; [checkGatewayID]
//	(2) servers record GI_i           [CSS.RegisterGateway], [PPS.RegisterGateway]
//	(3) Pre(GI_i,16) = PK             16 bytes of quantum key from enc_keys, in RegisterGateway;
//	                                  written to the device by [ProvisionGateway]
//	(4) servers keep SPK              qmsp_css_gateways.pk (sealed at rest)
//
// Key acquisition (§3.3, "gateway obtains quantum key"):
//
//	(1) gateway applies to the CSS    [Gateway.Refresh] → [CSS.AcquireKey] (a [KeyRequest] MAC'd under PK_n)
//	(2) servers apply for QK(x)       CSS: enc_keys (prefetched into the database, [CSS.refill]; claimed by [CSS.AcquireKey]); PPS: dec_keys by ID on first payment ([PPS.material])
//	(3) DivQ(QK, QK16, QK(x-16))      [DivQ]
//	(4) En_AES(PK, QK)                [Wrap]: AES-128-GCM, bound to gateway, epoch and key ID
//	(5) SPK = QK16                    the pending epoch in AcquireKey, committed by [CSS.Acknowledge]
//	(6) De_AES(PK, QK)                [Unwrap] in Refresh
//	(7) DivQ again                    [DivQ] in Refresh
//	(8) PK = QK16                     Refresh persists the new state, then acknowledges
//
// Payment (§3.4):
//
//	(1) gateway takes QK(48)          one 64-byte unit of the batch ([Gateway.Current])
//	(2) DivQ(QK48, QK16, QK32)        [UnitKeys]
//	(3) QK32 → QR                     [Display.MarshalText], rendered by [GatewayPage]
//	(4) phone scans                   [Phone.BuildPayment] → [Display.UnmarshalText]
//	(5) En_Info = QK32 ⊕ M            [SealPayment]
//	(6) phone → PPS                   [Phone.Pay] → POST /v1/qmsp/pay
//	(7) PPS repeats (2)               [PPS.Pay]: fetch the key by reference, [DivQ], [UnitKeys]
//	(8) M = QK32 ⊕ En_Info            [OpenPayment], then the ledger transfer
//
// # Where the seed is weak, and the fixes
//
// Unauthenticated wrap. The seed's En_AES gives no integrity: a LAN attacker
// could flip bits of the key the gateway receives. [Wrap] uses AES-128-GCM
// (keeping the seed's 16-byte PK and AES-128) with the gateway, epoch and key
// ID as associated data, so a delivery cannot be altered or redirected.
//
// Malleable one-time pad. A bare pad lets anyone on the path flip amount
// bits undetected. Each payment therefore uses 64 bytes of quantum key, not
// 48: the seed's 16-byte segment is the Poly1305 hash key r, its 32-byte
// segment the pad, and 16 further bytes the one-time mask s. Poly1305 with a
// uniformly random one-time key (r, s) is a Wegman–Carter MAC, secure
// information-theoretically (forgery probability ≤ 8·⌈L/16⌉/2^106 for an
// L-byte message), matching the pad's own security. The key bytes come from
// the same quantum key as the pad, so no other key agreement is needed, and
// only the phone that sees the code and the PPS know them. The tag covers the
// gateway, key reference, expiry and ciphertext.
//
// The preset-key ratchet. The seed replaces PK on both sides after each
// acquisition and says nothing of lost or repeated messages. Here every
// state is an epoch n with key PK_n. The CSS keeps PK_n until the gateway
// proves it holds PK_{n+1} (an acknowledgement, or its next request, MAC'd
// under PK_{n+1}); a request at epoch n while n+1 is pending means the
// delivery was lost, and the pending batch is discarded (burned, never
// used). Deliveries carry their epoch in the AEAD's associated data, so a
// duplicated or reordered one cannot be applied. The gateway writes its new
// state (write, fsync, rename) before it shows a code or acknowledges, so a
// reboot resumes where it stopped. Any other disagreement — a gateway
// restored from an old backup, a forged MAC — is refused with
// [ErrOutOfStep] or [ErrAuth] and audited: the sides never silently
// disagree, and such a gateway must be re-provisioned.
//
// Who the payer is. The seed's M names a payer but nothing proves the phone
// may spend from that account. The PPS binds each payer number to the phone
// certificate (mutual TLS from the platform CA) allowed to use it.
//
// Which code is valid. The code's expiry and merchant are signed by the
// gateway's device key (ECDSA P-256, certificate from the platform CA and
// registered at the PPS), so a phone cannot stretch an expiry and a code
// from an unregistered device is refused.
//
// Single use. The PPS claims (key ID, unit) in a table with a primary key
// before it moves money; the ledger transfer's idempotency key is the same
// reference. A replayed ciphertext is refused; the same client retrying with
// its own Idempotency-Key gets its first result back. A unit is burned by the
// first verified attempt even when the ledger then refuses the payment, as
// wallets burn a payment code. Concurrent payments share one transaction
// (paybatch.go): the claims, transfers and audit records of every payment
// waiting are written with a few statements, each payment's outcome being
// the one it would have had alone.
//
// # Several nodes
//
// Every node of a platform on one database acts as the same CSS and PPS:
// gateways, epochs, payers, fetched keys and payments are rows. The CSS's
// prefetched key batches wait in the database too (sealed): a delivery
// claims one in its own transaction, so a batch reaches one gateway; a
// request that finds none refills the buffer and keeps one of the batches
// it fetched; and a node that stops leaves its batches to the others. Gateways the platform
// runs itself keep their device state in the database ([GatewaySessions])
// and take a lock per gateway for each operation, so any node shows the
// same code and the preset-key ratchet never forks.
//
// # Departures from the seed
//
// The PPS does not keep SPK: it never talks to the gateway, so it has no use
// for it. Quantum keys fetched by the PPS and preset keys at the CSS are
// sealed at rest (package seal, AES-256-GCM, under a storage key). A PPS keeps the
// key batches it has used, unsealed, in memory (at most 4,096 of them), so
// as not to read and unseal one for every payment; a claim row, not the
// batch, says which units are spent.
package qmsp
