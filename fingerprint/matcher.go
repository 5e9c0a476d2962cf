package fingerprint

import (
	"math"
	"slices"
	"sync"
)

// Params are the matcher's tuning parameters. The zero value is not useful;
// start from DefaultParams. The defaults were chosen by the leave-one-database-out
// rule on FVC2002 (the same setting for every database, never per database);
// see the package documentation.
type Params struct {
	// Neighbours is the number of nearest neighbours each minutia is linked to
	// (the edge graph is the symmetric closure of the k-nearest-neighbour graph).
	Neighbours int
	// VoteNeighbours (≤ Neighbours) is the number of nearest neighbours whose
	// edges vote for root pairs; fewer voting edges make voting cheaper.
	VoteNeighbours int
	// MinEdge and MaxEdge bound edge lengths in pixels; shorter edges have
	// unstable directions, longer ones suffer from elastic distortion.
	MinEdge, MaxEdge float64
	// LenTol and LenTolRel: two edges are compatible when their lengths differ
	// by at most LenTol + LenTolRel·length.
	LenTol, LenTolRel float64
	// AngleTol is the tolerance, in radians, on each of the two minutia angles
	// relative to the edge direction.
	AngleTol float64
	// Roots is how many of the best-voted minutia pairs are tried as roots of
	// the pairing graph.
	Roots int
	// HullMargin widens each template's convex hull, in pixels, when counting
	// the minutiae of the other template that fall in the common area.
	HullMargin float64
	// GlobalTol (pixels) and GlobalAngleTol (radians) bound how far a pair may
	// lie from the least-squares rigid alignment of all pairs; 0 disables the
	// global consolidation.
	GlobalTol, GlobalAngleTol float64
	// GlobalTolRel widens GlobalTol by this share of a minutia's distance from
	// the centroid of the pairs: elastic distortion grows away from it.
	GlobalTolRel float64
	// MergeMinPairs > 0 merges into the best pairing graph the graphs grown
	// from other roots that have at least MergeMinPairs pairs and whose own
	// rigid fit agrees with the best graph's: rotations within
	// GlobalAngleTol, and the best fit carries the other graph's centroid to
	// within GlobalTol + MergeStrain·d of its partner, d the distance
	// between the two graphs' centroids. Their pairs join one by one (a pair
	// whose minutia is already paired otherwise stays out) and their
	// support edges count once. Plastic distortion (a pushed or twisted
	// finger) stretches a band around the contact region far beyond the
	// edge tolerances, so one graph cannot grow across it; each side stays
	// nearly rigid, and their pairs add up. 0 keeps the best graph alone.
	MergeMinPairs int
	MergeStrain   float64
	// MinPairs is the number of paired minutiae below which the score is 0.
	MinPairs int
	// FusionWeight weighs the pairing-graph score g in the fused score
	// c·(1 + FusionWeight·g), c the cylinder score; 0 uses the cylinders
	// alone (and skips the graph matcher).
	FusionWeight float64

	// Minutia Cylinder-Code parameters (see mcc.go; pixels at 500 dpi,
	// radians). CylinderRadius is R; CylinderCells (NS) and CylinderAngles
	// (ND) give the cell layout; SigmaS and SigmaD are the spatial and
	// directional Gaussian widths; a cell bit is set when its contribution
	// reaches MuPsi. HullOmega widens the convex hull that decides which
	// cells are valid; a cylinder needs MinValidCells (share of the cells
	// within R) valid cells and MinCylinderMinutiae minutiae within
	// R + 3·SigmaS. Two cylinders are compared only when their minutiae turn
	// by at most MaxRotation and MinMatchableCells (share) of the cells are
	// valid in both.
	CylinderRadius      float64
	CylinderCells       int
	CylinderAngles      int
	SigmaS, SigmaD      float64
	MuPsi               float64
	HullOmega           float64
	MinValidCells       float64
	MinCylinderMinutiae int
	MaxRotation         float64
	MinMatchableCells   float64
	// Consolidation: nP = MinNP + round((MaxNP−MinNP)·Z(min(nA,nB); MuP, TauP))
	// pairs are averaged after RelaxIterations rounds of relaxation with
	// weight RelaxWeight. Two pairs are compatible to the degree
	// Z(d1; RelaxLenTol + RelaxLenTolRel·length, RelaxLenTau)·
	// Z(d2; RelaxAngleTol, RelaxAngleTau)·Z(d3; RelaxAngleTol, RelaxAngleTau),
	// d1 the difference of the lengths joining them, d2 and d3 the
	// differences of relative and radial directions: the length tolerance
	// grows with distance because plastic distortion does.
	MinNP, MaxNP    int
	MuP, TauP       float64
	RelaxIterations int
	RelaxWeight     float64
	RelaxLenTol     float64
	RelaxLenTolRel  float64
	RelaxLenTau     float64
	RelaxAngleTol   float64
	RelaxAngleTau   float64
	// OptimalAssignment selects the one-to-one pairs that enter relaxation
	// by the assignment of largest total local similarity (Hungarian
	// algorithm, MCC's LSA-R) instead of greedily by descending similarity.
	OptimalAssignment bool
}

