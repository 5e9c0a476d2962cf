package watermark

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

// HandlePrefix starts every T1 string; it identifies a qshield payment code and
// its format version.
const HandlePrefix = "QSW1:"

const handleLen = 16

var handleEnc = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewToken returns a fresh random T0 of n bytes from r (crypto/rand when nil).
func NewToken(n int, r io.Reader) ([]byte, error) {
	if n < 16 || n > 32 {
		return nil, fmt.Errorf("%w: length %d (16..32)", ErrToken, n)
	}
	if r == nil {
		r = rand.Reader
	}
	t0 := make([]byte, n)
	if _, err := io.ReadFull(r, t0); err != nil {
		return nil, fmt.Errorf("watermark: reading randomness: %w", err)
	}
	return t0, nil
}

// Handle derives the public token T1 from T0: HandlePrefix followed by the
// base32 form of HMAC-SHA256(key = T0, "qshield/watermark/v1/handle")
// truncated to 128 bits. T1 is a pseudo-random function of T0, so it reveals
// nothing about T0 (PRF security), yet the server that issued T0 can compute it
// in advance and index the token by it.
func Handle(t0 []byte) (string, error) {
	if len(t0) < 16 || len(t0) > 32 {
		return "", fmt.Errorf("%w: length %d (16..32)", ErrToken, len(t0))
	}
	m := hmac.New(sha256.New, t0)
	m.Write([]byte("qshield/watermark/v1/handle"))
	return HandlePrefix + handleEnc.EncodeToString(m.Sum(nil)[:handleLen]), nil
}

// ParseHandle checks that s has the form of a T1 string.
func ParseHandle(s string) error {
	rest, ok := strings.CutPrefix(s, HandlePrefix)
	if !ok {
		return fmt.Errorf("%w: missing prefix", ErrForeignCode)
	}
	b, err := handleEnc.DecodeString(rest)
	if err != nil || len(b) != handleLen {
		return fmt.Errorf("%w: malformed handle", ErrForeignCode)
	}
	// 128 bits take 26 base32 digits whose last two bits are padding;
	// the decoder ignores them, so a second spelling would decode to the
	// same value. Only the canonical spelling (those bits zero) is a handle.
	if handleEnc.EncodeToString(b) != rest {
		return fmt.Errorf("%w: non-canonical handle", ErrForeignCode)
	}
	return nil
}

// Digest is the SHA-256 of T0, what the server stores instead of T0.
func Digest(t0 []byte) [32]byte { return sha256.Sum256(t0) }

// Share is one watermark share as carried by a frame.
type Share struct {
	// Index is the Shamir x coordinate (1..255).
	Index byte
	// Value is the share of W = T0.
	Value []byte
	// Stamp binds the share to the time slot in which the phone showed it.
	Stamp Stamp
}

// TagLen is the length of a slot tag in bytes (see Stamp).
const TagLen = 3

// boundFlag marks, in a packet's index byte, a share whose stamp is bound to
// a scanner challenge; share indices are therefore at most maxShareIndex.
const (
	boundFlag     = 0x80
	maxShareIndex = 0x7f
)

// shareOverhead is index, slot, tag and CRC-32.
const shareOverhead = 1 + 1 + TagLen + 4

func shareLen(tokenLen int) int { return tokenLen + shareOverhead }

// marshalShare lays out index ‖ slot ‖ value ‖ tag ‖ CRC-32, the CRC (IEEE)
// computed over T1 ‖ index ‖ slot ‖ value ‖ tag, which binds the share to its
// code: a share moved under another T1 fails the check. The CRC detects
// decoding errors only; the tag (which the scanner cannot check) is what the
// server authenticates.
func marshalShare(t1 string, s Share) []byte {
	b := make([]byte, 0, shareLen(len(s.Value)))
	idx := s.Index
	if s.Stamp.Bound {
		idx |= boundFlag
	}
	b = append(b, idx, s.Stamp.Slot)
	b = append(b, s.Value...)
	b = append(b, s.Stamp.Tag[:]...)
	c := crc32.NewIEEE()
	c.Write([]byte(t1))
	c.Write(b)
	return binary.BigEndian.AppendUint32(b, c.Sum32())
}

// unmarshalShare parses and checks a share packet of len tokenLen+shareOverhead.
func unmarshalShare(t1 string, b []byte, tokenLen int) (Share, error) {
	if len(b) != shareLen(tokenLen) {
		return Share{}, fmt.Errorf("%w: %d bytes", ErrBadShare, len(b))
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	c := crc32.NewIEEE()
	c.Write([]byte(t1))
	c.Write(body)
	if c.Sum32() != sum {
		return Share{}, fmt.Errorf("%w: checksum mismatch", ErrBadShare)
	}
	idx := body[0] &^ boundFlag
	s := Share{Index: idx, Value: append([]byte(nil), body[2:2+tokenLen]...)}
	s.Stamp.Index, s.Stamp.Slot, s.Stamp.Bound = idx, body[1], body[0]&boundFlag != 0
	copy(s.Stamp.Tag[:], body[2+tokenLen:])
	if s.Index == 0 {
		return Share{}, fmt.Errorf("%w: index 0", ErrBadShare)
	}
	return s, nil
}
