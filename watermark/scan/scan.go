// Package scan is the merchant scanner's core for watermarked payment codes.
//
// A Session receives camera frames one by one. For each frame it decodes T1
// (the QR text) and the watermark share (see package watermark), and keeps the
// distinct valid shares per T1. Once a T1 has t shares it reconstructs W = T0 by
// Shamir interpolation and accepts the result only if T0 derives T1 again
// (watermark.Handle); the caller then submits (T1, T0) and the stamps of the
// shares it read to the server, which checks T0 against the issued record,
// single use, before the 60 s expiry, and the stamps against the time: at
// least t of them must come from slots shown within a few seconds of
// receipt (see watermark.CheckStamps). For each share index the session keeps
// the stamp of the latest frame that carried it, so a scan that spans slots
// forwards the freshest stamps it saw.
//
// Faults and how they are handled:
//   - frames without a QR code, or with a QR that is not a qshield code: counted
//     and skipped;
//   - frames whose watermark does not decode to a share with a valid CRC (weak
//     signal, blended frames, corruption): dropped;
//   - shares of different tokens: they are grouped by T1 and never combined;
//     the share CRC covers T1, and the reconstruction must derive T1, so even a
//     forged share with a matching CRC cannot make a group yield a wrong T0;
//   - a bad share that slipped through the CRC: when more than t shares are
//     held, every t-subset is tried until one derives T1.
package scan

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"slices"
	"time"

	"github.com/qshield/qshield/shamir"
	"github.com/qshield/qshield/watermark"
)

// Result is a reconstructed token, ready to be submitted to the server.
type Result struct {
	Handle string // T1
	Token  []byte // T0
	// Stamps are the time stamps of the shares held, latest frame per index.
	Stamps []watermark.Stamp
	Shares int // distinct shares held when reconstructed
	Frames int // frames processed in this session
}

// Event reports what one frame contributed.
type Event struct {
	Handle   string        // T1, "" if no code was read
	Index    byte          // share index, 0 if no valid share
	NewShare bool          // the share was not held yet
	Have     int           // distinct shares held for Handle
	Need     int           // threshold for Handle (0 until a share was read)
	Err      error         // why the frame gave nothing (nil when it gave a share)
	Elapsed  time.Duration // processing time of this frame
	Result   *Result       // set when this frame completed a reconstruction
	// ModulePx and ModuleErrors are the frame's watermark.FrameResult
	// measures (0 when no code or no share decoded).
	ModulePx, ModuleErrors float64
}

// Stats counts frame outcomes.
type Stats struct {
	Frames, NoCode, BadShare, Duplicate, NewShares, Rejected int
}

type group struct {
	need   int
	shares map[byte][]byte
	stamps map[byte]watermark.Stamp
	first  time.Time
	done   bool
}

// Session accumulates shares across frames. Not safe for concurrent use.
type Session struct {
	ex     *watermark.Extractor
	need   int
	log    *slog.Logger
	groups map[string]*group
	stats  Stats
	now    func() time.Time
	// MaxGroups bounds memory when frames carry many different codes.
	MaxGroups int
	// RequireBound makes the session, once it holds t shares, wait until
	// watermark.MinBoundStamps of their stamps are bound to a scanner
	// challenge before returning a Result: set it on scanners that show a
	// challenge (see watermark's challenge.go), whose server requires them.
	RequireBound bool
}

// NewSession returns a session for codes made with p. log may be nil.
func NewSession(p watermark.Params, tryHarder bool, log *slog.Logger) (*Session, error) {
	ex, err := watermark.NewExtractor(p, tryHarder)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Session{ex: ex, need: p.Threshold, log: log, groups: map[string]*group{}, now: time.Now, MaxGroups: 32}, nil
}

// Stats returns the frame counters so far.
func (s *Session) Stats() Stats { return s.stats }

