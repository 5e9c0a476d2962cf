// Package link runs a QKD session: Alice and Bob as two separate parties
// exchanging typed messages over an authenticated Transport, block after block:
//
//  1. quantum transmission (simulated by package bb84 on Alice's side; Bob's
//     detector output reaches him as a Quantum message, standing in for the
//     fibre: it is not part of the public discussion);
//  2. sifting: Bob announces detected slots and bases, Alice her bases and the
//     intensity class of each;
//  3. parameter estimation (Lim et al. 2014): the bases are biased (key basis
//     X with probability PX); every sifted X detection of every intensity is a
//     key bit, every sifted Z detection is disclosed; Bob counts the Z errors
//     per intensity; Alice computes the finite-key bounds of package decoy
//     (decoy.Finite) and aborts when the QBER exceeds the limit or the
//     finite-key length, with the planned leakage, is not positive. There is
//     no asymptotic path: every delivered key is sized by decoy.Finite;
//  4. information reconciliation on frames of FrameBits bits, Bob asking Alice
//     for parities: Cascade (package cascade, the default) or, with
//     Config.Method = MethodLDPC, blind LDPC reconciliation (package ldpc:
//     a syndrome, then a few punctured bits per round trip), which needs
//     tens of round trips per block instead of hundreds;
//  5. verification: Alice sends a GF(2^64) polynomial tag of every frame at a
//     fresh random point; frames whose tags differ are discarded;
//  6. privacy amplification: Alice fixes the output length ℓ from the finite-key
//     bound and the bits actually disclosed (parities, tags) or discarded, and
//     draws the n+m−1 Toeplitz seed bits from crypto/rand; both
//     hash the verified bits (package privacy), cut the result into keys named
//     by UUIDs Alice chooses, and hand them to their sinks — Bob first, then
//     Alice once Bob confirms.
//
// Transports: Pipe (in-memory, same codec), and TCP with mutual TLS (Dial,
// Accept, Serve). The classical channel must be authenticated; QKD's security
// rests on it. Messages are length-prefixed frames; the decoder is a bounded
// parser that rejects anything inconsistent (fuzzed).
//
// Without TLS, Config.Auth authenticates the classical discussion as deployed
// QKD systems do: a Wegman–Carter one-time MAC (GF(2^64) polynomial hash of the
// block's whole transcript, XOR a one-time pad) keyed from a pool that starts
// with a pre-shared key and is refilled from each block's output. Tagging the
// transcript once per block rather than every message keeps the key cost at 24
// bytes per block (Cascade alone sends hundreds of messages per block); the
// keys are only handed to the sinks after both tags verify, so a tampered
// message costs the block, never a wrong key.
package link

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"time"

	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qkd/bb84"
	"github.com/qshield/qshield/qkd/cascade"
	"github.com/qshield/qshield/qkd/decoy"
	"github.com/qshield/qshield/qkd/ldpc"
	"github.com/qshield/qshield/qkd/privacy"
)

// Method is a reconciliation method.
type Method uint8

// Reconciliation methods.
const (
	// MethodCascade is Cascade (package cascade): the fewest disclosed bits,
	// hundreds of round trips per block.
	MethodCascade Method = iota
	// MethodLDPC is blind LDPC reconciliation (package ldpc, default
	// options): a few more disclosed bits, tens of round trips per block.
	MethodLDPC
)

func (m Method) String() string {
	switch m {
	case MethodCascade:
		return "cascade"
	case MethodLDPC:
		return "ldpc"
	}
	return fmt.Sprintf("method %d", uint8(m))
}

// Sentinel errors.
var (
	ErrConfig   = errors.New("qkd/link: invalid configuration")
	ErrProtocol = errors.New("qkd/link: protocol violation")
	ErrPeer     = errors.New("qkd/link: peer aborted the session")
)

// Config configures a session. The zero value of each field means its default.
type Config struct {
	// Physics of the link (only Alice, who runs the simulator, uses it).
	Physics bb84.Params
	// SourceRateHz is the pulse rate, for the key rate in bit/s (default 40 MHz,
	// the seed's QKD device).
	SourceRateHz float64
	// PulsesPerBlock is the number of pulses per block. Zero means the block
	// size PlanPulses chooses for the link's distance: large enough for a
	// positive finite key with margin (Alice accumulates that many pulses
	// before post-processing; Bob follows Alice).
	PulsesPerBlock int64
	// Blocks is the number of blocks to run; 0 runs until ctx is cancelled
	// (Bob: until Alice closes the connection).
	Blocks int
	// FrameBits is the Cascade frame length (default 16384).
	FrameBits int
	// Cascade selects Bob's Cascade schedule (only Bob's matters: Alice
	// answers whatever he asks). The zero value is the default schedule
	// (fewest disclosed parities); LowLatency trades a few parities for
	// fewer round trips on long links (see package cascade).
	Cascade cascade.Options
	// Method is the reconciliation method (Alice's choice, sent to Bob in
	// the Decision; Bob's own setting is ignored). The zero value is
	// MethodCascade.
	Method Method
	// Epsilon is ε_sec, the secrecy parameter of every block's key (default
	// 1e-10): Lim et al.'s 21 error terms get ε_sec/21 each. The correctness
	// parameter ε_cor is the collision bound of the verification tags
	// (reported in Stats.EpsCor). There is deliberately no switch to
	// asymptotic bounds.
	Epsilon float64
	// KeyBytes is the size of each delivered key (default 32).
	KeyBytes int
	// MaxQBER aborts a block whose sampled QBER exceeds it (default 0.11,
	// where 1 − 2h(e) reaches zero).
	MaxQBER float64
	// FPlanning is the reconciliation efficiency assumed when deciding, before
	// reconciliation, whether a block can yield a key (default 1.10).
	FPlanning float64
	// Auth, when set, authenticates each block's classical transcript with
	// Wegman–Carter one-time MACs keyed from the pool (24 bytes per block), and
	// refills the pool from the block's output (the first keys of every block,
	// enough for 24 bytes, go to the pool instead of the sink). Use it when the
	// transport is not authenticated by mutual TLS; a tampered transcript
	// fails the block with ErrAuth and no keys. Both ends need identical pools.
	Auth KeyPool
	// ContinueOnAbort keeps running after an aborted block; the run then
	// returns an error wrapping qkd.ErrAborted at its end.
	ContinueOnAbort bool
	// Seed makes the simulation reproducible (tests); nil draws from crypto/rand.
	Seed *[32]byte
	// OnBlock, when set, is called by the party after each block with that
	// block's statistics.
	OnBlock func(block qkd.Stats)
	// Log receives debug messages; nil discards them.
	Log *slog.Logger
}

