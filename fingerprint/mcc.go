package fingerprint

import (
	"math"
	"math/bits"
	"slices"
)

// This file implements the Minutia Cylinder-Code (MCC) local descriptors of
// Cappelli, Ferrara and Maltoni (IEEE TPAMI 32(12), 2010), bit variant, and
// their consolidation by relaxation (LSA-R; the one-to-one assignment is
// greedy by default or optimal, by the Hungarian algorithm of assign.go, with
// Params.OptimalAssignment).
//
// A cylinder describes the neighbourhood of one minutia in the minutia's own
// frame (origin at the minutia, x axis along its direction), so it does not
// depend on any global alignment of the two prints: only the neighbourhood of
// radius R must be roughly rigid, which elastic distortion respects far better
// than a whole print does. Consolidation then keeps the pairs whose mutual
// geometry agrees (relaxation), with a length tolerance that grows with the
// distance between the minutiae (plastic distortion grows with distance).

// cylinderLayout is the cell layout of the cylinders of one Prepared. Bits
// are stored angle-major: angular slice a holds the ns·ns spatial cells in
// sw words, so that one spatial validity mask of sw words serves every
// slice.
type cylinderLayout struct {
	ns, nd int // spatial cells per side, angular cells
	sw     int // uint64 words per angular slice (and per validity mask)
	words  int // uint64 words per cylinder bit vector (sw·nd)
	planes int // bit planes of the per-cell counts (bits.Len(nd))
}

// maxSliceWords bounds sw so that the common validity mask of two cylinders
// fits a fixed array: ns ≤ 22.
const maxSliceWords = 8

// mccTables holds what a Matcher precomputes for cylinders and relaxation.
type mccTables struct {
	lay cylinderLayout
	// cellDX, cellDY: cell-centre offsets in the minutia frame, per spatial
	// cell (i*ns + j); inR: whether the cell centre lies within R.
	cellDX, cellDY []float64
	inR            []bool
	cellsInR       int
	// angInt[k][b]: ∫ of the angular Gaussian over cell k for a direction
	// difference quantised to byte b (2π/256 units).
	angInt [][256]float64
	// sqrt[n] = √n for every possible popcount of a cylinder.
	sqrt []float32
	// sig is the logistic function 1/(1+e^{-x}) tabulated on [-sigMax, sigMax].
	sig [2*sigSteps + 1]float32
}

const (
	sigMax   = 16
	sigSteps = 1024 // per side
)

func (t *mccTables) logistic(x float32) float32 {
	u := x * (sigSteps / sigMax)
	if u <= -sigSteps {
		return t.sig[0]
	}
	if u >= sigSteps {
		return t.sig[2*sigSteps]
	}
	return t.sig[int(u+sigSteps+0.5)]
}

func newMCCTables(p *Params) *mccTables {
	ns, nd := p.CylinderCells, p.CylinderAngles
	sw := (ns*ns + 63) / 64
	t := &mccTables{lay: cylinderLayout{ns: ns, nd: nd, sw: sw, words: sw * nd, planes: bits.Len(uint(nd))}}
	ds := 2 * p.CylinderRadius / float64(ns)
	c := float64(ns+1) / 2
	t.cellDX = make([]float64, ns*ns)
	t.cellDY = make([]float64, ns*ns)
	t.inR = make([]bool, ns*ns)
	for i := 0; i < ns; i++ {
		for j := 0; j < ns; j++ {
			k := i*ns + j
			t.cellDX[k] = ds * (float64(i+1) - c)
			t.cellDY[k] = ds * (float64(j+1) - c)
			if math.Hypot(t.cellDX[k], t.cellDY[k]) <= p.CylinderRadius {
				t.inR[k] = true
				t.cellsInR++
			}
		}
	}
	dd := twoPi / float64(nd)
	sd := p.SigmaD * math.Sqrt2
	t.angInt = make([][256]float64, nd)
	for k := 0; k < nd; k++ {
		phi := -math.Pi + (float64(k)+0.5)*dd
		for b := 0; b < 256; b++ {
			d := float64(b) * twoPi / 256
			if d >= math.Pi {
				d -= twoPi
			}
			alpha := phi - d
			alpha = math.Remainder(alpha, twoPi)
			t.angInt[k][b] = 0.5 * (math.Erf((alpha+dd/2)/sd) - math.Erf((alpha-dd/2)/sd))
		}
	}
	t.sqrt = make([]float32, t.lay.words*64+1)
	for i := range t.sqrt {
		t.sqrt[i] = float32(math.Sqrt(float64(i)))
	}
	for i := range t.sig {
		x := (float64(i) - sigSteps) * sigMax / sigSteps
		t.sig[i] = float32(1 / (1 + math.Exp(-x)))
	}
	return t
}

