// Package keycharge implements seed 001's quantum key charging: the quantum
// key management platform (QKMP) with its device registry and key store, the
// quantum key charger (QKC) that fills key storage devices (QKMSD, package
// keycharge/device) with quantum key from a key manager over ETSI GS QKD
// 014, and the quantum secure service centre (QSSC) that opens encrypted
// channels with phones from the same charged key (package keycharge/channel
// for the wire format and the session cryptography).
//
// # Roles and key flow
//
// The charger is a master SAE at its site's KME (site A, SAE e.g.
// "charger-1"); the QSSC is the slave SAE at the peer KME (site B, "qssc").
// The charger fetches keys with enc_keys and writes them into the device; at
// the end of the charge the QKMP fetches the same keys by ID with dec_keys,
// checks that both sides hold the same bytes (the seed's "consistency check
// of the coding") and stores them re-coded — numbered in charge order under
// the charge ID, sealed with AES-256-GCM under the platform key, bound to the
// device serial and key ID — so that the QSSC can later use exactly the keys
// the device holds.
//
// # Device lifecycle (QKMP)
//
//	manufactured ─initialise→ initialised ─distribute→ distributed ─bind→ bound ─activate→ active
//	active ─freeze→ frozen, active ─report_lost→ lost, frozen|lost ─unfreeze→ active ("cancel the loss")
//	any state but cancelled ─cancel→ cancelled (keys destroyed, certificate revoked)
//
// Initialisation issues the device certificate from the platform CA for a
// key pair generated inside the device (proof of possession: the device
// signs the request) and records the device serial and certificate serial.
// Every transition is authorised (administrator principals, from the
// caller's verified client certificate), refused with ErrTransition when the
// state machine does not allow it, and recorded with its audit record in the
// same database transaction (audit.AppendTx). Freezing, loss, unfreezing and
// cancellation act on the device's keys too: they are frozen, restored or
// destroyed (sealed bytes deleted), and each key row keeps the times of its
// whole life: extraction (from the KME), coding, distribution (charge
// commit), use, freezing, restoration, destruction.
//
// # Two-phase charging
//
// The seed's charger writes the key and the platform records it, with a
// consistency check in between but no word on failures; a charge
// interrupted between the two would leave keys one side counts and the
// other lacks, or keys both could use. The standard fix is a two-phase
// commit with the platform as coordinator:
//
//  1. begin: the charger sends the device certificate; the QKMP verifies it
//     against the CA (a counterfeit — self-signed or another CA — fails
//     here), checks the registry (state active, same certificate, platform
//     PIN counter) and answers a random challenge; the charge is recorded
//     as "challenged".
//  2. authenticate: the device signs the challenge (bound to charge ID,
//     serial and volume); the charge becomes "pending".
//  3. the charger fetches keys and streams them into a new key file on the
//     device, then stages it (fsynced, recorded as pending in the device
//     metadata; not usable yet).
//  4. commit: the charger sends the key IDs and its hash; the QKMP fetches the
//     keys from its KME, recomputes the hash and, only if it matches, stores
//     the keys and marks the charge committed in one transaction.
//  5. the device commits its pending charge (keys usable).
//
// Recovery (Charger.Recover, run on every plug-in) asks the QKMP about a
// device's pending charge: committed → the device commits (its staged hash
// must equal the recorded one); anything else → the QKMP aborts it (a
// conditional update, so a late commit cannot win afterwards) and the
// device discards it. Invariants: the QKMP commits only keys the device has
// already staged durably (step 3 before 4), the device uses keys only after
// the QKMP committed them, and segments are marked used on both sides
// before use (device: before the bytes leave the store, in leases of 4 KiB;
// QSSC: in the transaction that opens the session, monotonically per key),
// so no key is counted that the device lacks and no segment is usable
// twice. A cloned device shares the original's key: whichever uses a
// segment first wins and the other is refused (key_used, audited), so a
// clone shows up as soon as both are used. Keys fetched from the KME by a
// charge that is then aborted are simply never used (the KME's slave-side
// reservation is not consumed; see Known gaps in the report).
//
// The consistency check value (device.ChargeHash) is a hash list: SHA-256
// over the charge ID and, in charge order, each key's ID, length and
// SHA-256 — equivalent in strength to hashing the bytes themselves, and it
// lets the platform check keys it fetched earlier from their stored digests.
//
// # Key pools: charging at disk speed
//
// Fetching from two KMEs during the charge bounds it by ETSI 014 (about
// 15 MB/s here). A charger may therefore prefetch (Charger.Prefetch): it
// fetches keys into a local pool and announces their IDs; the QKMP fetches
// its copies with dec_keys and keeps them sealed in state "pooled", owned by
// that charger and usable by nobody. A charge then draws from the pool and
// the commit finds the keys' digests on the platform and assigns them to
// the device in the commit transaction; keys not pooled are fetched as
// before. Pooled keys named in a failed consistency check are destroyed; a
// charger that restarts resets its platform pool (its local copy is gone).
//
// # Quantum secure channel (QSSC)
//
// A phone opens a session by taking a fresh 64-byte segment from its device
// (marked used first), sending its key ID and offset in the clear with the
// device's signature and a MAC under the segment; the QSSC checks the device
// state, the certificate, the signature, that the segment lies beyond the
// key's used mark (a cloned device replaying a used segment is refused),
// marks it used and answers with its own MAC. Both derive directional
// AES-256-GCM or SM4-GCM keys (HKDF-SHA256) and exchange numbered frames;
// replayed or reordered frames are refused. A frozen, lost or cancelled
// device is refused at open and on every frame.
//
// # The lab
//
// [StartLab] (lab.go) is the one harness left in this package: KME, QSSC,
// platform server and charger on loopback. It stays here because the
// package's own tests start it (startEnv in keycharge_test.go, used by six
// test files) and those tests are internal (package keycharge): they also
// use unexported parts (the key sealer's legacy path and legacyKeyAD, the
// Charger's configuration). An
// internal test cannot import internal/scenario, which imports keycharge
// ("import cycle not allowed in test"), so moving the lab means first moving
// those tests to an external keycharge_test package. [Provision] and
// [Initialise] in the same file are not harness: `qshield admin` uses them.
package keycharge
