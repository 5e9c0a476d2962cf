// Package cascade implements Cascade information reconciliation (Brassard and
// Salvail 1993) as two parties: Bob, who holds the noisy copy, asks Alice for the
// parities of ranges of her key, locates errors by binary search and corrects
// them; Alice only answers parity requests.
//
// # Design
//
// Keys are bit-packed (uint64 words). Every pass i shuffles the key with a public
// permutation (identity for the first pass) and cuts it into blocks of size k_i.
// Both parties keep one permuted, bit-packed copy per pass, so the parity of any
// range is a few popcounts. Bob keeps his copies current as he flips bits (each
// flip touches one bit per pass and toggles the parity of one block per pass,
// which is how the cascade effect finds the errors that earlier passes hid).
//
// The improvements that bring the efficiency f = disclosed/(n·h(e)) down from
// the original protocol's 1.14–1.21 to about 1.05–1.10 (Martinez-Mateo, Pacher,
// Peev, Ciurana and Martin, "Demystifying the information reconciliation protocol
// Cascade", 2015):
//
//   - Block sizes from the QBER estimate, powers of two so that the binary search
//     never wastes a parity on an unbalanced split ("option 8"):
//     k1 = 2^⌈α⌉, k2 = 2^⌈(α+12)/2⌉, k3 = 4096, k_i = n/2 afterwards, with
//     α = log2(1/e) − 1/2, and 14 passes (later passes cost one bit each and
//     catch the rare errors left in even-weight blocks).
//   - Sub-block reuse: every parity Alice ever disclosed (blocks and the nodes of
//     every binary search) is cached by Bob and never asked again; the parity of
//     a right half is inferred from its parent and left half.
//   - Block-parity inference: after the first pass Bob knows the parity of Alice's
//     whole key, so the last block of every later pass is never asked.
//
// Round trips are minimised by batching: the block parities of a pass are one
// request, and the binary searches of all odd blocks of a pass run in parallel
// (one request per level). By default searches in different passes are never
// run at the same time, because two of them may chase the same error.
//
// # Low-latency mode (for links with a long round trip)
//
// With Options.LowLatency the block parities of every pass are asked in the
// first request (every pass asks them anyway, so this discloses nothing more),
// and searches of different passes overlap: with Options.Overlap = w, searches
// in the lowest pass that has an odd block and in the w passes above it
// advance together, one request per level for all of them (searches further
// up wait). Two searches may then chase the same error: before every
// step and before flipping, a search checks that its current range still
// holds an odd number of errors (Bob's parity against Alice's), and stops if
// another search already fixed it. Its parities stay cached, so a stopped
// search is partly reused later. The price is the few parities such searches
// waste; the gain is round trips. Measured on 10^4-bit frames (qkd-wan
// experiment, BENCHMARKS.md): the default schedule needs 235–800 round trips
// at f ≈ 1.05–1.06 for QBER 1–10%; overlap 1 roughly halves them at f
// 1.08–1.12, overlap 2 and 3 cut them 3–4× at f 1.12–1.26. Cascade does not
// reach both few round trips and f near 1.05: each cascaded search is a chain
// of dependent parities. For long round trips, package ldpc (blind LDPC
// reconciliation, link.MethodLDPC) needs tens of round trips per frame.
//
// Cascade leaves a residual error with small probability; callers must verify
// the reconciled keys with a universal hash (package privacy) and discard frames
// that still differ.
package cascade

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
)

// Sentinel errors.
var (
	ErrParams  = errors.New("cascade: invalid parameters")
	ErrRequest = errors.New("cascade: invalid parity request")
	ErrReply   = errors.New("cascade: invalid parity reply")
)

// MinQBER is the smallest QBER estimate used to choose block sizes.
const MinQBER = 1e-4

// DefaultPasses is the number of Cascade passes.
const DefaultPasses = 14

// BlockSizes returns the option-8 block size of each pass for an n-bit frame
// and QBER estimate qber.
func BlockSizes(n int, qber float64, passes int) []int {
	if qber < MinQBER {
		qber = MinQBER
	}
	alpha := math.Log2(1/qber) - 0.5
	ks := make([]int, passes)
	for i := range ks {
		var k float64
		switch i {
		case 0:
			k = math.Exp2(math.Ceil(alpha))
		case 1:
			k = math.Exp2(math.Ceil((alpha + 12) / 2))
		case 2:
			k = 4096
		default:
			k = float64(n / 2)
		}
		ki := int(k)
		if ki > n {
			ki = n
		}
		if ki < 2 {
			ki = 2
		}
		ks[i] = ki
	}
	return ks
}

