package pki

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/argon2"

	"github.com/qshield/qshield/seal"
)

// KeyEncryptor seals and opens private keys at rest with an AEAD. The sealed
// form is self-describing: it carries the KDF, its parameters and salt, so a
// later Open needs only the same passphrase or key.
type KeyEncryptor interface {
	// Seal encrypts plaintext, binding additionalData (which is not stored).
	Seal(plaintext, additionalData []byte) ([]byte, error)
	// Open decrypts a Seal output; a wrong passphrase or key, or any
	// change to sealed or additionalData, gives an error wrapping ErrWrongKey.
	Open(sealed, additionalData []byte) ([]byte, error)
}

// Argon2Params are the argon2id cost parameters for PassphraseKey.
type Argon2Params struct {
	Time    uint32 // passes
	Memory  uint32 // KiB
	Threads uint8
}

var defaultArgon2 = Argon2Params{Time: 3, Memory: 64 * 1024, Threads: 4}

// DefaultArgon2 returns RFC 9106's second recommended option (64 MiB, 3
// passes, 4 lanes), suited to machines without much memory to spare; about
// 1 s on a 2-core machine.
func DefaultArgon2() Argon2Params { return defaultArgon2 }

// Bounds accepted when opening: weaker parameters would make a stolen blob
// cheap to attack, larger ones turn a forged blob into a memory bomb.
const (
	minArgonTime   = 1
	maxArgonTime   = 16
	minArgonMemory = 19 * 1024 // OWASP minimum for argon2id
	maxArgonMemory = 1 << 20   // 1 GiB
)

// The sealed-key format (QSK2), on the one sealer (package seal):
//
//	passphrase: "QSK2" || 0x01 || time (4) || memory KiB (4) || threads (1) || salt (16) || record
//	raw key:    "QSK2" || 0x02 || record
//
// record is a seal record (AES-256-GCM, "QSL" version 1) under the master
// key argon2id(passphrase, salt, time, memory, threads) or the raw key, for
// purpose "pki key" and the identity (header, additional data): the KDF
// header is authenticated, and the caller's additional data is bound
// length-prefixed, so neither can be changed or shifted into the other.
// QSK1, the format before it (XChaCha20-Poly1305), is still opened; see
// IsLegacySealed.
const (
	sealMagic   = "QSK2"
	kdfArgon2   = 1
	kdfRaw      = 2
	saltLen     = 16
	headerRaw   = len(sealMagic) + 1
	headerArgo  = len(sealMagic) + 1 + 4 + 4 + 1 + saltLen
	sealPurpose = "pki key"
	// MinPassphraseLen is the shortest passphrase accepted.
	MinPassphraseLen = 8
)

// PassphraseKey returns a KeyEncryptor deriving a 256-bit seal master key
// from passphrase with argon2id (DefaultArgon2(), fresh 16-byte salt per
// Seal) and sealing with package seal. The passphrase is copied.
func PassphraseKey(passphrase []byte) KeyEncryptor {
	return PassphraseKeyWithParams(passphrase, defaultArgon2)
}

// PassphraseKeyWithParams is PassphraseKey with explicit argon2id costs (used
// for new seals; Open always uses the parameters stored in the blob).
func PassphraseKeyWithParams(passphrase []byte, p Argon2Params) KeyEncryptor {
	return &passphraseKey{pass: append([]byte(nil), passphrase...), params: p}
}

// RawKey returns a KeyEncryptor using key (32 bytes, e.g. from a KMS or HSM)
// as the seal master key.
func RawKey(key []byte) (KeyEncryptor, error) {
	if len(key) != seal.KeySize {
		return nil, fmt.Errorf("pki: raw key is %d bytes, want %d", len(key), seal.KeySize)
	}
	return &rawKey{key: append([]byte(nil), key...)}, nil
}

// EnvKey builds a KeyEncryptor from the environment variable name (e.g.
// "QSHIELD_CA_KEY"). A value that decodes (hex, or standard or URL-safe
// base64) to exactly 32 bytes is used as a raw key; anything else is a
// passphrase run through argon2id. An unset or empty variable is ErrNoKey.
func EnvKey(name string) (KeyEncryptor, error) {
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return nil, fmt.Errorf("%w: environment variable %s is not set", ErrNoKey, name)
	}
	return KeyFromString(v)
}

// KeyFromString interprets s as EnvKey does.
func KeyFromString(s string) (KeyEncryptor, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return nil, fmt.Errorf("%w: empty key", ErrNoKey)
	}
	if len(t) == 64 {
		if b, err := hex.DecodeString(t); err == nil {
			return RawKey(b)
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(t); err == nil && len(b) == seal.KeySize {
			return RawKey(b)
		}
	}
	if len(s) < MinPassphraseLen {
		return nil, fmt.Errorf("%w: passphrase shorter than %d characters", ErrNoKey, MinPassphraseLen)
	}
	return PassphraseKey([]byte(s)), nil
}

type passphraseKey struct {
	pass   []byte
	params Argon2Params
}

