package link

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/qshield/qshield/qkd/privacy"
)

// ErrAuth reports a transcript whose one-time MAC did not verify: the classical
// channel was tampered with, and the block's keys are discarded.
var ErrAuth = errors.New("qkd/link: classical transcript failed authentication")

// ErrPoolEmpty reports that the authentication key pool ran out.
var ErrPoolEmpty = errors.New("qkd/link: authentication key pool exhausted")

// KeyPool supplies secret bytes shared by Alice and Bob for Wegman–Carter
// authentication: a pre-shared key at first, then bytes of earlier QKD output,
// as deployed QKD systems do. Both ends must take and refill identically.
type KeyPool interface {
	Take(n int) ([]byte, error)
	Refill(b []byte)
}

// MemoryPool is an in-memory KeyPool; safe for concurrent use.
type MemoryPool struct {
	mu  sync.Mutex
	buf []byte
}

// NewMemoryPool returns a pool holding a copy of preshared.
func NewMemoryPool(preshared []byte) *MemoryPool {
	return &MemoryPool{buf: append([]byte(nil), preshared...)}
}

// Take removes and returns the next n bytes.
func (p *MemoryPool) Take(n int) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n > len(p.buf) {
		return nil, fmt.Errorf("%w: need %d bytes, %d left", ErrPoolEmpty, n, len(p.buf))
	}
	out := append([]byte(nil), p.buf[:n]...)
	clear(p.buf[:n])
	p.buf = p.buf[n:]
	return out, nil
}

// Refill appends b.
func (p *MemoryPool) Refill(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
}

// Len returns the bytes available.
func (p *MemoryPool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.buf)
}

// authKeyBytes is what one block takes from the pool: an 8-byte hash point and
// two 8-byte one-time pads (Alice's tag, Bob's tag).
const authKeyBytes = 24

// transcript is the running GF(2^64) polynomial hash of every message of a
// block, sent or received, in order, tagged with its direction: an
// ε-almost-XOR-universal hash with ε ≤ (words+2)/2^64, which the one-time pad
// turns into a Wegman–Carter MAC.
type transcript struct {
	point privacy.TagPoint
	acc   uint64
	words uint64
	on    bool
}

func (t *transcript) add(dir byte, b []byte) {
	if !t.on {
		return
	}
	// Absorb a header word (direction, length) and the bytes as 64-bit words.
	t.acc = gfHorner(t.acc^(uint64(dir)<<56|uint64(len(b))), t.point)
	t.words++
	for len(b) >= 8 {
		t.acc = gfHorner(t.acc^binary.LittleEndian.Uint64(b), t.point)
		b = b[8:]
		t.words++
	}
	if len(b) > 0 {
		var last [8]byte
		copy(last[:], b)
		t.acc = gfHorner(t.acc^binary.LittleEndian.Uint64(last[:]), t.point)
		t.words++
	}
}

// gfHorner is one Horner step of the polynomial hash: x·r in GF(2^64).
func gfHorner(x uint64, r privacy.TagPoint) uint64 { return privacy.MulGF64(x, uint64(r)) }

const (
	dirAliceToBob = 1
	dirBobToAlice = 2
)

// sideTransport records one party's messages of the current block in the
// transcript: sent ones under sendDir, received ones under recvDir.
type sideTransport struct {
	Transport
	t                *transcript
	sendDir, recvDir byte
}

// inTranscript reports whether m is part of the authenticated transcript: every
// classical message except the tag exchange itself and the simulated quantum
// channel.
func inTranscript(m Message) bool {
	switch m.Type() {
	case TQuantum, TAuth, TBlockDone:
		return false
	}
	return true
}

func (s *sideTransport) Send(ctx context.Context, m Message) error {
	if inTranscript(m) {
		s.t.add(s.sendDir, Marshal(m))
	}
	return s.Transport.Send(ctx, m)
}

func (s *sideTransport) Recv(ctx context.Context) (Message, error) {
	m, err := s.Transport.Recv(ctx)
	if err == nil && inTranscript(m) {
		s.t.add(s.recvDir, Marshal(m))
	}
	return m, err
}

// startAuth takes the block's authentication key from the pool and starts a
// fresh transcript. It returns the two pads (Alice's, Bob's).
func startAuth(t *transcript, pool KeyPool) (padA, padB uint64, err error) {
	k, err := pool.Take(authKeyBytes)
	if err != nil {
		return 0, 0, err
	}
	*t = transcript{point: privacy.TagPoint(binary.LittleEndian.Uint64(k[0:])), on: true}
	padA = binary.LittleEndian.Uint64(k[8:])
	padB = binary.LittleEndian.Uint64(k[16:])
	clear(k)
	return padA, padB, nil
}

func (t *transcript) tag(pad uint64) uint64 { return t.acc ^ pad }

func tagsEqual(a, b uint64) bool {
	var x, y [8]byte
	binary.LittleEndian.PutUint64(x[:], a)
	binary.LittleEndian.PutUint64(y[:], b)
	return subtle.ConstantTimeCompare(x[:], y[:]) == 1
}
