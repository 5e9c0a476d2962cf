package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/qshield/qshield/qkd/cascade"
)

// ErrMalformed reports a frame that does not decode to a valid message.
var ErrMalformed = errors.New("qkd/link: malformed message")

// Limits enforced by the decoder, so that a hostile peer cannot make it
// allocate without bound.
const (
	MaxFrameBytes  = 256 << 20 // largest encoded message
	maxDetections  = 1 << 28
	maxRanges      = 1 << 24
	maxIDs         = 1 << 20
	maxStringBytes = 4096
)

// Type identifies a message.
type Type uint8

// Message types, in protocol order.
const (
	TQuantum       Type = iota + 1 // Alice → Bob: the simulated quantum channel (Bob's detector output)
	TDetections                    // Bob → Alice: detected slots and Bob's bases
	TSift                          // Alice → Bob: Alice's bases and intensity classes, pulses per class
	TSample                        // Alice → Bob: sample seed and Alice's bits of the estimation set
	TCounts                        // Bob → Alice: errors found in the estimation set
	TDecision                      // Alice → Bob: go on (with Cascade parameters) or abort
	TParityRequest                 // Bob → Alice: Cascade parity request
	TParityReply                   // Alice → Bob: Cascade parities
	TReconciled                    // Bob → Alice: all frames reconciled, errors corrected
	TVerify                        // Alice → Bob: verification point and tags per frame
	TVerifyResult                  // Bob → Alice: which frames matched
	TAmplify                       // Alice → Bob: privacy amplification seed, length, key IDs
	TBlockDone                     // Bob → Alice: Bob stored the keys
	TAbort                         // either way: the session stops with a reason
	TAuth                          // Alice → Bob: one-time MAC of the block's transcript
	typeEnd
)

// Message is one protocol message.
type Message interface {
	Type() Type
	appendTo(b []byte) []byte
	decode(r *reader) error
}

// Quantum carries what Bob's detectors output for one block. It stands in for
// the fibre and Bob's detector electronics in the simulation (the simulator
// runs where the source is) and is not part of the classical, public
// discussion: nothing in it counts as disclosed.
type Quantum struct {
	Block  uint64
	Pulses uint64
	N      uint64
	Slots  []uint64 // strictly increasing
	Basis  []uint64 // packed
	Value  []uint64 // packed
}

// Detections is Bob's public announcement: which slots clicked, in which basis.
type Detections struct {
	Block uint64
	N     uint64
	Slots []uint64
	Basis []uint64
}

// Sift is Alice's public answer: her bases and the intensity class of every
// detected slot, and the number of pulses she sent in each class.
type Sift struct {
	Block          uint64
	N              uint64
	Basis          []uint64
	Class          []uint8 // one per detection, 0..2
	PulsesPerClass [3]uint64
}

// Sample discloses Alice's bits of every sifted test-basis (Z) detection, of
// every intensity, in detection order (Lim et al. 2014, step 4: the sets Z_k
// are announced and their errors counted).
type Sample struct {
	Block uint64
	N     uint64
	Bits  []uint64
}

// Counts are the errors Bob found in the estimation set, per class.
type Counts struct {
	Block    uint64
	Errors   [3]uint64
	Compared [3]uint64
}

// Decision tells Bob whether the block goes on, and with which Cascade plan.
type Decision struct {
	Block       uint64
	Abort       bool
	Reason      string
	QBER        float64 // estimate used to size Cascade blocks
	FrameBits   uint64
	CascadeSeed [32]byte // seed of the reconciliation plan (either method)
	// Method is the reconciliation method Alice chose (MethodCascade or
	// MethodLDPC); Bob follows it.
	Method Method
}

// ParityRequest asks Alice for parities of several frames at once: the frames
// of a block are reconciled in parallel so that one round trip serves all.
type ParityRequest struct {
	Frames []FrameRequest
}

// FrameRequest is the parity request of one frame.
type FrameRequest struct {
	Frame  uint32
	Ranges []cascade.Range
}

// ParityReply carries Alice's parities, one entry per requested frame, in
// request order.
type ParityReply struct {
	Frames []FrameReply
}

// FrameReply carries the parities of one frame, packed in request order.
type FrameReply struct {
	Frame uint32
	N     uint32
	Bits  []uint64
}

// Reconciled ends the Cascade phase: the number of bits Bob corrected.
type Reconciled struct {
	Block     uint64
	Corrected uint64
}