// Plan is the public part of a reconciliation: frame length, block sizes and
// permutations. It is derived from a seed that Alice sends to Bob, and can be
// reused for many frames of the same length. A Plan is read-only once built and
// safe for concurrent use.
type Plan struct {
	n       int
	passes  []pass
	low     bool // low-latency schedule (Options.LowLatency)
	overlap int  // Options.Overlap
}

// Options select a Plan's schedule.
type Options struct {
	// Passes is the number of passes (0: DefaultPasses).
	Passes int
	// LowLatency asks every pass's block parities at once and runs the
	// searches of several passes together (see the package documentation).
	LowLatency bool
	// Overlap (low-latency schedule only) lets searches in the Overlap passes
	// above the lowest pass with an odd block run at the same time: 1 wastes
	// the fewest parities, larger values save round trips and waste more (0
	// is the default order, with all block parities asked up front).
	Overlap int
}

type pass struct {
	k    int
	nb   int      // number of blocks
	tree int      // nodes per block in the search-tree cache (2·next power of two ≥ k)
	perm []uint32 // permuted position → original index (nil for identity)
	inv  []uint32 // original index → permuted position (nil for identity)
}

// NewPlan builds the plan for n-bit frames, QBER estimate qber and the given
// number of passes (0 means DefaultPasses), with permutations drawn from seed.
func NewPlan(n int, qber float64, passes int, seed [32]byte) (*Plan, error) {
	return NewPlanOptions(n, qber, seed, Options{Passes: passes})
}

// NewPlanOptions is NewPlan with a choice of schedule.
func NewPlanOptions(n int, qber float64, seed [32]byte, opt Options) (*Plan, error) {
	passes := opt.Passes
	if n < 2 || n > 1<<28 {
		return nil, fmt.Errorf("%w: frame length %d", ErrParams, n)
	}
	if passes == 0 {
		passes = DefaultPasses
	}
	if passes < 1 || passes > 64 {
		return nil, fmt.Errorf("%w: %d passes", ErrParams, passes)
	}
	if !(qber >= 0 && qber < 0.5) {
		return nil, fmt.Errorf("%w: QBER estimate %g", ErrParams, qber)
	}
	rng := rand.New(rand.NewChaCha8(seed))
	ks := BlockSizes(n, qber, passes)
	if opt.Overlap < 0 || opt.Overlap > 64 {
		return nil, fmt.Errorf("%w: overlap %d", ErrParams, opt.Overlap)
	}
	p := &Plan{n: n, passes: make([]pass, passes), low: opt.LowLatency, overlap: opt.Overlap}
	for i, k := range ks {
		ps := pass{k: k, nb: (n + k - 1) / k, tree: 2 << bits.Len(uint(k-1))}
		if i > 0 {
			ps.perm = make([]uint32, n)
			for j := range ps.perm {
				ps.perm[j] = uint32(j)
			}
			for j := n - 1; j > 0; j-- {
				r := rng.IntN(j + 1)
				ps.perm[j], ps.perm[r] = ps.perm[r], ps.perm[j]
			}
			ps.inv = make([]uint32, n)
			for pos, orig := range ps.perm {
				ps.inv[orig] = uint32(pos)
			}
		}
		p.passes[i] = ps
	}
	return p, nil
}

// LowLatency reports whether the plan uses the low-latency schedule.
func (p *Plan) LowLatency() bool { return p.low }

// N is the frame length in bits.
func (p *Plan) N() int { return p.n }

// Passes is the number of passes.
func (p *Plan) Passes() int { return len(p.passes) }

// BlockSize returns the block size of pass i.
func (p *Plan) BlockSize(i int) int { return p.passes[i].k }

// permute writes the pass-i permuted copy of key into dst.
func (p *Plan) permute(i int, key, dst []uint64) {
	ps := &p.passes[i]
	if ps.perm == nil {
		copy(dst, key)
		return
	}
	// Scatter the set bits (about half of them) through the inverse
	// permutation: half the work of gathering every bit.
	clear(dst)
	inv := ps.inv
	n := p.n
	for w, x := range key[:(n+63)/64] {
		if w == (n-1)>>6 && n&63 != 0 {
			x &= 1<<(uint(n)&63) - 1
		}
		base := w << 6
		for x != 0 {
			t := bits.TrailingZeros64(x)
			x &= x - 1
			pos := inv[base+t]
			dst[pos>>6] |= 1 << (pos & 63)
		}
	}
}