// Add processes one frame. The returned error is only for context
// cancellation; per-frame problems are in Event.Err.
func (s *Session) Add(ctx context.Context, img image.Image) (Event, error) {
	if err := ctx.Err(); err != nil {
		return Event{}, err
	}
	start := time.Now()
	s.stats.Frames++
	fr, err := s.ex.Extract(img)
	ev := Event{Handle: fr.Handle, ModulePx: fr.ModulePx, ModuleErrors: fr.ModuleErrors}
	defer func() { ev.Elapsed = time.Since(start) }()
	if err != nil {
		ev.Err = err
		if fr.Handle == "" {
			s.stats.NoCode++
		} else {
			s.stats.BadShare++
			if g := s.groups[fr.Handle]; g != nil {
				ev.Have, ev.Need = len(g.shares), g.need
			}
		}
		s.log.Debug("scan: frame without share", "handle", fr.Handle, "err", err)
		ev.Elapsed = time.Since(start)
		return ev, nil
	}
	g := s.groups[fr.Handle]
	if g == nil {
		if len(s.groups) >= s.MaxGroups {
			s.evictOldest()
		}
		g = &group{need: s.need, shares: map[byte][]byte{}, stamps: map[byte]watermark.Stamp{}, first: s.now()}
		s.groups[fr.Handle] = g
	}
	ev.Index = fr.Share.Index
	if old, ok := g.stamps[fr.Share.Index]; !ok || fr.Share.Stamp.Bound || !old.Bound {
		// Latest stamp per index, but never replace a bound one by an
		// unbound one (a frame shown before the phone read the challenge).
		g.stamps[fr.Share.Index] = fr.Share.Stamp
	}
	if old, ok := g.shares[fr.Share.Index]; ok {
		if !bytes.Equal(old, fr.Share.Value) {
			s.log.Warn("scan: conflicting share values", "handle", fr.Handle, "index", fr.Share.Index)
		}
		s.stats.Duplicate++
	} else {
		g.shares[fr.Share.Index] = fr.Share.Value
		ev.NewShare = true
		s.stats.NewShares++
	}
	ev.Have, ev.Need = len(g.shares), g.need
	if !g.done && len(g.shares) >= g.need && (!s.RequireBound || g.bound() >= watermark.MinBoundStamps) {
		t0, err := reconstruct(fr.Handle, g)
		if err != nil {
			s.stats.Rejected++
			ev.Err = err
		} else {
			g.done = true
			ev.Result = &Result{Handle: fr.Handle, Token: t0, Stamps: g.stampList(), Shares: len(g.shares), Frames: s.stats.Frames}
		}
	}
	ev.Elapsed = time.Since(start)
	return ev, nil
}

// bound returns the number of share indices whose stamp is bound.
func (g *group) bound() int {
	n := 0
	for _, st := range g.stamps {
		if st.Bound {
			n++
		}
	}
	return n
}

// stampList returns the group's stamps in index order.
func (g *group) stampList() []watermark.Stamp {
	out := make([]watermark.Stamp, 0, len(g.stamps))
	for _, st := range g.stamps {
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b watermark.Stamp) int { return int(a.Index) - int(b.Index) })
	return out
}

// Retry reopens the reconstruction of handle (after the server refused the
// stamps as stale, say): the next frame that carries one of its shares
// returns a new Result with the stamps then held.
func (s *Session) Retry(handle string) {
	if g := s.groups[handle]; g != nil {
		g.done = false
	}
}

func (s *Session) evictOldest() {
	var oldest string
	var t time.Time
	for h, g := range s.groups {
		if oldest == "" || g.first.Before(t) {
			oldest, t = h, g.first
		}
	}
	delete(s.groups, oldest)
}

// ErrNoConsistentSubset means t or more shares were held but no t of them
// reconstruct a token that derives the code's T1.
var ErrNoConsistentSubset = errors.New("scan: shares do not reconstruct the code's token")

// maxSubsets bounds the work spent searching for a consistent subset.
const maxSubsets = 5000

func reconstruct(handle string, g *group) ([]byte, error) {
	idx := make([]byte, 0, len(g.shares))
	for i := range g.shares {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	k := g.need
	comb := make([]int, k)
	for i := range comb {
		comb[i] = i
	}
	sub := make([]shamir.Share, k)
	for tries := 0; tries < maxSubsets; tries++ {
		for i, c := range comb {
			sub[i] = shamir.Share{Index: idx[c], Value: g.shares[idx[c]]}
		}
		t0, err := shamir.Combine(sub)
		if err == nil {
			if h, err := watermark.Handle(t0); err == nil &&
				subtle.ConstantTimeCompare([]byte(h), []byte(handle)) == 1 {
				return t0, nil
			}
		}
		// next combination
		i := k - 1
		for i >= 0 && comb[i] == len(idx)-k+i {
			i--
		}
		if i < 0 {
			break
		}
		comb[i]++
		for j := i + 1; j < k; j++ {
			comb[j] = comb[j-1] + 1
		}
	}
	return nil, fmt.Errorf("%w (%d shares)", ErrNoConsistentSubset, len(g.shares))
}

// Submitter sends a reconstructed token to the payment server (verify and pay).
type Submitter interface {
	Submit(ctx context.Context, r Result) error
}

// SubmitterFunc adapts a function to Submitter.
type SubmitterFunc func(ctx context.Context, r Result) error

// Submit implements Submitter.
func (f SubmitterFunc) Submit(ctx context.Context, r Result) error { return f(ctx, r) }
