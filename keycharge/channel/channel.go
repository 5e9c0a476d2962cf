// Package channel is the wire format and session cryptography of seed 001's
// quantum secure channel between a phone (with a charged key storage device)
// and the quantum secure service centre (QSSC).
//
// # Opening
//
// The phone takes a fresh SegmentLen-byte segment of charged quantum key
// (key ID and offset travel in the clear) and sends an OpenRequest signed by
// the device key and MACed under a key derived from the segment. The QSSC
// answers with its nonce and a MAC of its own (key confirmation). Both then
// derive, with HKDF-SHA256 over the segment and both nonces, one key per
// direction for the chosen AEAD: AES-256-GCM, or SM4-GCM (GB/T 32907, the
// seed's "national secret algorithm", 128-bit key).
//
// # Frames
//
//	magic "QKCH" ‖ version 1 ‖ direction (1 = phone→QSSC, 2 = QSSC→phone)
//	‖ session ID (16) ‖ sequence (u64, from 1) ‖ AEAD ciphertext
//
// The header is the additional data; the nonce is direction (4 bytes) ‖
// sequence (8), unique per key since every direction has its own key and
// sequence numbers only grow. A receiver accepts only a sequence number
// greater than the last one accepted, so replayed, reordered or reflected
// frames fail. A session carries at most MaxMessages frames per direction;
// after that the phone opens a new session with a fresh segment.
package channel

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/emmansun/gmsm/sm4"
)

// Alg names a channel cipher.
type Alg string

const (
	AES256GCM Alg = "aes-256-gcm"
	SM4GCM    Alg = "sm4-gcm"
)

// Protocol constants.
const (
	SegmentLen   = 64
	NonceLen     = 16
	headerLen    = 4 + 1 + 1 + 16 + 8
	MaxPayload   = 256 << 10
	MaxFrame     = headerLen + MaxPayload + 16
	MaxMessages  = 1 << 24
	DirToServer  = 1
	DirToPhone   = 2
	frameVersion = 1
)

var frameMagic = [4]byte{'Q', 'K', 'C', 'H'}

// Errors.
var (
	ErrFrame   = errors.New("channel: malformed frame")
	ErrReplay  = errors.New("channel: replayed or out-of-order frame")
	ErrAuth    = errors.New("channel: frame failed authentication")
	ErrAlg     = errors.New("channel: unknown algorithm")
	ErrExpired = errors.New("channel: session exhausted; open a new one")
)

// ParseAlg checks an algorithm name ("" means AES-256-GCM).
func ParseAlg(s string) (Alg, error) {
	switch Alg(s) {
	case "", AES256GCM:
		return AES256GCM, nil
	case SM4GCM:
		return SM4GCM, nil
	}
	return "", fmt.Errorf("%w %q (use %s or %s)", ErrAlg, s, AES256GCM, SM4GCM)
}

func (a Alg) keyLen() int {
	if a == SM4GCM {
		return 16
	}
	return 32
}

func newAEAD(a Alg, key []byte) (cipher.AEAD, error) {
	var b cipher.Block
	var err error
	switch a {
	case AES256GCM:
		b, err = aes.NewCipher(key)
	case SM4GCM:
		b, err = sm4.NewCipher(key)
	default:
		return nil, ErrAlg
	}
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// AuthKey is the MAC key of the open exchange, derived from the segment.
func AuthKey(segment []byte) []byte {
	k, _ := hkdf.Key(sha256.New, segment, nil, "qkch auth v1", 32)
	return k
}

// MAC is HMAC-SHA256 under key over the length-prefixed parts.
func MAC(key []byte, label string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	for _, p := range parts {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(p)))
		m.Write(l[:])
		m.Write(p)
	}
	return m.Sum(nil)
}

// Header is a parsed frame header.
type Header struct {
	Dir     byte
	Session [16]byte
	Seq     uint64
}

func (h Header) marshal() []byte {
	b := make([]byte, 0, headerLen)
	b = append(b, frameMagic[:]...)
	b = append(b, frameVersion, h.Dir)
	b = append(b, h.Session[:]...)
	return binary.BigEndian.AppendUint64(b, h.Seq)
}

