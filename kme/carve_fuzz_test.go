package kme

import (
	"encoding/json"
	"slices"
	"strconv"
	"testing"
)

// fuzzPool returns a bare KME (index only) whose pool holds one unit per
// byte of sizes, of sizes[i]%64+1 bytes.
func fuzzPool(sizes []byte) *KME {
	k := &KME{pool: newPool(), inflight: map[string]*unit{}, groups: map[string]*group{}, reservedUnits: map[string]*group{}}
	ns := "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
	for i, b := range sizes {
		k.pool.insert(&unit{id: uuidV5(ns, []byte(strconv.Itoa(i))), seq: int64(i + 1), bits: 8 * (int(b)%64 + 1)})
	}
	return k
}

// checkCarving asserts that c cuts every row into pieces that follow each
// other from offset 0 without overlap, the remainder covering the rest, and
// that every key has size bytes; no ID is used twice.
func checkCarving(t *testing.T, c *carving, sizes []int) {
	t.Helper()
	if len(c.keys) != len(sizes) {
		t.Fatalf("%d keys, want %d", len(c.keys), len(sizes))
	}
	for i, ps := range c.keys {
		n := 0
		for _, p := range ps {
			n += p.n
		}
		if n != sizes[i] {
			t.Fatalf("key %d has %d bytes, want %d", i, n, sizes[i])
		}
	}
	ids := map[string]bool{}
	for _, r := range c.rows {
		off := 0
		for _, p := range r.pieces {
			if p.off != off || p.n <= 0 {
				t.Fatalf("row %s: piece at %d+%d after %d bytes", r.src.id, p.off, p.n, off)
			}
			off += p.n
			if ids[p.id] {
				t.Fatalf("ID %s used twice", p.id)
			}
			ids[p.id] = true
		}
		rest := r.src.bits/8 - off
		switch {
		case rest < 0:
			t.Fatalf("row %s: pieces take %d of %d bytes", r.src.id, off, r.src.bits/8)
		case rest == 0 && r.tail != nil, rest > 0 && (r.tail == nil || r.tail.bits != 8*rest || r.tail.seq != r.src.seq):
			t.Fatalf("row %s: remainder %+v for %d bytes left", r.src.id, r.tail, rest)
		}
		if r.tail != nil {
			if ids[r.tail.id] {
				t.Fatalf("remainder ID %s used twice", r.tail.id)
			}
			ids[r.tail.id] = true
		}
	}
}

// FuzzCarve: the carving a master plans, told to its peer as sync keys,
// is reproduced exactly by the peer (same pieces under the same IDs, same
// remainders), and both are sound (checkCarving).
func FuzzCarve(f *testing.F) {
	f.Add([]byte{31, 31, 31}, uint8(3), uint16(8))
	f.Add([]byte{63, 0, 5, 63, 63}, uint8(1), uint16(100))
	f.Add([]byte{7}, uint8(8), uint16(1))
	f.Fuzz(func(t *testing.T, sizes []byte, number uint8, size uint16) {
		if number == 0 || size == 0 || len(sizes) > 512 {
			return
		}
		n, sz := int(number), int(size)%2048+1
		m := fuzzPool(sizes)
		us := m.pool.takeFront(n * sz * 8)
		if us == nil {
			return
		}
		c, rest := plan(us, n, sz*8)
		if c == nil || len(rest) != 0 {
			t.Fatalf("plan: %v, %d units left over", c, len(rest))
		}
		want := slices.Repeat([]int{sz}, n)
		checkCarving(t, c, want)
		keys := c.syncKeys(sz * 8)
		if e := checkSyncKeys(keys, 8, 1<<20); e != "" {
			t.Fatalf("the master's own sync keys are refused: %s", e)
		}
		p := fuzzPool(sizes)
		before := p.pool.bits
		c2, re := p.replan(keys)
		if re != nil {
			t.Fatalf("the peer cannot reproduce the carving: %+v", re)
		}
		checkCarving(t, c2, want)
		for i := range c.keys {
			a, b := c.keys[i], c2.keys[i]
			if len(a) != len(b) {
				t.Fatalf("key %d: %d pieces at the master, %d at the peer", i, len(a), len(b))
			}
			for j := range a {
				if a[j].id != b[j].id || a[j].off != b[j].off || a[j].n != b[j].n || a[j].row.src.id != b[j].row.src.id {
					t.Fatalf("key %d piece %d differs: %+v / %+v", i, j, a[j], b[j])
				}
			}
		}
		ta, tb := c.tails(), c2.tails()
		if !slices.EqualFunc(ta, tb, func(x, y *unit) bool { return *x == *y }) {
			t.Fatalf("remainders differ")
		}
		var taken int64
		for _, u := range c2.srcs() {
			taken += int64(u.bits)
		}
		if p.pool.bits+taken != before {
			t.Fatalf("peer pool: %d bits + %d taken != %d", p.pool.bits, taken, before)
		}
	})
}

// FuzzReplan feeds arbitrary sync keys (the JSON a peer KME sends) to
// the checks and the carving reproduction: it either refuses them and
// leaves the pool as it was, or produces a sound carving of the units it
// took.
func FuzzReplan(f *testing.F) {
	m := fuzzPool([]byte{31, 31, 31})
	ids := m.AvailableIDs()
	f.Add([]byte{31, 31, 31}, []byte(`[{"key_ID":"`+headID(ids[0], 64)+`","size":64,"units":["`+ids[0]+`"],"cut":64}]`))
	f.Add([]byte{31, 31, 31}, []byte(`[{"key_ID":"`+ids[0]+`","size":512,"units":["`+ids[0]+`","`+ids[1]+`"]}]`))
	f.Add([]byte{1}, []byte(`[{"key_ID":"x","size":16,"units":["x","x"],"cut":8}]`))
	f.Fuzz(func(t *testing.T, sizes []byte, body []byte) {
		if len(sizes) > 256 {
			return
		}
		var keys []syncKey
		if json.Unmarshal(body, &keys) != nil || len(keys) == 0 || len(keys) > 128 {
			return
		}
		if checkSyncKeys(keys, 8, 65536) != "" {
			return
		}
		k := fuzzPool(sizes)
		before, ids := k.pool.bits, k.AvailableIDs()
		c, re := k.replan(keys)
		if re != nil {
			if k.pool.bits != before || !slices.Equal(ids, k.AvailableIDs()) || len(k.inflight) != 0 {
				t.Fatalf("a refused carving changed the pool")
			}
			return
		}
		want := make([]int, len(keys))
		for i, key := range keys {
			want[i] = key.Size / 8
		}
		checkCarving(t, c, want)
	})
}
