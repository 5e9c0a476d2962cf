package kme

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// carveConfig is the platform's shape: 256-bit default keys, 64-kbit
// keys allowed, and segments smaller than the largest key so that keys
// also span segments.
func carveConfig(c *PairConfig) {
	c.KeySizeBits = 256
	c.SegmentBits = 8192
	c.MaxKeySize = 65536
	c.MinKeySize = 16
	c.MaxKeyCount = 10000
}

// wordKeys returns QKD keys whose material is the 16-bit big-endian
// counter 0, 1, …, words-1, cut into keys of the given byte lengths (even,
// so that every cut at a multiple of 16 bits falls between two words).
func wordKeys(t *testing.T, words int, lens ...int) []qkd.Key {
	t.Helper()
	var keys []qkd.Key
	w := 0
	for i, n := range lens {
		if n%2 != 0 {
			t.Fatal("odd key length")
		}
		if i == len(lens)-1 {
			n = 2 * (words - w)
		}
		b := make([]byte, n)
		for j := 0; j < n; j += 2 {
			binary.BigEndian.PutUint16(b[j:], uint16(w))
			w++
		}
		keys = append(keys, qkd.Key{ID: qkd.RandomKeys(1, 1)[0].ID, Bytes: b})
	}
	return keys
}

// wordLedger counts how often each word of the material was delivered.
type wordLedger struct {
	t     *testing.T
	count []int
}

func (l *wordLedger) add(key []byte) {
	l.t.Helper()
	if len(key)%2 != 0 {
		l.t.Fatalf("key of %d bytes is not whole words", len(key))
	}
	for j := 0; j < len(key); j += 2 {
		w := binary.BigEndian.Uint16(key[j:])
		l.count[w]++
		if l.count[w] > 1 {
			l.t.Fatalf("word %d of the key material delivered twice", w)
		}
	}
}

func (e *testEnv) depositBoth(keys []qkd.Key) {
	e.t.Helper()
	sa, sb := e.p.Sinks()
	ctx := context.Background()
	if err := sa(ctx, keys); err != nil {
		e.t.Fatal(err)
	}
	if err := sb(ctx, keys); err != nil {
		e.t.Fatal(err)
	}
}

// exchange has master (at masterBase) obtain number keys of size bits for
// slave, and slave fetch them by ID at slaveBase; both must get the same
// keys of the right length. It returns the keys' bytes.
func (e *testEnv) exchange(master, masterBase, slave, slaveBase string, number, size int) [][]byte {
	e.t.Helper()
	return e.exchangeRetry(master, masterBase, slave, slaveBase, number, size, 0)
}

// exchangeRetry is exchange with up to retries repeats of an enc_keys
// answered 503 "retry" (as an SAE does).
func (e *testEnv) exchangeRetry(master, masterBase, slave, slaveBase string, number, size, retries int) [][]byte {
	e.t.Helper()
	r := e.do(master, "GET", masterBase, fmt.Sprintf("/api/v1/keys/%s/enc_keys?number=%d&size=%d", slave, number, size), "")
	for ; retries > 0 && r.status == http.StatusServiceUnavailable && strings.Contains(string(r.body), "retry"); retries-- {
		r = e.do(master, "GET", masterBase, fmt.Sprintf("/api/v1/keys/%s/enc_keys?number=%d&size=%d", slave, number, size), "")
	}
	if r.status != 200 {
		e.t.Fatalf("enc_keys %s→%s number=%d size=%d: %d %s", master, slave, number, size, r.status, r.body)
	}
	var c etsi014.KeyContainer
	if err := json.Unmarshal(r.body, &c); err != nil || len(c.Keys) != number {
		e.t.Fatalf("enc_keys answer %.200s", r.body)
	}
	ids := make([]string, number)
	for i, k := range c.Keys {
		ids[i] = fmt.Sprintf(`{"key_ID":%q}`, k.KeyID)
	}
	r = e.do(slave, "POST", slaveBase, "/api/v1/keys/"+master+"/dec_keys", `{"key_IDs":[`+strings.Join(ids, ",")+`]}`)
	if r.status != 200 {
		e.t.Fatalf("dec_keys %s←%s: %d %s", slave, master, r.status, r.body)
	}
	var d etsi014.KeyContainer
	if err := json.Unmarshal(r.body, &d); err != nil || len(d.Keys) != number {
		e.t.Fatalf("dec_keys answer %.200s", r.body)
	}
	out := make([][]byte, number)
	for i := range c.Keys {
		if d.Keys[i].KeyID != c.Keys[i].KeyID || d.Keys[i].Key != c.Keys[i].Key {
			e.t.Fatalf("key %d of %d×%d bits differs between master and slave", i, number, size)
		}
		b, err := base64.StdEncoding.DecodeString(c.Keys[i].Key)
		if err != nil || len(b)*8 != size {
			e.t.Fatalf("key of %d bytes for size %d (%v)", len(b), size, err)
		}
		out[i] = b
	}
	return out
}

