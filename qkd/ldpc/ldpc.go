// Package ldpc implements blind information reconciliation with a
// rate-adaptive LDPC code (Martinez-Mateo, Elkouss and Martin, "Blind
// reconciliation", QIC 2012), as two parties: Alice holds the key, Bob the
// noisy copy. It is the second reconciliation method next to package cascade,
// built for links with a long round trip: a frame needs a handful of round
// trips instead of Cascade's hundreds.
//
// # Code
//
// A Plan is a sparse parity-check matrix H (m checks × N = n + p variables)
// drawn deterministically from a public seed for the frame length n and the
// QBER estimate e: m = ⌈FMax·n·h(e)⌉ and p = min(m − ⌊FStart·n·h(e)⌋, ⌊m/2⌋).
// The first n variables are the key bits, the last p are punctured: Alice
// fills them with fresh uniform random bits that Bob never sees (rate
// adaptation by puncturing). Key variables have an irregular degree profile
// (20% of degree 2, 60% of degree 3, 20% of degree 15); punctured variables
// have degree 2 (3 when p ≤ m/3) and are untainted: every check has at most
// one punctured neighbour, so H restricted to the punctured columns has
// disjoint supports and full column rank (checked when the plan is built).
//
// Degree-2 variables, key and punctured, lie on one path through the checks
// and so never close a cycle; key variables of degree 2 the path has no room
// for (at high rates, where the 20% outnumber the checks) get degree 3. A
// cycle of degree-2 variables is a low-weight solution of the syndrome: the
// first construction, which placed them at random, let the decoder settle on
// a wrong key that satisfied the syndrome in 2–7% of the frames near the
// threshold (seen at 1–3% QBER while tuning; the universal hash caught them,
// but each was a frame lost).
//
// The construction is part of the protocol: both ends must build the same H
// from the seed, so a change to it (the profile's, which replaced 2/3/10 at
// 18/70/12%; the degree-2 path; FStart's default, once 1.0) needs both ends
// upgraded; a mismatch shows as every frame failing its verification and
// being discarded, never as a wrong key accepted.
//
// # Protocol and leakage
//
//  1. Bob asks for the syndrome (all m rows, one request). Alice's syndrome
//     covers her key and her p random punctured bits, so it discloses at most
//     m − rank(H_P) = m − p bits about the key.
//  2. Bob decodes with belief propagation (sum-product in the log domain,
//     layered schedule). If the syndrome of his estimate matches, he is done.
//  3. Otherwise he asks for the values of more punctured bits, the ones his
//     decoder is least sure of (blind reconciliation: each revealed bit
//     turns a punctured symbol into a shortened one, lowering the rate): at
//     first enough to reach FJump, then Step at a time, more when the round
//     trips left (MaxRoundTrips) would not reveal them all. Each costs
//     exactly one more disclosed bit. He decodes again, warm-started.
//
// The disclosed count is therefore m − p + (punctured bits revealed); the
// proof is I(K; S, P_R) = I(K; H_K·K + H_{P∖R}·P_{P∖R}) ≤ m − rank(H_{P∖R}),
// and any subset of the punctured columns keeps full rank. Alice counts it
// herself (Alice.Disclosed) from the requests she answered, so a dishonest or
// buggy Bob cannot make her under-count. When every punctured bit is revealed
// and the decoder still fails, the frame is reported as failed (Bob's key is
// left as it was) and must be discarded; like Cascade, a decoded frame may
// rarely still differ, so callers verify frames with a universal hash.
//
// # Wire format
//
// Requests reuse cascade.Range so that the link carries both methods in one
// message type: Range{Pass: PassSyndrome, Lo: i, Hi: i+1} asks syndrome bit
// i, Range{Pass: PassPunctured, Lo: j, Hi: j+1} the value of punctured bit j.
// One bit answers each range, packed in request order.
package ldpc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/qshield/qshield/qkd/cascade"
)

// Sentinel errors.
var (
	ErrParams  = errors.New("ldpc: invalid parameters")
	ErrRequest = errors.New("ldpc: invalid request")
	ErrReply   = errors.New("ldpc: invalid reply")
)