// DefaultParams returns the parameters used by NewMatcher.
func DefaultParams() Params {
	return Params{
		Neighbours:     8,
		VoteNeighbours: 4,
		MinEdge:        6,
		MaxEdge:        170,
		LenTol:         7,
		LenTolRel:      0.07,
		AngleTol:       0.35,
		Roots:          12,
		MinPairs:       3,
		HullMargin:     15,
		GlobalTol:      16,
		GlobalTolRel:   0.05,
		GlobalAngleTol: 0.6,
		FusionWeight:   2,

		CylinderRadius:      70,
		CylinderCells:       8,
		CylinderAngles:      6,
		SigmaS:              28.0 / 3,
		SigmaD:              2 * math.Pi / 9,
		MuPsi:               0.01,
		HullOmega:           50,
		MinValidCells:       0.75,
		MinCylinderMinutiae: 2,
		MaxRotation:         math.Pi / 2,
		MinMatchableCells:   0.6,
		MinNP:               4,
		MaxNP:               12,
		MuP:                 20,
		TauP:                0.4,
		RelaxIterations:     5,
		RelaxWeight:         0.5,
		RelaxLenTol:         5,
		RelaxLenTolRel:      0,
		RelaxLenTau:         1.6,
		RelaxAngleTol:       math.Pi / 12,
		RelaxAngleTau:       30,
	}
}

// Option configures a Matcher.
type Option func(*config)

type config struct {
	p         Params
	threshold float64
}

// WithParams replaces all matching parameters. Scores from other parameters
// are not calibrated to DefaultThreshold: measure and set WithThreshold too.
func WithParams(p Params) Option { return func(c *config) { c.p = p } }

// WithThreshold sets the score threshold Verify uses (default
// DefaultThreshold). Choose it from an evaluation (fvc.Run, eval.ThresholdForFMR)
// for the false match rate the application needs.
func WithThreshold(t float64) Option { return func(c *config) { c.threshold = t } }

// Matcher compares prepared templates. It is safe for concurrent use; scratch
// memory comes from a per-matcher pool so that Score does not allocate.
type Matcher struct {
	p         Params
	threshold float64
	angTol8   int32 // AngleTol in 2π/256 units
	mcc       *mccTables
	pool      sync.Pool
}

const (
	angleBins     = 16
	angleBinWidth = 256 / angleBins
)

// NewMatcher returns a matcher with DefaultParams modified by opts.
func NewMatcher(opts ...Option) *Matcher {
	c := config{p: DefaultParams(), threshold: DefaultThreshold}
	for _, o := range opts {
		o(&c)
	}
	p := c.p
	if p.Neighbours < 1 {
		p.Neighbours = 1
	}
	if p.Roots < 1 {
		p.Roots = 1
	}
	p.CylinderCells = min(max(p.CylinderCells, 2), 22)
	p.CylinderAngles = min(max(p.CylinderAngles, 1), 32)
	m := &Matcher{p: p, threshold: c.threshold, angTol8: int32(math.Round(p.AngleTol * 256 / twoPi))}
	m.mcc = newMCCTables(&m.p)
	m.pool.New = func() any { return new(scratch) }
	return m
}

// Params returns the matcher's parameters.
func (m *Matcher) Params() Params { return m.p }

// maxMinutiae is the largest number of minutiae a Prepared template keeps
// (the most an ISO finger view can hold).
const maxMinutiae = 255

// edge is a directed edge between two minutiae of one template, described by
// rotation- and translation-invariant features.
type edge struct {
	length float32 // Euclidean length in pixels
	a1, a2 uint8   // from/to minutia angle minus edge direction, in 2π/256 units
	from   uint8
	to     uint8
}

// Prepared is a template pre-processed for fast matching: minutiae in a
// mathematical frame (y up, angles counter-clockwise), the neighbour graph as
// per-minutia edge lists, and all edges sorted by length.
type Prepared struct {
	n     int
	x, y  []float32
	theta []float32
	typ   []uint8
	// adj[adjStart[i]:adjStart[i+1]] are the edges leaving minutia i.
	adjStart []int32
	adj      []edge
	// byLen holds each undirected voting edge once (from < to), sorted by
	// length.
	byLen []edge
	// byBin holds every directed voting edge, grouped by a1/angleBinWidth and sorted
	// by length within a group; group g is byBin[binStart[g]:binStart[g+1]].
	byBin    []edge
	binStart [angleBins + 1]int32
	// hull is the convex hull of the minutiae, counter-clockwise.
	hullX, hullY []float32
	// theta8 is theta in 2π/256 units.
	theta8 []uint8
	// Cylinders: bits and validity mask of minutia i are
	// cylBits/cylMask[i*words:(i+1)*words]; cylIdx lists the minutiae whose
	// cylinder is valid (cylOK).
	cylBits, cylMask []uint64
	// cylPlanes holds, per cylinder, the number of set bits of every
	// spatial cell over the angular slices, bit-sliced: plane q (sw words)
	// holds bit q of the counts, lay.planes planes per cylinder. It only
	// saves popcounts in localSimilarities (same results).
	cylPlanes []uint64
	cylOK     []bool
	cylIdx    []uint8
	// dist[i*n+j] and dir[i*n+j]: distance and direction (2π/256 units) of
	// the segment from minutia i to minutia j.
	dist []float32
	dir  []uint8
	// key orders templates so that Score(a, b) and Score(b, a) compute the
	// same comparison (FNV-1a over the minutiae).
	key uint64
}

// Len returns the number of minutiae used for matching.
func (p *Prepared) Len() int { return p.n }

const twoPi = 2 * math.Pi

func normAngle(a float64) float64 {
	a = math.Mod(a, twoPi)
	if a < 0 {
		a += twoPi
	}
	return a
}

// angDiff8 returns |a−b| on the circle for angles in 2π/256 units, in [0, 128].
func angDiff8(a, b uint8) int32 {
	d := int32(int8(a - b))
	if d < 0 {
		d = -d
	}
	return d
}

// angDiff returns |a−b| on the circle, in [0, π], for a, b in [0, 2π).
func angDiff(a, b float32) float32 {
	d := a - b
	if d < 0 {
		d = -d
	}
	if d > math.Pi {
		d = twoPi - d
	}
	return d
}