// Range is a parity request: the parity of positions [Lo, Hi) of the pass-Pass
// permuted key.
type Range struct {
	Pass   uint8
	Lo, Hi uint32
}

// rangeParity returns the parity of bits [lo, hi) of v.
func rangeParity(v []uint64, lo, hi int) uint64 {
	if lo >= hi {
		return 0
	}
	lw, hw := lo>>6, (hi-1)>>6
	lmask := ^uint64(0) << (uint(lo) & 63)
	hmask := ^uint64(0) >> (63 - (uint(hi-1) & 63))
	if lw == hw {
		return uint64(bits.OnesCount64(v[lw]&lmask&hmask) & 1)
	}
	x := v[lw] & lmask
	for _, w := range v[lw+1 : hw] {
		x ^= w
	}
	x ^= v[hw] & hmask
	return uint64(bits.OnesCount64(x) & 1)
}

// Alice answers parity requests about her key. It is not safe for concurrent use.
type Alice struct {
	plan   *Plan
	key    []uint64
	copies [][]uint64
	valid  []bool
	// Disclosed counts the parity bits answered.
	Disclosed int64
}

// NewAlice returns the responder for key (at least plan.N() bits, packed).
func NewAlice(plan *Plan, key []uint64) (*Alice, error) {
	if len(key)*64 < plan.n {
		return nil, fmt.Errorf("%w: key of %d words for %d bits", ErrParams, len(key), plan.n)
	}
	return &Alice{plan: plan, key: key, copies: make([][]uint64, len(plan.passes)),
		valid: make([]bool, len(plan.passes))}, nil
}

// Reset points the responder at a new key of the same plan, reusing its
// buffers, and zeroes Disclosed.
func (a *Alice) Reset(key []uint64) error {
	if len(key)*64 < a.plan.n {
		return fmt.Errorf("%w: key of %d words for %d bits", ErrParams, len(key), a.plan.n)
	}
	a.key, a.Disclosed = key, 0
	clear(a.valid)
	return nil
}

// Answer returns the parities of the requested ranges, packed in request order.
// A malformed request is an error and discloses nothing.
func (a *Alice) Answer(req []Range) ([]uint64, error) {
	for i, r := range req {
		if int(r.Pass) >= len(a.plan.passes) || r.Lo >= r.Hi || int(r.Hi) > a.plan.n {
			return nil, fmt.Errorf("%w: range %d (pass %d, [%d, %d)) outside the %d-bit, %d-pass frame",
				ErrRequest, i, r.Pass, r.Lo, r.Hi, a.plan.n, len(a.plan.passes))
		}
	}
	out := make([]uint64, (len(req)+63)/64)
	for i, r := range req {
		c := a.copies[r.Pass]
		if !a.valid[r.Pass] {
			if c == nil {
				c = make([]uint64, (a.plan.n+63)/64)
				a.copies[r.Pass] = c
			}
			a.plan.permute(int(r.Pass), a.key, c)
			a.valid[r.Pass] = true
		}
		out[i>>6] |= rangeParity(c, int(r.Lo), int(r.Hi)) << (uint(i) & 63)
	}
	a.Disclosed += int64(len(req))
	return out, nil
}

// AskFunc performs one round trip: it sends the ranges to Alice and returns her
// packed parities.
type AskFunc func(ctx context.Context, req []Range) ([]uint64, error)

// Result summarises one reconciled frame.
type Result struct {
	Disclosed  int64 // parity bits disclosed by Alice
	RoundTrips int   // requests sent
	Corrected  int   // bits Bob flipped
	// Inconsistent is set when the parities Alice sent contradict each other
	// (a search would flip a bit a second time, which never happens with
	// correct parities): Bob stopped, and the frame must be discarded.
	Inconsistent bool
}

