// Package qkd defines what a quantum key distribution link delivers to the rest of
// qshield: keys with identifiers agreed by both ends, a sink that consumes them
// block by block, and the statistics of a session.
//
// The link itself is built from small packages, one job each:
//
//   - qkd/bb84: the decoy-state BB84 link simulator (weak coherent pulses, fibre,
//     detectors, passive basis choice at Bob, optional eavesdropper), simulated at
//     the level of detection events so that billions of pulses cost only as much
//     as their detections;
//   - qkd/decoy: the finite-key length of Lim, Curty, Walenta, Xu and Zbinden
//     (2014), the only bound a delivered key is sized by, and, for reference
//     curves only, the asymptotic GLLP / Lo–Ma–Chen rate;
//   - qkd/cascade: Cascade information reconciliation, bit-packed, as two parties;
//   - qkd/privacy: Toeplitz privacy amplification in O(n log n) time and the
//     universal-hash verification of reconciled keys;
//   - qkd/link: the two-party session (Alice and Bob exchanging typed messages over
//     an authenticated transport: an in-memory pipe, or TCP with mutual TLS).
package qkd

import (
	"context"
	"errors"
	"strings"
)

// ErrAborted is wrapped by every error reporting that a block was aborted because
// the estimated secret fraction was not positive (too much noise, or an
// eavesdropper). Callers use errors.Is(err, qkd.ErrAborted) to report "link under
// attack" rather than a software failure.
var ErrAborted = errors.New("qkd: block aborted: no secret key can be extracted")

// AbortCause says why a block delivered no key, as a short stable value (a
// metric label); Stats.AbortReason has the human-readable detail.
type AbortCause string

// Abort causes.
const (
	CauseNone AbortCause = ""
	// CauseNoTestBits: the block had no test-basis detections (far too short).
	CauseNoTestBits AbortCause = "no-test-bits"
	// CauseQBER: the estimated error rate is above the configured limit.
	CauseQBER AbortCause = "qber"
	// CauseDecoy: the decoy analysis leaves no single-photon detections (a
	// photon-number-splitting attack, too much loss, or too few pulses).
	CauseDecoy AbortCause = "decoy-bound"
	// CausePhaseError: the bound on the single-photon phase error rate
	// reached 1/2.
	CausePhaseError AbortCause = "phase-error"
	// CauseFiniteSize: the bounds are positive but the finite-key length is
	// not, once the planned leakage and the ε terms are paid (block too short).
	CauseFiniteSize AbortCause = "finite-size"
	// CauseLeakage: after reconciliation and verification the bits actually
	// disclosed (or discarded) leave no key.
	CauseLeakage AbortCause = "leakage"
	// CauseOther: any other reason (e.g. from an older peer).
	CauseOther AbortCause = "other"
)

var causes = []AbortCause{CauseNoTestBits, CauseQBER, CauseDecoy, CausePhaseError, CauseFiniteSize, CauseLeakage}

// Reason formats an abort reason as "cause: detail", the form the link sends
// to the peer so that both ends report the same cause.
func (c AbortCause) Reason(detail string) string { return string(c) + ": " + detail }

// ParseAbortCause returns the cause of a reason made by AbortCause.Reason, or
// CauseOther.
func ParseAbortCause(reason string) AbortCause {
	for _, c := range causes {
		if strings.HasPrefix(reason, string(c)+": ") {
			return c
		}
	}
	return CauseOther
}

// Key is one delivered secret key. ID is a UUID v4 in text form chosen by Alice
// and sent to Bob in the protocol, so that both ends file the same bytes under
// the same identifier.
type Key struct {
	ID    string
	Bytes []byte
}

// Sink receives the keys of one finished block, in order. Each party calls its
// sink with the same IDs and bytes. An error from a sink stops the session.
type Sink func(ctx context.Context, keys []Key) error