// Range kinds (cascade.Range.Pass) of an LDPC request.
const (
	PassSyndrome  = 0
	PassPunctured = 1
)

// MinQBER is the smallest QBER estimate used to size the code.
const MinQBER = 1e-3

// Options tune a Plan. The zero value of each field means its default.
// FMax, FStart and the QBER estimate shape the matrix, so both ends must
// use the same; the others steer Bob's decoder and requests only.
type Options struct {
	// FStart is the efficiency of the first attempt: m − p = ⌊FStart·n·h(e)⌋,
	// with p at most m/2 (default 0.85 = FMax/2: every check has one
	// punctured neighbour). Puncturing a variable of two checks discloses
	// only their sum, so a heavily punctured code starts as a code of half
	// as many checks, and each reveal splits the pair Bob is least sure of:
	// the adaptive choice is what brings f close to 1.
	FStart float64
	// FMax is the efficiency once every punctured bit is revealed: m =
	// ⌈FMax·n·h(e)⌉ (default 1.70).
	FMax float64
	// FJump is the efficiency Bob's first request for punctured bits
	// reaches at once (default 0.95; below FStart + Step it is one step).
	// Frames do not decode that low; small steps from lower down choose
	// better bits (each choice sees the last reveal's effect) but cost
	// round trips and decoding.
	FJump float64
	// Step is the number of punctured bits revealed per round trip; 0 means
	// ⌈StepFrac·n·h(e)⌉.
	Step int
	// StepFrac sizes Step relative to n·h(e) (default 0.0075: f grows by
	// about 0.0075 per round trip).
	StepFrac float64
	// MaxRoundTrips bounds a frame's round trips, the syndrome's included
	// (default 50): the last 8 requests share the punctured bits left.
	MaxRoundTrips int
	// Iterations bounds the belief-propagation iterations of the first
	// attempt (default 40); later attempts, warm-started, run IterMore
	// (default 10).
	Iterations, IterMore int
	// Stall ends an attempt after this many iterations without fewer
	// unsatisfied checks (default 4).
	Stall int
}

func (o Options) norm() Options {
	if o.FStart == 0 {
		o.FStart = 0.85
	}
	if o.FMax == 0 {
		o.FMax = 1.70
	}
	if o.FJump == 0 {
		o.FJump = 0.95
	}
	if o.StepFrac == 0 {
		o.StepFrac = 0.0075
	}
	if o.MaxRoundTrips == 0 {
		o.MaxRoundTrips = 50
	}
	if o.Iterations == 0 {
		o.Iterations = 40
	}
	if o.IterMore == 0 {
		o.IterMore = 10
	}
	if o.Stall == 0 {
		o.Stall = 4
	}
	return o
}

// Key-variable degree profile (node perspective): degree → fraction.
type degFrac struct {
	d    int
	frac float64
}

// The profile was chosen on generated frames (10⁴ bits, 1–5% QBER, seeds
// other than the experiments'): against the first profile (2/3/10 at
// 0.18/0.70/0.12) a heavier high-degree tail lowered the mean f at every
// QBER (BENCHMARKS.md lists the candidates and their figures).
var defaultDegrees = []degFrac{{2, 0.20}, {3, 0.60}, {15, 0.20}}

// Plan is the public part of a reconciliation: the parity-check matrix and the
// schedule. A Plan is read-only once built and safe for concurrent use.
type Plan struct {
	n, p, m int
	step    int
	iters   int
	more    int
	stall   int
	jump    int
	maxRT   int
	qber    float64
	// Checks in compressed rows: the variables of check c are
	// chkVar[chkOff[c]:chkOff[c+1]]; edge indices follow the same order.
	chkOff []int32
	chkVar []int32
}