// bob is Bob's state while reconciling one frame.
type bob struct {
	plan   *Plan
	key    []uint64
	copies [][]uint64
	// Alice's block parities and Bob's current ones, per pass.
	aPar, bPar [][]uint8
	// cache[i][blk·tree + heap index] holds Alice's parity of a search node
	// plus one (0 = not known yet); touched lists the entries to clear.
	cache   [][]uint8
	touched []int64
	// oddPending lists, per pass, blocks whose parity may disagree.
	pending [][]uint32
	queued  [][]bool // queued[i][blk]: blk is in pending[i]
	built   int      // passes whose copies exist
	flipped []uint64 // bits flipped in this frame
	// scratch reused across cascade rounds
	act     []node
	req     []Range
	waiting []int
	res     Result
	total   uint8 // parity of Alice's whole key (valid once built ≥ 1)
}

func (b *bob) getCache(nd *node, child int) (uint8, bool) {
	v := b.cache[nd.pass][nd.blk*b.plan.passes[nd.pass].tree+2*nd.idx+child]
	return v - 1, v != 0
}

func (b *bob) putCache(nd *node, child int, par uint8) {
	off := nd.blk*b.plan.passes[nd.pass].tree + 2*nd.idx + child
	c := b.cache[nd.pass]
	if c[off] == 0 {
		b.touched = append(b.touched, int64(nd.pass)<<40|int64(off))
	}
	c[off] = par + 1
}

// Bob reconciles frames of one plan; reusing it across frames avoids
// reallocating its state. It is not safe for concurrent use.
type Bob struct{ b *bob }

// Plan returns the plan the reconciler was built for.
func (r *Bob) Plan() *Plan { return r.b.plan }

// NewBob returns a reusable reconciler for frames of plan.
func NewBob(plan *Plan) *Bob {
	np := len(plan.passes)
	b := &bob{plan: plan, copies: make([][]uint64, np),
		aPar: make([][]uint8, np), bPar: make([][]uint8, np),
		cache: make([][]uint8, np), pending: make([][]uint32, np),
		queued: make([][]bool, np)}
	w := (plan.n + 63) / 64
	for i := range plan.passes {
		ps := &plan.passes[i]
		b.copies[i] = make([]uint64, w)
		b.aPar[i] = make([]uint8, ps.nb)
		b.bPar[i] = make([]uint8, ps.nb)
		b.queued[i] = make([]bool, ps.nb)
		b.cache[i] = make([]uint8, ps.nb*ps.tree)
	}
	return &Bob{b: b}
}

// Reconcile corrects key (Bob's copy, at least plan.N() bits, modified in
// place) towards Alice's, asking for parities through ask. On error key may be
// partly corrected and must be discarded.
func (r *Bob) Reconcile(ctx context.Context, key []uint64, ask AskFunc) (Result, error) {
	b := r.b
	if len(key)*64 < b.plan.n {
		return Result{}, fmt.Errorf("%w: key of %d words for %d bits", ErrParams, len(key), b.plan.n)
	}
	b.key, b.res, b.built = key, Result{}, 0
	if len(b.flipped) == 0 {
		b.flipped = make([]uint64, (b.plan.n+63)/64)
	}
	clear(b.flipped)
	for _, t := range b.touched {
		b.cache[t>>40][t&(1<<40-1)] = 0
	}
	b.touched = b.touched[:0]
	for i := range b.pending {
		b.pending[i] = b.pending[i][:0]
		clear(b.queued[i])
	}
	if b.plan.low {
		if err := b.startAll(ctx, ask); err != nil {
			return b.res, err
		}
		err := b.cascadeAll(ctx, ask)
		b.key = nil
		return b.res, err
	}
	for i := range b.plan.passes {
		if err := b.startPass(ctx, i, ask); err != nil {
			return b.res, err
		}
		if err := b.cascade(ctx, ask); err != nil {
			return b.res, err
		}
		if b.res.Inconsistent {
			break
		}
	}
	b.key = nil
	return b.res, nil
}

// Reconcile corrects key towards Alice's with a fresh Bob (see Bob.Reconcile).
func Reconcile(ctx context.Context, plan *Plan, key []uint64, ask AskFunc) (Result, error) {
	return NewBob(plan).Reconcile(ctx, key, ask)
}

func (b *bob) round(ctx context.Context, ask AskFunc, req []Range) ([]uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("cascade: %w", err)
	}
	rep, err := ask(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("cascade: asking %d parities: %w", len(req), err)
	}
	if len(rep)*64 < len(req) {
		return nil, fmt.Errorf("%w: %d words for %d parities", ErrReply, len(rep), len(req))
	}
	b.res.RoundTrips++
	b.res.Disclosed += int64(len(req))
	return rep, nil
}