// TestCarveAnySizeNoOverlap serves keys of many sizes from one pool of
// key material, from both ends of the pool (KME_A takes the oldest units,
// KME_B the newest) and with both SAEs at one site, across a restart, then
// drains the pool. Both SAEs of every key get the same bytes, both KMEs
// always hold the same amount of material, and every 16-bit word of the
// deposited material is delivered exactly once: a carve that handed out a
// part of a unit twice (or lost one) fails here even though both sites
// would agree on it.
func TestCarveAnySizeNoOverlap(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, carveConfig)
		const words = 65536
		e.depositBoth(wordKeys(t, words, 20000, 30002, 0))
		A, B := e.p.AURL, e.p.BURL
		if a, b := e.p.A.StoredBits(), e.p.B.StoredBits(); a != 16*words || b != a {
			t.Fatalf("stored bits A=%d B=%d, want %d", a, b, 16*words)
		}
		l := &wordLedger{t: t, count: make([]int, words)}
		type req struct {
			master, mbase, slave, sbase string
			number, size                int
		}
		reqs := []req{
			{"SAE_A1", A, "SAE_B1", B, 3, 256},
			{"SAE_A1", A, "SAE_B1", B, 1, 65536},
			{"SAE_A1", A, "SAE_B1", B, 5, 1040},
			{"SAE_A1", A, "SAE_B1", B, 128, 16},
			{"SAE_B1", B, "SAE_A1", A, 2, 4096},
			{"SAE_B1", B, "SAE_A1", A, 1, 65536},
			{"SAE_B1", B, "SAE_A1", A, 7, 272},
			{"SAE_A1", A, "SAE_A2", A, 2, 3008},
			{"SAE_B2", B, "SAE_B1", B, 1, 8208},
			{"SAE_A2", A, "SAE_B2", B, 1, 8192},
		}
		for round := range 3 {
			for _, q := range reqs {
				for _, k := range e.exchange(q.master, q.mbase, q.slave, q.sbase, q.number, q.size) {
					l.add(k)
				}
				if a, b := e.p.A.StoredBits(), e.p.B.StoredBits(); a != b {
					t.Fatalf("round %d: after %d×%d bits A holds %d bits, B %d", round, q.number, q.size, a, b)
				}
			}
			if round == 1 {
				e.restart() // remainders are rows like any other
				A, B = e.p.AURL, e.p.BURL
			}
		}
		// Drain: what is left is served too, to the last word.
		for i := 0; e.p.A.StoredBits() > 0; i++ {
			size := int(min(e.p.A.StoredBits(), 65536))
			master, mbase, slave, sbase := "SAE_A1", A, "SAE_B1", B
			if i%2 == 1 {
				master, mbase, slave, sbase = "SAE_B1", B, "SAE_A1", A
			}
			for _, k := range e.exchange(master, mbase, slave, sbase, 1, size) {
				l.add(k)
			}
		}
		for w, n := range l.count {
			if n != 1 {
				t.Fatalf("word %d delivered %d times", w, n)
			}
		}
		if b := e.p.B.StoredBits(); b != 0 {
			t.Fatalf("B still holds %d bits", b)
		}
		var rows int
		if err := db.QueryRow(`SELECT COUNT(*) FROM kme_keys`).Scan(&rows); err != nil || rows != 0 {
			t.Fatalf("%d rows left (%v)", rows, err)
		}
	})
}

// TestCarveOddSizes: sizes that are multiples of 8 bits but not of the
// segment or of each other.
func TestCarveOddSizes(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := startEnv(t, db, carveConfig)
	e.depositBoth(qkd.RandomKeys(4, 40000))
	seen := map[string]bool{}
	for _, size := range []int{72, 1000, 65528, 24, 8200, 256} {
		for _, k := range e.exchange("SAE_A1", e.p.AURL, "SAE_B1", e.p.BURL, 3, size) {
			if seen[string(k)] {
				t.Fatalf("a %d-bit key delivered twice", size)
			}
			seen[string(k)] = true
		}
	}
	if a, b := e.p.A.StoredBits(), e.p.B.StoredBits(); a != b || a != 4*40000*8-3*(72+1000+65528+24+8200+256) {
		t.Fatalf("stored bits A=%d B=%d", a, b)
	}
}