// buildCylinders computes the cylinder of every minutia of p. Cylinders with
// too few valid cells or contributing minutiae are marked invalid
// (cylOK[i] = false) and take no part in matching.
func (m *Matcher) buildCylinders(p *Prepared) {
	t := m.mcc
	lay := t.lay
	n := p.n
	p.cylBits = make([]uint64, n*lay.words)
	p.cylMask = make([]uint64, n*lay.sw)
	p.cylOK = make([]bool, n)
	p.cylPlanes = make([]uint64, n*lay.planes*lay.sw)
	p.cylIdx = p.cylIdx[:0]
	sigS := m.p.SigmaS
	gNorm := 1 / (sigS * math.Sqrt(2*math.Pi))
	reach := 3 * sigS
	r := m.p.CylinderRadius
	theta8 := make([]uint8, n)
	for i := 0; i < n; i++ {
		theta8[i] = angleToByte(float64(p.theta[i]))
	}
	margin := float32(m.p.HullOmega)
	var near []int
	cell := make([]float64, lay.nd)
	for i := 0; i < n; i++ {
		xi, yi := float64(p.x[i]), float64(p.y[i])
		c, s := math.Cos(float64(p.theta[i])), math.Sin(float64(p.theta[i]))
		near = near[:0]
		for j := 0; j < n; j++ {
			if j != i && math.Hypot(float64(p.x[j])-xi, float64(p.y[j])-yi) <= r+reach {
				near = append(near, j)
			}
		}
		if len(near) < m.p.MinCylinderMinutiae {
			continue
		}
		bitsV := p.cylBits[i*lay.words : (i+1)*lay.words]
		mask := p.cylMask[i*lay.sw : (i+1)*lay.sw]
		valid := 0
		for k := range t.cellDX {
			if !t.inR[k] {
				continue
			}
			px := xi + c*t.cellDX[k] - s*t.cellDY[k]
			py := yi + s*t.cellDX[k] + c*t.cellDY[k]
			if !inHull(p.hullX, p.hullY, float32(px), float32(py), margin) {
				continue
			}
			valid++
			clear(cell)
			for _, j := range near {
				dx, dy := float64(p.x[j])-px, float64(p.y[j])-py
				d2 := dx*dx + dy*dy
				if d2 > reach*reach {
					continue
				}
				g := gNorm * math.Exp(-d2/(2*sigS*sigS))
				// Direction difference θ_i − θ_j, as a byte.
				db := theta8[i] - theta8[j]
				for a := 0; a < lay.nd; a++ {
					cell[a] += g * t.angInt[a][db]
				}
			}
			mask[k/64] |= 1 << (k % 64)
			for a := 0; a < lay.nd; a++ {
				if cell[a] >= m.p.MuPsi {
					bitsV[a*lay.sw+k/64] |= 1 << (k % 64)
				}
			}
		}
		if float64(valid) < m.p.MinValidCells*float64(t.cellsInR) {
			clear(bitsV)
			clear(mask)
			continue
		}
		p.cylOK[i] = true
		p.cylIdx = append(p.cylIdx, uint8(i))
		// Bit-sliced per-cell counts over the angular slices.
		planes := p.cylPlanes[i*lay.planes*lay.sw : (i+1)*lay.planes*lay.sw]
		for w := 0; w < lay.sw; w++ {
			for b := 0; b < 64; b++ {
				cnt := 0
				for a := 0; a < lay.nd; a++ {
					cnt += int(bitsV[a*lay.sw+w] >> b & 1)
				}
				for q := 0; q < lay.planes; q++ {
					planes[q*lay.sw+w] |= uint64(cnt>>q&1) << b
				}
			}
		}
	}
}

// buildPairTables fills p.dist and p.dir: the distance between every two
// minutiae and the direction of the segment from one to the other (2π/256
// units), so that relaxation needs no square root or arctangent per
// comparison.
func buildPairTables(p *Prepared) {
	n := p.n
	p.dist = make([]float32, n*n)
	p.dir = make([]uint8, n*n)
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			dx, dy := float64(p.x[j]-p.x[i]), float64(p.y[j]-p.y[i])
			d := float32(math.Hypot(dx, dy))
			p.dist[i*n+j], p.dist[j*n+i] = d, d
			a := angleToByte(math.Atan2(dy, dx))
			p.dir[i*n+j], p.dir[j*n+i] = a, a+128
		}
	}
}