// startPass builds Bob's pass-i copy, asks Alice's block parities and queues
// the odd blocks.
func (b *bob) startPass(ctx context.Context, i int, ask AskFunc) error {
	pl := b.plan
	ps := &pl.passes[i]
	c := b.copies[i]
	pl.permute(i, b.key, c)
	b.built = i + 1
	nb := ps.nb
	ask1 := nb
	if i > 0 {
		ask1 = nb - 1 // the last block's parity follows from the total parity
	}
	req := make([]Range, ask1)
	for j := range req {
		req[j] = Range{Pass: uint8(i), Lo: uint32(j * ps.k), Hi: uint32(min((j+1)*ps.k, pl.n))}
	}
	a := b.aPar[i]
	clear(a)
	if ask1 > 0 {
		rep, err := b.round(ctx, ask, req)
		if err != nil {
			return err
		}
		for j := 0; j < ask1; j++ {
			a[j] = uint8(rep[j>>6] >> (uint(j) & 63) & 1)
		}
	}
	if i == 0 {
		var t uint8
		for _, x := range a {
			t ^= x
		}
		b.total = t
	} else {
		t := b.total
		for _, x := range a[:nb-1] {
			t ^= x
		}
		a[nb-1] = t
	}
	bp := b.bPar[i]
	for j := 0; j < nb; j++ {
		bp[j] = uint8(rangeParity(c, j*ps.k, min((j+1)*ps.k, pl.n)))
		if bp[j] != a[j] {
			b.pending[i] = append(b.pending[i], uint32(j))
			b.queued[i][j] = true
		}
	}
	return nil
}

// cascade runs batched binary searches until no built pass has an odd block.
// The searches of all odd blocks of one pass run in parallel, one request per
// level; the blocks of one pass are disjoint, so each search finds a different
// error.
func (b *bob) cascade(ctx context.Context, ask AskFunc) error {
	act := b.act[:0]
	req := b.req[:0]
	waiting := b.waiting[:0]
	defer func() { b.act, b.req, b.waiting = act[:0], req[:0], waiting[:0] }()
	for {
		act = act[:0]
		// Searches of one pass at a time: blocks of one pass are disjoint, so
		// their searches never chase the same error (running passes together
		// saves round trips but wastes the parities of dropped searches).
		// The pass with the smallest blocks goes first: its searches are the
		// cheapest.
		best := -1
		for i := 0; i < b.built; i++ {
			p := b.pending[i][:0]
			for _, blk := range b.pending[i] {
				if b.aPar[i][blk] != b.bPar[i][blk] {
					p = append(p, blk)
				} else {
					b.queued[i][blk] = false
				}
			}
			b.pending[i] = p
			if len(p) > 0 && (best < 0 || b.plan.passes[i].k < b.plan.passes[best].k) {
				best = i
			}
		}
		if best >= 0 {
			ps := &b.plan.passes[best]
			for _, blk := range b.pending[best] {
				b.queued[best][blk] = false
				lo := int(blk) * ps.k
				act = append(act, node{pass: best, blk: int(blk), idx: 1, lo: lo, hi: min(lo+ps.k, b.plan.n), a: b.aPar[best][blk]})
			}
			b.pending[best] = b.pending[best][:0]
		}
		if len(act) == 0 {
			return nil
		}
		for len(act) > 0 {
			req, waiting = req[:0], waiting[:0]
			for idx := 0; idx < len(act); {
				nd := &act[idx]
				c := b.copies[nd.pass]
				// Descend locally while Alice's parities are cached.
				for nd.hi-nd.lo > 1 {
					mid := (nd.lo + nd.hi) / 2
					al, ok := b.getCache(nd, 0)
					if !ok {
						break
					}
					if uint8(rangeParity(c, nd.lo, mid)) != al {
						nd.hi, nd.a, nd.idx = mid, al, 2*nd.idx
					} else {
						nd.lo, nd.a, nd.idx = mid, nd.a^al, 2*nd.idx+1
					}
				}
				if nd.hi-nd.lo == 1 {
					j := int(b.origIndex(nd.pass, nd.lo))
					if b.flipped[j>>6]>>(uint(j)&63)&1 == 1 {
						b.res.Inconsistent = true
						return nil
					}
					b.flipped[j>>6] |= 1 << (uint(j) & 63)
					b.flip(j)
					act[idx] = act[len(act)-1]
					act = act[:len(act)-1]
					continue
				}
				mid := (nd.lo + nd.hi) / 2
				req = append(req, Range{Pass: uint8(nd.pass), Lo: uint32(nd.lo), Hi: uint32(mid)})
				waiting = append(waiting, idx)
				idx++
			}
			if len(req) == 0 {
				break
			}
			rep, err := b.round(ctx, ask, req)
			if err != nil {
				return err
			}
			// Waiting nodes sit before the sweep position, so swap-removal of
			// finished nodes never moves them; the check below is defensive.
			for j, idx := range waiting {
				r := req[j]
				al := uint8(rep[j>>6] >> (uint(j) & 63) & 1)
				if idx >= len(act) {
					continue
				}
				nd := &act[idx]
				if nd.pass != int(r.Pass) || nd.lo != int(r.Lo) || (nd.lo+nd.hi)/2 != int(r.Hi) {
					continue
				}
				b.putCache(nd, 0, al)
				b.putCache(nd, 1, nd.a^al)
			}
		}
	}
}

