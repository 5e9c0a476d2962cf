package fingerprint

import "math"

// This file implements the optimal one-to-one assignment MCC's LSA and LSA-R
// consolidations call for (Cappelli, Ferrara, Maltoni 2010): the Hungarian
// algorithm (Kuhn–Munkres with potentials, O(n²·m) for n ≤ m), written for
// qshield from the textbook shortest-augmenting-path formulation.

// assignScratch is the reusable memory of maxAssign.
type assignScratch struct {
	u, v, minv []float64
	p, way     []int32
	used       []bool
	cost       []float64
	rowTo      []int32
}

// maxAssign returns a one-to-one assignment of the rows of the n×m weight
// matrix w (row-major, w[i*m+j]) to its columns that maximises the total
// weight: rowTo[i] is the column of row i, or -1 when row i is left
// unassigned (only when n > m). Every weight must be finite. The result
// aliases s and is valid until s is used again.
func maxAssign(w []float32, n, m int, s *assignScratch) []int32 {
	s.rowTo = grow(s.rowTo, n)
	for i := range s.rowTo {
		s.rowTo[i] = -1
	}
	if n == 0 || m == 0 {
		return s.rowTo
	}
	// Work on the orientation with no more rows than columns; cost =
	// max − weight turns maximisation into the minimisation solved below.
	transposed := n > m
	r, c := n, m
	if transposed {
		r, c = m, n
	}
	var hi float32
	for _, x := range w[:n*m] {
		hi = max(hi, x)
	}
	s.cost = grow(s.cost, r*c)
	for i := 0; i < n; i++ {
		for j := 0; j < m; j++ {
			x := float64(hi - w[i*m+j])
			if transposed {
				s.cost[j*c+i] = x
			} else {
				s.cost[i*c+j] = x
			}
		}
	}
	colRow := hungarian(s.cost, r, c, s)
	// colRow[j] (1-based rows, 0 = free) for j = 1..c.
	for j := 1; j <= c; j++ {
		i := colRow[j]
		if i == 0 {
			continue
		}
		if transposed {
			s.rowTo[j-1] = i - 1
		} else {
			s.rowTo[i-1] = int32(j - 1)
		}
	}
	return s.rowTo
}

// hungarian solves the r×c (r ≤ c) minimum-cost assignment of every row and
// returns p: p[j] is the 1-based row assigned to the 1-based column j (0:
// none). It keeps row potentials u and column potentials v with
// u[i] + v[j] ≤ cost[i][j] and grows, for each new row, a shortest
// augmenting path (Dijkstra on reduced costs, minv the tentative distances,
// way the predecessor columns).
func hungarian(cost []float64, r, c int, s *assignScratch) []int32 {
	s.u = grow(s.u, r+1)
	s.v = grow(s.v, c+1)
	s.minv = grow(s.minv, c+1)
	s.p = grow(s.p, c+1)
	s.way = grow(s.way, c+1)
	s.used = grow(s.used, c+1)
	u, v, minv, p, way, used := s.u, s.v, s.minv, s.p, s.way, s.used
	clear(u)
	clear(v)
	clear(p)
	clear(way)
	for i := 1; i <= r; i++ {
		p[0] = int32(i)
		j0 := 0
		for j := range minv {
			minv[j] = math.Inf(1)
		}
		clear(used)
		for {
			used[j0] = true
			i0 := int(p[j0])
			delta := math.Inf(1)
			j1 := 0
			row := cost[(i0-1)*c : i0*c]
			ui := u[i0]
			for j := 1; j <= c; j++ {
				if used[j] {
					continue
				}
				cur := row[j-1] - ui - v[j]
				if cur < minv[j] {
					minv[j] = cur
					way[j] = int32(j0)
				}
				if minv[j] < delta {
					delta = minv[j]
					j1 = j
				}
			}
			for j := 0; j <= c; j++ {
				if used[j] {
					u[p[j]] += delta
					v[j] -= delta
				} else {
					minv[j] -= delta
				}
			}
			j0 = j1
			if p[j0] == 0 {
				break
			}
		}
		for j0 != 0 {
			j1 := int(way[j0])
			p[j0] = p[j1]
			j0 = j1
		}
	}
	return p
}