// mccPair is one candidate minutia pair with its local similarity.
type mccPair struct {
	sim  float32
	a, b uint8
}

// localSimilarities fills s.sims with the local similarity of every pair of
// valid cylinders that passes the direction check, and returns how many there
// are.
func (m *Matcher) localSimilarities(a, b *Prepared, s *scratch) {
	lay := m.mcc.lay
	w, sw, nd, np := lay.words, lay.sw, lay.nd, lay.planes
	// Validity is per spatial cell, the same in every angular slice.
	minCommon := int(math.Ceil(m.p.MinMatchableCells * float64(m.mcc.cellsInR)))
	dTheta := int32(math.Round(m.p.MaxRotation * 256 / twoPi))
	s.sims = s.sims[:0]
	var v [maxSliceWords]uint64
	sq := m.mcc.sqrt
	// The direction check compacts b's candidates without a branch per
	// pair (about half pass, which a branch would mispredict); the order of
	// b.cylIdx, and so of s.sims, is kept.
	s.cand = grow(s.cand, len(b.cylIdx))
	for _, i := range a.cylIdx {
		ba := a.cylBits[int(i)*w : int(i+1)*w]
		ma := a.cylMask[int(i)*sw : int(i+1)*sw]
		ta := a.theta8[i]
		nc := 0
		for _, j := range b.cylIdx {
			s.cand[nc] = j
			d := int32(int8(ta - b.theta8[j]))
			d = (d ^ d>>31) - d>>31 // |d|, in 2π/256 units
			nc += int(uint32(dTheta-d)>>31 ^ 1)
		}
		for _, j := range s.cand[:nc] {
			mb := b.cylMask[int(j)*sw : int(j+1)*sw]
			nab := 0
			for k := 0; k < sw; k++ {
				v[k] = ma[k] & mb[k]
				nab += bits.OnesCount64(v[k])
			}
			if nab < minCommon {
				continue
			}
			bb := b.cylBits[int(j)*w : int(j+1)*w]
			// na, nb: the set bits of each cylinder within the common valid
			// cells, from the bit-sliced per-cell counts (planes·sw
			// popcounts instead of nd·sw); nx: the differing bits there.
			var na, nb, nx int
			if sw == 4 && np == 3 {
				// NS 13–16, ND 4–7 (the default): unrolled, the mask in
				// registers.
				v0, v1, v2, v3 := v[0], v[1], v[2], v[3]
				pa := a.cylPlanes[int(i)*12 : int(i)*12+12 : int(i)*12+12]
				pb := b.cylPlanes[int(j)*12 : int(j)*12+12 : int(j)*12+12]
				na = bits.OnesCount64(pa[0]&v0) + bits.OnesCount64(pa[1]&v1) + bits.OnesCount64(pa[2]&v2) + bits.OnesCount64(pa[3]&v3) +
					(bits.OnesCount64(pa[4]&v0)+bits.OnesCount64(pa[5]&v1)+bits.OnesCount64(pa[6]&v2)+bits.OnesCount64(pa[7]&v3))<<1 +
					(bits.OnesCount64(pa[8]&v0)+bits.OnesCount64(pa[9]&v1)+bits.OnesCount64(pa[10]&v2)+bits.OnesCount64(pa[11]&v3))<<2
				nb = bits.OnesCount64(pb[0]&v0) + bits.OnesCount64(pb[1]&v1) + bits.OnesCount64(pb[2]&v2) + bits.OnesCount64(pb[3]&v3) +
					(bits.OnesCount64(pb[4]&v0)+bits.OnesCount64(pb[5]&v1)+bits.OnesCount64(pb[6]&v2)+bits.OnesCount64(pb[7]&v3))<<1 +
					(bits.OnesCount64(pb[8]&v0)+bits.OnesCount64(pb[9]&v1)+bits.OnesCount64(pb[10]&v2)+bits.OnesCount64(pb[11]&v3))<<2
				for a0 := 0; a0+4 <= len(ba) && a0+4 <= len(bb); a0 += 4 {
					x, y := ba[a0:a0+4:a0+4], bb[a0:a0+4:a0+4]
					nx += bits.OnesCount64((x[0]^y[0])&v0) + bits.OnesCount64((x[1]^y[1])&v1) + bits.OnesCount64((x[2]^y[2])&v2) + bits.OnesCount64((x[3]^y[3])&v3)
				}
			} else {
				na = maskedCount(a.cylPlanes[int(i)*np*sw:int(i+1)*np*sw], sw, &v)
				nb = maskedCount(b.cylPlanes[int(j)*np*sw:int(j+1)*np*sw], sw, &v)
				for a0 := 0; a0 < nd*sw; a0 += sw {
					for k := 0; k < sw; k++ {
						nx += bits.OnesCount64((ba[a0+k] ^ bb[a0+k]) & v[k])
					}
				}
			}
			if na+nb == 0 {
				continue
			}
			sim := 1 - sq[nx]/(sq[na]+sq[nb])
			if sim > 0 {
				s.sims = append(s.sims, mccPair{sim, i, j})
			}
		}
	}
}