// startAll builds every pass's copy and asks all block parities in one
// request (the last block of every pass after the first is inferred from the
// total parity, as in startPass).
func (b *bob) startAll(ctx context.Context, ask AskFunc) error {
	pl := b.plan
	var req []Range
	for i := range pl.passes {
		ps := &pl.passes[i]
		pl.permute(i, b.key, b.copies[i])
		ask1 := ps.nb
		if i > 0 {
			ask1 = ps.nb - 1
		}
		for j := 0; j < ask1; j++ {
			req = append(req, Range{Pass: uint8(i), Lo: uint32(j * ps.k), Hi: uint32(min((j+1)*ps.k, pl.n))})
		}
	}
	b.built = len(pl.passes)
	rep, err := b.round(ctx, ask, req)
	if err != nil {
		return err
	}
	off := 0
	for i := range pl.passes {
		ps := &pl.passes[i]
		a := b.aPar[i]
		ask1 := ps.nb
		if i > 0 {
			ask1 = ps.nb - 1
		}
		for j := 0; j < ask1; j++ {
			a[j] = uint8(rep[(off+j)>>6] >> (uint(off+j) & 63) & 1)
		}
		off += ask1
		if i == 0 {
			var t uint8
			for _, x := range a {
				t ^= x
			}
			b.total = t
		} else {
			t := b.total
			for _, x := range a[:ps.nb-1] {
				t ^= x
			}
			a[ps.nb-1] = t
		}
		bp := b.bPar[i]
		c := b.copies[i]
		for j := 0; j < ps.nb; j++ {
			bp[j] = uint8(rangeParity(c, j*ps.k, min((j+1)*ps.k, pl.n)))
			if bp[j] != a[j] {
				b.pending[i] = append(b.pending[i], uint32(j))
				b.queued[i][j] = true
			}
		}
	}
	return nil
}