// ParseFrame splits a frame into its header and ciphertext.
func ParseFrame(b []byte) (Header, []byte, error) {
	var h Header
	if len(b) < headerLen+16 || len(b) > MaxFrame {
		return h, nil, fmt.Errorf("%w: %d bytes", ErrFrame, len(b))
	}
	if !bytes.Equal(b[:4], frameMagic[:]) || b[4] != frameVersion {
		return h, nil, fmt.Errorf("%w: bad magic or version", ErrFrame)
	}
	h.Dir = b[5]
	if h.Dir != DirToServer && h.Dir != DirToPhone {
		return h, nil, fmt.Errorf("%w: direction %d", ErrFrame, h.Dir)
	}
	copy(h.Session[:], b[6:22])
	h.Seq = binary.BigEndian.Uint64(b[22:30])
	if h.Seq == 0 {
		return h, nil, fmt.Errorf("%w: sequence 0", ErrFrame)
	}
	return h, b[headerLen:], nil
}

// Session is one side of an open channel. It is safe for concurrent use.
type Session struct {
	ID   [16]byte
	Alg  Alg
	side byte // this side's sending direction

	mu       sync.Mutex
	send     cipher.AEAD
	recv     cipher.AEAD
	sendSeq  uint64
	recvSeq  uint64
	sentB    int64
	receiveB int64
}

// NewSession derives the session keys from the segment and both nonces.
// side is DirToServer for the phone, DirToPhone for the QSSC.
func NewSession(id [16]byte, alg Alg, segment, clientNonce, serverNonce []byte, side byte) (*Session, error) {
	if len(segment) != SegmentLen {
		return nil, fmt.Errorf("channel: segment of %d bytes, need %d", len(segment), SegmentLen)
	}
	if side != DirToServer && side != DirToPhone {
		return nil, fmt.Errorf("channel: bad side %d", side)
	}
	salt := append(append(append([]byte(nil), id[:]...), clientNonce...), serverNonce...)
	n := alg.keyLen()
	km, err := hkdf.Key(sha256.New, segment, salt, "qkch session v1 "+string(alg), 2*n)
	if err != nil {
		return nil, err
	}
	up, err := newAEAD(alg, km[:n])
	if err != nil {
		return nil, err
	}
	down, err := newAEAD(alg, km[n:])
	if err != nil {
		return nil, err
	}
	s := &Session{ID: id, Alg: alg, side: side}
	if side == DirToServer {
		s.send, s.recv = up, down
	} else {
		s.send, s.recv = down, up
	}
	return s, nil
}

func nonce(dir byte, seq uint64) []byte {
	n := make([]byte, 12)
	n[3] = dir
	binary.BigEndian.PutUint64(n[4:], seq)
	return n
}

// Seal encrypts msg into the next frame.
func (s *Session) Seal(msg []byte) ([]byte, error) {
	if len(msg) > MaxPayload {
		return nil, fmt.Errorf("channel: message of %d bytes exceeds %d", len(msg), MaxPayload)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sendSeq >= MaxMessages {
		return nil, ErrExpired
	}
	s.sendSeq++
	h := Header{Dir: s.side, Session: s.ID, Seq: s.sendSeq}
	hb := h.marshal()
	out := make([]byte, 0, len(hb)+len(msg)+16)
	out = append(out, hb...)
	s.sentB += int64(len(msg))
	return s.send.Seal(out, nonce(s.side, s.sendSeq), msg, hb), nil
}

// Open authenticates and decrypts a frame from the other side.
func (s *Session) Open(frame []byte) ([]byte, error) {
	h, ct, err := ParseFrame(frame)
	if err != nil {
		return nil, err
	}
	want := byte(DirToPhone)
	if s.side == DirToPhone {
		want = DirToServer
	}
	if h.Dir != want || h.Session != s.ID {
		return nil, fmt.Errorf("%w: wrong direction or session", ErrAuth)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.Seq <= s.recvSeq {
		return nil, fmt.Errorf("%w: sequence %d after %d", ErrReplay, h.Seq, s.recvSeq)
	}
	if h.Seq > MaxMessages {
		return nil, ErrExpired
	}
	pt, err := s.recv.Open(nil, nonce(h.Dir, h.Seq), ct, frame[:headerLen])
	if err != nil {
		return nil, ErrAuth
	}
	s.recvSeq = h.Seq
	s.receiveB += int64(len(pt))
	return pt, nil
}

// Stats returns frames and bytes sent and received.
func (s *Session) Stats() (sent, received uint64, sentBytes, receivedBytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sendSeq, s.recvSeq, s.sentB, s.receiveB
}
