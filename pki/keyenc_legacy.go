package pki

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// QSK1 is the sealed-key format before the one sealer: XChaCha20-Poly1305,
//
//	passphrase: "QSK1" || 0x01 || time (4) || memory KiB (4) || threads (1) || salt (16) || nonce (24) || ciphertext || tag
//	raw key:    "QSK1" || 0x02 || nonce (24) || ciphertext || tag
//
// with additional data header || nonce || the caller's additional data, and
// the argon2id output or the raw key as the AEAD key. It is read only:
// nothing writes it any more, and the stores that hold keys sealed with it
// reseal them on load (LoadCA, LoadPrivateKeyFile, selfverify's operator key).
const legacyMagic = "QSK1"

// IsLegacySealed reports whether b is a key sealed in the legacy QSK1 format
// (XChaCha20-Poly1305). A KeyEncryptor still opens it; whoever stores b
// should seal the key again, which writes the current format.
func IsLegacySealed(b []byte) bool {
	return len(b) >= len(legacyMagic) && string(b[:len(legacyMagic)]) == legacyMagic
}

type legacySealed struct {
	kdf    byte
	params Argon2Params
	salt   []byte
	prefix []byte // header || nonce
	nonce  []byte
	ct     []byte
}

// parseLegacy splits a QSK1 blob; it never runs the KDF.
func parseLegacy(b []byte) (*legacySealed, error) {
	if len(b) < len(legacyMagic)+1 || !IsLegacySealed(b) {
		return nil, fmt.Errorf("%w: not a qshield sealed key", ErrBadSealed)
	}
	h := &legacySealed{kdf: b[len(legacyMagic)]}
	n := len(legacyMagic) + 1
	switch h.kdf {
	case kdfRaw:
	case kdfArgon2:
		if len(b) < n+4+4+1+saltLen {
			return nil, fmt.Errorf("%w: truncated header", ErrBadSealed)
		}
		h.params.Time = binary.BigEndian.Uint32(b[n:])
		h.params.Memory = binary.BigEndian.Uint32(b[n+4:])
		h.params.Threads = b[n+8]
		h.salt = b[n+9 : n+9+saltLen]
		if err := checkArgon(h.params); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadSealed, err)
		}
		n += 4 + 4 + 1 + saltLen
	default:
		return nil, fmt.Errorf("%w: unknown KDF %d", ErrBadSealed, h.kdf)
	}
	if len(b) < n+chacha20poly1305.NonceSizeX+chacha20poly1305.Overhead {
		return nil, fmt.Errorf("%w: truncated", ErrBadSealed)
	}
	h.nonce = b[n : n+chacha20poly1305.NonceSizeX]
	h.prefix = b[:n+chacha20poly1305.NonceSizeX]
	h.ct = b[n+chacha20poly1305.NonceSizeX:]
	return h, nil
}

func (h *legacySealed) open(key, ad []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("pki: aead: %w", err)
	}
	fullAD := append(append([]byte(nil), h.prefix...), ad...)
	pt, err := aead.Open(nil, h.nonce, h.ct, fullAD)
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrWrongKey)
	}
	return pt, nil
}

func (k *passphraseKey) openLegacy(sealed, ad []byte) ([]byte, error) {
	h, err := parseLegacy(sealed)
	if err != nil {
		return nil, err
	}
	if h.kdf != kdfArgon2 {
		return nil, fmt.Errorf("%w: sealed with a raw key, not a passphrase", ErrWrongKey)
	}
	key := argon2.IDKey(k.pass, h.salt, h.params.Time, h.params.Memory, h.params.Threads, chacha20poly1305.KeySize)
	defer clear(key)
	return h.open(key, ad)
}

func (k *rawKey) openLegacy(sealed, ad []byte) ([]byte, error) {
	h, err := parseLegacy(sealed)
	if err != nil {
		return nil, err
	}
	if h.kdf != kdfRaw {
		return nil, fmt.Errorf("%w: sealed with a passphrase, not a raw key", ErrWrongKey)
	}
	return h.open(k.key, ad)
}