// cascadeAll runs the searches of every pass together, one request per level,
// until no block of any pass has odd parity. A search stops when its range no
// longer holds an odd number of errors (another search fixed the error).
func (b *bob) cascadeAll(ctx context.Context, ask AskFunc) error {
	act := b.act[:0]
	req := b.req[:0]
	waiting := b.waiting[:0]
	defer func() { b.act, b.req, b.waiting = act[:0], req[:0], waiting[:0] }()
	odd := func(nd *node) bool {
		return uint8(rangeParity(b.copies[nd.pass], nd.lo, nd.hi)) != nd.a
	}
	for {
		// Start searches for the odd blocks of the lowest pass that has any
		// (searches already running in other passes go on): a block of a
		// higher pass is started only once the lower passes are even, so it
		// rarely chases an error a lower pass is about to find.
		lowest := -1
		for i := 0; i < b.built; i++ {
			for _, blk := range b.pending[i] {
				if b.aPar[i][blk] != b.bPar[i][blk] {
					lowest = i
					break
				}
			}
			if lowest >= 0 {
				break
			}
		}
		for i := 0; i < b.built; i++ {
			if i > lowest+b.plan.overlap {
				break
			}
			ps := &b.plan.passes[i]
			for _, blk := range b.pending[i] {
				b.queued[i][blk] = false
				if b.aPar[i][blk] == b.bPar[i][blk] {
					continue
				}
				lo := int(blk) * ps.k
				act = append(act, node{pass: i, blk: int(blk), idx: 1, lo: lo, hi: min(lo+ps.k, b.plan.n), a: b.aPar[i][blk]})
			}
			b.pending[i] = b.pending[i][:0]
		}
		if len(act) == 0 {
			return nil
		}
		req, waiting = req[:0], waiting[:0]
		for idx := 0; idx < len(act); {
			nd := &act[idx]
			c := b.copies[nd.pass]
			drop := false
			for {
				if !odd(nd) {
					drop = true // fixed meanwhile by another search
					break
				}
				if nd.hi-nd.lo == 1 {
					break
				}
				mid := (nd.lo + nd.hi) / 2
				al, ok := b.getCache(nd, 0)
				if !ok {
					break
				}
				if uint8(rangeParity(c, nd.lo, mid)) != al {
					nd.hi, nd.a, nd.idx = mid, al, 2*nd.idx
				} else {
					nd.lo, nd.a, nd.idx = mid, nd.a^al, 2*nd.idx+1
				}
			}
			if !drop && nd.hi-nd.lo == 1 {
				j := int(b.origIndex(nd.pass, nd.lo))
				if b.flipped[j>>6]>>(uint(j)&63)&1 == 1 {
					b.res.Inconsistent = true
					return nil
				}
				b.flipped[j>>6] |= 1 << (uint(j) & 63)
				b.flip(j)
				drop = true
			}
			if drop {
				act[idx] = act[len(act)-1]
				act = act[:len(act)-1]
				continue
			}
			idx++
		}
		// Ask the next level of every live search in the lowest active pass
		// and the Overlap passes above it; searches further up wait (they
		// keep their place and are dropped if the lower passes fix their
		// error). Searches that share a node ask once.
		minPass := len(b.plan.passes)
		for idx := range act {
			minPass = min(minPass, act[idx].pass)
		}
		for idx := range act {
			nd := &act[idx]
			if nd.pass > minPass+b.plan.overlap {
				continue
			}
			if _, ok := b.getCache(nd, 0); ok {
				continue
			}
			dup := false
			for _, w := range waiting {
				o := &act[w]
				if o.pass == nd.pass && o.blk == nd.blk && o.idx == nd.idx {
					dup = true
					break
				}
			}
			if dup {
				continue
			}
			mid := (nd.lo + nd.hi) / 2
			req = append(req, Range{Pass: uint8(nd.pass), Lo: uint32(nd.lo), Hi: uint32(mid)})
			waiting = append(waiting, idx)
		}
		if len(req) == 0 {
			continue
		}
		rep, err := b.round(ctx, ask, req)
		if err != nil {
			return err
		}
		for j, idx := range waiting {
			nd := &act[idx]
			al := uint8(rep[j>>6] >> (uint(j) & 63) & 1)
			b.putCache(nd, 0, al)
			b.putCache(nd, 1, nd.a^al)
		}
	}
}

type node struct {
	pass   int
	blk    int // block index in the pass
	idx    int // heap index of the node in its block's search tree (root 1)
	lo, hi int
	a      uint8 // Alice's parity of [lo, hi)
}

func (b *bob) origIndex(i, pos int) uint32 {
	if p := b.plan.passes[i].perm; p != nil {
		return p[pos]
	}
	return uint32(pos)
}

// flip corrects original bit j and updates every built pass.
func (b *bob) flip(j int) {
	b.key[j>>6] ^= 1 << (uint(j) & 63)
	b.res.Corrected++
	for i := 0; i < b.built; i++ {
		ps := &b.plan.passes[i]
		pos := j
		if ps.inv != nil {
			pos = int(ps.inv[j])
		}
		b.copies[i][pos>>6] ^= 1 << (uint(pos) & 63)
		blk := pos / ps.k
		b.bPar[i][blk] ^= 1
		if b.bPar[i][blk] != b.aPar[i][blk] && !b.queued[i][blk] {
			b.pending[i] = append(b.pending[i], uint32(blk))
			b.queued[i][blk] = true
		}
	}
}

// Local reconciles bob towards alice in-process (both keys packed, n bits) and
// returns the result; it is the two-party protocol with a direct call as the
// channel, for tests, benchmarks and experiments.
func Local(ctx context.Context, plan *Plan, alice, bob []uint64) (Result, error) {
	a, err := NewAlice(plan, alice)
	if err != nil {
		return Result{}, err
	}
	return Reconcile(ctx, plan, bob, func(_ context.Context, req []Range) ([]uint64, error) {
		return a.Answer(req)
	})
}
