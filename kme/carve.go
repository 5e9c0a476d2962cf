package kme

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Carving: how keys of any size come out of one pool.
//
// The pool holds units of key material of varying length (a deposited QKD
// key cut into segments of Config.SegmentBits, the last one shorter). A
// request for number keys of size bits takes units from its end of the pool
// and cuts them in order: a key takes whole units while they fit and the
// head of the next one when they do not. Cutting the first c bits off a
// unit named U yields a piece named head(U, c) and a remainder named
// tail(U, c), RFC 9562 version-5 UUIDs in U's namespace, so that the peer KME,
// told only which units each key used and where the last one was cut,
// derives the same pieces under the same names. A remainder keeps its row
// (and sequence number, so its place in the pool): the row is rewritten
// with the remainder's material only, so no delivered bit stays in the
// pool, and a second request cuts it again. Every rewrite checks in SQL the
// ID the row had, so a unit can be cut only once.

// piece is a contiguous part of one stored unit handed out as (part of) a key.
type piece struct {
	row  *carveRow
	from string // ID of the unit it was cut from (the row's or a remainder's)
	id   string // its own ID: from itself when it takes all of from
	head bool   // cut off the front of from (the rest stays available)
	off  int    // byte offset in the row's material
	n    int    // length in bytes
	// u is the piece as a unit of its group: the row itself for a whole
	// unit, a new row (seq set when filed) for a cut piece.
	u *unit
	// g and part place it in its reserved key (set by carving.groups).
	g    *group
	part int
}

// carveRow is one stored unit a request uses.
type carveRow struct {
	src    *unit    // the row as the index held it
	pieces []*piece // in offset order
	tail   *unit    // what stays available (src's seq), nil if all used
}

// whole reports whether the row is handed out as it is (no cut).
func (r *carveRow) whole() bool { return r.tail == nil && len(r.pieces) == 1 && !r.pieces[0].head }

// carving is the plan of one request: the rows it touches and the pieces of
// each key, in order.
type carving struct {
	rows []*carveRow
	keys [][]*piece
}

// cursor is the unused rest of a row during planning.
type cursor struct {
	row  *carveRow
	id   string
	off  int
	left int // bytes
}

// cut takes n bytes (all that is left when n >= left) from c.
func (c *cursor) cut(n int) *piece {
	p := &piece{row: c.row, from: c.id, off: c.off}
	if n >= c.left {
		p.id, p.n = c.id, c.left
		c.off += c.left
		c.left = 0
	} else {
		p.id, p.n, p.head = headID(c.id, n*8), n, true
		c.id = tailID(c.id, n*8)
		c.off += n
		c.left -= n
	}
	c.row.pieces = append(c.row.pieces, p)
	src := c.row.src
	if p.head || p.off != 0 {
		p.u = &unit{id: p.id, created: src.created, bits: p.n * 8}
	} else {
		p.u = src
	}
	return p
}

// finish records what stays of cur's row.
func (c *cursor) finish() {
	if c.left > 0 {
		src := c.row.src
		c.row.tail = &unit{id: c.id, seq: src.seq, created: src.created, bits: c.left * 8}
	}
}

// headID and tailID name the two parts of a unit cut after bits bits.
func headID(id string, bits int) string { return uuidV5Num(id, "head:", bits) }
func tailID(id string, bits int) string { return uuidV5Num(id, "tail:", bits) }

// plan cuts number keys of size bits from units, used in order. It returns
// the carving and the units it did not need.
func plan(units []*unit, number, size int) (*carving, []*unit) {
	c := &carving{}
	i := 0
	var cur *cursor
	for range number {
		need := size / 8
		var ps []*piece
		for need > 0 {
			if cur == nil || cur.left == 0 {
				if i == len(units) {
					return nil, units // too little material: the caller checked
				}
				u := units[i]
				i++
				row := &carveRow{src: u}
				c.rows = append(c.rows, row)
				cur = &cursor{row: row, id: u.id, left: u.bits / 8}
			}
			p := cur.cut(need)
			need -= p.n
			ps = append(ps, p)
		}
		c.keys = append(c.keys, ps)
	}
	if cur != nil {
		cur.finish()
	}
	return c, units[i:]
}