func (k *passphraseKey) Seal(plaintext, ad []byte) ([]byte, error) {
	if len(k.pass) < MinPassphraseLen {
		return nil, fmt.Errorf("%w: passphrase shorter than %d characters", ErrNoKey, MinPassphraseLen)
	}
	p := k.params
	if err := checkArgon(p); err != nil {
		return nil, err
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("pki: salt: %w", err)
	}
	hdr := make([]byte, 0, headerArgo+seal.Overhead+len(plaintext))
	hdr = append(hdr, sealMagic...)
	hdr = append(hdr, kdfArgon2)
	hdr = binary.BigEndian.AppendUint32(hdr, p.Time)
	hdr = binary.BigEndian.AppendUint32(hdr, p.Memory)
	hdr = append(hdr, p.Threads)
	hdr = append(hdr, salt...)
	key := argon2.IDKey(k.pass, salt, p.Time, p.Memory, p.Threads, seal.KeySize)
	defer clear(key)
	return sealKey(key, hdr, plaintext, ad)
}

func (k *passphraseKey) Open(sealed, ad []byte) ([]byte, error) {
	if IsLegacySealed(sealed) {
		return k.openLegacy(sealed, ad)
	}
	h, err := parseSealedKey(sealed)
	if err != nil {
		return nil, err
	}
	if h.kdf != kdfArgon2 {
		return nil, fmt.Errorf("%w: sealed with a raw key, not a passphrase", ErrWrongKey)
	}
	key := argon2.IDKey(k.pass, h.salt, h.params.Time, h.params.Memory, h.params.Threads, seal.KeySize)
	defer clear(key)
	return openKey(key, h, ad)
}

type rawKey struct{ key []byte }

func (k *rawKey) Seal(plaintext, ad []byte) ([]byte, error) {
	hdr := append([]byte(sealMagic), kdfRaw)
	return sealKey(k.key, hdr, plaintext, ad)
}

func (k *rawKey) Open(sealed, ad []byte) ([]byte, error) {
	if IsLegacySealed(sealed) {
		return k.openLegacy(sealed, ad)
	}
	h, err := parseSealedKey(sealed)
	if err != nil {
		return nil, err
	}
	if h.kdf != kdfRaw {
		return nil, fmt.Errorf("%w: sealed with a passphrase, not a raw key", ErrWrongKey)
	}
	return openKey(k.key, h, ad)
}

func checkArgon(p Argon2Params) error {
	if p.Time < minArgonTime || p.Time > maxArgonTime || p.Memory < minArgonMemory || p.Memory > maxArgonMemory || p.Threads == 0 {
		return fmt.Errorf("pki: argon2id parameters out of range (time %d, memory %d KiB, threads %d)", p.Time, p.Memory, p.Threads)
	}
	return nil
}

// sealKey returns hdr || seal record of plaintext under master, for the
// identity (hdr, ad).
func sealKey(master, hdr, plaintext, ad []byte) ([]byte, error) {
	s, err := seal.New(master, sealPurpose)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	rec, err := s.Seal(plaintext, string(hdr), string(ad))
	if err != nil {
		return nil, fmt.Errorf("pki: seal key: %w", err)
	}
	return append(hdr, rec...), nil
}

// sealedKey is a parsed QSK2 blob.
type sealedKey struct {
	kdf    byte
	params Argon2Params
	salt   []byte
	header []byte // magic .. salt: the first identity part of the record
	record []byte // the seal record
}

// parseSealedKey splits a QSK2 blob; it never runs the KDF, and refuses
// argon2id parameters out of range before anyone does.
func parseSealedKey(b []byte) (*sealedKey, error) {
	if len(b) < headerRaw || string(b[:len(sealMagic)]) != sealMagic {
		return nil, fmt.Errorf("%w: not a qshield sealed key", ErrBadSealed)
	}
	h := &sealedKey{kdf: b[len(sealMagic)]}
	n := headerRaw
	switch h.kdf {
	case kdfRaw:
	case kdfArgon2:
		if len(b) < headerArgo {
			return nil, fmt.Errorf("%w: truncated header", ErrBadSealed)
		}
		o := headerRaw
		h.params.Time = binary.BigEndian.Uint32(b[o:])
		h.params.Memory = binary.BigEndian.Uint32(b[o+4:])
		h.params.Threads = b[o+8]
		h.salt = b[o+9 : o+9+saltLen]
		if err := checkArgon(h.params); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadSealed, err)
		}
		n = headerArgo
	default:
		return nil, fmt.Errorf("%w: unknown KDF %d", ErrBadSealed, h.kdf)
	}
	h.header, h.record = b[:n], b[n:]
	if !seal.IsSealed(h.record) || len(h.record) < seal.Overhead {
		return nil, fmt.Errorf("%w: truncated or unknown record", ErrBadSealed)
	}
	return h, nil
}

func openKey(master []byte, h *sealedKey, ad []byte) ([]byte, error) {
	s, err := seal.New(master, sealPurpose)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	pt, err := s.Open(h.record, string(h.header), string(ad))
	if errors.Is(err, seal.ErrOpen) {
		return nil, fmt.Errorf("%w: authentication failed", ErrWrongKey)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSealed, err)
	}
	return pt, nil
}
