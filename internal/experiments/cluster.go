package experiments

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/internal/client"
	"github.com/qshield/qshield/internal/pgha"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/ledger"
)

// ClusterExperiment runs qshield nodes on a Patroni-managed PostgreSQL pair
// (synchronous replication), drives payments through the nodes' HTTPS API
// while it kills one node and then crashes the PostgreSQL primary, and
// counts what a payer would care about: acknowledged transfers lost or
// applied twice (must be 0), the error window, and the failover time.
func ClusterExperiment() experiment.Spec {
	return experiment.Spec{
		Name:    "cluster",
		Summary: "qshield nodes on Patroni + etcd (synchronous PostgreSQL): kill a node, crash the primary; lost or duplicated acknowledged transfers, error window, failover time",
		Params: []experiment.Param{
			{Name: "nodes", Default: "3", Usage: "qshield nodes (in this process, each on its own port)"},
			{Name: "workers", Default: "8", Usage: "concurrent payers"},
			{Name: "kill-node-at", Default: "5s", Usage: "when to stop one qshield node"},
			{Name: "crash-primary-at", Default: "12s", Usage: "when to crash the PostgreSQL primary (Patroni and postmaster SIGKILLed)"},
			{Name: "duration", Default: "45s", Usage: "total run time"},
		},
		Run: runCluster,
	}
}

type clusterNode struct {
	p    *platform.Platform
	url  string
	stop func()
	dead atomic.Bool
}