// NewPlan builds the plan for n-bit frames and QBER estimate qber, drawing the
// matrix from seed.
func NewPlan(n int, qber float64, seed [32]byte, opt Options) (*Plan, error) {
	o := opt.norm()
	if n < 8 || n > 1<<24 {
		return nil, fmt.Errorf("%w: frame length %d", ErrParams, n)
	}
	if !(qber >= 0 && qber < 0.5) {
		return nil, fmt.Errorf("%w: QBER estimate %g", ErrParams, qber)
	}
	if !(o.FStart > 0 && o.FStart <= o.FMax && o.FMax <= 4) || !(o.FJump >= 0 && o.FJump <= 4) || o.Step < 0 ||
		!(o.StepFrac > 0 && o.StepFrac <= 1) || o.MaxRoundTrips < 2 || o.MaxRoundTrips > 1<<20 ||
		o.Iterations < 1 || o.Iterations > 10000 || o.IterMore < 1 || o.IterMore > 10000 || o.Stall < 1 || o.Stall > 10000 {
		return nil, fmt.Errorf("%w: options %+v", ErrParams, opt)
	}
	q := max(qber, MinQBER)
	nh := float64(n) * h2(q)
	m := int(math.Ceil(o.FMax * nh))
	m = max(m, 2)
	if m >= n {
		return nil, fmt.Errorf("%w: %d checks for %d key bits (QBER %g too high for FMax %g)", ErrParams, m, n, qber, o.FMax)
	}
	start := max(int(math.Floor(o.FStart*nh)), 1)
	// At most m/2 punctured variables: each needs two checks of its own.
	p := min(max(m-start, 0), m/2)
	step := o.Step
	if step == 0 {
		step = max(int(math.Ceil(o.StepFrac*nh)), 1)
	}
	pl := &Plan{n: n, p: p, m: m, step: step, iters: o.Iterations, more: o.IterMore, stall: o.Stall, maxRT: o.MaxRoundTrips, qber: q}
	if o.FJump > o.FStart {
		pl.jump = int(math.Ceil((o.FJump - o.FStart) * nh))
	}
	if err := pl.build(rand.New(rand.NewChaCha8(seed))); err != nil {
		return nil, err
	}
	return pl, nil
}

// N is the frame length (key bits).
func (p *Plan) N() int { return p.n }

// Checks is m, the syndrome length.
func (p *Plan) Checks() int { return p.m }

// Punctured is p, the number of punctured variables.
func (p *Plan) Punctured() int { return p.p }

// Step is the number of punctured bits revealed per extra round trip.
func (p *Plan) Step() int { return p.step }

// InitialLeak is the disclosure charged for the syndrome: m − p.
func (p *Plan) InitialLeak() int64 { return int64(p.m - p.p) }