// Prepare pre-processes t for matching. It never fails: a template with fewer
// than two minutiae simply never matches. Only the first finger view is used;
// minutiae beyond the 255th are ignored.
func (m *Matcher) Prepare(t *Template) *Prepared {
	p := &Prepared{}
	if t == nil {
		return p
	}
	ms := t.Minutiae
	if len(ms) > maxMinutiae {
		ms = ms[:maxMinutiae]
	}
	n := len(ms)
	p.n = n
	p.x = make([]float32, n)
	p.y = make([]float32, n)
	p.theta = make([]float32, n)
	p.typ = make([]uint8, n)
	for i, mi := range ms {
		p.x[i] = float32(mi.X)
		p.y[i] = float32(-mi.Y)
		p.theta[i] = float32(normAngle(mi.Angle))
		p.typ[i] = uint8(mi.Type)
	}
	// k-nearest-neighbour graph, symmetrised; link = 2 marks the edges among
	// the VoteNeighbours nearest, which also vote for roots.
	link := make([]uint8, n*n)
	type nd struct {
		d float64
		j int
	}
	cand := make([]nd, 0, n)
	for i := 0; i < n; i++ {
		cand = cand[:0]
		for j := 0; j < n; j++ {
			if j == i {
				continue
			}
			dx, dy := float64(p.x[j]-p.x[i]), float64(p.y[j]-p.y[i])
			d := math.Hypot(dx, dy)
			if d < m.p.MinEdge || d > m.p.MaxEdge {
				continue
			}
			cand = append(cand, nd{d, j})
		}
		slices.SortFunc(cand, func(a, b nd) int {
			switch {
			case a.d < b.d:
				return -1
			case a.d > b.d:
				return 1
			}
			return a.j - b.j
		})
		for k := 0; k < len(cand) && k < m.p.Neighbours; k++ {
			j := cand[k].j
			v := uint8(1)
			if k < m.p.VoteNeighbours {
				v = 2
			}
			link[i*n+j] = max(link[i*n+j], v)
			link[j*n+i] = max(link[j*n+i], v)
		}
	}
	p.adjStart = make([]int32, n+1)
	for i := 0; i < n; i++ {
		p.adjStart[i] = int32(len(p.adj))
		for j := 0; j < n; j++ {
			if link[i*n+j] == 0 {
				continue
			}
			e := p.makeEdge(i, j)
			p.adj = append(p.adj, e)
			if link[i*n+j] == 2 {
				p.byBin = append(p.byBin, e)
				if i < j {
					p.byLen = append(p.byLen, e)
				}
			}
		}
	}
	p.adjStart[n] = int32(len(p.adj))
	byLength := func(a, b edge) int {
		switch {
		case a.length < b.length:
			return -1
		case a.length > b.length:
			return 1
		}
		return int(a.from)<<8 + int(a.to) - (int(b.from)<<8 + int(b.to))
	}
	for i := 0; i < n; i++ {
		slices.SortFunc(p.adj[p.adjStart[i]:p.adjStart[i+1]], byLength)
	}
	slices.SortFunc(p.byLen, byLength)
	slices.SortFunc(p.byBin, func(a, b edge) int {
		if ga, gb := a.a1/angleBinWidth, b.a1/angleBinWidth; ga != gb {
			return int(ga) - int(gb)
		}
		return byLength(a, b)
	})
	g := 0
	for i, e := range p.byBin {
		for g <= int(e.a1/angleBinWidth) {
			p.binStart[g] = int32(i)
			g++
		}
	}
	for ; g <= angleBins; g++ {
		p.binStart[g] = int32(len(p.byBin))
	}
	p.hullX, p.hullY = convexHull(p.x, p.y)
	p.theta8 = make([]uint8, n)
	for i := range p.theta8 {
		p.theta8[i] = angleToByte(float64(p.theta[i]))
	}
	m.buildCylinders(p)
	buildPairTables(p)
	h := uint64(14695981039346656037)
	for i := 0; i < n; i++ {
		for _, v := range [...]uint32{uint32(int32(p.x[i])), uint32(int32(p.y[i])), uint32(angleToByte(float64(p.theta[i]))), uint32(p.typ[i])} {
			h ^= uint64(v)
			h *= 1099511628211
		}
	}
	p.key = h
	return p
}

func (p *Prepared) makeEdge(i, j int) edge {
	dx, dy := float64(p.x[j]-p.x[i]), float64(p.y[j]-p.y[i])
	phi := math.Atan2(dy, dx)
	return edge{
		length: float32(math.Hypot(dx, dy)),
		a1:     angleToByte(float64(p.theta[i]) - phi),
		a2:     angleToByte(float64(p.theta[j]) - phi),
		from:   uint8(i),
		to:     uint8(j),
	}
}

// cand is a candidate minutia pair in the pairing queue.
type cand struct {
	err    float32
	a, b   uint8
	parent uint8 // the paired minutia of a the candidate was reached from
}

type root struct {
	vote float32
	a, b uint8
}