// Verify carries Alice's tag of each frame at a fresh random point.
type Verify struct {
	Block uint64
	Point uint64
	Tags  []uint64
}

// VerifyResult tells Alice which frames matched (bit f set = frame f matched).
type VerifyResult struct {
	Block  uint64
	Frames uint64
	OK     []uint64
}

// Amplify fixes privacy amplification: Seed holds the n+m−1 uniformly random
// bits (crypto/rand) of the m×n Toeplitz matrix, n the verified key bits and
// m = Bits the output, cut into len(IDs) keys. Bits = 0 with Abort set means
// the block failed after reconciliation.
type Amplify struct {
	Block  uint64
	Abort  bool
	Reason string
	Seed   []uint64
	Bits   uint64
	IDs    []string
}

// BlockDone acknowledges that Bob delivered the block's keys; with transcript
// authentication, Tag is Bob's one-time MAC of the transcript (else 0).
type BlockDone struct {
	Block uint64
	Tag   uint64
}

// Auth carries Alice's one-time MAC of the block's transcript.
type Auth struct {
	Block uint64
	Tag   uint64
}

// Abort stops the session.
type Abort struct{ Reason string }

func (*Quantum) Type() Type       { return TQuantum }
func (*Detections) Type() Type    { return TDetections }
func (*Sift) Type() Type          { return TSift }
func (*Sample) Type() Type        { return TSample }
func (*Counts) Type() Type        { return TCounts }
func (*Decision) Type() Type      { return TDecision }
func (*ParityRequest) Type() Type { return TParityRequest }
func (*ParityReply) Type() Type   { return TParityReply }
func (*Reconciled) Type() Type    { return TReconciled }
func (*Verify) Type() Type        { return TVerify }
func (*VerifyResult) Type() Type  { return TVerifyResult }
func (*Amplify) Type() Type       { return TAmplify }
func (*BlockDone) Type() Type     { return TBlockDone }
func (*Abort) Type() Type         { return TAbort }
func (*Auth) Type() Type          { return TAuth }

// Marshal encodes m as a frame body: one type byte then the fields.
func Marshal(m Message) []byte {
	return m.appendTo([]byte{byte(m.Type())})
}

// Unmarshal decodes a frame body. It never panics; any inconsistency is an
// error wrapping ErrMalformed.
func Unmarshal(b []byte) (Message, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty frame", ErrMalformed)
	}
	if len(b) > MaxFrameBytes {
		return nil, fmt.Errorf("%w: frame of %d bytes", ErrMalformed, len(b))
	}
	var m Message
	switch Type(b[0]) {
	case TQuantum:
		m = new(Quantum)
	case TDetections:
		m = new(Detections)
	case TSift:
		m = new(Sift)
	case TSample:
		m = new(Sample)
	case TCounts:
		m = new(Counts)
	case TDecision:
		m = new(Decision)
	case TParityRequest:
		m = new(ParityRequest)
	case TParityReply:
		m = new(ParityReply)
	case TReconciled:
		m = new(Reconciled)
	case TVerify:
		m = new(Verify)
	case TVerifyResult:
		m = new(VerifyResult)
	case TAmplify:
		m = new(Amplify)
	case TBlockDone:
		m = new(BlockDone)
	case TAbort:
		m = new(Abort)
	case TAuth:
		m = new(Auth)
	default:
		return nil, fmt.Errorf("%w: unknown type %d", ErrMalformed, b[0])
	}
	r := &reader{b: b[1:]}
	if err := m.decode(r); err != nil {
		return nil, err
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes after %T", ErrMalformed, len(r.b), m)
	}
	return m, nil
}

// --- encoding helpers ---

func putU(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func putWords(b []byte, w []uint64) []byte {
	b = putU(b, uint64(len(w)))
	for _, x := range w {
		b = binary.LittleEndian.AppendUint64(b, x)
	}
	return b
}

func putString(b []byte, s string) []byte {
	b = putU(b, uint64(len(s)))
	return append(b, s...)
}

func putF64(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

func putBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// putSlots delta-encodes a strictly increasing list.
func putSlots(b []byte, s []uint64) []byte {
	b = putU(b, uint64(len(s)))
	var prev uint64
	for i, x := range s {
		if i == 0 {
			b = putU(b, x)
		} else {
			b = putU(b, x-prev-1)
		}
		prev = x
	}
	return b
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, a...)...)
	}
}