// Stats describes a session (summed over its blocks) or a single block.
type Stats struct {
	Blocks         int   // blocks attempted
	AbortedBlocks  int   // blocks that delivered no key because they aborted
	Pulses         int64 // pulses sent by Alice
	Detected       int64 // detection events at Bob
	Sifted         int64 // detections kept after basis sifting (all intensities)
	SiftedSignal   int64 // sifted detections of signal-intensity pulses
	SampledBits    int64 // signal bits disclosed to estimate the QBER
	ReconciledBits int64 // bits that went through Cascade and passed verification
	DiscardedBits  int64 // bits of frames whose verification hash differed
	DisclosedBits  int64 // parity bits disclosed by Cascade plus verification tags
	FinalBits      int64 // secret bits after privacy amplification
	DeliveredKeys  int64 // keys handed to the sink

	QBER            float64 // error rate of the reconciled signal bits (errors corrected / bits)
	SampledQBER     float64 // error rate estimated from the disclosed sample
	F               float64 // reconciliation efficiency: disclosed / (n·h(QBER))
	SX0Lower        float64 // finite-size lower bound on vacuum key bits s_X,0 (last block)
	SX1Lower        float64 // finite-size lower bound on single-photon key bits s_X,1 (last block)
	PhiUpper        float64 // finite-size upper bound on their phase error rate φ_X (last block)
	EpsSec          float64 // secrecy ε of the delivered key (per block; summed over blocks)
	EpsCor          float64 // correctness ε: collision bound of the verification tags (summed)
	SecretFraction  float64 // final bits / reconciled bits
	KeyRatePerPulse float64 // final bits / pulses
	KeyRateBps      float64 // final bits per second of source time (pulses / source rate)
	RoundTrips      int     // classical round trips of the reconciliation
	Aborted         bool    // at least one block aborted
	AbortReason     string  // reason of the last abort
	AbortCause      AbortCause
	// Aborts counts aborted blocks by cause.
	Aborts         map[AbortCause]int `json:",omitempty"`
	ResidualFrames int                // Cascade frames caught with residual errors by verification
	Frames         int                // Cascade frames processed
}

// Add accumulates the counters of b into s and recomputes the ratios. The last
// block's estimates (QBER, bounds) are kept as the session's when s had none.
func (s *Stats) Add(b Stats, sourceRateHz float64) {
	var qErr float64
	if s.ReconciledBits+b.ReconciledBits > 0 {
		qErr = (s.QBER*float64(s.ReconciledBits) + b.QBER*float64(b.ReconciledBits)) /
			float64(s.ReconciledBits+b.ReconciledBits)
	}
	var sq float64
	if s.SampledBits+b.SampledBits > 0 {
		sq = (s.SampledQBER*float64(s.SampledBits) + b.SampledQBER*float64(b.SampledBits)) /
			float64(s.SampledBits+b.SampledBits)
	}
	var fw float64
	if s.ReconciledBits+b.ReconciledBits > 0 {
		fw = (s.F*float64(s.ReconciledBits) + b.F*float64(b.ReconciledBits)) /
			float64(s.ReconciledBits+b.ReconciledBits)
	}
	s.Blocks += b.Blocks
	s.AbortedBlocks += b.AbortedBlocks
	s.Pulses += b.Pulses
	s.Detected += b.Detected
	s.Sifted += b.Sifted
	s.SiftedSignal += b.SiftedSignal
	s.SampledBits += b.SampledBits
	s.ReconciledBits += b.ReconciledBits
	s.DiscardedBits += b.DiscardedBits
	s.DisclosedBits += b.DisclosedBits
	s.FinalBits += b.FinalBits
	s.DeliveredKeys += b.DeliveredKeys
	s.RoundTrips += b.RoundTrips
	s.ResidualFrames += b.ResidualFrames
	s.Frames += b.Frames
	s.QBER, s.SampledQBER, s.F = qErr, sq, fw
	if b.SX1Lower != 0 || b.PhiUpper != 0 {
		s.SX0Lower, s.SX1Lower, s.PhiUpper = b.SX0Lower, b.SX1Lower, b.PhiUpper
	}
	s.EpsSec += b.EpsSec
	s.EpsCor += b.EpsCor
	if b.Aborted {
		s.Aborted = true
		s.AbortReason = b.AbortReason
		s.AbortCause = b.AbortCause
	}
	for c, n := range b.Aborts {
		if s.Aborts == nil {
			s.Aborts = map[AbortCause]int{}
		}
		s.Aborts[c] += n
	}
	s.SecretFraction, s.KeyRatePerPulse, s.KeyRateBps = 0, 0, 0
	if s.ReconciledBits > 0 {
		s.SecretFraction = float64(s.FinalBits) / float64(s.ReconciledBits)
	}
	if s.Pulses > 0 {
		s.KeyRatePerPulse = float64(s.FinalBits) / float64(s.Pulses)
		s.KeyRateBps = s.KeyRatePerPulse * sourceRateHz
	}
}
