package qmsp

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// onceKeys is the key manager's contract as the PPS sees it: each key is
// handed out once (ETSI 014 dec_keys deletes it); a second request for it
// fails. It counts deliveries.
type onceKeys struct {
	mu        sync.Mutex
	keys      map[string][]byte
	delivered atomic.Int64
}

func (k *onceKeys) DecKeys(ctx context.Context, master string, ids ...string) ([]etsi014.KeyMaterial, error) {
	time.Sleep(20 * time.Millisecond) // a network round trip: lets racers overlap
	k.mu.Lock()
	defer k.mu.Unlock()
	b, ok := k.keys[ids[0]]
	if !ok {
		return nil, errors.New("key not found (already delivered)")
	}
	delete(k.keys, ids[0])
	k.delivered.Add(1)
	return []etsi014.KeyMaterial{{ID: ids[0], Key: b}}, nil
}

// TestPPSFetchOnceAcrossNodes: PPS processes of several nodes asking for
// the same new quantum key at once all get it, and the key manager delivers
// it once. Only one process could fetch it; the others failed the payment
// with unknown_key.
func TestPPSFetchOnceAcrossNodes(t *testing.T) {
	dsn := sqldbtest.PostgresDSN(t) // several processes share one PostgreSQL database
	ctx := context.Background()
	const keyID = "5d0a4b8e-1c3f-4b7a-9e2d-0f6b8a4c2e11"
	material := make([]byte, MaxBatchSize)
	rand.Read(material)
	keys := &onceKeys{keys: map[string][]byte{keyID: material}}
	storage := make([]byte, 32)
	rand.Read(storage)
	var nodes []*PPS
	for range 3 {
		// One pool per node, as separate processes would have.
		ndb, err := sqldb.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ndb.Close() })
		led, err := ledger.Open(ctx, ndb)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { led.Close() })
		p, err := NewPPS(ctx, PPSConfig{DB: ndb, Keys: keys, MasterSAE: "css", Ledger: led, StorageKey: storage})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		nodes = append(nodes, p)
	}
	var wg sync.WaitGroup
	for i, p := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := p.material(ctx, keyID)
			if err != nil {
				t.Errorf("node %d: %v", i, err)
				return
			}
			if string(b) != string(material) {
				t.Errorf("node %d: different material", i)
			}
		}()
	}
	wg.Wait()
	if n := keys.delivered.Load(); n != 1 {
		t.Fatalf("key delivered %d times", n)
	}
}