// TestCarveRefusals: a size beyond max_key_size, below min_key_size or not
// a multiple of 8 is refused with the ETSI 400 and changes nothing; status
// reports the limits and stored_key_count in keys of key_size.
func TestCarveRefusals(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := startEnv(t, db, carveConfig)
	e.depositBoth(qkd.RandomKeys(2, 10000))
	e.exchange("SAE_A1", e.p.AURL, "SAE_B1", e.p.BURL, 1, 64) // a cut unit
	before, bitsA := e.snap(), e.p.A.StoredBits()
	for _, c := range []struct{ method, path, body, want string }{
		{"GET", "enc_keys?number=1&size=65544", "", "exceeds max_key_size 65536"},
		{"GET", "enc_keys?number=2&size=131072", "", "exceeds max_key_size 65536"},
		{"POST", "enc_keys", `{"number":1,"size":65544}`, "exceeds max_key_size 65536"},
		{"GET", "enc_keys?number=1&size=8", "", "below min_key_size 16"},
		{"GET", "enc_keys?number=1&size=1001", "", "not a multiple of 8"},
		{"GET", "enc_keys?number=129&size=64", "", "exceeds max_key_per_request"},
	} {
		r := e.do("SAE_A1", c.method, e.p.AURL, "/api/v1/keys/SAE_B1/"+c.path, c.body)
		if r.status != http.StatusBadRequest || !strings.Contains(r.json(t)["message"].(string), c.want) {
			t.Fatalf("%s %s: %d %s, want 400 %q", c.method, c.path, r.status, r.body, c.want)
		}
	}
	// More than the pool holds: 503, nothing taken.
	if r := e.do("SAE_A1", "GET", e.p.AURL, "/api/v1/keys/SAE_B1/enc_keys?number=3&size=65536", ""); r.status != http.StatusServiceUnavailable {
		t.Fatalf("more than the pool: %d %s", r.status, r.body)
	}
	if !before.equal(e.snap()) || e.p.A.StoredBits() != bitsA || e.p.B.StoredBits() != bitsA {
		t.Fatal("a refused request changed the pools")
	}
	r := e.do("SAE_A1", "GET", e.p.AURL, "/api/v1/keys/SAE_B1/status", "")
	var st etsi014.Status
	if r.status != 200 || json.Unmarshal(r.body, &st) != nil {
		t.Fatalf("status: %d %s", r.status, r.body)
	}
	if st.KeySize != 256 || st.MaxKeySize != 65536 || st.MinKeySize != 16 || st.MaxKeyCount != 10000 ||
		st.StoredKeyCount != int((2*10000*8-64)/256) {
		t.Fatalf("status %+v", st)
	}
	var ext struct {
		Bits    int64 `json:"qshield_stored_bits"`
		Segment int   `json:"qshield_segment_bits"`
	}
	if json.Unmarshal(st.StatusExtension, &ext) != nil || ext.Bits != 2*10000*8-64 || ext.Segment != 8192 {
		t.Fatalf("status_extension %s", st.StatusExtension)
	}
}

// TestCarveLegacyRows: rows written before units had a recorded length get
// it from their plaintext at start-up and serve keys as before.
func TestCarveLegacyRows(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := startEnv(t, db, nil)
	e.fill(8)
	if _, err := db.Exec(`UPDATE kme_keys SET bits = NULL`); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if a, b := e.p.A.StoredBits(), e.p.B.StoredBits(); a != 8*256 || b != a {
		t.Fatalf("stored bits after start-up A=%d B=%d", a, b)
	}
	e.exchange("SAE_A1", e.p.AURL, "SAE_B1", e.p.BURL, 2, 384)
	if a := e.p.A.Stored(); a != 5 {
		t.Fatalf("stored_key_count %d, want 5", a)
	}
}