// build draws the Tanner graph.
func (p *Plan) build(rng *rand.Rand) error {
	nv := p.n + p.p
	deg := make([]int, nv)
	// Key variables: the degree profile, assigned in a shuffled order.
	ord := rng.Perm(p.n)
	i := 0
	for k, kd := range defaultDegrees {
		cnt := int(math.Round(kd.frac * float64(p.n)))
		if k == len(defaultDegrees)-1 {
			cnt = p.n - i
		}
		for ; cnt > 0 && i < p.n; cnt-- {
			deg[ord[i]] = min(kd.d, p.m)
			i++
		}
	}
	dp := 0
	if p.p > 0 {
		dp = min(3, p.m/p.p)
		if dp < 1 {
			return fmt.Errorf("%w: %d punctured variables for %d checks", ErrParams, p.p, p.m)
		}
	}
	for v := p.n; v < nv; v++ {
		deg[v] = dp
	}
	// Degree-2 variables form a path through the checks in the order cp:
	// link i joins checks cp[i] and cp[i+1]. Punctured variables of degree
	// 2 take the even links 0, 2, …, 2p−2 (so no check has two of them),
	// key variables of degree 2 the others, at most one per link; a key
	// variable the path has no room for gets degree 3. A cycle of degree-2
	// variables is a low-weight codeword (a wrong key that satisfies the
	// syndrome, which belief propagation converges to near the threshold);
	// a path has none.
	cp := rng.Perm(p.m)
	var links []int
	for l := 0; l+1 < p.m; l++ {
		if dp == 2 && l%2 == 0 && l < 2*p.p {
			continue
		}
		links = append(links, l)
	}
	var pathVars []int
	for _, v := range ord {
		if deg[v] == 2 {
			if len(pathVars) < len(links) {
				pathVars = append(pathVars, v)
			} else {
				deg[v] = min(3, p.m)
			}
		}
	}
	edges := 0
	for _, d := range deg {
		edges += d
	}
	// Check capacities as equal as possible.
	capc := make([]int, p.m)
	for c := range capc {
		capc[c] = edges / p.m
	}
	for _, c := range rng.Perm(p.m)[:edges%p.m] {
		capc[c]++
	}
	adj := make([][]int32, p.m)
	// Punctured variables first: distinct checks for every socket, so no
	// check sees two punctured variables (untainted puncturing).
	k := 0
	for v := p.n; v < nv; v++ {
		for j := 0; j < dp; j++ {
			c := cp[k]
			k++
			adj[c] = append(adj[c], int32(v))
			capc[c]--
		}
	}
	isPath := make([]bool, p.n)
	for i, v := range pathVars {
		isPath[v] = true
		for _, c := range []int{cp[links[i]], cp[links[i]+1]} {
			adj[c] = append(adj[c], int32(v))
			capc[c]--
		}
	}
	for c, n := range capc {
		if n < 0 {
			return fmt.Errorf("%w: check %d over capacity (%d key and %d punctured variables, %d checks)", ErrParams, c, p.n, p.p, p.m)
		}
	}
	// Key variables: sockets of the remaining capacity, shuffled, matched
	// in order; a repeated check is swapped with a random later socket.
	var sockets []int32
	for c, n := range capc {
		for ; n > 0; n-- {
			sockets = append(sockets, int32(c))
		}
	}
	rng.Shuffle(len(sockets), func(i, j int) { sockets[i], sockets[j] = sockets[j], sockets[i] })
	// A candidate check is refused when it repeats one of v's checks or
	// shares a variable with one of them (a 4-cycle, which hurts belief
	// propagation most at high rates); after 64 tries a 4-cycle is accepted.
	mark := make([]int32, p.n+p.p)
	for i := range mark {
		mark[i] = -1
	}
	s := 0
	for v := 0; v < p.n; v++ {
		if isPath[v] {
			continue
		}
		first := s
		for j := 0; j < deg[v]; j++ {
			for try := 0; ; try++ {
				c := sockets[s]
				bad := false
				for _, o := range sockets[first:s] {
					if o == c {
						bad = true
						break
					}
				}
				if !bad && try < 64 {
					for _, u := range adj[c] {
						if mark[u] == int32(v) {
							bad = true
							break
						}
					}
				}
				if !bad {
					break
				}
				if try > 200 || s == len(sockets)-1 {
					// Stuck (the last sockets): connect v to a random
					// check it does not have yet instead.
					for {
						c = int32(rng.IntN(p.m))
						dup := false
						for _, o := range sockets[first:s] {
							dup = dup || o == c
						}
						if !dup {
							break
						}
					}
					sockets[s] = c
					break
				}
				r := s + 1 + rng.IntN(len(sockets)-s-1)
				sockets[s], sockets[r] = sockets[r], sockets[s]
			}
			c := sockets[s]
			for _, u := range adj[c] {
				mark[u] = int32(v)
			}
			adj[c] = append(adj[c], int32(v))
			s++
		}
	}
	p.chkOff = make([]int32, p.m+1)
	p.chkVar = make([]int32, 0, edges)
	for c, vs := range adj {
		if len(vs) == 0 {
			return fmt.Errorf("%w: check %d has no variable", ErrParams, c)
		}
		p.chkVar = append(p.chkVar, vs...)
		p.chkOff[c+1] = int32(len(p.chkVar))
	}
	// Untainted puncturing gives the punctured columns disjoint, non-empty
	// supports: full column rank, which the leakage count relies on.
	for c := 0; c < p.m; c++ {
		np := 0
		for _, v := range p.chkVar[p.chkOff[c]:p.chkOff[c+1]] {
			if int(v) >= p.n {
				np++
			}
		}
		if np > 1 {
			return fmt.Errorf("%w: check %d has %d punctured variables", ErrParams, c, np)
		}
	}
	return nil
}