func (r *reader) u() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) u64() uint64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 8 {
		r.fail("truncated")
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) f64() float64 {
	f := math.Float64frombits(r.u64())
	if math.IsNaN(f) || math.IsInf(f, 0) {
		r.fail("non-finite number")
		return 0
	}
	return f
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.fail("truncated")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) boolean() bool {
	if r.err != nil {
		return false
	}
	if len(r.b) < 1 || r.b[0] > 1 {
		r.fail("bad boolean")
		return false
	}
	v := r.b[0] == 1
	r.b = r.b[1:]
	return v
}

func (r *reader) bytes32() (out [32]byte) {
	if r.err != nil {
		return
	}
	if len(r.b) < 32 {
		r.fail("truncated")
		return
	}
	copy(out[:], r.b)
	r.b = r.b[32:]
	return
}

func (r *reader) count(max uint64, what string, unit int) int {
	n := r.u()
	if r.err != nil {
		return 0
	}
	if n > max || n*uint64(unit) > uint64(len(r.b)) {
		r.fail("%s count %d too large", what, n)
		return 0
	}
	return int(n)
}

func (r *reader) words(maxWords uint64) []uint64 {
	n := r.count(maxWords, "word", 8)
	if r.err != nil {
		return nil
	}
	w := make([]uint64, n)
	for i := range w {
		w[i] = binary.LittleEndian.Uint64(r.b[8*i:])
	}
	r.b = r.b[8*n:]
	return w
}