func runCluster(ctx context.Context, env *experiment.Env) (*experiment.Result, error) {
	nNodes, err := env.Int("nodes")
	if err != nil || nNodes < 2 {
		return nil, fmt.Errorf("nodes must be at least 2")
	}
	workers, err := env.Int("workers")
	if err != nil || workers < 1 {
		return nil, fmt.Errorf("workers must be at least 1")
	}
	killAt, err := env.Duration("kill-node-at")
	if err != nil {
		return nil, err
	}
	crashAt, err := env.Duration("crash-primary-at")
	if err != nil {
		return nil, err
	}
	total, err := env.Duration("duration")
	if err != nil {
		return nil, err
	}
	if !(killAt < crashAt && crashAt < total) {
		return nil, errors.New("want kill-node-at < crash-primary-at < duration")
	}
	t0 := time.Now()
	cl, err := pgha.Start(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer cl.Stop()
	clusterUp := time.Since(t0)
	env.Log.Info("cluster up", "took", clusterUp, "primary", cl.Primary().Name)

	state, err := os.MkdirTemp("", "qshield-cluster-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(state)
	nodes := make([]*clusterNode, nNodes)
	for i := range nodes {
		n, err := startClusterNode(ctx, cl.DSN("postgres"), filepath.Join(state, fmt.Sprintf("node%d", i)), state)
		if err != nil {
			for _, m := range nodes[:i] {
				m.stop()
			}
			return nil, fmt.Errorf("start node %d: %w", i, err)
		}
		nodes[i] = n
	}
	defer func() {
		for _, n := range nodes {
			if !n.dead.Load() {
				n.stop()
			}
		}
	}()
	admin := nodes[0].p
	clients := make([]*client.Client, nNodes)
	for i, n := range nodes {
		clients[i] = client.New(n.url, admin.ClientTLS(ctx, admin.AdminCert))
		defer clients[i].Close()
	}
	const accounts = 50
	const cur = "CNY"
	if _, err := clients[0].CreateAccount(ctx, server.AccountRequest{ID: "cl-issuer", Owner: "issuer", Kind: ledger.KindSystem, Currency: cur, AllowNegative: true}); err != nil {
		return nil, fmt.Errorf("create issuer: %w", err)
	}
	for i := range accounts {
		if _, err := clients[0].CreateAccount(ctx, server.AccountRequest{ID: fmt.Sprintf("cl-u%02d", i), Owner: "payer", Kind: ledger.KindUser, Currency: cur}); err != nil {
			return nil, fmt.Errorf("create account: %w", err)
		}
	}

	type ack struct {
		key string
		at  time.Duration
	}
	var (
		mu       sync.Mutex
		acks     []ack
		errTimes []time.Duration
	)
	start := time.Now()
	runCtx, stopRun := context.WithTimeout(ctx, total)
	defer stopRun()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; runCtx.Err() == nil; i++ {
				key := fmt.Sprintf("cl-%d-%d", w, i)
				to := fmt.Sprintf("cl-u%02d", (w*7+i)%accounts)
				// Retry the same key on the next node until acknowledged:
				// the idempotency key makes a retry of an in-doubt request safe.
				for try := 0; ; try++ {
					n := (w + i + try) % nNodes
					if nodes[n].dead.Load() {
						continue
					}
					rctx, cancel := context.WithTimeout(context.WithoutCancel(runCtx), 5*time.Second)
					_, _, err := clients[n].Transfer(rctx, key, server.TransferRequest{From: "cl-issuer", To: to, Amount: 100, Currency: cur})
					cancel()
					if err == nil {
						mu.Lock()
						acks = append(acks, ack{key, time.Since(start)})
						mu.Unlock()
						break
					}
					mu.Lock()
					errTimes = append(errTimes, time.Since(start))
					mu.Unlock()
					if runCtx.Err() != nil && try > 50 {
						return // give up only long after the run ended
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	var promotedAfter time.Duration
	var oldPrimary, newPrimary string
	events := make(chan error, 1)
	go func() {
		time.Sleep(killAt)
		nodes[nNodes-1].dead.Store(true)
		nodes[nNodes-1].stop()
		env.Log.Info("node stopped", "node", nNodes-1)
		time.Sleep(crashAt - killAt)
		p := cl.Primary()
		if p == nil {
			events <- errors.New("no primary to crash")
			return
		}
		oldPrimary = p.Name
		c0 := time.Now()
		if err := cl.Crash(p); err != nil {
			events <- err
			return
		}
		np, err := cl.WaitPrimary(ctx, 90*time.Second)
		if err != nil {
			events <- err
			return
		}
		promotedAfter, newPrimary = time.Since(c0), np.Name
		env.Log.Info("primary crashed and replaced", "old", oldPrimary, "new", newPrimary, "after", promotedAfter)
		events <- nil
	}()
	wg.Wait()
	if err := <-events; err != nil {
		return nil, err
	}

	// Every acknowledged transfer exists exactly once; money is conserved.
	led := admin.Ledger
	lost := 0
	for _, a := range acks {
		if _, err := led.TransferByKey(ctx, a.key); err != nil {
			lost++
		}
	}
	var stored int
	if err := admin.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM ledger_transfers WHERE idempotency_key LIKE 'cl-%'`).Scan(&stored); err != nil {
		return nil, err
	}
	sum, err := led.TotalBalance(ctx, cur)
	if err != nil {
		return nil, err
	}
	var firstErr, lastErr time.Duration
	if len(errTimes) > 0 {
		firstErr, lastErr = errTimes[0], errTimes[0]
		for _, e := range errTimes {
			firstErr, lastErr = min(firstErr, e), max(lastErr, e)
		}
	}

	tb := experiment.Table{Title: "Cluster: qshield nodes on Patroni + etcd, synchronous replication",
		Header: []string{"measure", "value"}}
	tb.AddRow("PostgreSQL nodes / qshield nodes / payers", fmt.Sprintf("2 / %d / %d", nNodes, workers))
	tb.AddRow("cluster start (initdb, base backup, sync standby)", experiment.FormatDuration(clusterUp))
	tb.AddRow("qshield node stopped at", experiment.FormatDuration(killAt))
	tb.AddRow("primary crashed at", fmt.Sprintf("%s (%s)", experiment.FormatDuration(crashAt), oldPrimary))
	tb.AddRow("new primary after (Patroni TTL "+fmt.Sprint(pgha.TTL)+" s)", fmt.Sprintf("%s (%s)", experiment.FormatDuration(promotedAfter), newPrimary))
	tb.AddRow("error window (first to last failed attempt)", experiment.FormatDuration(lastErr-firstErr))
	tb.AddRow("failed attempts (retried with the same key)", len(errTimes))
	tb.AddRow("acknowledged transfers", len(acks))
	tb.AddRow("stored transfers (these keys)", stored)
	tb.AddRow("acknowledged but lost", lost)
	tb.AddRow("applied twice", max(0, stored-len(acks)))
	tb.AddRow("sum of balances (must be 0)", sum)
	tb.Notes = append(tb.Notes, "Each payer retries a failed request with the same Idempotency-Key on the next live node; an in-doubt request therefore lands once. 'applied twice' counts stored transfers beyond the acknowledged ones (a request whose answer was lost and never retried would show up here too).")

	// Throughput per second over the run.
	secs := int(total/time.Second) + 1
	perSec := make([]float64, secs)
	errSec := make([]float64, secs)
	for _, a := range acks {
		if s := int(a.at / time.Second); s < secs {
			perSec[s]++
		}
	}
	for _, e := range errTimes {
		if s := int(e / time.Second); s < secs {
			errSec[s]++
		}
	}
	xs := make([]float64, secs)
	for i := range xs {
		xs[i] = float64(i)
	}
	res := &experiment.Result{Name: "cluster", Title: "qshield on highly available PostgreSQL", Tables: []experiment.Table{tb},
		Plots: []experiment.Plot{{File: "cluster.png", Title: fmt.Sprintf("Payments through a node stop (%s) and a primary crash (%s)", killAt, crashAt),
			XLabel: "time (s)", YLabel: "per second", Series: []experiment.Series{{Name: "acknowledged transfers", X: xs, Y: perSec}, {Name: "failed attempts", X: xs, Y: errSec}}}},
		Data: map[string]any{"acks": len(acks), "lost": lost, "stored": stored, "promoted_after_s": promotedAfter.Seconds(), "error_window_s": (lastErr - firstErr).Seconds()}}
	if lost != 0 || sum != 0 {
		return res, fmt.Errorf("cluster: %d acknowledged transfers lost, balance sum %d", lost, sum)
	}
	return res, nil
}

func startClusterNode(ctx context.Context, dsn, dir, state string) (*clusterNode, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p, err := platform.Open(ctx, platform.Config{DB: dsn, StateDir: state,
		QKD: platform.QKDConfig{Off: true, ListenA: "127.0.0.1:0", ListenB: "127.0.0.1:0"}})
	if err != nil {
		ln.Close()
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- p.Serve(sctx, ln) }()
	n := &clusterNode{p: p, url: p.URL(ln.Addr())}
	n.stop = func() { cancel(); <-done; p.Close() }
	return n, nil
}