// syndrome computes H·x for the full variable vector x (key then punctured,
// one bit per variable, packed) into out (m bits, packed).
func (p *Plan) syndrome(x []uint64, out []uint64) {
	clear(out)
	for c := 0; c < p.m; c++ {
		var s uint64
		for _, v := range p.chkVar[p.chkOff[c]:p.chkOff[c+1]] {
			s ^= x[v>>6] >> (uint(v) & 63)
		}
		out[c>>6] |= (s & 1) << (uint(c) & 63)
	}
}

// Alice answers Bob's requests about her key. It is not safe for concurrent use.
type Alice struct {
	plan     *Plan
	x        []uint64 // key bits then punctured bits
	synd     []uint64
	sent     bool // syndrome disclosed
	revealed []bool
	// Disclosed counts the bits of information about the key disclosed so
	// far: m − p for the syndrome plus one per revealed punctured bit.
	Disclosed int64
}

// NewAlice returns the responder for key (at least plan.N() bits, packed) with
// punctured bits drawn from pad (at least plan.Punctured() bits of fresh,
// uniform, secret randomness: the leakage count assumes it).
func NewAlice(plan *Plan, key, pad []uint64) (*Alice, error) {
	a := &Alice{plan: plan}
	return a, a.Reset(key, pad)
}

// Reset points the responder at a new key and pad, reusing its buffers.
func (a *Alice) Reset(key, pad []uint64) error {
	pl := a.plan
	if len(key)*64 < pl.n || len(pad)*64 < pl.p {
		return fmt.Errorf("%w: key of %d words and pad of %d words for %d + %d bits", ErrParams, len(key), len(pad), pl.n, pl.p)
	}
	nv := pl.n + pl.p
	if a.x == nil {
		a.x = make([]uint64, (nv+63)/64)
		a.synd = make([]uint64, (pl.m+63)/64)
		a.revealed = make([]bool, pl.p)
	}
	clear(a.x)
	for i := 0; i < pl.n; i++ {
		a.x[i>>6] |= (key[i>>6] >> (uint(i) & 63) & 1) << (uint(i) & 63)
	}
	for j := 0; j < pl.p; j++ {
		v := pl.n + j
		a.x[v>>6] |= (pad[j>>6] >> (uint(j) & 63) & 1) << (uint(v) & 63)
	}
	pl.syndrome(a.x, a.synd)
	a.sent, a.Disclosed = false, 0
	clear(a.revealed)
	return nil
}

// Answer returns one bit per requested range, packed in request order. The
// first request must be the whole syndrome, rows 0 … m−1 in order; later
// requests ask punctured bits, each at most once. A malformed request is an
// error and discloses nothing.
func (a *Alice) Answer(req []cascade.Range) ([]uint64, error) {
	pl := a.plan
	if !a.sent {
		if len(req) != pl.m {
			return nil, fmt.Errorf("%w: the first request must ask the %d syndrome bits, it asks %d bits", ErrRequest, pl.m, len(req))
		}
		for i, r := range req {
			if r.Pass != PassSyndrome || r.Lo != uint32(i) || r.Hi != uint32(i)+1 {
				return nil, fmt.Errorf("%w: range %d (kind %d, [%d, %d)) is not syndrome bit %d", ErrRequest, i, r.Pass, r.Lo, r.Hi, i)
			}
		}
		a.sent = true
		a.Disclosed += pl.InitialLeak()
		return append([]uint64(nil), a.synd...), nil
	}
	for i, r := range req {
		if r.Pass != PassPunctured || r.Hi != r.Lo+1 || int(r.Lo) >= pl.p {
			return nil, fmt.Errorf("%w: range %d (kind %d, [%d, %d)) is not one of the %d punctured bits", ErrRequest, i, r.Pass, r.Lo, r.Hi, pl.p)
		}
		if a.revealed[r.Lo] {
			return nil, fmt.Errorf("%w: punctured bit %d asked twice", ErrRequest, r.Lo)
		}
		for _, o := range req[:i] {
			if o.Lo == r.Lo {
				return nil, fmt.Errorf("%w: punctured bit %d asked twice", ErrRequest, r.Lo)
			}
		}
	}
	if len(req) == 0 {
		return nil, fmt.Errorf("%w: empty request", ErrRequest)
	}
	out := make([]uint64, (len(req)+63)/64)
	for i, r := range req {
		a.revealed[r.Lo] = true
		v := pl.n + int(r.Lo)
		out[i>>6] |= (a.x[v>>6] >> (uint(v) & 63) & 1) << (uint(i) & 63)
	}
	a.Disclosed += int64(len(req))
	return out, nil
}

