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
//   - qkd/decoy: the GLLP / Lo–Ma–Chen key-rate formula and the vacuum + weak decoy
//     bounds of Ma et al. (2005), with optional finite-size corrections;
//   - qkd/cascade: Cascade information reconciliation, bit-packed, as two parties;
//   - qkd/privacy: Toeplitz privacy amplification in O(n log n) time and the
//     universal-hash verification of reconciled keys;
//   - qkd/link: the two-party session (Alice and Bob exchanging typed messages over
//     an authenticated transport: an in-memory pipe, or TCP with mutual TLS).
package qkd

import (
	"context"
	"errors"
)

// ErrAborted is wrapped by every error reporting that a block was aborted because
// the estimated secret fraction was not positive (too much noise, or an
// eavesdropper). Callers use errors.Is(err, qkd.ErrAborted) to report "link under
// attack" rather than a software failure.
var ErrAborted = errors.New("qkd: block aborted: no secret key can be extracted")

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
	Y1Lower         float64 // decoy lower bound on the single-photon yield
	E1Upper         float64 // decoy upper bound on the single-photon error rate
	SecretFraction  float64 // final bits / reconciled bits
	KeyRatePerPulse float64 // final bits / pulses
	KeyRateBps      float64 // final bits per second of source time (pulses / source rate)
	RoundTrips      int     // classical round trips of the reconciliation
	Aborted         bool    // at least one block aborted
	AbortReason     string  // reason of the last abort
	ResidualFrames  int     // Cascade frames caught with residual errors by verification
	Frames          int     // Cascade frames processed
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
	if b.Y1Lower != 0 || b.E1Upper != 0 {
		s.Y1Lower, s.E1Upper = b.Y1Lower, b.E1Upper
	}
	if b.Aborted {
		s.Aborted = true
		s.AbortReason = b.AbortReason
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