// syncKeys describes the keys of c to the peer KME: the units each key used,
// in order, and where the last one was cut (0: used whole).
func (c *carving) syncKeys(size int) []syncKey {
	out := make([]syncKey, len(c.keys))
	for i, ps := range c.keys {
		ids := make([]string, len(ps))
		for j, p := range ps {
			ids[j] = p.from
		}
		sk := syncKey{KeyID: ps[0].id, Size: size, Units: ids}
		if last := ps[len(ps)-1]; last.head {
			sk.Cut = last.n * 8
		}
		out[i] = sk
	}
	return out
}

// groups makes the reserved keys of c for master → slave.
func (c *carving) groups(master, slave string, size int, fromPeer bool) []*group {
	gs := make([]*group, len(c.keys))
	for i, ps := range c.keys {
		g := &group{id: ps[0].id, master: master, slave: slave, sizeBits: size, fromPeer: fromPeer}
		for j, p := range ps {
			g.units = append(g.units, p.u)
			p.g, p.part = g, j
		}
		gs[i] = g
	}
	return gs
}

// srcs returns the rows' units as the index held them.
func (c *carving) srcs() []*unit {
	out := make([]*unit, len(c.rows))
	for i, r := range c.rows {
		out[i] = r.src
	}
	return out
}

// tails returns what stays available of the rows.
func (c *carving) tails() []*unit {
	var out []*unit
	for _, r := range c.rows {
		if r.tail != nil {
			out = append(out, r.tail)
		}
	}
	return out
}

// replanError says why a peer's carving cannot be reproduced.
type replanError struct {
	missing, busy []string
	bad           string
}

// replan reproduces, under k.mu, the carving the peer KME describes in keys
// (checked by peerReserve: sizes, distinct unit IDs), taking its units from
// the pool into inflight. On failure nothing stays taken.
func (k *KME) replan(keys []syncKey) (*carving, *replanError) {
	c := &carving{}
	open := map[string]*cursor{} // remainders cut in this request
	var taken []*unit
	var missing, busy []string
	bad := ""
	for _, key := range keys {
		var ps []*piece
		total := 0
		for j, id := range key.Units {
			cur := open[id]
			if cur != nil {
				delete(open, id)
			} else {
				u, ok := k.pool.remove(id)
				if !ok {
					if k.inflight[id] != nil {
						busy = append(busy, id)
					} else {
						missing = append(missing, id)
					}
					continue
				}
				k.inflight[id] = u
				taken = append(taken, u)
				row := &carveRow{src: u}
				c.rows = append(c.rows, row)
				cur = &cursor{row: row, id: u.id, left: u.bits / 8}
			}
			var p *piece
			if j == len(key.Units)-1 && key.Cut > 0 {
				if key.Cut/8 >= cur.left {
					bad = fmt.Sprintf("key %s: cut at %d bits of a unit of %d", key.KeyID, key.Cut, cur.left*8)
					continue
				}
				p = cur.cut(key.Cut / 8)
			} else {
				p = cur.cut(cur.left)
			}
			total += p.n
			ps = append(ps, p)
			if cur.left > 0 {
				open[cur.id] = cur
			}
		}
		if len(missing) > 0 || len(busy) > 0 || bad != "" {
			continue
		}
		switch {
		case total*8 != key.Size:
			// The units do not hold what the peer thinks: the pools
			// disagree about them, as if they were missing.
			missing = append(missing, key.Units...)
		case ps[0].id != key.KeyID:
			bad = fmt.Sprintf("key ID %s does not name its first piece", key.KeyID)
		}
		c.keys = append(c.keys, ps)
	}
	if len(missing) > 0 || len(busy) > 0 || bad != "" {
		k.putBack(taken)
		return nil, &replanError{missing: missing, busy: busy, bad: bad}
	}
	for _, cur := range open {
		cur.finish()
	}
	return c, nil
}