// Result summarises one reconciled frame.
type Result struct {
	Disclosed  int64 // bits of information disclosed (m − p + revealed)
	RoundTrips int   // requests sent
	Corrected  int   // bits Bob flipped
	Revealed   int   // punctured bits revealed
	Iterations int   // belief-propagation iterations run (the compute cost)
	// Failed is set when the decoder did not converge with every punctured
	// bit revealed: Bob's key is left unchanged and the frame must be
	// discarded.
	Failed bool
}

// Bob reconciles frames of one plan; reusing it across frames avoids
// reallocating. It is not safe for concurrent use.
type Bob struct {
	plan     *Plan
	ch       []float64 // channel LLR per variable
	post     []float64 // posterior LLR per variable
	c2v      []float64 // check-to-variable message per edge
	sign     []float64 // (−1)^syndrome per check
	synd     []uint64
	hard     []uint64
	revealed []bool
	cand     []int32
	tmp      []float64
	tmpPhi   []float64
}

// NewBob returns a reusable reconciler for frames of plan.
func NewBob(plan *Plan) *Bob {
	nv := plan.n + plan.p
	return &Bob{plan: plan, ch: make([]float64, nv), post: make([]float64, nv),
		c2v: make([]float64, len(plan.chkVar)), sign: make([]float64, plan.m),
		synd: make([]uint64, (plan.m+63)/64), hard: make([]uint64, (nv+63)/64),
		revealed: make([]bool, plan.p)}
}

// Plan returns the plan the reconciler was built for.
func (b *Bob) Plan() *Plan { return b.plan }

// llrMax bounds every LLR (a revealed bit is certain).
const llrMax = 40

// Reconcile corrects key (Bob's copy, at least plan.N() bits, modified in
// place on success) towards Alice's, asking through ask.
func (b *Bob) Reconcile(ctx context.Context, key []uint64, ask cascade.AskFunc) (Result, error) {
	pl := b.plan
	var res Result
	if len(key)*64 < pl.n {
		return res, fmt.Errorf("%w: key of %d words for %d bits", ErrParams, len(key), pl.n)
	}
	req := make([]cascade.Range, pl.m)
	for i := range req {
		req[i] = cascade.Range{Pass: PassSyndrome, Lo: uint32(i), Hi: uint32(i) + 1}
	}
	rep, err := b.round(ctx, ask, req, &res)
	if err != nil {
		return res, err
	}
	res.Disclosed = pl.InitialLeak()
	for c := 0; c < pl.m; c++ {
		b.sign[c] = 1 - 2*float64(rep[c>>6]>>(uint(c)&63)&1)
	}
	copy(b.synd, rep[:len(b.synd)])
	l := math.Log((1 - pl.qber) / pl.qber)
	for i := 0; i < pl.n; i++ {
		b.ch[i] = l * (1 - 2*float64(key[i>>6]>>(uint(i)&63)&1))
	}
	for v := pl.n; v < pl.n+pl.p; v++ {
		b.ch[v] = 0
	}
	copy(b.post, b.ch)
	clear(b.c2v)
	clear(b.revealed)
	iters := pl.iters
	for {
		done, it := b.decode(iters)
		res.Iterations += it
		if done {
			break
		}
		iters = pl.more
		// Reveal the least reliable punctured bits.
		b.cand = b.cand[:0]
		for j := 0; j < pl.p; j++ {
			if !b.revealed[j] {
				b.cand = append(b.cand, int32(j))
			}
		}
		if len(b.cand) == 0 {
			res.Failed = true
			return res, nil
		}
		k := pl.step
		if res.Revealed == 0 && pl.jump > k {
			k = pl.jump
		}
		// Within the round-trip budget: the last tailRequests requests
		// share what is left between them.
		if left := pl.maxRT - res.RoundTrips; left <= tailRequests {
			k = max(k, (len(b.cand)+left-1)/max(left, 1))
		}
		k = min(k, len(b.cand))
		b.leastReliable(k)
		req = req[:k]
		for i, j := range b.cand[:k] {
			req[i] = cascade.Range{Pass: PassPunctured, Lo: uint32(j), Hi: uint32(j) + 1}
		}
		rep, err := b.round(ctx, ask, req, &res)
		if err != nil {
			return res, err
		}
		res.Disclosed += int64(k)
		res.Revealed += k
		for i, j := range b.cand[:k] {
			b.revealed[j] = true
			v := pl.n + int(j)
			old := b.ch[v]
			b.ch[v] = llrMax * (1 - 2*float64(rep[i>>6]>>(uint(i)&63)&1))
			b.post[v] += b.ch[v] - old
		}
	}
	for i := 0; i < pl.n; i++ {
		w, bit := i>>6, uint(i)&63
		if (key[w]>>bit)&1 != (b.hard[w]>>bit)&1 {
			key[w] ^= 1 << bit
			res.Corrected++
		}
	}
	return res, nil
}

