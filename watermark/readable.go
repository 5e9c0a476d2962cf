package watermark

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
)

// ErrUnreadable is returned by the check of ReadabilityCheck for a code
// whose own frames do not all read back.
var ErrUnreadable = errors.New("watermark: code does not read back reliably")

// ReadabilityCheck returns a check for Issuer.Check that renders a code
// twice over — its n frames with fresh shares, stamped for a fixed slot, then
// again with other shares for the next slot — and rejects the code unless
// every frame reads back with its watermark intact.
//
// Why: how well a frame's watermark survives depends on the code's QR
// modules (T1 is a function of T0) and, less, on the share and stamp bits.
// On clean rendered frames about one code in 250 loses a frame, and one
// showing in about 2,000 loses more than n − t frames, so that code cannot be
// paid even from a perfect screen; such codes lose frames at every slot and
// with other shares. Measured with BenchmarkReadability on 5,000 seeded codes
// shown three times each (BENCHMARKS.md, "Watermarked payment codes"): the
// check rejects 4 codes in 1,000, and no showing of a code it kept was
// unreadable (7 of 15,000 for all codes; bad frames 0.89 → 0.11 in 1,000).
// One pass (ten frames) left 2 unreadable showings; two passes were chosen
// on that set and confirmed on a fresh one (QSHIELD_READABILITY_SEED):
// again 7 of 15,000 unreadable before, none kept. The cost is the
// server's: about 25 ms of CPU per code drawn. Rejecting 4 T0 values in
// 1,000 leaves T0 uniform over a set of nearly the same size: its entropy
// falls by less than 0.01 bit.
//
// The check is safe for concurrent use (extractors are pooled).
func ReadabilityCheck(p Params) (func(Code) error, error) {
	if _, err := NewExtractor(p, false); err != nil {
		return nil, err
	}
	pool := sync.Pool{New: func() any {
		ex, _ := NewExtractor(p, false) // p validated above
		return ex
	}}
	return func(c Code) error {
		ex := pool.Get().(*Extractor)
		defer pool.Put(ex)
		for round := range readabilityRounds {
			l, err := NewLoop(c.Token, c.SlotKey, p, rand.Reader)
			if err != nil {
				return err
			}
			slot := readabilitySlot + int64(round)
			for k := range p.Shares {
				f, err := ex.Extract(l.Frame(k, slot))
				if err != nil {
					return fmt.Errorf("%w: frame %d of %d: %w", ErrUnreadable, k+1, p.Shares, err)
				}
				if s := l.shares[k]; f.Handle != l.Handle || f.Share.Index != s.Index || !bytes.Equal(f.Share.Value, s.Value) {
					return fmt.Errorf("%w: frame %d read back as another share", ErrUnreadable, k+1)
				}
			}
		}
		return nil
	}, nil
}

// readabilitySlot is the slot ReadabilityCheck stamps frames for (any slot
// will do: the stamp only changes the bits the frame carries).
const readabilitySlot = 1 << 20

// readabilityRounds is how many loops (fresh shares, the next slot) the
// check renders.
const readabilityRounds = 2