func (r *reader) str() string {
	n := r.count(maxStringBytes, "string byte", 1)
	if r.err != nil {
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) slots() []uint64 {
	n := r.count(maxDetections, "slot", 1)
	if r.err != nil {
		return nil
	}
	s := make([]uint64, n)
	var prev uint64
	for i := range s {
		d := r.u()
		if r.err != nil {
			return nil
		}
		if i == 0 {
			s[i] = d
		} else {
			if d > math.MaxUint64-prev-1 {
				r.fail("slot overflow")
				return nil
			}
			s[i] = prev + d + 1
		}
		prev = s[i]
	}
	return s
}

// packedFor checks that a packed vector holds exactly n bits.
func (r *reader) packedFor(w []uint64, n uint64, what string) {
	if r.err == nil && uint64(len(w)) != (n+63)/64 {
		r.fail("%s: %d words for %d bits", what, len(w), n)
	}
}

// --- per-message codecs ---

func (m *Quantum) appendTo(b []byte) []byte {
	b = putU(b, m.Block)
	b = putU(b, m.Pulses)
	b = putU(b, m.N)
	b = putSlots(b, m.Slots)
	b = putWords(b, m.Basis)
	return putWords(b, m.Value)
}

func (m *Quantum) decode(r *reader) error {
	m.Block, m.Pulses, m.N = r.u(), r.u(), r.u()
	m.Slots = r.slots()
	m.Basis = r.words(maxDetections / 64)
	m.Value = r.words(maxDetections / 64)
	if r.err == nil && uint64(len(m.Slots)) != m.N {
		r.fail("quantum: %d slots for %d detections", len(m.Slots), m.N)
	}
	r.packedFor(m.Basis, m.N, "quantum basis")
	r.packedFor(m.Value, m.N, "quantum value")
	if r.err == nil && m.N > 0 && m.Slots[m.N-1] >= m.Pulses {
		r.fail("quantum: slot %d beyond %d pulses", m.Slots[m.N-1], m.Pulses)
	}
	return r.err
}

func (m *Detections) appendTo(b []byte) []byte {
	b = putU(b, m.Block)
	b = putU(b, m.N)
	b = putSlots(b, m.Slots)
	return putWords(b, m.Basis)
}

func (m *Detections) decode(r *reader) error {
	m.Block, m.N = r.u(), r.u()
	m.Slots = r.slots()
	m.Basis = r.words(maxDetections / 64)
	if r.err == nil && uint64(len(m.Slots)) != m.N {
		r.fail("detections: %d slots for %d detections", len(m.Slots), m.N)
	}
	r.packedFor(m.Basis, m.N, "detection basis")
	return r.err
}

func (m *Sift) appendTo(b []byte) []byte {
	b = putU(b, m.Block)
	b = putU(b, m.N)
	b = putWords(b, m.Basis)
	// classes, 4 per byte
	b = putU(b, uint64(len(m.Class)))
	var acc byte
	for i, c := range m.Class {
		acc |= (c & 3) << (2 * (i & 3))
		if i&3 == 3 {
			b = append(b, acc)
			acc = 0
		}
	}
	if len(m.Class)&3 != 0 {
		b = append(b, acc)
	}
	for _, p := range m.PulsesPerClass {
		b = putU(b, p)
	}
	return b
}

func (m *Sift) decode(r *reader) error {
	m.Block, m.N = r.u(), r.u()
	m.Basis = r.words(maxDetections / 64)
	n := r.u()
	if r.err == nil && (n != m.N || (n+3)/4 > uint64(len(r.b))) {
		r.fail("sift: %d classes for %d detections", n, m.N)
	}
	if r.err != nil {
		return r.err
	}
	m.Class = make([]uint8, n)
	for i := range m.Class {
		c := r.b[i/4] >> (2 * (i & 3)) & 3
		if c > 2 {
			r.fail("sift: class %d", c)
			return r.err
		}
		m.Class[i] = c
	}
	r.b = r.b[(n+3)/4:]
	for i := range m.PulsesPerClass {
		m.PulsesPerClass[i] = r.u()
	}
	r.packedFor(m.Basis, m.N, "sift basis")
	return r.err
}

func (m *Sample) appendTo(b []byte) []byte {
	b = putU(b, m.Block)
	b = putU(b, m.N)
	return putWords(b, m.Bits)
}

func (m *Sample) decode(r *reader) error {
	m.Block = r.u()
	m.N = r.u()
	m.Bits = r.words(maxDetections / 64)
	r.packedFor(m.Bits, m.N, "test bits")
	return r.err
}

func (m *Counts) appendTo(b []byte) []byte {
	b = putU(b, m.Block)
	for i := 0; i < 3; i++ {
		b = putU(b, m.Errors[i])
		b = putU(b, m.Compared[i])
	}
	return b
}

func (m *Counts) decode(r *reader) error {
	m.Block = r.u()
	for i := 0; i < 3; i++ {
		m.Errors[i], m.Compared[i] = r.u(), r.u()
		if r.err == nil && m.Errors[i] > m.Compared[i] {
			r.fail("counts: %d errors among %d bits", m.Errors[i], m.Compared[i])
		}
	}
	return r.err
}

func (m *Decision) appendTo(b []byte) []byte {
	b = putU(b, m.Block)
	b = putBool(b, m.Abort)
	b = putString(b, m.Reason)
	b = putF64(b, m.QBER)
	b = putU(b, m.FrameBits)
	b = append(b, m.CascadeSeed[:]...)
	return append(b, byte(m.Method))
}

func (m *Decision) decode(r *reader) error {
	m.Block = r.u()
	m.Abort = r.boolean()
	m.Reason = r.str()
	m.QBER = r.f64()
	m.FrameBits = r.u()
	m.CascadeSeed = r.bytes32()
	m.Method = Method(r.byte())
	if r.err == nil && m.Method > MethodLDPC {
		r.fail("decision: reconciliation method %d", m.Method)
	}
	if r.err == nil && !(m.QBER >= 0 && m.QBER < 0.5) {
		r.fail("decision: QBER %g", m.QBER)
	}
	return r.err
}

func (m *ParityRequest) appendTo(b []byte) []byte {
	b = putU(b, uint64(len(m.Frames)))
	for _, fr := range m.Frames {
		b = putU(b, uint64(fr.Frame))
		b = putU(b, uint64(len(fr.Ranges)))
		for _, rg := range fr.Ranges {
			b = append(b, rg.Pass)
			b = putU(b, uint64(rg.Lo))
			b = putU(b, uint64(rg.Hi-rg.Lo))
		}
	}
	return b
}

func (m *ParityRequest) decode(r *reader) error {
	nf := r.count(maxIDs, "frame", 2)
	if r.err != nil {
		return r.err
	}
	m.Frames = make([]FrameRequest, nf)
	for k := range m.Frames {
		fr := &m.Frames[k]
		f := r.u()
		if f > math.MaxUint32 {
			r.fail("frame %d", f)
		}
		fr.Frame = uint32(f)
		n := r.count(maxRanges, "range", 3)
		if r.err != nil {
			return r.err
		}
		fr.Ranges = make([]cascade.Range, n)
		for i := range fr.Ranges {
			if len(r.b) < 1 {
				r.fail("truncated")
				return r.err
			}
			p := r.b[0]
			r.b = r.b[1:]
			lo, ln := r.u(), r.u()
			if r.err != nil {
				return r.err
			}
			if lo > math.MaxUint32 || ln == 0 || ln > math.MaxUint32-lo {
				r.fail("range [%d, +%d)", lo, ln)
				return r.err
			}
			fr.Ranges[i] = cascade.Range{Pass: p, Lo: uint32(lo), Hi: uint32(lo + ln)}
		}
	}
	return r.err
}

func (m *ParityReply) appendTo(b []byte) []byte {
	b = putU(b, uint64(len(m.Frames)))
	for _, fr := range m.Frames {
		b = putU(b, uint64(fr.Frame))
		b = putU(b, uint64(fr.N))
		b = putWords(b, fr.Bits)
	}
	return b
}

func (m *ParityReply) decode(r *reader) error {
	nf := r.count(maxIDs, "frame", 3)
	if r.err != nil {
		return r.err
	}
	m.Frames = make([]FrameReply, nf)
	for k := range m.Frames {
		fr := &m.Frames[k]
		f, n := r.u(), r.u()
		if f > math.MaxUint32 || n > maxRanges {
			r.fail("parity reply frame %d, %d bits", f, n)
			return r.err
		}
		fr.Frame, fr.N = uint32(f), uint32(n)
		fr.Bits = r.words(maxRanges / 64)
		r.packedFor(fr.Bits, uint64(fr.N), "parities")
	}
	return r.err
}

func (m *Reconciled) appendTo(b []byte) []byte {
	return putU(putU(b, m.Block), m.Corrected)
}

func (m *Reconciled) decode(r *reader) error {
	m.Block, m.Corrected = r.u(), r.u()
	return r.err
}

func (m *Verify) appendTo(b []byte) []byte {
	b = putU(b, m.Block)
	b = binary.LittleEndian.AppendUint64(b, m.Point)
	return putWords(b, m.Tags)
}

func (m *Verify) decode(r *reader) error {
	m.Block = r.u()
	m.Point = r.u64()
	m.Tags = r.words(maxIDs)
	return r.err
}

func (m *VerifyResult) appendTo(b []byte) []byte {
	b = putU(b, m.Block)
	b = putU(b, m.Frames)
	return putWords(b, m.OK)
}

func (m *VerifyResult) decode(r *reader) error {
	m.Block, m.Frames = r.u(), r.u()
	m.OK = r.words(maxIDs / 64)
	r.packedFor(m.OK, m.Frames, "verify result")
	return r.err
}

func (m *Amplify) appendTo(b []byte) []byte {
	b = putU(b, m.Block)
	b = putBool(b, m.Abort)
	b = putString(b, m.Reason)
	b = putWords(b, m.Seed)
	b = putU(b, m.Bits)
	b = putU(b, uint64(len(m.IDs)))
	for _, id := range m.IDs {
		b = putString(b, id)
	}
	return b
}

func (m *Amplify) decode(r *reader) error {
	m.Block = r.u()
	m.Abort = r.boolean()
	m.Reason = r.str()
	m.Seed = r.words(2 * maxDetections / 64)
	m.Bits = r.u()
	n := r.count(maxIDs, "key ID", 2)
	if r.err != nil {
		return r.err
	}
	m.IDs = make([]string, n)
	for i := range m.IDs {
		m.IDs[i] = r.str()
		if r.err == nil && !validUUID(m.IDs[i]) {
			r.fail("key ID %q is not a UUID", m.IDs[i])
		}
	}
	return r.err
}

func (m *BlockDone) appendTo(b []byte) []byte {
	return binary.LittleEndian.AppendUint64(putU(b, m.Block), m.Tag)
}

func (m *BlockDone) decode(r *reader) error {
	m.Block, m.Tag = r.u(), r.u64()
	return r.err
}

func (m *Auth) appendTo(b []byte) []byte {
	return binary.LittleEndian.AppendUint64(putU(b, m.Block), m.Tag)
}

func (m *Auth) decode(r *reader) error {
	m.Block, m.Tag = r.u(), r.u64()
	return r.err
}

func (m *Abort) appendTo(b []byte) []byte { return putString(b, m.Reason) }
func (m *Abort) decode(r *reader) error {
	m.Reason = r.str()
	return r.err
}