func (b *Bob) round(ctx context.Context, ask cascade.AskFunc, req []cascade.Range, res *Result) ([]uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ldpc: %w", err)
	}
	rep, err := ask(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("ldpc: asking %d bits: %w", len(req), err)
	}
	if len(rep)*64 < len(req) {
		return nil, fmt.Errorf("%w: %d words for %d bits", ErrReply, len(rep), len(req))
	}
	res.RoundTrips++
	return rep, nil
}

// leastReliable moves the k candidates with the smallest |posterior| to the
// front of b.cand (partial selection, ties by index).
func (b *Bob) leastReliable(k int) {
	pl := b.plan
	c := b.cand
	key := func(j int32) float64 { return math.Abs(b.post[pl.n+int(j)]) }
	// Quickselect on |posterior|.
	lo, hi := 0, len(c)-1
	for lo < hi {
		piv := key(c[(lo+hi)/2])
		i, j := lo, hi
		for i <= j {
			for key(c[i]) < piv {
				i++
			}
			for key(c[j]) > piv {
				j--
			}
			if i <= j {
				c[i], c[j] = c[j], c[i]
				i++
				j--
			}
		}
		if k-1 <= j {
			hi = j
		} else if k-1 >= i {
			lo = i
		} else {
			break
		}
	}
}

// phi is −ln tanh(x/2), its own inverse on (0, ∞): a series below 1/4,
// linear interpolation in a table up to phiHi (relative error below 1e-4,
// far inside the decoder's tolerance), and 0 above (φ(30) < 2e-13: a certain
// input changes no sum).
func phi(x float64) float64 {
	if x >= 0.25 {
		if x >= phiHi {
			return 0
		}
		f := x * phiScale
		i := int(f)
		d := f - float64(i)
		return phiTab[i] + d*(phiTab[i+1]-phiTab[i])
	}
	return phiSmall(x)
}

// phiSmall is φ below 1/4 from ln tanh(y) = ln y − y²/3 + 7y⁴/90 −
// 62y⁶/2835 + O(y⁸) at y = x/2: one logarithm instead of phiExact's three
// transcendental calls (most of the decoder's time went there, because
// messages of unreliable variables are small), relative error below 1e-9
// (TestPhiSmall).
func phiSmall(x float64) float64 {
	if x < 1e-12 {
		x = 1e-12
	}
	x2 := x * x
	return -math.Log(0.5*x) + x2*(1.0/12-x2*(7.0/1440-x2*(62.0/181440)))
}

func phiExact(x float64) float64 {
	if x < 1e-12 {
		x = 1e-12
	}
	// −ln tanh(x/2) = ln((1 + e^−x)/(1 − e^−x)), without cancellation.
	e := math.Exp(-x)
	return math.Log1p(e) - math.Log1p(-e)
}

const (
	phiHi    = 30.0
	phiScale = 1024.0
)

// phiTab holds phi at multiples of 1/phiScale up to phiHi (read-only after
// package initialisation).
var phiTab = func() []float64 {
	t := make([]float64, int(phiHi*phiScale)+2)
	for i := range t {
		t[i] = phiExact(float64(i) / phiScale)
	}
	return t
}()

