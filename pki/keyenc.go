package pki

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
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

const (
	sealMagic  = "QSK1"
	kdfArgon2  = 1
	kdfRaw     = 2
	saltLen    = 16
	headerRaw  = len(sealMagic) + 1
	headerArgo = len(sealMagic) + 1 + 4 + 4 + 1 + saltLen
	// MinPassphraseLen is the shortest passphrase accepted.
	MinPassphraseLen = 8
)

// PassphraseKey returns a KeyEncryptor deriving a 256-bit key from passphrase
// with argon2id (DefaultArgon2(), fresh 16-byte salt per Seal) and sealing with
// XChaCha20-Poly1305. The passphrase is copied.
func PassphraseKey(passphrase []byte) KeyEncryptor {
	return PassphraseKeyWithParams(passphrase, defaultArgon2)
}

// PassphraseKeyWithParams is PassphraseKey with explicit argon2id costs (used
// for new seals; Open always uses the parameters stored in the blob).
func PassphraseKeyWithParams(passphrase []byte, p Argon2Params) KeyEncryptor {
	return &passphraseKey{pass: append([]byte(nil), passphrase...), params: p}
}

// RawKey returns a KeyEncryptor using key (32 bytes, e.g. from a KMS or HSM)
// directly with XChaCha20-Poly1305.
func RawKey(key []byte) (KeyEncryptor, error) {
	if len(key) != chacha20poly1305.KeySize {
		return nil, fmt.Errorf("pki: raw key is %d bytes, want %d", len(key), chacha20poly1305.KeySize)
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
		if b, err := enc.DecodeString(t); err == nil && len(b) == chacha20poly1305.KeySize {
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
	hdr := make([]byte, 0, headerArgo+chacha20poly1305.NonceSizeX)
	hdr = append(hdr, sealMagic...)
	hdr = append(hdr, kdfArgon2)
	hdr = binary.BigEndian.AppendUint32(hdr, p.Time)
	hdr = binary.BigEndian.AppendUint32(hdr, p.Memory)
	hdr = append(hdr, p.Threads)
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("pki: salt: %w", err)
	}
	hdr = append(hdr, salt...)
	key := argon2.IDKey(k.pass, salt, p.Time, p.Memory, p.Threads, chacha20poly1305.KeySize)
	defer clear(key)
	return seal(key, hdr, plaintext, ad)
}

func (k *passphraseKey) Open(sealed, ad []byte) ([]byte, error) {
	h, err := parseSealed(sealed)
	if err != nil {
		return nil, err
	}
	if h.kdf != kdfArgon2 {
		return nil, fmt.Errorf("%w: sealed with a raw key, not a passphrase", ErrWrongKey)
	}
	key := argon2.IDKey(k.pass, h.salt, h.params.Time, h.params.Memory, h.params.Threads, chacha20poly1305.KeySize)
	defer clear(key)
	return open(key, h, ad)
}

type rawKey struct{ key []byte }

func (k *rawKey) Seal(plaintext, ad []byte) ([]byte, error) {
	hdr := append([]byte(sealMagic), kdfRaw)
	return seal(k.key, hdr, plaintext, ad)
}

func (k *rawKey) Open(sealed, ad []byte) ([]byte, error) {
	h, err := parseSealed(sealed)
	if err != nil {
		return nil, err
	}
	if h.kdf != kdfRaw {
		return nil, fmt.Errorf("%w: sealed with a passphrase, not a raw key", ErrWrongKey)
	}
	return open(k.key, h, ad)
}

func checkArgon(p Argon2Params) error {
	if p.Time < minArgonTime || p.Time > maxArgonTime || p.Memory < minArgonMemory || p.Memory > maxArgonMemory || p.Threads == 0 {
		return fmt.Errorf("pki: argon2id parameters out of range (time %d, memory %d KiB, threads %d)", p.Time, p.Memory, p.Threads)
	}
	return nil
}

// seal returns header || nonce || AEAD(plaintext, ad' = header || nonce || ad).
func seal(key, hdr, plaintext, ad []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("pki: aead: %w", err)
	}
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("pki: nonce: %w", err)
	}
	out := append(hdr, nonce...)
	fullAD := append(append([]byte(nil), out...), ad...)
	return aead.Seal(out, nonce, plaintext, fullAD), nil
}

type sealedHeader struct {
	kdf    byte
	params Argon2Params
	salt   []byte
	prefix []byte // header || nonce
	nonce  []byte
	ct     []byte
}

// parseSealed splits a sealed blob; it never runs the KDF.
func parseSealed(b []byte) (*sealedHeader, error) {
	if len(b) < headerRaw || string(b[:len(sealMagic)]) != sealMagic {
		return nil, fmt.Errorf("%w: not a qshield sealed key", ErrBadSealed)
	}
	h := &sealedHeader{kdf: b[len(sealMagic)]}
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
	if len(b) < n+chacha20poly1305.NonceSizeX+chacha20poly1305.Overhead {
		return nil, fmt.Errorf("%w: truncated", ErrBadSealed)
	}
	h.nonce = b[n : n+chacha20poly1305.NonceSizeX]
	h.prefix = b[:n+chacha20poly1305.NonceSizeX]
	h.ct = b[n+chacha20poly1305.NonceSizeX:]
	return h, nil
}

func open(key []byte, h *sealedHeader, ad []byte) ([]byte, error) {
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
