package qkd

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
)

// ErrKeyID is returned by ParseKeyID for text that is not a canonical UUID.
var ErrKeyID = errors.New("qkd: key ID is not a UUID in 8-4-4-4-12 hex form")

// NewKeyID returns a fresh random (version 4) UUID in canonical lower-case
// form, the form of Key.ID.
func NewKeyID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return FormatKeyID(b)
}

// FormatKeyID writes 16 bytes as a canonical lower-case UUID.
func FormatKeyID(b [16]byte) string {
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], b[10:16])
	return string(s[:])
}

// ParseKeyID parses a UUID in the canonical 8-4-4-4-12 hex form (either
// case) into its 16 bytes; FormatKeyID of the result is its lower-case form.
func ParseKeyID(s string) ([16]byte, error) {
	var b [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return b, ErrKeyID
	}
	// Byte j of the UUID is hex digits at offsets pos[j], pos[j]+1.
	pos := [16]int{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}
	for j, i := range pos {
		hi, ok1 := fromHex(s[i])
		lo, ok2 := fromHex(s[i+1])
		if !ok1 || !ok2 {
			return b, ErrKeyID
		}
		b[j] = hi<<4 | lo
	}
	return b, nil
}

func fromHex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// RandomKeys returns n keys of size bytes under fresh random IDs, as a link
// would deliver them. Tests and load experiments use it to fill key pools
// without running the link.
func RandomKeys(n, size int) []Key {
	buf := make([]byte, n*size)
	_, _ = rand.Read(buf)
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = Key{ID: NewKeyID(), Bytes: buf[i*size : (i+1)*size : (i+1)*size]}
	}
	return keys
}