type scratch struct {
	votes   []float32
	roots   []root
	heap    []cand
	pairA   []int16 // pairA[a] = b, or -1
	pairB   []int16
	parent  []int16    // parent[a]: the minutia of a that a was reached from, or -1
	pairedA []uint8    // paired minutiae of A in the current graph, in pairing order
	supp    [][2]uint8 // supporting edges (pairs of A minutiae) of the current graph
	keep    []bool     // keep[a]: pair of a survives global consolidation
	// Graph merging (Params.MergeMinPairs): every root's consolidated graph,
	// its pairs gA[start:end] ↔ gB[start:end].
	graphs []graphRec
	gA, gB []uint8
	gSupp  [][4]uint8 // support edges a1, a2 and their partners b1, b2
	uA, uB []int16    // the merged pairing: uA[a] = b, or -1
	uSupp  []uint16   // merged support edges, as a1<<8 | a2 (a1 < a2)
	bestA  []uint8    // paired minutiae of A in the best graph so far
	bestB  []uint8
	tried  []bool // tried[a*nB+b]: already paired in an earlier root's graph

	// MCC consolidation.
	sims, sorted, sel []mccPair
	usedA, usedB      []bool
	rho, lam          []float32
	eff               []int
	cand              []uint8 // b's cylinders passing the direction check
	// Optimal assignment: the compact similarity matrix gamma (rowsA ×
	// colsB) and the positions of minutiae in it (-1: not a row/column).
	posA, posB   []int16
	rowsA, colsB []uint8
	gamma        []float32
	assign       assignScratch
}

// matchResult is the outcome of the best pairing graph.
type matchResult struct {
	pairs   int
	support int // edges between paired minutiae that agree in both templates
	typeOK  int // pairs whose minutia types agree (diagnostics)
	nA, nB  int
	// overA and overB count the minutiae of each template that lie inside the
	// other's convex hull (widened by a margin) after alignment: the minutiae
	// that could have been paired.
	overA, overB int
}

// Score compares two prepared templates and returns a similarity score ≥ 0;
// higher means more similar. It is the relaxed Minutia Cylinder-Code
// similarity c (in [0, 1]) fused with the pairing-graph score g as
// c·(1 + FusionWeight·g) (see Fuse). Score is symmetric, Score(a, b) == Score(b, a),
// deterministic, and does not allocate once the matcher's scratch pool is
// warm.
func (m *Matcher) Score(a, b *Prepared) float64 {
	if a == nil || b == nil {
		return 0
	}
	if a.n > b.n || a.n == b.n && a.key > b.key {
		a, b = b, a
	}
	s := m.pool.Get().(*scratch)
	defer m.pool.Put(s)
	sc := m.mccScore(a, b, s)
	if w := m.p.FusionWeight; w > 0 {
		sc = Fuse(sc, scoreOf(m.match(a, b, s), m.p.MinPairs), w)
	}
	return sc
}

// CylinderScore returns the relaxed cylinder similarity alone (in [0, 1]).
// Together with GraphScore it lets an evaluation try fusion weights without
// matching again: Score = Fuse(CylinderScore, GraphScore, FusionWeight).
func (m *Matcher) CylinderScore(a, b *Prepared) float64 {
	if a == nil || b == nil {
		return 0
	}
	if a.n > b.n || a.n == b.n && a.key > b.key {
		a, b = b, a
	}
	s := m.pool.Get().(*scratch)
	defer m.pool.Put(s)
	return m.mccScore(a, b, s)
}

// GraphScore returns the pairing-graph score g ≥ 0 alone (see the package
// documentation).
func (m *Matcher) GraphScore(a, b *Prepared) float64 {
	if a == nil || b == nil {
		return 0
	}
	if a.n > b.n || a.n == b.n && a.key > b.key {
		a, b = b, a
	}
	s := m.pool.Get().(*scratch)
	defer m.pool.Put(s)
	return scoreOf(m.match(a, b, s), m.p.MinPairs)
}

// Fuse combines a cylinder score c and a graph score g as Score does:
// c·(1 + weight·g). The product lets the graph's evidence amplify the
// cylinders' but never stand in for it: a pair the cylinders find
// dissimilar stays low whatever the graph says.
func Fuse(cylinder, graph, weight float64) float64 {
	if weight <= 0 {
		return cylinder
	}
	return cylinder * (1 + weight*graph)
}

// DefaultThreshold is the score threshold for FMR ≤ 0.1% on each FVC2002
// database with DefaultParams (0.0788 measured, rounded up); see the package
// documentation for how it was chosen and where it did not hold on a
// held-out database.
const DefaultThreshold = 0.08

// Threshold returns the score threshold Verify uses.
func (m *Matcher) Threshold() float64 { return m.threshold }

// Verify reports whether a and b come from the same finger: Score(a, b) at or
// above the matcher's threshold (DefaultThreshold unless WithThreshold).
func (m *Matcher) Verify(a, b *Prepared) (match bool, score float64) {
	s := m.Score(a, b)
	return s >= m.threshold, s
}

// scoreOf turns a consolidated pairing graph into a similarity score:
//
//	(pairs + support)² / sqrt(max(overA, f)·max(overB, f)·nA·nB)
//
// The squared count rewards graphs that are both large (pairs) and internally
// consistent (support edges). The normaliser is the geometric mean of two
// views of "how many minutiae could have matched": the minutiae in the common
// area (overA, overB, floored at f = minOverlap so that a tiny overlap with a
// few chance pairs does not score high) and all minutiae (nA, nB).
func scoreOf(r matchResult, minPairs int) float64 {
	if r.pairs < minPairs || r.nA == 0 || r.nB == 0 {
		return 0
	}
	n := float64(r.pairs + r.support)
	d := float64(max(r.overA, minOverlap)) * float64(max(r.overB, minOverlap)) * float64(r.nA) * float64(r.nB)
	return n * n / math.Sqrt(d)
}

// minOverlap floors the common-area minutiae counts in scoreOf.
const minOverlap = 12