// TestCarveAcrossNodes: two platform nodes on one PostgreSQL database, each
// with its own pair of KMEs under the same IDs and a full index. Node 1
// cuts units (their rows change ID) and takes whole ones; node 2's index
// still names the old units, meets the change, takes the remainders in
// their place, and no word of the material is ever delivered twice. Both
// nodes' KMEs take from the same end of the pool, so a request meets the
// other node's deliveries and is answered 503 "retry", as before carving;
// the SAEs here retry as a client does.
func TestCarveAcrossNodes(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backend{Name: "postgres", DSN: sqldbtest.PostgresDSN})
	e := startEnv(t, db, carveConfig)
	const words = 16384
	e.depositBoth(wordKeys(t, words, 8000, 0))
	p2, err := StartPair(context.Background(), db, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	l := &wordLedger{t: t, count: make([]int, words)}
	n1A, n1B, n2A, n2B := e.p.AURL, e.p.BURL, p2.AURL, p2.BURL
	sizes := []int{256, 1040, 4096, 272, 65536, 16}
	for i := 0; i < 60; i++ {
		size := sizes[i%len(sizes)]
		var ks [][]byte
		switch i % 4 {
		case 0:
			ks = e.exchangeRetry("SAE_A1", n1A, "SAE_B1", n2B, 1, size, 10)
		case 1:
			ks = e.exchangeRetry("SAE_A1", n2A, "SAE_B1", n1B, 2, size, 10)
		case 2:
			ks = e.exchangeRetry("SAE_B1", n2B, "SAE_A1", n1A, 1, size, 10)
		case 3:
			ks = e.exchangeRetry("SAE_B1", n1B, "SAE_A1", n2A, 1, size, 10)
		}
		for _, k := range ks {
			l.add(k)
		}
		var avail int64
		if err := db.QueryRow(`SELECT COALESCE(SUM(bits), 0) FROM kme_keys WHERE state = 0 AND kme_id = 'KME_A'`).Scan(&avail); err != nil {
			t.Fatal(err)
		}
		if avail < 65536*2+16 {
			break
		}
	}
	delivered := 0
	for _, n := range l.count {
		delivered += n
	}
	if delivered < words/3 {
		t.Fatalf("only %d of %d words delivered", delivered, words)
	}
	var left int
	if err := db.QueryRow(`SELECT COUNT(*) FROM kme_keys WHERE state <> 0`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d reserved units left behind (%v)", left, err)
	}
}

// TestJoinKeys: a link's block of 256-bit keys fills a pool of large
// segments, the same at both sites, and the same block again adds nothing.
func TestJoinKeys(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := startEnv(t, db, carveConfig)
	sa, sb := e.p.Sinks()
	ja, jb := JoinKeys(sa), JoinKeys(sb)
	block := qkd.RandomKeys(300, 32)
	ctx := context.Background()
	for range 2 {
		if err := ja(ctx, block); err != nil {
			t.Fatal(err)
		}
		if err := jb(ctx, block); err != nil {
			t.Fatal(err)
		}
	}
	a, b := e.p.A.AvailableIDs(), e.p.B.AvailableIDs()
	if len(a) != 10 || strings.Join(a, ",") != strings.Join(b, ",") || e.p.A.StoredBits() != 300*256 || e.p.B.StoredBits() != 300*256 {
		t.Fatalf("A %d segments (%d bits), B %d (%d bits); want 10 (76800 bits) at each", len(a), e.p.A.StoredBits(), len(b), e.p.B.StoredBits())
	}
	var all []byte
	for _, k := range block {
		all = append(all, k.Bytes...)
	}
	got := e.exchange("SAE_A1", e.p.AURL, "SAE_B1", e.p.BURL, 1, 8192+256)
	if string(got[0]) != string(all[:1024+32]) {
		t.Fatal("the first key is not the block's first bytes")
	}
}

// TestCarveRedeliver: with RedeliverWithin at the slave's site (the
// platform's site A, where QMSP's PPS fetches), a key carved from a
// segment is delivered again, the same, to a repeated dec_keys, and its
// material is never handed out as part of another key.
func TestCarveRedeliver(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := startEnv(t, db, func(c *PairConfig) {
		carveConfig(c)
		c.A.RedeliverWithin = time.Minute
	})
	e.depositBoth(wordKeys(t, 4096, 0))
	l := &wordLedger{t: t, count: make([]int, 4096)}
	for range 3 {
		ks := e.exchange("SAE_B1", e.p.BURL, "SAE_A1", e.p.AURL, 2, 1024)
		for _, k := range ks {
			l.add(k)
		}
	}
	r := e.do("SAE_B1", "GET", e.p.BURL, "/api/v1/keys/SAE_A1/enc_keys?number=1&size=2048", "")
	var c etsi014.KeyContainer
	if r.status != 200 || json.Unmarshal(r.body, &c) != nil {
		t.Fatalf("enc_keys: %d %s", r.status, r.body)
	}
	for range 2 {
		r := e.do("SAE_A1", "GET", e.p.AURL, "/api/v1/keys/SAE_B1/dec_keys?key_ID="+c.Keys[0].KeyID, "")
		var d etsi014.KeyContainer
		if r.status != 200 || json.Unmarshal(r.body, &d) != nil || d.Keys[0].Key != c.Keys[0].Key {
			t.Fatalf("dec_keys (again): %d %s", r.status, r.body)
		}
	}
	b, _ := base64.StdEncoding.DecodeString(c.Keys[0].Key)
	l.add(b)
	for e.p.B.StoredBits() > 0 {
		for _, k := range e.exchange("SAE_B1", e.p.BURL, "SAE_A1", e.p.AURL, 1, int(min(e.p.B.StoredBits(), 8192))) {
			l.add(k)
		}
	}
	for w, n := range l.count {
		if n != 1 {
			t.Fatalf("word %d delivered %d times", w, n)
		}
	}
}
