package qmsp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/qshield/qshield/qmsp/paycode"
	"github.com/qshield/qshield/seal"
)

// Errors of the cryptographic layer.
var (
	ErrAuth = paycode.ErrAuth // is paycode.ErrAuth
)

// Batch is a quantum key QK(x) split by DivQ (seed §3.3 step 3): the first 16
// bytes become the next preset key, the rest is cut into 64-byte payment units.
type Batch struct {
	NextPK [PresetKeySize]byte
	Units  [][UnitSize]byte
}

// DivQ splits qk. len(qk) must be 80..1024 bytes; trailing bytes that do not
// fill a unit are discarded (never used for anything).
func DivQ(qk []byte) (*Batch, error) {
	if len(qk) < MinBatchSize || len(qk) > MaxBatchSize {
		return nil, fmt.Errorf("%w: quantum key batch of %d bytes (want %d..%d)", ErrFormat, len(qk), MinBatchSize, MaxBatchSize)
	}
	b := &Batch{}
	copy(b.NextPK[:], qk[:PresetKeySize])
	rest := qk[PresetKeySize:]
	for len(rest) >= UnitSize {
		var u [UnitSize]byte
		copy(u[:], rest[:UnitSize])
		b.Units = append(b.Units, u)
		rest = rest[UnitSize:]
	}
	return b, nil
}

// UnitKeys splits a payment unit into the pad and the one-time MAC key
// ([paycode.UnitKeys]).
func UnitKeys(u *[UnitSize]byte) (pad [PadSize]byte, macKey [MACKeySize]byte) {
	return paycode.UnitKeys(u)
}

// SealPayment is the phone's step 5 ([paycode.SealPayment]).
func SealPayment(d *Display, m *PaymentInfo) (ct [InfoSize]byte, tag [TagSize]byte, err error) {
	return paycode.SealPayment(d, m)
}

// OpenPayment is the platform's step 8 ([paycode.OpenPayment]).
func OpenPayment(gi string, ref KeyRef, expires int64, unit *[UnitSize]byte, ct []byte, tag []byte) (*PaymentInfo, error) {
	return paycode.OpenPayment(gi, ref, expires, unit, ct, tag)
}

func wrapAD(gi string, epoch uint64, keyID [16]byte) []byte {
	b := make([]byte, 0, 64)
	b = append(b, "qmsp-wrap-v1"...)
	b = append(b, byte(len(gi)))
	b = append(b, gi...)
	b = binary.BigEndian.AppendUint64(b, epoch)
	return append(b, keyID[:]...)
}

// Wrap is the CSS's En_AES (step 4) made authenticated: AES-128-GCM under the
// preset key, bound to the gateway, the new epoch and the key ID. Output:
// nonce(12) ‖ ciphertext ‖ tag(16).
func Wrap(pk *[PresetKeySize]byte, gi string, epoch uint64, keyID [16]byte, qk []byte) ([]byte, error) {
	block, err := aes.NewCipher(pk[:])
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 12, 12+len(qk)+16)
	if _, err := rand.Read(out); err != nil {
		return nil, err
	}
	return g.Seal(out, out[:12], qk, wrapAD(gi, epoch, keyID)), nil
}

// Unwrap is the gateway's De_AES (step 6).
func Unwrap(pk *[PresetKeySize]byte, gi string, epoch uint64, keyID [16]byte, sealed []byte) ([]byte, error) {
	if len(sealed) < 12+16 {
		return nil, fmt.Errorf("%w: wrapped key of %d bytes", ErrFormat, len(sealed))
	}
	block, err := aes.NewCipher(pk[:])
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	qk, err := g.Open(nil, sealed[:12], sealed[12:], wrapAD(gi, epoch, keyID))
	if err != nil {
		return nil, fmt.Errorf("%w: key delivery does not open under the preset key (out of step or forged)", ErrAuth)
	}
	return qk, nil
}

// requestMAC authenticates a gateway's key request (or acknowledgement) under
// the preset key of the epoch it claims.
func requestMAC(pk *[PresetKeySize]byte, kind, gi string, epoch uint64, unix int64, nonce []byte) []byte {
	m := hmac.New(sha256.New, pk[:])
	m.Write([]byte("qmsp-" + kind + "-v1"))
	m.Write([]byte{byte(len(gi))})
	m.Write([]byte(gi))
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], epoch)
	binary.BigEndian.PutUint64(b[8:], uint64(unix))
	m.Write(b[:])
	m.Write(nonce)
	return m.Sum(nil)
}

// sealer encrypts key material at rest with package seal (purpose "qmsp
// record", identity a context string naming the table and row, such as
// "css-pk/GW-1/7"). It still opens records written by the sealer before it
// (XChaCha20-Poly1305, nonce || ciphertext, the context as additional data):
// those are rewritten in the current format the next time they change (a
// gateway's preset key at every epoch, its state file at every code, a PPS
// key batch is used up).
type sealer struct {
	s      *seal.Sealer
	legacy cipher.AEAD
}

func newSealer(key []byte) (*sealer, error) {
	if len(key) != chacha20poly1305.KeySize {
		return nil, fmt.Errorf("qmsp: storage key must be %d bytes, got %d", chacha20poly1305.KeySize, len(key))
	}
	ns, err := seal.New(key, "qmsp record")
	if err != nil {
		return nil, fmt.Errorf("qmsp: %w", err)
	}
	a, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	return &sealer{s: ns, legacy: a}, nil
}

func (s *sealer) seal(pt []byte, ad string) ([]byte, error) {
	b, err := s.s.Seal(pt, ad)
	if err != nil {
		return nil, fmt.Errorf("qmsp: seal %s: %w", ad, err)
	}
	return b, nil
}

func (s *sealer) open(ct []byte, ad string) ([]byte, error) {
	if seal.IsSealed(ct) {
		if pt, err := s.s.Open(ct, ad); err == nil {
			return pt, nil
		}
	}
	// The legacy format (a legacy record starts with the current header by
	// chance once in 2^32, hence the fall-through).
	if len(ct) < chacha20poly1305.NonceSizeX+16 {
		return nil, fmt.Errorf("qmsp: sealed record too short")
	}
	pt, err := s.legacy.Open(nil, ct[:chacha20poly1305.NonceSizeX], ct[chacha20poly1305.NonceSizeX:], []byte(ad))
	if err != nil {
		return nil, fmt.Errorf("qmsp: sealed record does not open (wrong storage key or tampered): %w", err)
	}
	return pt, nil
}

func sha256Hash(b []byte) [32]byte { return sha256.Sum256(b) }

// RequestMAC computes a gateway request's MAC (exported for load generators
// that play many gateways).
func RequestMAC(pk *[PresetKeySize]byte, kind, gi string, epoch uint64, unix int64, nonce []byte) []byte {
	return requestMAC(pk, kind, gi, epoch, unix, nonce)
}