func (m *Matcher) match(a, b *Prepared, s *scratch) matchResult {
	if a == nil || b == nil || a.n < 2 || b.n < 2 {
		return matchResult{}
	}
	best := matchResult{nA: a.n, nB: b.n}
	nA, nB := a.n, b.n
	s.votes = grow(s.votes, nA*nB)
	clear(s.votes)
	s.tried = grow(s.tried, nA*nB)
	clear(s.tried)
	s.pairA = grow(s.pairA, nA)
	s.pairB = grow(s.pairB, nB)
	s.parent = grow(s.parent, nA)
	s.keep = grow(s.keep, nA)
	s.bestA, s.bestB = s.bestA[:0], s.bestB[:0]
	for i := range s.pairA {
		s.pairA[i] = -1
	}
	for i := range s.pairB {
		s.pairB[i] = -1
	}

	// 1. Vote for minutia pairs: every compatible pair of undirected edges
	// (sorted by length, scanned with a sliding window) votes for the two
	// minutia pairs it implies, in both orientations.
	p := &m.p
	lenTol, lenRel := float32(p.LenTol), float32(p.LenTolRel)
	angTol := m.angTol8
	fAngTol := float32(angTol) + 1
	span := (angTol + angleBinWidth - 1) / angleBinWidth // neighbouring bins to scan
	var lo [angleBins]int32
	copy(lo[:], b.binStart[:angleBins])
	for _, ea := range a.byLen {
		tol := lenTol + lenRel*ea.length
		minL, maxL := ea.length-tol, ea.length+tol
		g0 := int32(ea.a1 / angleBinWidth)
		for dg := -span; dg <= span; dg++ {
			g := (g0 + dg + angleBins) % angleBins
			k, end := lo[g], b.binStart[g+1]
			for k < end && b.byBin[k].length < minL {
				k++
			}
			lo[g] = k
			for ; k < end; k++ {
				e := &b.byBin[k]
				if e.length > maxL {
					break
				}
				d1 := angDiff8(ea.a1, e.a1)
				if d1 > angTol {
					continue
				}
				d2 := angDiff8(ea.a2, e.a2)
				if d2 > angTol {
					continue
				}
				dl := e.length - ea.length
				if dl < 0 {
					dl = -dl
				}
				w := 3 - dl/tol - float32(d1+d2)/fAngTol
				s.votes[int(ea.from)*nB+int(e.from)] += w
				s.votes[int(ea.to)*nB+int(e.to)] += w
			}
		}
	}

	// 2. Keep the best-voted minutia pairs as roots.
	s.roots = s.roots[:0]
	var floor float32 // roots must beat this vote
	minIdx := 0
	for i := 0; i < nA; i++ {
		row := s.votes[i*nB : (i+1)*nB]
		for j, v := range row {
			if v <= floor {
				continue
			}
			if len(s.roots) < p.Roots {
				s.roots = append(s.roots, root{v, uint8(i), uint8(j)})
				if len(s.roots) < p.Roots {
					continue
				}
			} else {
				s.roots[minIdx] = root{v, uint8(i), uint8(j)}
			}
			minIdx = 0
			for k := 1; k < len(s.roots); k++ {
				if s.roots[k].vote < s.roots[minIdx].vote {
					minIdx = k
				}
			}
			floor = s.roots[minIdx].vote
		}
	}
	slices.SortFunc(s.roots, func(x, y root) int {
		switch {
		case x.vote > y.vote:
			return -1
		case x.vote < y.vote:
			return 1
		}
		return 0
	})

	// 3. Grow a pairing graph from each root; keep the best.
	bestScore := -1.0
	merge := p.MergeMinPairs > 0
	s.graphs = s.graphs[:0]
	s.gA, s.gB, s.gSupp = s.gA[:0], s.gB[:0], s.gSupp[:0]
	for _, rt := range s.roots {
		if s.tried[int(rt.a)*nB+int(rt.b)] {
			continue
		}
		r := m.grow(a, b, s, rt.a, rt.b)
		m.consolidate(a, b, s, &r)
		if merge {
			g := graphRec{pairs: r.pairs, support: r.support, typeOK: r.typeOK, start: int32(len(s.gA))}
			for _, i := range s.pairedA {
				if s.keep[i] {
					s.gA = append(s.gA, i)
					s.gB = append(s.gB, uint8(s.pairA[i]))
				}
			}
			g.end = int32(len(s.gA))
			g.supStart = int32(len(s.gSupp))
			for _, e := range s.supp {
				if s.keep[e[0]] && s.keep[e[1]] {
					s.gSupp = append(s.gSupp, [4]uint8{e[0], e[1], uint8(s.pairA[e[0]]), uint8(s.pairA[e[1]])})
				}
			}
			g.supEnd = int32(len(s.gSupp))
			g.fit = fitRigid(a, b, s.gA[g.start:g.end], s.gB[g.start:g.end])
			s.graphs = append(s.graphs, g)
		}
		// Graphs are ranked by size and consistency; the overlap-normalised
		// score is computed for the winner only.
		if sc := float64(r.pairs + r.support); sc > bestScore {
			bestScore = sc
			best = r
			s.bestA = s.bestA[:0]
			s.bestB = s.bestB[:0]
			for _, i := range s.pairedA {
				if s.keep[i] {
					s.bestA = append(s.bestA, i)
					s.bestB = append(s.bestB, uint8(s.pairA[i]))
				}
			}
		}
		for _, i := range s.pairedA {
			s.pairB[s.pairA[i]] = -1
			s.pairA[i] = -1
		}
	}
	if merge && bestScore >= 0 {
		m.mergeGraphs(a, b, s, &best)
	}
	best.overA, best.overB = overlap(a, b, s.bestA, s.bestB, float32(p.HullMargin))
	return best
}