// applyCarving files c in tx. With reserve, every key becomes a reserved
// group of groups (whole rows change state, cut pieces get rows of their
// own); otherwise the pieces leave the database. The rows that were cut
// keep only their remainder. With wantPlain it returns each key's
// material in the order of c.keys.
func (k *KME) applyCarving(ctx context.Context, tx *sql.Tx, c *carving, groups []*group, reserve, wantPlain bool) ([][]byte, error) {
	var whole, cut []*carveRow
	for _, r := range c.rows {
		if r.whole() {
			whole = append(whole, r)
		} else {
			cut = append(cut, r)
		}
	}
	plain := map[*piece][]byte{}
	// Whole rows: as they are.
	if len(whole) > 0 {
		us := make([]*unit, len(whole))
		for i, r := range whole {
			us[i] = r.src
		}
		var ps [][]byte
		var err error
		switch {
		case !reserve && wantPlain:
			ps, err = k.takeUnits(ctx, tx, us, stateAvailable, "", "")
		case !reserve:
			err = k.deleteRows(ctx, tx, us, stateAvailable)
		case wantPlain:
			ps, err = k.readUnits(ctx, tx, us, stateAvailable, "", "")
		}
		if err != nil {
			return nil, err
		}
		for i, p := range ps {
			plain[whole[i].pieces[0]] = p
		}
	}
	// Cut rows: read, hand out the pieces, keep the remainder.
	if len(cut) > 0 {
		us := make([]*unit, len(cut))
		for i, r := range cut {
			us[i] = r.src
		}
		mats, err := k.readUnits(ctx, tx, us, stateAvailable, "", "")
		if err != nil {
			return nil, err
		}
		var seq int64
		if reserve {
			if seq, err = nextSeq(ctx, k.db, tx, k.cfg.KMEID); err != nil {
				return nil, err
			}
		}
		now := time.Now().UnixNano()
		var ins []any // the cut pieces' reserved rows, 12 values each
		if reserve {
			n := 0
			for _, r := range cut {
				n += len(r.pieces)
			}
			ins = make([]any, 0, 12*n)
		}
		for i, r := range cut {
			m := mats[i]
			if len(m)*8 != r.src.bits {
				clear(m)
				return nil, &corruptError{r.src.id}
			}
			for _, p := range r.pieces {
				if !reserve && !wantPlain {
					continue // discarded: nothing to copy
				}
				b := append([]byte(nil), m[p.off:p.off+p.n]...)
				if reserve {
					g := p.g
					enc, err := k.seal.seal(k.cfg.KMEID, p.id, b)
					if err != nil {
						clear(m)
						return nil, err
					}
					p.u.seq = seq
					seq++
					ins = append(ins, k.cfg.KMEID, p.id, p.u.seq, enc, g.id, p.part, g.sizeBits, g.master, g.slave, p.u.created, now, p.u.bits)
				}
				if wantPlain {
					plain[p] = b
				} else {
					clear(b)
				}
			}
			var res sql.Result
			if r.tail != nil {
				enc, err := k.seal.seal(k.cfg.KMEID, r.tail.id, m[len(m)-r.tail.bits/8:])
				if err != nil {
					clear(m)
					return nil, err
				}
				res, err = k.w.exec(ctx, tx, k.db.Rebind(`UPDATE kme_keys SET key_id = ?, key_enc = ?, bits = ? WHERE kme_id = ? AND seq = ? AND key_id = ? AND state = 0`),
					r.tail.id, enc, r.tail.bits, k.cfg.KMEID, r.src.seq, r.src.id)
				if err != nil {
					clear(m)
					return nil, err
				}
			} else {
				res, err = k.w.exec(ctx, tx, k.db.Rebind(`DELETE FROM kme_keys WHERE kme_id = ? AND seq = ? AND key_id = ? AND state = 0`), k.cfg.KMEID, r.src.seq, r.src.id)
				if err != nil {
					clear(m)
					return nil, err
				}
			}
			clear(m)
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				return nil, fmt.Errorf("%w: %s", errStateChanged, r.src.id)
			}
		}
		// Many rows per statement (a request of 128 small keys cut from
		// one segment inserts 128 rows).
		const cols, chunk = 12, 100
		for i := 0; i < len(ins); i += cols * chunk {
			part := ins[i:min(i+cols*chunk, len(ins))]
			q := `INSERT INTO kme_keys (kme_id, key_id, seq, key_enc, state, group_id, part, size_bits, master_sae, slave_sae, created_at, reserved_at, bits) VALUES ` +
				repeatJoin("(?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)", len(part)/cols)
			if _, err := k.w.exec(ctx, tx, k.db.Rebind(q), part...); err != nil {
				return nil, err
			}
		}
	}
	if reserve {
		filed := map[*unit]bool{}
		for _, r := range cut {
			for _, p := range r.pieces {
				filed[p.u] = true
			}
		}
		if err := k.reserveRows(ctx, tx, groups, filed); err != nil {
			return nil, err
		}
	}
	if !wantPlain {
		return nil, nil
	}
	out := make([][]byte, len(c.keys))
	for i, ps := range c.keys {
		parts := make([][]byte, len(ps))
		for j, p := range ps {
			parts[j] = plain[p]
		}
		size := 0
		for _, p := range ps {
			size += p.n * 8
		}
		out[i] = compose(parts, size)
	}
	return out, nil
}
