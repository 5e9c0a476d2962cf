package qmsp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// masterKeys is a master-side key manager shared by the nodes: each key it
// hands out is new (enc_keys), and it records every batch-sized one. With
// a limit it refuses batches beyond it, as an empty pool does; after, when
// set, runs once a request has been answered (a node dying or a caller
// giving up just after the key manager answered).
type masterKeys struct {
	batchBits int
	mu        sync.Mutex
	issued    map[string]bool
	limit     int
	after     func()
}

func (m *masterKeys) EncKeys(ctx context.Context, slave string, number, sizeBits int) ([]etsi014.KeyMaterial, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if sizeBits == m.batchBits && m.limit > 0 && len(m.issued)+number > m.limit {
		return nil, fmt.Errorf("503 not enough key material: %d keys requested", number)
	}
	out := make([]etsi014.KeyMaterial, number)
	for i := range out {
		out[i] = etsi014.KeyMaterial{ID: qkd.NewKeyID(), Key: make([]byte, sizeBits/8)}
		rand.Read(out[i].Key)
		if sizeBits == m.batchBits {
			m.issued[out[i].ID] = true
		}
	}
	if m.after != nil {
		m.after()
		m.after = nil
	}
	return out, nil
}

// cssNodes opens n CSS processes on dsn, each with its own pool, sharing
// one key manager.
func cssNodes(t *testing.T, dsn string, keys MasterKeys, n, prefetch int) []*CSS {
	t.Helper()
	ctx := context.Background()
	storage := make([]byte, 32)
	rand.Read(storage)
	var nodes []*CSS
	for range n {
		ndb, err := sqldb.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ndb.Close() })
		c, err := NewCSS(ctx, CSSConfig{DB: ndb, Keys: keys, SlaveSAE: "pps", StorageKey: storage, Prefetch: prefetch})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		nodes = append(nodes, c)
	}
	return nodes
}

// roundRobin sends each of a gateway's calls to the next node, recording
// the key batches delivered.
type roundRobin struct {
	nodes     []*CSS
	gi        string
	next      atomic.Int64
	mu        *sync.Mutex
	delivered map[string]int
}

func (r *roundRobin) node() *CSS {
	return r.nodes[int(r.next.Add(1))%len(r.nodes)]
}

func (r *roundRobin) AcquireKey(ctx context.Context, req KeyRequest) (*KeyDelivery, error) {
	d, err := r.node().AcquireKey(ctx, r.gi, req)
	if err == nil {
		r.mu.Lock()
		r.delivered[d.KeyID]++
		r.mu.Unlock()
	}
	return d, err
}

func (r *roundRobin) Acknowledge(ctx context.Context, ack Ack) error {
	return r.node().Acknowledge(ctx, r.gi, ack)
}

// prefetchGateways registers n gateways and opens each with a file state
// and calls spread over nodes.
func prefetchGateways(t *testing.T, nodes []*CSS, n int, mu *sync.Mutex, delivered map[string]int) []*Gateway {
	t.Helper()
	ctx := context.Background()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	storage := make([]byte, 32)
	rand.Read(storage)
	dir := t.TempDir()
	var gs []*Gateway
	for i := range n {
		gi := fmt.Sprintf("GW-PF-%d", i)
		pk, err := nodes[0].RegisterGateway(ctx, gi, 7)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, gi+".state")
		if err := ProvisionGateway(path, storage, gi, 7, pk); err != nil {
			t.Fatal(err)
		}
		g, err := OpenGateway(GatewayConfig{StatePath: path, StorageKey: storage, Signer: key,
			CSS: &roundRobin{nodes: nodes, gi: gi, mu: mu, delivered: delivered}})
		if err != nil {
			t.Fatal(err)
		}
		gs = append(gs, g)
	}
	return gs
}

// prefetchedIDs lists the batches waiting in the database.
func prefetchedIDs(t *testing.T, db *sqldb.DB) map[string]bool {
	t.Helper()
	rows, err := db.Query(`SELECT key_id FROM qmsp_css_prefetch`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out[id] = true
	}
	return out
}

