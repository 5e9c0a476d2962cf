package platform

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// openNodes opens n platform nodes on one fresh PostgreSQL schema (skipped
// without QSHIELD_TEST_POSTGRES), started together as a cluster's nodes are.
func openNodes(t *testing.T, n int) []*Platform {
	t.Helper()
	dsn := sqldbtest.PostgresDSN(t)
	t.Setenv("QSHIELD_PLATFORM_KEY", strings.Repeat("4d", 32))
	t.Setenv(EnvAuditKey, strings.Repeat("d4", 32))
	nodes := make([]*Platform, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = Open(context.Background(), Config{DB: dsn, StateDir: t.TempDir(), QKD: QKDConfig{Off: true}})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		p := nodes[i]
		t.Cleanup(func() { p.Close() })
	}
	return nodes
}

// leaderOf reports whether p's qshield_leader{duty} gauge is 1.
func leaderOf(t *testing.T, p *Platform, duty string) bool {
	t.Helper()
	mfs, err := p.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "qshield_leader" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "duty" && l.GetValue() == duty {
					return m.GetGauge().GetValue() == 1
				}
			}
		}
	}
	return false
}

// holders returns the indexes of the nodes whose gauge says they hold duty
// and the node the lease row names as its live holder ("" if none).
func holders(t *testing.T, nodes []*Platform, duty string) (held []int, row string) {
	t.Helper()
	for i, p := range nodes {
		if p != nil && leaderOf(t, p, duty) {
			held = append(held, i)
		}
	}
	var p *Platform
	for _, q := range nodes {
		if q != nil {
			p = q
			break
		}
	}
	err := p.DB.QueryRowContext(context.Background(), `SELECT holder FROM qshield_leases WHERE duty = $1 AND expires_at > $2`, duty, time.Now().UnixNano()).Scan(&row)
	if err != nil {
		row = ""
	}
	return held, row
}

// waitOneHolder waits (bounded generously: a hung election fails, a slow
// machine does not) until exactly one live node holds duty, and returns it.
func waitOneHolder(t *testing.T, nodes []*Platform, duty string) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		held, row := holders(t, nodes, duty)
		if len(held) == 1 && row == nodes[held[0]].node {
			return held[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("duty %s: no single holder (gauges %v, lease row %q)", duty, held, row)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDutiesOnOneNode: with three nodes on one PostgreSQL database, each
// background duty (the selfverify and ledger expiry sweeps, both key managers' pool sync,
// site A's sweep of delivered keys) runs on exactly one node, and when that
// node stops another node takes it over.
func TestDutiesOnOneNode(t *testing.T) {
	nodes := openNodes(t, 3)
	duties := []string{"selfverify-sweep", "ledger-expiry", "audit-publish", "kme-sync/" + KMEPlatform, "kme-sync/" + KMESupermarket, "kme-sweep/" + KMEPlatform}
	holder := map[string]int{}
	for _, d := range duties {
		holder[d] = waitOneHolder(t, nodes, d)
	}
	// Over several renewals each duty keeps exactly one holder.
	for range 10 {
		for _, d := range duties {
			if held, _ := holders(t, nodes, d); len(held) > 1 {
				t.Fatalf("duty %s held by nodes %v at once", d, held)
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	// The selfverify sweeper's node stops: its duties move to the others.
	stopped := holder["selfverify-sweep"]
	if err := nodes[stopped].Close(); err != nil {
		t.Logf("close node %d: %v", stopped, err)
	}
	nodes[stopped] = nil
	for _, d := range duties {
		if holder[d] != stopped {
			continue
		}
		if now := waitOneHolder(t, nodes, d); now == stopped {
			t.Fatalf("duty %s still on the stopped node", d)
		}
	}
}

// TestDutyRunsOnceAcrossNodes: work given to duty runs on one node at a time
// (never two at once, checked while it runs), and when the node running it
// stops (its context ends) another node runs it.
func TestDutyRunsOnceAcrossNodes(t *testing.T) {
	nodes := openNodes(t, 3)
	var running atomic.Int32
	var over atomic.Bool // more than one at once, seen by a work function
	ran := make([]atomic.Bool, len(nodes))
	cancels := make([]context.CancelFunc, len(nodes))
	var wg sync.WaitGroup
	for i, p := range nodes {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i] = cancel
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.duty(ctx, "test-duty", func(ctx context.Context) {
				if running.Add(1) > 1 {
					over.Store(true)
				}
				ran[i].Store(true)
				<-ctx.Done()
				running.Add(-1)
			})
		}()
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
		wg.Wait()
	}()
	first := waitOneHolder(t, nodes, "test-duty")
	if !ran[first].Load() {
		time.Sleep(100 * time.Millisecond) // OnChange precedes the work's start
	}
	if !ran[first].Load() {
		t.Fatalf("node %d holds the duty but did not run it", first)
	}
	cancels[first]() // the holder stops
	var second int
	deadline := time.Now().Add(60 * time.Second)
	for {
		held, _ := holders(t, nodes, "test-duty")
		if len(held) == 1 && held[0] != first {
			second = held[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the duty did not move off node %d (holders %v)", first, held)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for !ran[second].Load() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !ran[second].Load() {
		t.Fatalf("node %d took the duty but did not run it", second)
	}
	if over.Load() {
		t.Fatal("the duty ran on two nodes at once")
	}
}

// TestDutyOnSQLiteRunsDirectly: on SQLite (one node) a duty runs at once,
// without a lease.
func TestDutyOnSQLiteRunsDirectly(t *testing.T) {
	p := openTestPlatform(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.duty(ctx, "test-duty", func(ctx context.Context) { cancel(); <-ctx.Done() })
	}()
	<-done
	var n int
	if err := p.DB.QueryRowContext(context.Background(), `SELECT count(*) FROM sqlite_master WHERE name = 'qshield_leases'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("a lease table on SQLite: the duty went through an election")
	}
}

// TestDutyMovesWhenHolderLosesDatabase: a holder that can no longer reach
// the database (as a crashed or cut-off node) cannot release its lease; the
// duty moves to another node once the lease expires, and the old holder has
// stopped its work by then (never two at once).
func TestDutyMovesWhenHolderLosesDatabase(t *testing.T) {
	nodes := openNodes(t, 2)
	var running atomic.Int32
	var over atomic.Bool
	ran := make([]atomic.Bool, len(nodes))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i, p := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.duty(ctx, "test-duty", func(ctx context.Context) {
				if running.Add(1) > 1 {
					over.Store(true)
				}
				ran[i].Store(true)
				<-ctx.Done()
				running.Add(-1)
			})
		}()
	}
	first := waitOneHolder(t, nodes, "test-duty")
	other := 1 - first
	if err := nodes[first].DB.Close(); err != nil { // renewals and the release now fail
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !ran[other].Load() {
		if time.Now().After(deadline) {
			t.Fatalf("the duty did not move to node %d after node %d lost its database", other, first)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !leaderOf(t, nodes[other], "test-duty") {
		t.Fatalf("node %d runs the duty without reporting it", other)
	}
	if leaderOf(t, nodes[first], "test-duty") {
		t.Fatalf("node %d still reports the duty it lost", first)
	}
	if over.Load() {
		t.Fatal("the duty ran on two nodes at once")
	}
}
