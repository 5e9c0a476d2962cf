package experiments

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/internal/client"
	"github.com/qshield/qshield/internal/demo"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/sqldb"
)

// SoakExperiment runs N platform nodes on one PostgreSQL database, with the
// QKD link on, and runs every scheme's demo scenario (payments and attacks)
// round-robin across the nodes for a while; any failed step fails the run.
// At the end it checks that money is conserved and the audit trail verifies.
func SoakExperiment() experiment.Spec {
	return experiment.Spec{
		Name:    "soak",
		Summary: "N platform nodes on one PostgreSQL with the QKD link on: every scheme's scenario in a loop across the nodes; errors, money and audit at the end",
		Params: []experiment.Param{
			{Name: "nodes", Default: "3", Usage: "platform nodes on the one database"},
			{Name: "duration", Default: "10m", Usage: "how long to run the scenarios"},
			{Name: "qkd-speedup", Default: "20", Usage: "QKD link speed-up over the 40 MHz source"},
			{Name: "singleton", Default: "true", Usage: "true: one QKD link for all nodes, run by the lease holder (the other nodes' key managers serve its deposits), as qshield serve runs it; false: a link per node (--qkd-per-node)"},
		},
		Run: runSoak,
	}
}

func runSoak(ctx context.Context, env *experiment.Env) (*experiment.Result, error) {
	nNodes, err := env.Int("nodes")
	if err != nil || nNodes < 1 {
		return nil, errors.New("nodes must be at least 1")
	}
	dur, err := env.Duration("duration")
	if err != nil {
		return nil, err
	}
	speed, err := env.Float("qkd-speedup")
	if err != nil {
		return nil, err
	}
	singleton, err := strconv.ParseBool(env.String("singleton"))
	if err != nil {
		return nil, fmt.Errorf("singleton: %w", err)
	}
	dsn := env.DB
	if !sqldb.IsPostgres(dsn) {
		dsn = env.Postgres
	}
	if !sqldb.IsPostgres(dsn) {
		return nil, errors.New("soak: needs PostgreSQL (--db postgres://…): several nodes share one database")
	}
	dsn, dropSchema, err := freshSchema(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer dropSchema()
	state, err := os.MkdirTemp("", "qshield-soak-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(state)

	type node struct {
		p    *platform.Platform
		env  *demo.Env
		stop func()
	}
	nodes := make([]*node, 0, nNodes)
	defer func() {
		for _, n := range nodes {
			n.stop()
		}
	}()
	// Start the nodes at the same time, as a deployment would.
	var mu sync.Mutex
	var wg sync.WaitGroup
	startErrs := make([]error, nNodes)
	for i := range nNodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				startErrs[i] = err
				return
			}
			// Scanner challenges are on by default, as the demo's
			// watermark scenario needs.
			p, err := platform.Open(ctx, platform.Config{DB: dsn, StateDir: state, Log: env.Log,
				QKD: platform.QKDConfig{Speedup: speed, ListenA: "127.0.0.1:0", ListenB: "127.0.0.1:0", PerNodeLink: !singleton}})
			if err != nil {
				ln.Close()
				startErrs[i] = fmt.Errorf("node %d: %w", i, err)
				return
			}
			sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
			done := make(chan error, 1)
			go func() { done <- p.Serve(sctx, ln) }()
			e := &demo.Env{P: p, URL: p.URL(ln.Addr()), Log: env.Log,
				ClientTLS: func(c tls.Certificate) *tls.Config { return p.ClientTLS(ctx, c) }}
			e.Client = client.New(e.URL, e.ClientTLS(p.AdminCert))
			mu.Lock()
			nodes = append(nodes, &node{p: p, env: e, stop: func() { e.Client.Close(); cancel(); <-done; p.Close() }})
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := errors.Join(startErrs...); err != nil {
		return nil, err
	}
	// The nodes share one state directory, so each holds the one admin
	// credential (the scenarios' ledger and selfverify steps present it).
	for i, n := range nodes {
		if n.p.AdminCert.Leaf == nil {
			return nil, fmt.Errorf("soak: node %d started without the admin credential of the shared state directory", i)
		}
	}
	scenarios := []demo.Scenario{demo.Ledger(), demo.QMSP(), demo.KeyCharge(), demo.SelfVerify(), demo.Watermark(), demo.BioQR()}
	type tally struct{ runs, steps, failed int }
	counts := map[string]*tally{}
	var failures []string
	deadline := time.Now().Add(dur)
	prog := env.Progress.Start("soak", int64(dur/time.Second), "s")
	reported := int64(0)
	start := time.Now()
	for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		// Each round of scenarios starts one node further on, so every
		// scheme runs on every node (with 6 scenarios and 3 nodes a plain
		// i % nodes pinned each scheme to one node).
		s := scenarios[i%len(scenarios)]
		ni := (i + i/len(scenarios)) % len(nodes)
		n := nodes[ni]
		rows, err := s.Run(ctx, n.env)
		t := counts[s.Name]
		if t == nil {
			t = &tally{}
			counts[s.Name] = t
		}
		t.runs++
		t.steps += len(rows)
		if err != nil {
			t.failed++
			failures = append(failures, fmt.Sprintf("%s on node %d at %s: %v", s.Name, ni, time.Since(start).Round(time.Second), err))
		}
		if now := int64(time.Since(start) / time.Second); now > reported {
			prog.Add(now - reported)
			reported = now
		}
	}
	prog.Done()

	p := nodes[0].p
	links := "a QKD link per node"
	if singleton {
		links = "one QKD link (singleton)"
	}
	tb := experiment.Table{Title: fmt.Sprintf("Soak: %d nodes on one PostgreSQL, %s, %s", len(nodes), links, dur),
		Header: []string{"scheme", "scenario runs", "steps", "failed runs"}}
	for _, s := range scenarios {
		if t := counts[s.Name]; t != nil {
			tb.AddRow(s.Name, t.runs, t.steps, t.failed)
		}
	}
	total, err := p.Ledger.TotalBalance(ctx, "CNY")
	if err != nil {
		return nil, err
	}
	rep, err := p.Audit.Verify(ctx)
	if err != nil {
		return nil, err
	}
	tb.Notes = append(tb.Notes, fmt.Sprintf("Sum of CNY balances after the run: %d (must be 0). Audit trail: %d records, intact: %v.", total, rep.Records, rep.OK))
	tb.Notes = append(tb.Notes, failures...)
	res := &experiment.Result{Name: "soak", Title: "Every scheme on several nodes", Tables: []experiment.Table{tb},
		Data: map[string]any{"failures": failures, "balance_sum": total, "audit_ok": rep.OK, "audit_records": rep.Records}}
	if len(failures) > 0 || total != 0 || !rep.OK {
		shown := failures
		if len(shown) > 10 {
			shown = shown[:10]
		}
		return res, fmt.Errorf("soak: %d failed scenario runs, balance sum %d, audit intact %v; first failures:\n%s", len(failures), total, rep.OK, strings.Join(shown, "\n"))
	}
	return res, nil
}

// freshSchema creates an empty schema in the PostgreSQL database of dsn and
// returns a DSN whose search_path is that schema, and a function that drops
// it, so that a run never mixes with other data in the database.
func freshSchema(ctx context.Context, dsn string) (string, func(), error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return "", nil, err
	}
	var b [6]byte
	rand.Read(b[:])
	schema := "qshield_run_" + hex.EncodeToString(b[:])
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		db.Close()
		return "", nil, fmt.Errorf("create schema for the run: %w", err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		db.Close()
		return "", nil, err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), func() {
		db.ExecContext(context.WithoutCancel(ctx), "DROP SCHEMA "+schema+" CASCADE")
		db.Close()
	}, nil
}