// decode runs up to iters layered sum-product iterations from the current
// messages and reports whether the hard decision satisfies the syndrome, and
// how many iterations it ran.
func (b *Bob) decode(iters int) (bool, int) {
	pl := b.plan
	if b.check() {
		return true, 0
	}
	best, stall := pl.m+1, 0
	for it := 0; it < iters; it++ {
		for c := 0; c < pl.m; c++ {
			lo, hi := pl.chkOff[c], pl.chkOff[c+1]
			vs := pl.chkVar[lo:hi]
			msg := b.c2v[lo:hi]
			if cap(b.tmp) < len(vs) {
				b.tmp = make([]float64, len(vs))
			}
			if cap(b.tmpPhi) < len(vs) {
				b.tmpPhi = make([]float64, len(vs))
			}
			t := b.tmp[:len(vs)]
			tp := b.tmpPhi[:len(vs)]
			sum := 0.0
			sg := b.sign[c]
			for e, v := range vs {
				x := b.post[v] - msg[e]
				t[e] = x
				if x < 0 {
					sg = -sg
				}
				f := phi(math.Abs(x))
				tp[e] = f
				sum += f
			}
			for e, v := range vs {
				x := t[e]
				s := sg
				if x < 0 {
					s = -s
				}
				m := s * phi(sum-tp[e])
				if m > llrMax {
					m = llrMax
				} else if m < -llrMax {
					m = -llrMax
				}
				msg[e] = m
				b.post[v] = x + m
			}
		}
		u := b.unsatisfied()
		if u == 0 {
			return true, it + 1
		}
		// An attempt whose unsatisfied checks stopped falling will not
		// converge at this rate: stop early and reveal more bits.
		if u < best {
			best, stall = u, 0
		} else if stall++; stall >= pl.stall {
			return false, it + 1
		}
	}
	return false, iters
}

// tailRequests is the number of last requests of a frame's round-trip
// budget that reveal larger shares, so that every punctured bit is revealed
// within it.
const tailRequests = 8

// unsatisfied sets the hard decision from the posteriors and returns the
// number of checks its syndrome gets wrong.
func (b *Bob) unsatisfied() int {
	pl := b.plan
	clear(b.hard)
	for v, x := range b.post {
		if x < 0 {
			b.hard[v>>6] |= 1 << (uint(v) & 63)
		}
	}
	u := 0
	for c := 0; c < pl.m; c++ {
		var s uint64
		for _, v := range pl.chkVar[pl.chkOff[c]:pl.chkOff[c+1]] {
			s ^= b.hard[v>>6] >> (uint(v) & 63)
		}
		u += int((s ^ b.synd[c>>6]>>(uint(c)&63)) & 1)
	}
	return u
}

// check sets the hard decision from the posteriors and reports whether its
// syndrome matches Alice's.
func (b *Bob) check() bool {
	pl := b.plan
	clear(b.hard)
	for v, x := range b.post {
		if x < 0 {
			b.hard[v>>6] |= 1 << (uint(v) & 63)
		}
	}
	for c := 0; c < pl.m; c++ {
		var s uint64
		for _, v := range pl.chkVar[pl.chkOff[c]:pl.chkOff[c+1]] {
			s ^= b.hard[v>>6] >> (uint(v) & 63)
		}
		if s&1 != b.synd[c>>6]>>(uint(c)&63)&1 {
			return false
		}
	}
	return true
}

// Local reconciles bob towards alice in-process (both keys packed, n bits),
// with punctured bits from pad; for tests, benchmarks and experiments.
func Local(ctx context.Context, plan *Plan, alice, bob, pad []uint64) (Result, error) {
	a, err := NewAlice(plan, alice, pad)
	if err != nil {
		return Result{}, err
	}
	return NewBob(plan).Reconcile(ctx, bob, func(_ context.Context, req []cascade.Range) ([]uint64, error) {
		return a.Answer(req)
	})
}

func h2(x float64) float64 {
	if x <= 0 || x >= 1 {
		return 0
	}
	return -x*math.Log2(x) - (1-x)*math.Log2(1-x)
}
