// Package device emulates a quantum key mobile storage device (QKMSD: a
// quantum-key UKEY, TF or SD card, seed 001 §III) as a file-backed secure
// store in a directory — the device's "mount point".
//
// # What the store holds
//
// Two P-256 key pairs generated inside the device by Manufacture — one that
// only signs (its certificate's key: mutual TLS, the channel's open
// request, the proof of possession) and one that only decrypts (ECIES,
// Decrypt) — whose private keys never leave it (Device exposes only Signer,
// a crypto.Signer, and Decrypt); one key for both uses would let an oracle
// for one attack the other. The device certificate issued by the platform
// CA during initialisation registers both (the decryption key as a device
// attribute, see keycharge.DeviceEncryptionKey). Also held: and the charged quantum key material: each key with its
// ETSI key ID, its length and how much of it has been used.
//
// # Layout and encryption
//
//	qkmsd.store     header ‖ AES-256-GCM(DEK, metadata)   (rewritten atomically)
//	qkmsd.pinctr    wrong-PIN / wrong-PUK counters           (rewritten atomically)
//	keys-<id>.dat   charged key material, chunked AES-256-GCM (written once)
//	qkmsd.info      serial, model, kind in clear (readable before the PIN, as a
//	                card's hardware serial is; authoritative copy inside)
//
// Everything but the counters is encrypted. A random 256-bit data key (DEK)
// encrypts the metadata and, through a per-file HKDF subkey, the key files;
// the DEK is stored twice in the header, wrapped (AES-256-GCM) under a key
// derived from the PIN and under a key derived from the administrator's
// unlock code (PUK), both by argon2id (RFC 9106; memory-hard, parameters
// stored in the header). The header (magic, version, KDF parameters, salts)
// is authenticated as additional data of both wraps and of the metadata, so
// no header field can be changed without detection. Key files are encrypted
// in 64 KiB chunks (the STREAM construction: nonce = chunk index ‖ last-flag,
// so reordering, truncation and extension are detected) and are referenced
// from the metadata together with their SHA-256, so a key file cannot be
// swapped for another.
//
// # PIN counter, and its honest limits
//
// A real secure element keeps the retry counter in tamper-resistant memory.
// Here the counter lives in its own small file, which Open increments and
// fsyncs BEFORE it runs the KDF and resets only after a correct PIN, so
// pulling the device out mid-check (killing the process) never resets it; a
// missing or malformed counter file counts as locked (fail closed), so
// deleting it does not help either (and then the PUK gets a single try).
// After Options.MaxPINTries wrong PINs the device is locked until Unlock
// with the PUK, which sets a new PIN; wrong
// PUKs are counted too and after Options.MaxPUKTries the device is blocked
// for good. The charger also reports every wrong PIN to the platform, which
// keeps its own per-device count (keycharge.QKMP) and refuses to charge a
// device that reached it — the platform "also knows".
//
// The store file is re-verified in full at every Open (metadata AEAD, every
// key file against its recorded SHA-256), so a plug-in costs a read of the
// charged key (about 0.1 s for 90 MB). Marking key used rewrites and syncs
// the metadata, whose size grows with the number of keys held, so
// TakeSegment reserves a lease of key (Options.SegmentLease, 4 KiB) per
// write and hands segments out of it from memory; an unplug or crash
// wastes the rest of the lease, never reuses it.
//
// Residual risk (documented, not hidden): whoever copies the files can
// restore an old counter file, and — more fundamentally — can run the PIN
// guesses offline against the header, where no counter applies at all. A
// file cannot enforce a retry limit; only tamper-resistant hardware can.
// The memory-hard KDF (64 MiB, 3 passes by default) makes each offline guess
// cost ~0.1 s of a core, which protects long PINs/passphrases, not 6-digit
// PINs. Deployments that need more must use a real secure element (the
// Device API is shaped so that one can replace this emulation: sign and
// decrypt only, no key export).
//
// # Crash safety
//
// Every file is written as a temporary file, fsynced, renamed over the old
// name, and the directory fsynced. The metadata is the single commit point:
// a charge first writes and syncs its key file, then records it as pending
// in the metadata, then (after the platform's consistency check) marks it
// committed — a crash at any moment leaves either the old or the new
// metadata, never a mix, and an unreferenced key file is swept on the next
// Open. Key segments are marked used (metadata synced) before their bytes
// are returned, so a crash can waste key but never hand out the same segment
// twice.
//
// The store is for one process at a time (like a physical card); Device is
// safe for concurrent use within that process.
package device