// consolidate checks the pairing graph globally: it fits the least-squares
// rigid transform to the pairs, drops pairs whose position (after alignment)
// or direction disagrees by more than GlobalTol / GlobalAngleTol, refits once,
// and recounts pairs and supporting edges among the survivors. Local growth
// alone lets an impostor comparison chain loosely compatible edges across the
// whole print; real pairs of one finger stay near one rigid motion.
func (m *Matcher) consolidate(a, b *Prepared, s *scratch, r *matchResult) {
	for _, i := range s.pairedA {
		s.keep[i] = true
	}
	if len(s.pairedA) < 3 || m.p.GlobalTol <= 0 {
		return
	}
	tol0, tolRel := float32(m.p.GlobalTol), float32(m.p.GlobalTolRel)
	angTol := float32(m.p.GlobalAngleTol)
	for iter := 0; iter < 2; iter++ {
		var cax, cay, cbx, cby float32
		var n int
		for _, i := range s.pairedA {
			if !s.keep[i] {
				continue
			}
			j := s.pairA[i]
			cax += a.x[i]
			cay += a.y[i]
			cbx += b.x[j]
			cby += b.y[j]
			n++
		}
		if n < 2 {
			break
		}
		fn := float32(n)
		cax, cay, cbx, cby = cax/fn, cay/fn, cbx/fn, cby/fn
		var sxx, sxy float32
		for _, i := range s.pairedA {
			if !s.keep[i] {
				continue
			}
			j := s.pairA[i]
			ax, ay := a.x[i]-cax, a.y[i]-cay
			bx, by := b.x[j]-cbx, b.y[j]-cby
			sxx += ax*bx + ay*by
			sxy += ax*by - ay*bx
		}
		h := float32(math.Sqrt(float64(sxx*sxx + sxy*sxy)))
		if h == 0 {
			break
		}
		c, sn := sxx/h, sxy/h
		rot := float32(math.Atan2(float64(sn), float64(c)))
		for _, i := range s.pairedA {
			j := s.pairA[i]
			ax, ay := a.x[i]-cax, a.y[i]-cay
			dx := c*ax - sn*ay + cbx - b.x[j]
			dy := sn*ax + c*ay + cby - b.y[j]
			tol := tol0 + tolRel*float32(math.Sqrt(float64(ax*ax+ay*ay)))
			th := a.theta[i] + rot
			if th < 0 {
				th += twoPi
			} else if th >= twoPi {
				th -= twoPi
			}
			s.keep[i] = dx*dx+dy*dy <= tol*tol && angDiff(th, b.theta[j]) <= angTol
		}
	}
	m.recount(a, b, s, r)
}

// recount sets the graph's pair, type and support counts from the pairs
// consolidation kept.
func (m *Matcher) recount(a, b *Prepared, s *scratch, r *matchResult) {
	r.pairs = 0
	r.typeOK = 0
	for _, i := range s.pairedA {
		if s.keep[i] {
			r.pairs++
			if a.typ[i] == b.typ[s.pairA[i]] {
				r.typeOK++
			}
		}
	}
	r.support = 0
	for _, e := range s.supp {
		if s.keep[e[0]] && s.keep[e[1]] {
			r.support++
		}
	}
}

// graphRec is one root's consolidated pairing graph (graph merging).
type graphRec struct {
	pairs, support, typeOK int
	start, end             int32 // pairs gA/gB[start:end]
	supStart, supEnd       int32 // support edges gSupp[supStart:supEnd]
	fit                    rigid
}

// rigid is a least-squares rigid motion p ↦ R(p − ca) + cb, R = [c −s; s c].
type rigid struct {
	ok                 bool
	cax, cay, cbx, cby float32
	c, s               float32
}

// fitRigid fits the rigid motion carrying the minutiae pa of a onto their
// partners pb of b (at least two pairs; ok false otherwise).
func fitRigid(a, b *Prepared, pa, pb []uint8) rigid {
	n := len(pa)
	if n < 2 {
		return rigid{}
	}
	var f rigid
	for k := 0; k < n; k++ {
		f.cax += a.x[pa[k]]
		f.cay += a.y[pa[k]]
		f.cbx += b.x[pb[k]]
		f.cby += b.y[pb[k]]
	}
	fn := float32(n)
	f.cax, f.cay, f.cbx, f.cby = f.cax/fn, f.cay/fn, f.cbx/fn, f.cby/fn
	var sxx, sxy float32
	for k := 0; k < n; k++ {
		ax, ay := a.x[pa[k]]-f.cax, a.y[pa[k]]-f.cay
		bx, by := b.x[pb[k]]-f.cbx, b.y[pb[k]]-f.cby
		sxx += ax*bx + ay*by
		sxy += ax*by - ay*bx
	}
	h := float32(math.Sqrt(float64(sxx*sxx + sxy*sxy)))
	if h == 0 {
		return rigid{}
	}
	f.c, f.s, f.ok = sxx/h, sxy/h, true
	return f
}