// DefaultConfig returns the GYS link at km kilometres with every default.
func DefaultConfig(km float64) Config {
	return Config{Physics: bb84.DefaultParams(km)}
}

func (c Config) normalized(alice bool) (Config, error) {
	if c.SourceRateHz == 0 {
		c.SourceRateHz = 40e6
	}
	if c.FrameBits == 0 {
		c.FrameBits = 16384
	}
	if c.Epsilon == 0 {
		c.Epsilon = 1e-10
	}
	if c.KeyBytes == 0 {
		c.KeyBytes = 32
	}
	if c.MaxQBER == 0 {
		c.MaxQBER = 0.11
	}
	if c.FPlanning == 0 {
		c.FPlanning = 1.10
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	bad := func(f string, a ...any) (Config, error) {
		return c, fmt.Errorf("%w: "+f, append([]any{ErrConfig}, a...)...)
	}
	switch {
	case !(c.SourceRateHz > 0 && c.SourceRateHz < 1e12):
		return bad("source rate %g Hz", c.SourceRateHz)
	case c.PulsesPerBlock != 0 && (c.PulsesPerBlock < 1e4 || c.PulsesPerBlock > 1<<44):
		return bad("%d pulses per block (want 10^4 … 1.7·10^13)", c.PulsesPerBlock)
	case c.Blocks < 0:
		return bad("%d blocks", c.Blocks)
	case c.FrameBits < 1024 || c.FrameBits > 1<<24:
		return bad("frame of %d bits (want 1024 … 2^24)", c.FrameBits)
	case !(c.Epsilon >= 1e-30 && c.Epsilon < 0.01):
		return bad("security parameter %g", c.Epsilon)
	case c.KeyBytes < 1 || c.KeyBytes > 1<<20:
		return bad("key size %d bytes", c.KeyBytes)
	case !(c.MaxQBER > 0 && c.MaxQBER < 0.5):
		return bad("QBER limit %g", c.MaxQBER)
	case !(c.FPlanning >= 1 && c.FPlanning < 3):
		return bad("planning efficiency %g", c.FPlanning)
	case c.Method > MethodLDPC:
		return bad("reconciliation %s", c.Method)
	}
	if alice {
		if err := c.Physics.Validate(); err != nil {
			return c, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		if c.PulsesPerBlock == 0 {
			// Plan for the honest link: the eavesdropper is what the
			// estimation is there to find, not a planning input.
			honest := c.Physics
			honest.Eve, honest.EveFraction = bb84.EveNone, 0
			n, err := PlanPulses(honest, c.Epsilon, c.FPlanning)
			if err != nil {
				return c, err
			}
			c.PulsesPerBlock = n
		}
		gain, _, _ := c.Physics.Expected()
		probs := c.Physics.Probabilities()
		var pdet float64
		for k := range gain {
			pdet += probs[k] * gain[k]
		}
		if exp := pdet * float64(c.PulsesPerBlock); exp > maxDetections/2 {
			return bad("%d pulses per block would give about %.3g detections at %g km (limit %d): use smaller blocks",
				c.PulsesPerBlock, exp, c.Physics.DistanceKm, maxDetections/2)
		}
	}
	return c, nil
}

// minFrameBits is the shortest trailing frame worth reconciling; shorter tails
// are discarded.
const minFrameBits = 256

// frames cuts n key bits into frame lengths.
func frames(n, frameBits int) []int {
	var fs []int
	for n >= frameBits {
		fs = append(fs, frameBits)
		n -= frameBits
	}
	if n >= minFrameBits {
		fs = append(fs, n)
	}
	return fs
}

// partition splits the sifted detections (match set) by basis: key-basis (X,
// basis bit 0) detections of every intensity are the key, test-basis (Z)
// detections are disclosed. It returns detection indices in order and the
// sifted counts per intensity and basis.
func partition(n int, match, basis []uint64, class []uint8) (test, key []int32, nX, nZ [3]int64) {
	for i := 0; i < n; i++ {
		if match[i>>6]>>(uint(i)&63)&1 == 0 {
			continue
		}
		c := class[i]
		if basis[i>>6]>>(uint(i)&63)&1 == 0 {
			nX[c]++
			key = append(key, int32(i))
		} else {
			nZ[c]++
			test = append(test, int32(i))
		}
	}
	return
}

// gather packs the bits of v at the given indices.
func gather(v []uint64, idx []int32) []uint64 {
	out := make([]uint64, (len(idx)+63)/64)
	for j, i := range idx {
		out[j>>6] |= (v[i>>6] >> (uint(i) & 63) & 1) << (uint(j) & 63)
	}
	return out
}

// bitsRange packs bits [lo, lo+n) of v.
func bitsRange(v []uint64, lo, n int) []uint64 {
	out := make([]uint64, (n+63)/64)
	for j := 0; j < n; j++ {
		i := lo + j
		out[j>>6] |= (v[i>>6] >> (uint(i) & 63) & 1) << (uint(j) & 63)
	}
	return out
}

// appendBits appends the first n bits of src to dst holding dn bits.
func appendBits(dst []uint64, dn int, src []uint64, n int) []uint64 {
	for j := 0; j < n; j++ {
		if (dn+j)&63 == 0 {
			dst = append(dst, 0)
		}
		dst[(dn+j)>>6] |= (src[j>>6] >> (uint(j) & 63) & 1) << (uint(dn+j) & 63)
	}
	return dst
}

func random32() ([32]byte, error) {
	var s [32]byte
	if _, err := rand.Read(s[:]); err != nil {
		return s, fmt.Errorf("qkd/link: drawing seed: %w", err)
	}
	return s, nil
}

// cutKeys splits the final key into keys of keyBytes bytes.
func cutKeys(final []uint64, ids []string, keyBytes int) []qkd.Key {
	buf := make([]byte, 8*len(final))
	for i, w := range final {
		binary.LittleEndian.PutUint64(buf[8*i:], w)
	}
	keys := make([]qkd.Key, len(ids))
	for i, id := range ids {
		keys[i] = qkd.Key{ID: id, Bytes: append([]byte(nil), buf[i*keyBytes:(i+1)*keyBytes]...)}
	}
	clear(buf)
	return keys
}

// recv receives the next message and checks its type; an Abort from the peer
// becomes an error wrapping ErrPeer.
func recv[T Message](ctx context.Context, tr Transport) (T, error) {
	var zero T
	m, err := tr.Recv(ctx)
	if err != nil {
		return zero, err
	}
	if a, ok := m.(*Abort); ok {
		return zero, fmt.Errorf("%w: %s", ErrPeer, a.Reason)
	}
	t, ok := m.(T)
	if !ok {
		return zero, fmt.Errorf("%w: got %T, want %T", ErrProtocol, m, zero)
	}
	return t, nil
}

// fail sends an Abort to the peer (best effort, bounded in time: the peer may
// be failing too and not reading) and returns err.
func fail(ctx context.Context, tr Transport, err error) error {
	if !errors.Is(err, ErrPeer) && ctx.Err() == nil {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = tr.Send(sctx, &Abort{Reason: err.Error()})
		cancel()
	}
	return err
}

func blockErr(blk uint64, err error) error {
	return fmt.Errorf("qkd/link: block %d: %w", blk, err)
}

func abortedErr(blk uint64, reason string) error {
	return fmt.Errorf("qkd/link: block %d: %s: %w", blk, reason, qkd.ErrAborted)
}

// RunAlice runs Alice's side of a session over tr: she simulates the quantum
// transmission and leads every step. It returns the session statistics; the
// error wraps qkd.ErrAborted when a block aborted, ErrPeer when Bob aborted,
// and ctx.Err() when ctx was cancelled.
func RunAlice(ctx context.Context, tr Transport, cfg Config, sink qkd.Sink) (qkd.Stats, error) {
	var total qkd.Stats
	cfg, err := cfg.normalized(true)
	if err != nil {
		return total, err
	}
	rng := bb84.NewRand(cfg.Seed)
	var lastAbort error
	for blk := uint64(0); cfg.Blocks == 0 || blk < uint64(cfg.Blocks); blk++ {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		st, err := aliceBlock(ctx, tr, &cfg, blk, rng, sink)
		total.Add(st, cfg.SourceRateHz)
		if cfg.OnBlock != nil {
			cfg.OnBlock(st)
		}
		if err != nil {
			return total, fail(ctx, tr, blockErr(blk, err))
		}
		if st.Aborted {
			cfg.Log.Warn("qkd block aborted", "block", blk, "cause", string(st.AbortCause), "reason", st.AbortReason,
				"pulses", st.Pulses, "sampled_qber", st.SampledQBER)
			lastAbort = abortedErr(blk, st.AbortReason)
			if !cfg.ContinueOnAbort {
				return total, lastAbort
			}
		}
	}
	return total, lastAbort
}

func aliceBlock(ctx context.Context, tr Transport, cfg *Config, blk uint64, rng *mrand.Rand, sink qkd.Sink) (qkd.Stats, error) {
	st := qkd.Stats{Blocks: 1, Pulses: cfg.PulsesPerBlock}
	sim, err := bb84.Simulate(cfg.Physics, cfg.PulsesPerBlock, rng)
	if err != nil {
		return st, err
	}
	a := &sim.Alice
	n := a.N
	st.Detected = int64(n)
	if err := tr.Send(ctx, &Quantum{Block: blk, Pulses: uint64(sim.Pulses), N: uint64(n),
		Slots: sim.Bob.Slots, Basis: sim.Bob.Basis, Value: sim.Bob.Value}); err != nil {
		return st, err
	}
	sim.Bob = bb84.Record{} // Alice must not use Bob's detector output
	var tx transcript
	var padA, padB uint64
	if cfg.Auth != nil {
		if padA, padB, err = startAuth(&tx, cfg.Auth); err != nil {
			return st, err
		}
		tr = &sideTransport{Transport: tr, t: &tx, sendDir: dirAliceToBob, recvDir: dirBobToAlice}
	}

	// Sifting.
	det, err := recv[*Detections](ctx, tr)
	if err != nil {
		return st, err
	}
	if det.Block != blk || det.N != uint64(n) {
		return st, fmt.Errorf("%w: detection report for block %d with %d events, want block %d with %d", ErrProtocol, det.Block, det.N, blk, n)
	}
	for i, s := range det.Slots {
		if s != a.Slots[i] {
			return st, fmt.Errorf("%w: Bob reports a detection in slot %d, which Alice has no record of", ErrProtocol, s)
		}
	}
	match := make([]uint64, bb84.Words(n))
	for w := range match {
		match[w] = ^(a.Basis[w] ^ det.Basis[w])
	}
	sift := &Sift{Block: blk, N: uint64(n), Basis: a.Basis, Class: a.Class}
	for k := range sift.PulsesPerClass {
		sift.PulsesPerClass[k] = uint64(sim.PulsesPerClass[k])
	}
	if err := tr.Send(ctx, sift); err != nil {
		return st, err
	}

	// Parameter estimation: every sifted Z detection is disclosed.
	test, keyIdx, nX, nZ := partition(n, match, a.Basis, a.Class)
	for k := 0; k < 3; k++ {
		st.Sifted += nX[k] + nZ[k]
	}
	st.SiftedSignal = nX[decoy.Signal] + nZ[decoy.Signal]
	st.SampledBits = int64(len(test))
	if err := tr.Send(ctx, &Sample{Block: blk, N: uint64(len(test)), Bits: gather(a.Value, test)}); err != nil {
		return st, err
	}
	cnt, err := recv[*Counts](ctx, tr)
	if err != nil {
		return st, err
	}
	in := decoy.FiniteInput{Intensities: cfg.Physics.Intensities(), Probabilities: cfg.Physics.Probabilities(), EpsSec: cfg.Epsilon}
	var errs, compared int64
	for k := 0; k < 3; k++ {
		if cnt.Compared[k] != uint64(nZ[k]) {
			return st, fmt.Errorf("%w: Bob compared %d test bits of class %d, Alice disclosed %d", ErrProtocol, cnt.Compared[k], k, nZ[k])
		}
		in.NX[k], in.NZ[k], in.MZ[k] = float64(nX[k]), float64(nZ[k]), float64(cnt.Errors[k])
		errs += int64(cnt.Errors[k])
		compared += nZ[k]
	}
	if compared > 0 {
		st.SampledQBER = float64(errs) / float64(compared)
	}
	nKey := len(keyIdx)
	fb, cause, reason := aliceEstimate(cfg, in, st.SampledQBER, compared)
	st.SX0Lower, st.SX1Lower, st.PhiUpper = fb.SX0, fb.SX1, fb.PhiX
	if cause == qkd.CauseNone {
		leak := cfg.FPlanning*decoy.H(st.SampledQBER)*float64(nKey) + float64(64*len(frames(nKey, cfg.FrameBits)))
		if fb.KeyLength(leak) <= 0 {
			cause = qkd.CauseFiniteSize
			reason = fmt.Sprintf("finite-key length not positive for %d key bits (%d pulses): s_X,0 ≥ %.0f, s_X,1 ≥ %.0f, φ_X ≤ %.4f, planned leakage %.0f bits, 6·log2(21/ε_sec) = %.0f",
				nKey, st.Pulses, fb.SX0, fb.SX1, fb.PhiX, leak, decoy.SecurityCost(cfg.Epsilon))
		}
	}
	dec := &Decision{Block: blk, QBER: math.Min(st.SampledQBER, 0.45), FrameBits: uint64(cfg.FrameBits), Method: cfg.Method}
	if cause != qkd.CauseNone {
		dec.Abort, dec.Reason = true, cause.Reason(reason)
		abortStats(&st, cause, dec.Reason)
		return st, tr.Send(ctx, dec)
	}
	if dec.CascadeSeed, err = random32(); err != nil {
		return st, err
	}
	if err := tr.Send(ctx, dec); err != nil {
		return st, err
	}

	// Reconciliation: answer Bob's parity requests frame by frame.
	key := gather(a.Value, keyIdx)
	fs := frames(nKey, cfg.FrameBits)
	plans, err := makePlans(fs, dec, cascade.Options{})
	if err != nil {
		return st, err
	}
	frameKeys := make([][]uint64, len(fs))
	off := 0
	for f, l := range fs {
		frameKeys[f] = bitsRange(key, off, l)
		off += l
	}
	st.DiscardedBits = int64(nKey - off)
	responders := make([]responder, len(fs))
	var corrected uint64
	for done := false; !done; {
		m, err := tr.Recv(ctx)
		if err != nil {
			return st, err
		}
		switch m := m.(type) {
		case *ParityRequest:
			rep := &ParityReply{Frames: make([]FrameReply, len(m.Frames))}
			for k, fr := range m.Frames {
				f := int(fr.Frame)
				if f >= len(fs) {
					return st, fmt.Errorf("%w: parity request for frame %d of %d", ErrProtocol, f, len(fs))
				}
				if responders[f] == nil {
					if responders[f], err = plans[f].responder(frameKeys[f]); err != nil {
						return st, err
					}
				}
				// Alice counts what she discloses herself: each Cascade
				// parity is one bit; LDPC charges m − p for the syndrome and
				// one bit per revealed punctured bit (package ldpc).
				before := responders[f].disclosed()
				bits, err := responders[f].Answer(fr.Ranges)
				if err != nil {
					return st, err
				}
				st.DisclosedBits += responders[f].disclosed() - before
				if st.DisclosedBits > int64(off) {
					// More parities than key bits: nothing could remain secret.
					return st, fmt.Errorf("%w: Bob asked for %d parities of %d key bits", ErrProtocol, st.DisclosedBits, off)
				}
				rep.Frames[k] = FrameReply{Frame: fr.Frame, N: uint32(len(fr.Ranges)), Bits: bits}
			}
			st.RoundTrips++
			if err := tr.Send(ctx, rep); err != nil {
				return st, err
			}
		case *Reconciled:
			if m.Block != blk || m.Corrected > uint64(off) {
				return st, fmt.Errorf("%w: reconciliation end for block %d with %d corrections", ErrProtocol, m.Block, m.Corrected)
			}
			corrected = m.Corrected
			done = true
		case *Abort:
			return st, fmt.Errorf("%w: %s", ErrPeer, m.Reason)
		default:
			return st, fmt.Errorf("%w: got %T during reconciliation", ErrProtocol, m)
		}
	}
	parityBits := st.DisclosedBits
	st.Frames = len(fs)

	// Verification.
	point, err := privacy.NewTagPoint()
	if err != nil {
		return st, err
	}
	ver := &Verify{Block: blk, Point: uint64(point), Tags: make([]uint64, len(fs))}
	for f := range fs {
		if ver.Tags[f], err = privacy.Tag(frameKeys[f], fs[f], point); err != nil {
			return st, err
		}
	}
	st.DisclosedBits += 64 * int64(len(fs))
	if err := tr.Send(ctx, ver); err != nil {
		return st, err
	}
	vr, err := recv[*VerifyResult](ctx, tr)
	if err != nil {
		return st, err
	}
	if vr.Block != blk || vr.Frames != uint64(len(fs)) {
		return st, fmt.Errorf("%w: verification result for block %d with %d frames", ErrProtocol, vr.Block, vr.Frames)
	}
	okKey, nOK := joinOK(frameKeys, fs, vr.OK, &st)
	st.ReconciledBits = int64(nOK)
	if off > 0 {
		st.QBER = float64(corrected) / float64(off)
	}
	if h := decoy.H(st.QBER); off > 0 && h > 0 {
		st.F = float64(parityBits) / (float64(off) * h)
	}

	// Privacy amplification. Bits of frames that failed verification and the
	// unreconciled tail are charged as disclosed: the bound counts vacuum and
	// single-photon events among all nKey key bits, and a subset of n bits
	// loses at most the removed bits of min-entropy.
	amp := &Amplify{Block: blk}
	charged := st.DisclosedBits + int64(nKey-nOK)
	ell := fb.KeyLength(float64(charged))
	nKeys := ell / int64(8*cfg.KeyBytes)
	if nKeys <= 0 {
		amp.Abort = true
		amp.Reason = qkd.CauseLeakage.Reason(fmt.Sprintf("finite-key length %d bits after %d disclosed and %d discarded bits of %d (no whole %d-byte key)",
			ell, st.DisclosedBits, nKey-nOK, nKey, cfg.KeyBytes))
		abortStats(&st, qkd.CauseLeakage, amp.Reason)
		return st, tr.Send(ctx, amp)
	}
	amp.Bits = uint64(nKeys) * uint64(8*cfg.KeyBytes)
	if amp.Seed, err = privacy.NewSeed(nOK, int(amp.Bits)); err != nil {
		return st, err
	}
	st.EpsSec = cfg.Epsilon
	st.EpsCor = epsCor(fs)
	amp.IDs = make([]string, nKeys)
	for i := range amp.IDs {
		amp.IDs[i] = qkd.NewKeyID()
	}
	if err := tr.Send(ctx, amp); err != nil {
		return st, err
	}
	keys, err := amplify(okKey, nOK, amp, cfg.KeyBytes)
	if err != nil {
		return st, err
	}
	st.FinalBits = int64(amp.Bits)
	st.DeliveredKeys = int64(len(keys))
	st.Add(qkd.Stats{}, cfg.SourceRateHz) // recompute ratios
	if cfg.Auth != nil {
		if err := tr.Send(ctx, &Auth{Block: blk, Tag: tx.tag(padA)}); err != nil {
			return st, err
		}
	}
	bd, err := recv[*BlockDone](ctx, tr)
	if err != nil {
		return st, err
	}
	if cfg.Auth != nil {
		if !tagsEqual(bd.Tag, tx.tag(padB)) {
			st.DeliveredKeys = 0
			return st, fmt.Errorf("%w: Bob's tag does not match", ErrAuth)
		}
		keys = reserveAuthKeys(keys, cfg.Auth)
		st.DeliveredKeys = int64(len(keys))
	}
	if len(keys) > 0 && sink != nil {
		if err := sink(ctx, keys); err != nil {
			return st, fmt.Errorf("qkd/link: Alice's key sink: %w", err)
		}
	}
	return st, nil
}

// aliceEstimate runs the finite-key analysis of Lim et al. (2014) on the
// block's counts. It returns the bound and, when the block must stop, the
// cause and detail.
func aliceEstimate(cfg *Config, in decoy.FiniteInput, qber float64, compared int64) (decoy.FiniteBound, qkd.AbortCause, string) {
	if compared == 0 {
		return decoy.FiniteBound{}, qkd.CauseNoTestBits, "no test-basis detections to estimate the errors (block far too short)"
	}
	if qber > cfg.MaxQBER {
		return decoy.FiniteBound{}, qkd.CauseQBER, fmt.Sprintf("QBER %.2f%% above the %.1f%% limit", 100*qber, 100*cfg.MaxQBER)
	}
	fb, err := decoy.Finite(in)
	if err != nil {
		return fb, qkd.CauseDecoy, fmt.Sprintf("parameter estimation: %v", err)
	}
	if fb.SX1 < 1 || fb.SZ1 < 1 {
		return fb, qkd.CauseDecoy, fmt.Sprintf("decoy bounds leave no single-photon detections (s_X,1 ≥ %.3g, s_Z,1 ≥ %.3g; photon-number-splitting attack, too much loss, or too few pulses)", fb.SX1, fb.SZ1)
	}
	if fb.PhiX >= 0.5 {
		return fb, qkd.CausePhaseError, fmt.Sprintf("single-photon phase error bound φ_X reaches 1/2 (v_Z,1 ≤ %.3g of s_Z,1 ≥ %.3g)", fb.VZ1, fb.SZ1)
	}
	return fb, qkd.CauseNone, ""
}

// abortStats marks st as an aborted block.
func abortStats(st *qkd.Stats, cause qkd.AbortCause, reason string) {
	st.Aborted, st.AbortReason, st.AbortedBlocks, st.AbortCause = true, reason, 1, cause
	st.Aborts = map[qkd.AbortCause]int{cause: 1}
}

// epsCor is the correctness parameter of a block: the sum over its frames of
// the verification tag's collision probability.
func epsCor(fs []int) float64 {
	var e float64
	for _, l := range fs {
		e += privacy.TagCollision(l)
	}
	return e
}

// framePlan is the reconciliation plan of one frame: Cascade or LDPC.
type framePlan struct {
	cas *cascade.Plan
	lp  *ldpc.Plan
}

// responder answers Bob's requests for one frame and counts the bits it
// disclosed.
type responder interface {
	Answer(req []cascade.Range) ([]uint64, error)
	disclosed() int64
}

type cascadeResponder struct{ *cascade.Alice }

func (r cascadeResponder) disclosed() int64 { return r.Disclosed }

type ldpcResponder struct{ *ldpc.Alice }

func (r ldpcResponder) disclosed() int64 { return r.Disclosed }

// responder returns Alice's responder for key; an LDPC responder's punctured
// bits come from crypto/rand (the leakage count needs them secret and
// uniform).
func (p framePlan) responder(key []uint64) (responder, error) {
	if p.lp == nil {
		a, err := cascade.NewAlice(p.cas, key)
		return cascadeResponder{a}, err
	}
	pad := make([]byte, 8*((p.lp.Punctured()+63)/64))
	if _, err := rand.Read(pad); err != nil {
		return nil, fmt.Errorf("qkd/link: drawing punctured bits: %w", err)
	}
	words := make([]uint64, len(pad)/8)
	for i := range words {
		words[i] = binary.LittleEndian.Uint64(pad[8*i:])
	}
	a, err := ldpc.NewAlice(p.lp, key, words)
	return ldpcResponder{a}, err
}

// reconciler is Bob's side of one frame.
type reconciler interface {
	Reconcile(ctx context.Context, key []uint64, ask cascade.AskFunc) (cascade.Result, error)
}

type ldpcReconciler struct{ b *ldpc.Bob }

func (r ldpcReconciler) Reconcile(ctx context.Context, key []uint64, ask cascade.AskFunc) (cascade.Result, error) {
	res, err := r.b.Reconcile(ctx, key, ask)
	// A failed LDPC frame keeps Bob's key: its verification tag differs and
	// the frame is discarded (and charged) like any unverified frame.
	return cascade.Result{Disclosed: res.Disclosed, RoundTrips: res.RoundTrips, Corrected: res.Corrected}, err
}

func (p framePlan) reconciler() reconciler {
	if p.lp == nil {
		return cascade.NewBob(p.cas)
	}
	return ldpcReconciler{ldpc.NewBob(p.lp)}
}

func makePlans(fs []int, dec *Decision, opt cascade.Options) ([]framePlan, error) {
	plans := make([]framePlan, len(fs))
	byLen := map[int]framePlan{}
	for f, l := range fs {
		p, ok := byLen[l]
		if !ok {
			var err error
			switch dec.Method {
			case MethodCascade:
				p.cas, err = cascade.NewPlanOptions(l, dec.QBER, dec.CascadeSeed, opt)
			case MethodLDPC:
				p.lp, err = ldpc.NewPlan(l, dec.QBER, dec.CascadeSeed, ldpc.Options{})
			default:
				err = fmt.Errorf("%w: reconciliation %s", ErrProtocol, dec.Method)
			}
			if err != nil {
				return nil, err
			}
			byLen[l] = p
		}
		plans[f] = p
	}
	return plans, nil
}

// joinOK concatenates the frames marked in ok.
func joinOK(frameKeys [][]uint64, fs []int, ok []uint64, st *qkd.Stats) ([]uint64, int) {
	var out []uint64
	n := 0
	for f, l := range fs {
		if ok[f>>6]>>(uint(f)&63)&1 == 1 {
			out = appendBits(out, n, frameKeys[f], l)
			n += l
		} else {
			st.ResidualFrames++
			st.DiscardedBits += int64(l)
		}
	}
	return out, n
}

func amplify(key []uint64, n int, amp *Amplify, keyBytes int) ([]qkd.Key, error) {
	m := int(amp.Bits)
	if m > n || uint64(len(amp.IDs))*uint64(8*keyBytes) != amp.Bits {
		return nil, fmt.Errorf("%w: %d output bits for %d keys of %d bytes from %d bits", ErrProtocol, amp.Bits, len(amp.IDs), keyBytes, n)
	}
	if m == 0 {
		return nil, nil
	}
	if uint64(len(amp.Seed)) != (uint64(privacy.SeedBits(n, m))+63)/64 {
		return nil, fmt.Errorf("%w: Toeplitz seed of %d words for %d×%d (want %d bits)", ErrProtocol, len(amp.Seed), m, n, privacy.SeedBits(n, m))
	}
	final, err := privacy.Hash(key, n, amp.Seed, m)
	if err != nil {
		return nil, err
	}
	keys := cutKeys(final, amp.IDs, keyBytes)
	clear(final)
	return keys, nil
}

// RunBob runs Bob's side of a session over tr. It stops after cfg.Blocks
// blocks, or when Alice closes the transport between blocks (then the error is
// nil), or when ctx is cancelled. Bob's Physics configuration is not used.
func RunBob(ctx context.Context, tr Transport, cfg Config, sink qkd.Sink) (qkd.Stats, error) {
	var total qkd.Stats
	cfg, err := cfg.normalized(false)
	if err != nil {
		return total, err
	}
	var lastAbort error
	for blk := uint64(0); cfg.Blocks == 0 || blk < uint64(cfg.Blocks); blk++ {
		q, err := recv[*Quantum](ctx, tr)
		if err != nil {
			if errors.Is(err, ErrClosed) || errors.Is(err, io.EOF) {
				return total, lastAbort
			}
			if ctx.Err() != nil {
				return total, ctx.Err()
			}
			return total, fail(ctx, tr, blockErr(blk, err))
		}
		st, err := bobBlock(ctx, tr, &cfg, blk, q, sink)
		total.Add(st, cfg.SourceRateHz)
		if cfg.OnBlock != nil {
			cfg.OnBlock(st)
		}
		if err != nil {
			return total, fail(ctx, tr, blockErr(blk, err))
		}
		if st.Aborted {
			cfg.Log.Warn("qkd block aborted (Bob)", "block", blk, "cause", string(st.AbortCause), "reason", st.AbortReason)
			lastAbort = abortedErr(blk, st.AbortReason)
			if !cfg.ContinueOnAbort {
				return total, lastAbort
			}
		}
	}
	return total, lastAbort
}

func bobBlock(ctx context.Context, tr Transport, cfg *Config, blk uint64, q *Quantum, sink qkd.Sink) (qkd.Stats, error) {
	st := qkd.Stats{Blocks: 1, Pulses: int64(q.Pulses), Detected: int64(q.N)}
	if q.Block != blk {
		return st, fmt.Errorf("%w: quantum block %d, want %d", ErrProtocol, q.Block, blk)
	}
	var tx transcript
	var padA, padB uint64
	if cfg.Auth != nil {
		var err error
		if padA, padB, err = startAuth(&tx, cfg.Auth); err != nil {
			return st, err
		}
		tr = &sideTransport{Transport: tr, t: &tx, sendDir: dirBobToAlice, recvDir: dirAliceToBob}
	}
	n := int(q.N)
	if err := tr.Send(ctx, &Detections{Block: blk, N: q.N, Slots: q.Slots, Basis: q.Basis}); err != nil {
		return st, err
	}
	sift, err := recv[*Sift](ctx, tr)
	if err != nil {
		return st, err
	}
	if sift.Block != blk || sift.N != q.N {
		return st, fmt.Errorf("%w: sifting for block %d with %d events", ErrProtocol, sift.Block, sift.N)
	}
	var pulses uint64
	for _, p := range sift.PulsesPerClass {
		pulses += p
	}
	if pulses != q.Pulses {
		return st, fmt.Errorf("%w: %d pulses per class sum to %d, want %d", ErrProtocol, pulses, pulses, q.Pulses)
	}
	match := make([]uint64, bb84.Words(n))
	for w := range match {
		match[w] = ^(q.Basis[w] ^ sift.Basis[w])
	}
	smp, err := recv[*Sample](ctx, tr)
	if err != nil {
		return st, err
	}
	test, keyIdx, nX, nZ := partition(n, match, sift.Basis, sift.Class)
	if smp.Block != blk || smp.N != uint64(len(test)) {
		return st, fmt.Errorf("%w: %d test bits for block %d, want %d for block %d", ErrProtocol, smp.N, smp.Block, len(test), blk)
	}
	for k := 0; k < 3; k++ {
		st.Sifted += nX[k] + nZ[k]
	}
	st.SiftedSignal = nX[decoy.Signal] + nZ[decoy.Signal]
	st.SampledBits = int64(len(test))
	cnt := &Counts{Block: blk}
	bobTest := gather(q.Value, test)
	var errs uint64
	for j, i := range test {
		c := sift.Class[i]
		cnt.Compared[c]++
		e := (bobTest[j>>6] ^ smp.Bits[j>>6]) >> (uint(j) & 63) & 1
		cnt.Errors[c] += e
		errs += e
	}
	if len(test) > 0 {
		st.SampledQBER = float64(errs) / float64(len(test))
	}
	if err := tr.Send(ctx, cnt); err != nil {
		return st, err
	}
	dec, err := recv[*Decision](ctx, tr)
	if err != nil {
		return st, err
	}
	if dec.Block != blk {
		return st, fmt.Errorf("%w: decision for block %d", ErrProtocol, dec.Block)
	}
	if dec.Abort {
		abortStats(&st, qkd.ParseAbortCause(dec.Reason), dec.Reason)
		return st, nil
	}
	if dec.FrameBits < 1024 || dec.FrameBits > 1<<24 {
		return st, fmt.Errorf("%w: frame of %d bits", ErrProtocol, dec.FrameBits)
	}

	// Reconciliation.
	nKey := len(keyIdx)
	key := gather(q.Value, keyIdx)
	fs := frames(nKey, int(dec.FrameBits))
	plans, err := makePlans(fs, dec, cfg.Cascade)
	if err != nil {
		return st, err
	}
	frameKeys := make([][]uint64, len(fs))
	off := 0
	for f, l := range fs {
		frameKeys[f] = bitsRange(key, off, l)
		off += l
	}
	rec, err := reconcileFrames(ctx, tr, plans, frameKeys)
	if err != nil {
		return st, err
	}
	corrected := uint64(rec.Corrected)
	st.DisclosedBits += rec.Disclosed
	st.RoundTrips += rec.RoundTrips
	st.DiscardedBits = int64(nKey - off)
	st.Frames = len(fs)
	parityBits := st.DisclosedBits
	if err := tr.Send(ctx, &Reconciled{Block: blk, Corrected: corrected}); err != nil {
		return st, err
	}

	// Verification.
	ver, err := recv[*Verify](ctx, tr)
	if err != nil {
		return st, err
	}
	if ver.Block != blk || len(ver.Tags) != len(fs) {
		return st, fmt.Errorf("%w: %d verification tags for %d frames", ErrProtocol, len(ver.Tags), len(fs))
	}
	st.DisclosedBits += 64 * int64(len(fs))
	vr := &VerifyResult{Block: blk, Frames: uint64(len(fs)), OK: make([]uint64, (len(fs)+63)/64)}
	var mine, theirs [8]byte
	for f := range fs {
		t, err := privacy.Tag(frameKeys[f], fs[f], privacy.TagPoint(ver.Point))
		if err != nil {
			return st, err
		}
		binary.LittleEndian.PutUint64(mine[:], t)
		binary.LittleEndian.PutUint64(theirs[:], ver.Tags[f])
		if subtle.ConstantTimeCompare(mine[:], theirs[:]) == 1 {
			vr.OK[f>>6] |= 1 << (uint(f) & 63)
		}
	}
	if err := tr.Send(ctx, vr); err != nil {
		return st, err
	}
	okKey, nOK := joinOK(frameKeys, fs, vr.OK, &st)
	st.ReconciledBits = int64(nOK)
	if off > 0 {
		st.QBER = float64(corrected) / float64(off)
	}
	if h := decoy.H(st.QBER); off > 0 && h > 0 {
		st.F = float64(parityBits) / (float64(off) * h)
	}

	// Privacy amplification.
	amp, err := recv[*Amplify](ctx, tr)
	if err != nil {
		return st, err
	}
	if amp.Block != blk {
		return st, fmt.Errorf("%w: amplification for block %d", ErrProtocol, amp.Block)
	}
	if amp.Abort {
		abortStats(&st, qkd.ParseAbortCause(amp.Reason), amp.Reason)
		return st, nil
	}
	keys, err := amplify(okKey, nOK, amp, cfg.KeyBytes)
	if err != nil {
		return st, err
	}
	st.FinalBits = int64(amp.Bits)
	st.Add(qkd.Stats{}, cfg.SourceRateHz)
	done := &BlockDone{Block: blk}
	if cfg.Auth != nil {
		a, err := recv[*Auth](ctx, tr)
		if err != nil {
			return st, err
		}
		if a.Block != blk || !tagsEqual(a.Tag, tx.tag(padA)) {
			return st, fmt.Errorf("%w: Alice's tag does not match", ErrAuth)
		}
		done.Tag = tx.tag(padB)
		keys = reserveAuthKeys(keys, cfg.Auth)
	}
	st.DeliveredKeys = int64(len(keys))
	if len(keys) > 0 && sink != nil {
		if err := sink(ctx, keys); err != nil {
			return st, fmt.Errorf("qkd/link: Bob's key sink: %w", err)
		}
	}
	return st, tr.Send(ctx, done)
}

// Run runs Alice and Bob in-process over a Pipe and returns Alice's statistics
// (Bob's errors are joined to Alice's). The error wraps qkd.ErrAborted when a
// block aborted.
func Run(ctx context.Context, cfg Config, aliceSink, bobSink qkd.Sink) (qkd.Stats, error) {
	if cfg.Auth != nil {
		return qkd.Stats{}, fmt.Errorf("%w: Run shares one Config between both parties; give each its own Auth pool with RunAlice and RunBob", ErrConfig)
	}
	ta, tb := Pipe()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bobCfg := cfg
	bobCfg.OnBlock = nil // reported once, by Alice
	type res struct {
		st  qkd.Stats
		err error
	}
	ch := make(chan res, 1)
	go func() {
		st, err := RunBob(ctx, tb, bobCfg, bobSink)
		ch <- res{st, err}
	}()
	st, err := RunAlice(ctx, ta, cfg, aliceSink)
	ta.Close()
	b := <-ch
	if err == nil && b.err != nil {
		err = b.err
	} else if err != nil && b.err != nil && !errors.Is(err, qkd.ErrAborted) && !errors.Is(b.err, ErrPeer) {
		err = errors.Join(err, b.err)
	}
	return st, err
}

// maxParallelFrames bounds the frames Bob reconciles at once (memory).
const maxParallelFrames = 64

type askMsg struct {
	frame uint32
	req   []cascade.Range
	reply chan askRes
}

type askRes struct {
	bits []uint64
	err  error
}

// reconcileFrames runs Cascade on every frame, up to maxParallelFrames at a
// time, each in its own goroutine. Their parity requests are gathered: when
// every running frame waits for Alice, one ParityRequest carries them all, so
// a block costs about as many round trips as its slowest frame.
func reconcileFrames(ctx context.Context, tr Transport, plans []framePlan, frameKeys [][]uint64) (cascade.Result, error) {
	var total cascade.Result
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reqCh := make(chan askMsg)
	type done struct {
		res cascade.Result
		err error
		rb  reconciler
		p   framePlan
	}
	doneCh := make(chan done)
	free := map[framePlan][]reconciler{}
	next, running := 0, 0
	start := func() {
		f := next
		next++
		running++
		p := plans[f]
		var rb reconciler
		if l := free[p]; len(l) > 0 {
			rb, free[p] = l[len(l)-1], l[:len(l)-1]
		} else {
			rb = p.reconciler()
		}
		go func() {
			res, err := rb.Reconcile(ctx, frameKeys[f], func(ctx context.Context, req []cascade.Range) ([]uint64, error) {
				m := askMsg{frame: uint32(f), req: req, reply: make(chan askRes, 1)}
				select {
				case reqCh <- m:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				select {
				case r := <-m.reply:
					return r.bits, r.err
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			})
			doneCh <- done{res, err, rb, p}
		}()
	}
	var firstErr error
	var pending []askMsg
	for next < len(plans) && running < maxParallelFrames {
		start()
	}
	for running > 0 {
		select {
		case m := <-reqCh:
			pending = append(pending, m)
		case d := <-doneCh:
			running--
			if d.err != nil && firstErr == nil {
				firstErr = d.err
				cancel()
			}
			total.Corrected += d.res.Corrected
			total.Disclosed += d.res.Disclosed
			total.RoundTrips = max(total.RoundTrips, d.res.RoundTrips)
			if d.rb != nil {
				free[d.p] = append(free[d.p], d.rb)
			}
			if firstErr == nil && next < len(plans) {
				start()
			}
		}
		if firstErr == nil && running > 0 && len(pending) == running {
			req := &ParityRequest{Frames: make([]FrameRequest, len(pending))}
			for k, m := range pending {
				req.Frames[k] = FrameRequest{Frame: m.frame, Ranges: m.req}
			}
			rep, err := exchange(ctx, tr, req)
			for k, m := range pending {
				if err != nil {
					m.reply <- askRes{err: err}
				} else {
					m.reply <- askRes{bits: rep.Frames[k].Bits}
				}
			}
			pending = pending[:0]
			if err != nil && firstErr == nil {
				firstErr = err
				cancel()
			}
		}
	}
	return total, firstErr
}

// exchange sends one batched parity request and checks the reply matches it.
func exchange(ctx context.Context, tr Transport, req *ParityRequest) (*ParityReply, error) {
	if err := tr.Send(ctx, req); err != nil {
		return nil, err
	}
	rep, err := recv[*ParityReply](ctx, tr)
	if err != nil {
		return nil, err
	}
	if len(rep.Frames) != len(req.Frames) {
		return nil, fmt.Errorf("%w: parities for %d frames, asked %d", ErrProtocol, len(rep.Frames), len(req.Frames))
	}
	for k, fr := range rep.Frames {
		if fr.Frame != req.Frames[k].Frame || int(fr.N) != len(req.Frames[k].Ranges) {
			return nil, fmt.Errorf("%w: %d parities for frame %d, asked %d for frame %d", ErrProtocol, fr.N, fr.Frame, len(req.Frames[k].Ranges), req.Frames[k].Frame)
		}
	}
	return rep, nil
}

// reserveAuthKeys moves the first keys of a block, enough for one block's
// authentication key, into the pool and returns the rest.
func reserveAuthKeys(keys []qkd.Key, pool KeyPool) []qkd.Key {
	got := 0
	i := 0
	for ; i < len(keys) && got < authKeyBytes; i++ {
		pool.Refill(keys[i].Bytes)
		got += len(keys[i].Bytes)
		clear(keys[i].Bytes)
	}
	return keys[i:]
}
