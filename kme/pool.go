package kme

import (
	"container/list"
	"crypto/sha1"
	"github.com/qshield/qshield/qkd"
	"strconv"
)

// unit is one fixed-size piece of key material in the pool, as the index
// keeps it in memory (the bytes stay encrypted in the database).
type unit struct {
	id      string
	seq     int64 // deposit order at this KME
	created int64 // unix nanoseconds of the deposit
	bits    int   // length of the unit's key material (a multiple of 8)
}

// pool is the in-memory index of the available units, ordered by seq. It is
// a cache of the database rows in state available, rebuilt at start-up; the
// database (whose updates check the state they expect) stays the authority,
// so no key can be handed out twice even if the index were wrong.
type pool struct {
	l    *list.List // of *unit, ascending seq
	byID map[string]*list.Element
	bits int64 // total key material of the units, in bits
}

func newPool() *pool { return &pool{l: list.New(), byID: make(map[string]*list.Element)} }

func (p *pool) len() int { return p.l.Len() }

func (p *pool) has(id string) bool { _, ok := p.byID[id]; return ok }

// insert adds u keeping seq order (new deposits land at the back in O(1)).
func (p *pool) insert(u *unit) {
	if _, ok := p.byID[u.id]; ok {
		return
	}
	p.bits += int64(u.bits)
	e := p.l.Back()
	for e != nil && e.Value.(*unit).seq > u.seq {
		e = e.Prev()
	}
	if e == nil {
		p.byID[u.id] = p.l.PushFront(u)
	} else {
		p.byID[u.id] = p.l.InsertAfter(u, e)
	}
}

func (p *pool) remove(id string) (*unit, bool) {
	e, ok := p.byID[id]
	if !ok {
		return nil, false
	}
	delete(p.byID, id)
	u := p.l.Remove(e).(*unit)
	p.bits -= int64(u.bits)
	return u, true
}

// takeFront removes and returns the oldest units holding at least bits of
// key material between them (nil when the pool holds less).
func (p *pool) takeFront(bits int) []*unit {
	if p.bits < int64(bits) {
		return nil
	}
	var out []*unit
	for got := 0; got < bits; {
		e := p.l.Front()
		u := e.Value.(*unit)
		p.l.Remove(e)
		delete(p.byID, u.id)
		p.bits -= int64(u.bits)
		out = append(out, u)
		got += u.bits
	}
	return out
}

// takeBack removes and returns the newest units deposited no later than
// notAfter that hold at least bits between them, newest first (nil when
// they hold less). Units newer than notAfter may not have reached the peer
// KME yet and are skipped.
func (p *pool) takeBack(bits int, notAfter int64) []*unit {
	e := p.l.Back()
	for e != nil && e.Value.(*unit).created > notAfter {
		e = e.Prev()
	}
	var sel []*list.Element
	got := 0
	for ; e != nil && got < bits; e = e.Prev() {
		sel = append(sel, e)
		got += e.Value.(*unit).bits
	}
	if got < bits {
		return nil
	}
	out := make([]*unit, len(sel))
	for i, e := range sel {
		u := e.Value.(*unit)
		p.l.Remove(e)
		delete(p.byID, u.id)
		p.bits -= int64(u.bits)
		out[i] = u
	}
	return out
}

// snapshot returns the IDs of the units deposited no later than notAfter.
func (p *pool) snapshot(notAfter int64) []string {
	var ids []string
	for e := p.l.Front(); e != nil; e = e.Next() {
		u := e.Value.(*unit)
		if u.created <= notAfter {
			ids = append(ids, u.id)
		}
	}
	return ids
}

// all returns the units of the pool, oldest first.
func (p *pool) all() []*unit {
	out := make([]*unit, 0, p.l.Len())
	for e := p.l.Front(); e != nil; e = e.Next() {
		out = append(out, e.Value.(*unit))
	}
	return out
}

// parseUUID checks that s is a UUID in the canonical 8-4-4-4-12 hex form and
// returns it in lower case.
func parseUUID(s string) (string, bool) {
	b, err := qkd.ParseKeyID(s)
	if err != nil {
		return "", false
	}
	return qkd.FormatKeyID(b), true
}

func uuidBytes(s string) []byte {
	b, _ := qkd.ParseKeyID(s)
	return b[:]
}

func formatUUID(b []byte) string { return qkd.FormatKeyID([16]byte(b)) }

// unitID names unit i of a delivered QKD key. A key that is exactly one unit
// keeps its own ID; a longer key is cut into units named by the RFC 9562
// name-based (version 5) UUID of the decimal index in the key ID's namespace,
// so both KMEs derive the same names without talking.
func unitID(keyID string, i, n int) string {
	if n == 1 {
		return keyID
	}
	return uuidV5Num(keyID, "", i)
}

// uuidV5 is the RFC 9562 name-based UUID (SHA-1, version 5) of name in the
// namespace ns (a canonical lower-case UUID).
func uuidV5(ns string, name []byte) string { return uuidV5Num(ns, string(name), -1) }

// uuidV5Num is uuidV5 of the name prefix followed by n in decimal (nothing
// when n < 0), hashed from a buffer on the stack: carving names two pieces
// per cut, 256 names for a request of 128 small keys at each KME.
func uuidV5Num(ns, prefix string, n int) string {
	var buf [128]byte
	id, _ := qkd.ParseKeyID(ns)
	b := append(buf[:0], id[:]...)
	b = append(b, prefix...)
	if n >= 0 {
		b = strconv.AppendInt(b, int64(n), 10)
	}
	sum := sha1.Sum(b)
	sum[6] = (sum[6] & 0x0f) | 0x50
	sum[8] = (sum[8] & 0x3f) | 0x80
	return qkd.FormatKeyID([16]byte(sum[:16]))
}