// TestCSSPrefetchOnceAcrossNodes: gateways refresh concurrently through
// two CSS nodes on one database (one node on SQLite). Every batch the key
// manager handed out is delivered to exactly one gateway or still waits in
// the shared buffer: none twice, none lost, and the nodes together never
// hold more than the buffer's size. Each node kept its own in-memory
// buffer before, lost when it stopped. Every refresh succeeds: with a
// buffer of 2 the eight gateways drain it faster than it fills, and a
// request whose refill others emptied failed after four tries ("prefetched
// batches taken by other requests") until refill kept one batch for the
// request that made it.
func TestCSSPrefetchOnceAcrossNodes(t *testing.T) {
	for _, b := range sqldbtest.Backends() {
		for _, prefetch := range []int{6, 1} {
			t.Run(fmt.Sprintf("%s/prefetch=%d", b.Name, prefetch), func(t *testing.T) {
				testCSSPrefetchOnce(t, b, prefetch)
			})
		}
	}
}

func testCSSPrefetchOnce(t *testing.T, b sqldbtest.Backend, prefetch int) {
	dsn := b.DSN(t)
	n := 2
	if b.Name == "sqlite" {
		n = 1
	}
	keys := &masterKeys{batchBits: 8 * MaxBatchSize, issued: map[string]bool{}}
	nodes := cssNodes(t, dsn, keys, n, prefetch)
	var mu sync.Mutex
	delivered := map[string]int{}
	gs := prefetchGateways(t, nodes, 8, &mu, delivered)
	ctx := context.Background()
	var wg sync.WaitGroup
	for _, g := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if err := g.Refresh(ctx); err != nil {
					t.Errorf("%s: %v", g.ID(), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, c := range nodes {
		c.bg.Wait() // background refills stored what they fetched
	}
	waiting := prefetchedIDs(t, nodes[0].cfg.DB)
	if len(waiting) > prefetch+1 {
		t.Errorf("%d batches wait, more than the buffer's %d", len(waiting), prefetch+1)
	}
	total := 0
	for id, k := range delivered {
		total += k
		if k != 1 {
			t.Errorf("batch %s delivered %d times", id, k)
		}
		if waiting[id] {
			t.Errorf("batch %s delivered and still waiting", id)
		}
	}
	if total != 8*10 {
		t.Errorf("%d deliveries, want 80", total)
	}
	keys.mu.Lock()
	defer keys.mu.Unlock()
	for id := range keys.issued {
		if delivered[id] == 0 && !waiting[id] {
			t.Errorf("batch %s handed out by the key manager is lost", id)
		}
	}
	for id := range delivered {
		if !keys.issued[id] {
			t.Errorf("delivered batch %s never issued", id)
		}
	}
}

// TestCSSPrefetchSurvivesNodeDeath: a node prefetches batches and stops
// (or the request that made it fetch gives up just after the key manager
// answered); the key manager then has no more batches. The other node
// delivers every batch the first one fetched, once, and only then runs
// out. Before, the batches were in the stopped node's memory: lost, and
// the other node had none to give.
func TestCSSPrefetchSurvivesNodeDeath(t *testing.T) {
	dsn := sqldbtest.PostgresDSN(t)
	keys := &masterKeys{batchBits: 8 * MaxBatchSize, issued: map[string]bool{}}
	const prefetch = 8
	nodes := cssNodes(t, dsn, keys, 2, prefetch)
	var mu sync.Mutex
	delivered := map[string]int{}
	gs := prefetchGateways(t, nodes[1:], 2, &mu, delivered) // registered through node 2
	ctx := context.Background()
	// Node 1 serves a first delivery; the caller gives up just after the
	// key manager answered its fetch.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	keys.after = cancel
	first := &roundRobin{nodes: nodes[:1], gi: gs[0].ID(), mu: &mu, delivered: delivered}
	gs[0].cfg.CSS = first
	if err := gs[0].Refresh(cctx); err == nil {
		t.Log("the cancelled request was still served")
	}
	nodes[0].bg.Wait()
	if err := nodes[0].Close(); err != nil { // node 1 dies
		t.Fatal(err)
	}
	keys.mu.Lock()
	fetched := len(keys.issued)
	keys.limit = fetched // the key manager has nothing more
	keys.mu.Unlock()
	if fetched != prefetch+1 {
		t.Fatalf("node 1 fetched %d batches, want %d", fetched, prefetch+1)
	}
	gs[0].cfg.CSS = &roundRobin{nodes: nodes[1:], gi: gs[0].ID(), mu: &mu, delivered: delivered}
	served := len(delivered)
	for served < fetched {
		if err := gs[served%2].Refresh(ctx); err != nil {
			t.Fatalf("node 2 after %d of node 1's %d batches: %v", served, fetched, err)
		}
		served++
	}
	if err := gs[0].Refresh(ctx); !errors.Is(err, ErrNoQuantumKey) {
		t.Fatalf("a delivery beyond the fetched batches: %v", err)
	}
	if len(delivered) != fetched {
		t.Fatalf("%d batches delivered, %d fetched", len(delivered), fetched)
	}
	for id, k := range delivered {
		if k != 1 || !keys.issued[id] {
			t.Fatalf("batch %s delivered %d times (issued %v)", id, k, keys.issued[id])
		}
	}
}

// TestCSSPrefetchTamperedRow: a prefetched batch that does not open (its
// sealed bytes altered in the database) is discarded by the delivery that
// meets it, which takes the next batch; it failed every delivery before.
func TestCSSPrefetchTamperedRow(t *testing.T) {
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			keys := &masterKeys{batchBits: 8 * MaxBatchSize, issued: map[string]bool{}}
			nodes := cssNodes(t, b.DSN(t), keys, 1, 4)
			var mu sync.Mutex
			delivered := map[string]int{}
			g := prefetchGateways(t, nodes, 1, &mu, delivered)[0]
			ctx := context.Background()
			if err := g.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			nodes[0].bg.Wait()
			db := nodes[0].cfg.DB
			var victim string
			if err := db.QueryRow(`SELECT key_id FROM qmsp_css_prefetch ORDER BY fetched_at, key_id LIMIT 1`).Scan(&victim); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec(db.Rebind(`UPDATE qmsp_css_prefetch SET material = ? WHERE key_id = ?`), []byte("not a sealed batch at all, not at all"), victim); err != nil {
				t.Fatal(err)
			}
			if err := g.Refresh(ctx); err != nil {
				t.Fatalf("delivery after a tampered batch: %v", err)
			}
			if delivered[victim] != 0 || prefetchedIDs(t, db)[victim] {
				t.Fatalf("tampered batch %s delivered %d times or still waiting", victim, delivered[victim])
			}
			if len(delivered) != 2 {
				t.Fatalf("%d deliveries, want 2", len(delivered))
			}
		})
	}
}

// TestCSSPutBackStoresKeptBatch: a batch a request's refill kept and did
// not use (its transaction failed) goes back to the shared buffer, sealed,
// and the next claim delivers it: the key manager handed it out once and
// it is not lost.
func TestCSSPutBackStoresKeptBatch(t *testing.T) {
	keys := &masterKeys{batchBits: 8 * MaxBatchSize, issued: map[string]bool{}}
	c := cssNodes(t, sqldbtest.SQLiteDSN(t), keys, 1, 0)[0]
	ctx := context.Background()
	k := &etsiKey{key: make([]byte, c.cfg.BatchBytes)}
	rand.Read(k.id[:])
	rand.Read(k.key)
	want := bytes.Clone(k.key)
	if err := c.putBack(ctx, k); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Prefetched(ctx); err != nil || n != 1 {
		t.Fatalf("%d batches wait (%v), want the one put back", n, err)
	}
	var got etsiKey
	if err := c.batch.Do(ctx, func(tx *sql.Tx) error {
		var err error
		got, _, err = c.claim(ctx, tx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got.id != k.id || !bytes.Equal(got.key, want) {
		t.Fatalf("claimed %x, want the batch put back %x", got.id, k.id)
	}
}