// mccScore consolidates the local similarities of a and b into a score in
// [0, 1]: one-to-one assignment (greedy or optimal), relaxation
// of the nR = min(nA, nB) assigned pairs, and the mean relaxed similarity of
// the nP pairs whose similarity the relaxation kept best.
func (m *Matcher) mccScore(a, b *Prepared, s *scratch) float64 {
	nA, nB := len(a.cylIdx), len(b.cylIdx)
	if nA < 2 || nB < 2 {
		return 0
	}
	m.localSimilarities(a, b, s)
	if len(s.sims) == 0 {
		return 0
	}
	t := m.mcc
	// nP grows with the smaller template (4 … 12).
	nMin := min(nA, nB)
	nP := m.p.MinNP + int(math.Round(float64(m.p.MaxNP-m.p.MinNP)*float64(t.logistic(float32(m.p.TauP*(float64(nMin)-m.p.MuP))))))
	nR := nMin

	if m.p.OptimalAssignment {
		m.optimalPairs(a, b, s)
	} else {
		m.greedyPairs(a, b, s, nR)
	}
	n := len(s.sel)
	if n < 2 {
		return 0
	}
	nP = min(nP, n)

	// Relaxation: λ_t ← wR·λ_t + (1−wR)/(n−1)·Σ_{k≠t} ρ(t,k)·λ_k.
	s.rho = grow(s.rho, n*n)
	mu1, rel1 := float32(m.p.RelaxLenTol), float32(m.p.RelaxLenTolRel)
	tau1 := float32(m.p.RelaxLenTau)
	muA, tauA := float32(m.p.RelaxAngleTol), float32(m.p.RelaxAngleTau)
	for ti := 0; ti < n; ti++ {
		s.rho[ti*n+ti] = 0
		pa, pb := s.sel[ti].a, s.sel[ti].b
		for ki := ti + 1; ki < n; ki++ {
			qa, qb := s.sel[ki].a, s.sel[ki].b
			la := a.dist[int(pa)*a.n+int(qa)]
			lb := b.dist[int(pb)*b.n+int(qb)]
			d1 := la - lb
			if d1 < 0 {
				d1 = -d1
			}
			mu := mu1 + rel1*(la+lb)/2
			z1 := t.logistic(-tau1 * (d1 - mu))
			if z1 < 1e-4 {
				s.rho[ti*n+ki], s.rho[ki*n+ti] = 0, 0
				continue
			}
			// Relative direction of the two minutiae.
			d2 := float32(angDiff8(a.theta8[pa]-a.theta8[qa], b.theta8[pb]-b.theta8[qb])) * (twoPi / 256)
			z2 := t.logistic(-tauA * (d2 - muA))
			// Radial angles: the direction of the joining segment in each
			// minutia's frame (both ends).
			phA := a.dir[int(pa)*a.n+int(qa)]
			phB := b.dir[int(pb)*b.n+int(qb)]
			d3t := float32(angDiff8(a.theta8[pa]-phA, b.theta8[pb]-phB)) * (twoPi / 256)
			d3k := float32(angDiff8(a.theta8[qa]-phA, b.theta8[qb]-phB)) * (twoPi / 256)
			base := z1 * z2
			s.rho[ti*n+ki] = base * t.logistic(-tauA*(d3t-muA))
			s.rho[ki*n+ti] = base * t.logistic(-tauA*(d3k-muA))
		}
	}
	s.lam = grow(s.lam, 2*n)
	lam, next := s.lam[:n], s.lam[n:]
	for k, q := range s.sel {
		lam[k] = q.sim
	}
	wR := float32(m.p.RelaxWeight)
	f := (1 - wR) / float32(n-1)
	for it := 0; it < m.p.RelaxIterations; it++ {
		for ti := 0; ti < n; ti++ {
			row := s.rho[ti*n : (ti+1)*n]
			var sum float32
			for k, r := range row {
				sum += r * lam[k]
			}
			next[ti] = wR*lam[ti] + f*sum
		}
		lam, next = next, lam
	}
	// Keep the nP pairs with the best efficiency λ_final/λ_initial.
	s.eff = grow(s.eff, n)
	for k := range s.eff {
		s.eff[k] = k
	}
	effOf := func(k int) float32 { return lam[k] / s.sel[k].sim }
	// Partial selection sort: nP ≤ 12.
	var sum float64
	for r := 0; r < nP; r++ {
		best := r
		for k := r + 1; k < n; k++ {
			if effOf(s.eff[k]) > effOf(s.eff[best]) {
				best = k
			}
		}
		s.eff[r], s.eff[best] = s.eff[best], s.eff[r]
		sum += float64(lam[s.eff[r]])
	}
	return sum / float64(nP)
}