// mergeGraphs merges into best the pairing graphs of the other roots whose
// rigid fits agree with the best graph's (see Params.MergeMinPairs): largest
// first, each graph's pairs join the merged pairing unless one of their
// minutiae is already paired otherwise; the support edges of the merged
// graphs count once each, when both their pairs made it into the merged
// pairing. The merged pairs replace s.bestA/s.bestB, so the overlap is
// measured over all of them.
func (m *Matcher) mergeGraphs(a, b *Prepared, s *scratch, best *matchResult) {
	gs := s.graphs
	// Largest first (few graphs: stable insertion sort, so the best graph,
	// the first of the largest, stays first).
	for i := 1; i < len(gs); i++ {
		for j := i; j > 0 && gs[j].pairs+gs[j].support > gs[j-1].pairs+gs[j-1].support; j-- {
			gs[j], gs[j-1] = gs[j-1], gs[j]
		}
	}
	if len(gs) < 2 || !gs[0].fit.ok {
		return
	}
	f0 := gs[0].fit
	s.uA = grow(s.uA, a.n)
	s.uB = grow(s.uB, b.n)
	for i := range s.uA {
		s.uA[i] = -1
	}
	for i := range s.uB {
		s.uB[i] = -1
	}
	s.uSupp = s.uSupp[:0]
	s.bestA, s.bestB = s.bestA[:0], s.bestB[:0]
	tol0, strain := float32(m.p.GlobalTol), float32(m.p.MergeStrain)
	angTol := m.p.GlobalAngleTol
	rot0 := math.Atan2(float64(f0.s), float64(f0.c))
	typeOK := 0
	for k, g := range gs {
		if k > 0 {
			if g.pairs < m.p.MergeMinPairs || !g.fit.ok {
				continue
			}
			dr := math.Abs(math.Atan2(float64(g.fit.s), float64(g.fit.c)) - rot0)
			if dr > math.Pi {
				dr = twoPi - dr
			}
			if dr > angTol {
				continue
			}
			ax, ay := g.fit.cax-f0.cax, g.fit.cay-f0.cay
			dx := f0.c*ax - f0.s*ay + f0.cbx - g.fit.cbx
			dy := f0.s*ax + f0.c*ay + f0.cby - g.fit.cby
			tol := tol0 + strain*float32(math.Sqrt(float64(ax*ax+ay*ay)))
			if dx*dx+dy*dy > tol*tol {
				continue
			}
		}
		for q := g.start; q < g.end; q++ {
			ia, ib := s.gA[q], s.gB[q]
			if s.uA[ia] >= 0 || s.uB[ib] >= 0 {
				continue // already paired, with ib or otherwise
			}
			s.uA[ia], s.uB[ib] = int16(ib), int16(ia)
			s.bestA = append(s.bestA, ia)
			s.bestB = append(s.bestB, ib)
			if a.typ[ia] == b.typ[ib] {
				typeOK++
			}
		}
		for _, e := range s.gSupp[g.supStart:g.supEnd] {
			if s.uA[e[0]] == int16(e[2]) && s.uA[e[1]] == int16(e[3]) {
				lo, hi := min(e[0], e[1]), max(e[0], e[1])
				s.uSupp = append(s.uSupp, uint16(lo)<<8|uint16(hi))
			}
		}
	}
	slices.Sort(s.uSupp)
	best.support = len(slices.Compact(s.uSupp))
	best.pairs = len(s.bestA)
	best.typeOK = typeOK
}

// overlap aligns a onto b with the least-squares rigid transform of the
// paired minutiae and counts how many minutiae of each template fall inside
// the other's convex hull widened by margin.
func overlap(a, b *Prepared, pa, pb []uint8, margin float32) (int, int) {
	n := len(pa)
	if n < 2 {
		return a.n, b.n
	}
	var cax, cay, cbx, cby float64
	for k := 0; k < n; k++ {
		cax += float64(a.x[pa[k]])
		cay += float64(a.y[pa[k]])
		cbx += float64(b.x[pb[k]])
		cby += float64(b.y[pb[k]])
	}
	fn := float64(n)
	cax, cay, cbx, cby = cax/fn, cay/fn, cbx/fn, cby/fn
	var sxx, sxy float64
	for k := 0; k < n; k++ {
		ax, ay := float64(a.x[pa[k]])-cax, float64(a.y[pa[k]])-cay
		bx, by := float64(b.x[pb[k]])-cbx, float64(b.y[pb[k]])-cby
		sxx += ax*bx + ay*by
		sxy += ax*by - ay*bx
	}
	h := math.Hypot(sxx, sxy)
	if h == 0 {
		return a.n, b.n
	}
	c, sn := float32(sxx/h), float32(sxy/h)
	// a → b: p' = R(p − ca) + cb; b → a: p = Rᵀ(p' − cb) + ca.
	fcax, fcay, fcbx, fcby := float32(cax), float32(cay), float32(cbx), float32(cby)
	overA := 0
	for i := 0; i < a.n; i++ {
		x, y := a.x[i]-fcax, a.y[i]-fcay
		if inHull(b.hullX, b.hullY, c*x-sn*y+fcbx, sn*x+c*y+fcby, margin) {
			overA++
		}
	}
	overB := 0
	for i := 0; i < b.n; i++ {
		x, y := b.x[i]-fcbx, b.y[i]-fcby
		if inHull(a.hullX, a.hullY, c*x+sn*y+fcax, -sn*x+c*y+fcay, margin) {
			overB++
		}
	}
	return overA, overB
}

// inHull reports whether (x, y) lies inside the counter-clockwise convex
// polygon hx, hy widened by margin.
func inHull(hx, hy []float32, x, y, margin float32) bool {
	h := len(hx)
	if h < 3 {
		return true
	}
	for i := 0; i < h; i++ {
		j := i + 1
		if j == h {
			j = 0
		}
		ex, ey := hx[j]-hx[i], hy[j]-hy[i]
		l := float32(math.Sqrt(float64(ex*ex + ey*ey)))
		if l == 0 {
			continue
		}
		// Signed distance to the left of edge i→j (inside is left).
		if (ex*(y-hy[i])-ey*(x-hx[i]))/l < -margin {
			return false
		}
	}
	return true
}

// convexHull returns the convex hull of the points, counter-clockwise
// (Andrew's monotone chain).
func convexHull(xs, ys []float32) ([]float32, []float32) {
	n := len(xs)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(i, j int) int {
		switch {
		case xs[i] < xs[j]:
			return -1
		case xs[i] > xs[j]:
			return 1
		case ys[i] < ys[j]:
			return -1
		case ys[i] > ys[j]:
			return 1
		}
		return 0
	})
	cross := func(o, a, b int) float32 {
		return (xs[a]-xs[o])*(ys[b]-ys[o]) - (ys[a]-ys[o])*(xs[b]-xs[o])
	}
	hull := make([]int, 0, 2*n)
	for _, i := range idx {
		for len(hull) >= 2 && cross(hull[len(hull)-2], hull[len(hull)-1], i) <= 0 {
			hull = hull[:len(hull)-1]
		}
		hull = append(hull, i)
	}
	lower := len(hull) + 1
	for k := n - 2; k >= 0; k-- {
		i := idx[k]
		for len(hull) >= lower && cross(hull[len(hull)-2], hull[len(hull)-1], i) <= 0 {
			hull = hull[:len(hull)-1]
		}
		hull = append(hull, i)
	}
	if len(hull) > 1 {
		hull = hull[:len(hull)-1]
	}
	hx := make([]float32, len(hull))
	hy := make([]float32, len(hull))
	for k, i := range hull {
		hx[k], hy[k] = xs[i], ys[i]
	}
	return hx, hy
}

// grow builds the pairing graph from root pair (ra, rb): the cheapest
// compatible edge pair leaving the paired set is taken next (best-first), so
// only local geometry is compared and elastic distortion accumulates slowly.
func (m *Matcher) grow(a, b *Prepared, s *scratch, ra, rb uint8) matchResult {
	r := matchResult{nA: a.n, nB: b.n}
	nB := b.n
	s.heap = s.heap[:0]
	s.pairedA = s.pairedA[:0]
	s.supp = s.supp[:0]
	s.pairA[ra] = int16(rb)
	s.pairB[rb] = int16(ra)
	s.pairedA = append(s.pairedA, ra)
	s.parent[ra] = -1
	r.pairs = 1
	if a.typ[ra] == b.typ[rb] {
		r.typeOK++
	}
	s.tried[int(ra)*nB+int(rb)] = true
	m.pushNeighbours(a, b, s, ra, rb, &r)
	for len(s.heap) > 0 {
		c := popCand(&s.heap)
		if s.pairA[c.a] >= 0 || s.pairB[c.b] >= 0 {
			continue
		}
		s.parent[c.a] = int16(c.parent)
		s.pairA[c.a] = int16(c.b)
		s.pairB[c.b] = int16(c.a)
		s.pairedA = append(s.pairedA, c.a)
		s.tried[int(c.a)*nB+int(c.b)] = true
		r.pairs++
		if a.typ[c.a] == b.typ[c.b] {
			r.typeOK++
		}
		m.pushNeighbours(a, b, s, c.a, c.b, &r)
	}
	return r
}

// pushNeighbours looks at every edge leaving the newly paired (pa, pb). An edge
// to an already paired minutia whose counterpart edge in b exists and agrees
// is counted as support (the pairing-tree edge back to the parent excepted);
// compatible edge pairs to two unpaired minutiae are queued as candidates.
func (m *Matcher) pushNeighbours(a, b *Prepared, s *scratch, pa, pb uint8, r *matchResult) {
	p := &m.p
	lenTol, lenRel := float32(p.LenTol), float32(p.LenTolRel)
	angTol := m.angTol8
	fAngTol := float32(angTol) + 1
	ea := a.adj[a.adjStart[pa]:a.adjStart[int(pa)+1]]
	eb := b.adj[b.adjStart[pb]:b.adjStart[int(pb)+1]]
	parent := s.parent[pa]
	lo := 0
	for i := range ea {
		x := &ea[i]
		tol := lenTol + lenRel*x.length
		if other := s.pairA[x.to]; other >= 0 {
			if int16(x.to) == parent {
				continue
			}
			for j := range eb {
				y := &eb[j]
				if int16(y.to) != other {
					continue
				}
				dl := y.length - x.length
				if dl < 0 {
					dl = -dl
				}
				if dl <= tol && angDiff8(x.a1, y.a1) <= angTol && angDiff8(x.a2, y.a2) <= angTol {
					r.support++
					s.supp = append(s.supp, [2]uint8{pa, x.to})
				}
				break
			}
			continue
		}
		// Both lists are sorted by length: skip the too-short edges of b for
		// good, stop at the first too-long one.
		minL, maxL := x.length-tol, x.length+tol
		for lo < len(eb) && eb[lo].length < minL {
			lo++
		}
		for j := lo; j < len(eb); j++ {
			y := &eb[j]
			if y.length > maxL {
				break
			}
			if s.pairB[y.to] >= 0 {
				continue
			}
			dl := y.length - x.length
			if dl < 0 {
				dl = -dl
			}
			d1 := angDiff8(x.a1, y.a1)
			if d1 > angTol {
				continue
			}
			d2 := angDiff8(x.a2, y.a2)
			if d2 > angTol {
				continue
			}
			pushCand(&s.heap, cand{dl/tol + float32(d1+d2)/fAngTol, x.to, y.to, pa})
		}
	}
}

func pushCand(h *[]cand, c cand) {
	*h = append(*h, c)
	hs := *h
	i := len(hs) - 1
	for i > 0 {
		par := (i - 1) / 2
		if hs[par].err <= hs[i].err {
			break
		}
		hs[par], hs[i] = hs[i], hs[par]
		i = par
	}
}

func popCand(h *[]cand) cand {
	hs := *h
	top := hs[0]
	last := len(hs) - 1
	hs[0] = hs[last]
	hs = hs[:last]
	i := 0
	for {
		l := 2*i + 1
		if l >= len(hs) {
			break
		}
		c := l
		if r := l + 1; r < len(hs) && hs[r].err < hs[l].err {
			c = r
		}
		if hs[i].err <= hs[c].err {
			break
		}
		hs[i], hs[c] = hs[c], hs[i]
		i = c
	}
	*h = hs
	return top
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