// greedyPairs fills s.sel with a greedy one-to-one assignment of s.sims: by
// descending similarity (counting sort on a quantised similarity), each pair
// whose minutiae are both still free, at most nR pairs.
func (m *Matcher) greedyPairs(a, b *Prepared, s *scratch, nR int) {
	const buckets = 512
	var count [buckets + 1]int32
	for _, q := range s.sims {
		count[int(q.sim*(buckets-1))]++
	}
	start := int32(0)
	for k := buckets - 1; k >= 0; k-- {
		c := count[k]
		count[k] = start
		start += c
	}
	s.sorted = grow(s.sorted, len(s.sims))
	for _, q := range s.sims {
		k := int(q.sim * (buckets - 1))
		s.sorted[count[k]] = q
		count[k]++
	}
	s.usedA = grow(s.usedA, a.n)
	s.usedB = grow(s.usedB, b.n)
	clear(s.usedA)
	clear(s.usedB)
	s.sel = s.sel[:0]
	for _, q := range s.sorted {
		if s.usedA[q.a] || s.usedB[q.b] {
			continue
		}
		s.usedA[q.a], s.usedB[q.b] = true, true
		s.sel = append(s.sel, q)
		if len(s.sel) == nR {
			break
		}
	}
}

// optimalPairs fills s.sel with the one-to-one assignment of s.sims of the
// largest total similarity (Hungarian algorithm, maxAssign), as MCC's
// LSA-R prescribes, sorted by descending similarity (ties: minutia of a,
// then of b). Only minutiae with at least one candidate pair take part, so
// the assignment problem stays as small as the similarities allow.
func (m *Matcher) optimalPairs(a, b *Prepared, s *scratch) {
	s.posA = grow(s.posA, a.n)
	s.posB = grow(s.posB, b.n)
	for i := range s.posA {
		s.posA[i] = -1
	}
	for j := range s.posB {
		s.posB[j] = -1
	}
	s.rowsA, s.colsB = s.rowsA[:0], s.colsB[:0]
	for _, q := range s.sims {
		if s.posA[q.a] < 0 {
			s.posA[q.a] = int16(len(s.rowsA))
			s.rowsA = append(s.rowsA, q.a)
		}
		if s.posB[q.b] < 0 {
			s.posB[q.b] = int16(len(s.colsB))
			s.colsB = append(s.colsB, q.b)
		}
	}
	r, c := len(s.rowsA), len(s.colsB)
	s.gamma = grow(s.gamma, r*c)
	clear(s.gamma)
	for _, q := range s.sims {
		s.gamma[int(s.posA[q.a])*c+int(s.posB[q.b])] = q.sim
	}
	rowTo := maxAssign(s.gamma, r, c, &s.assign)
	s.sel = s.sel[:0]
	for i, j := range rowTo {
		if j < 0 {
			continue
		}
		if sim := s.gamma[i*c+int(j)]; sim > 0 {
			s.sel = append(s.sel, mccPair{sim, s.rowsA[i], s.colsB[j]})
		}
	}
	slices.SortFunc(s.sel, func(x, y mccPair) int {
		switch {
		case x.sim > y.sim:
			return -1
		case x.sim < y.sim:
			return 1
		case x.a != y.a:
			return int(x.a) - int(y.a)
		}
		return int(x.b) - int(y.b)
	})
}

// maskedCount returns the number of set bits of a cylinder within the cells
// of v, Σ_q 2^q·popcount(plane_q & v), from its bit-sliced per-cell counts
// (planes of sw words each).
func maskedCount(planes []uint64, sw int, v *[maxSliceWords]uint64) int {
	n := 0
	for q := 0; q*sw < len(planes); q++ {
		c := 0
		for k := 0; k < sw; k++ {
			c += bits.OnesCount64(planes[q*sw+k] & v[k])
		}
		n += c << q
	}
	return n
}
