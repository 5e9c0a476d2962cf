package experiments

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
)

// TransferFunc performs one posted transfer of amount minor units of
// LoadCurrency between two load accounts under an idempotency key, returning
// only once it is acknowledged (durable).
type TransferFunc func(ctx context.Context, from, to string, amount int64, key string) error

// LoadCurrency is the currency of the load accounts.
const LoadCurrency = "XTS" // ISO 4217 code reserved for testing

// LoadAccountID names the i-th load account (0 ≤ i < accounts).
func LoadAccountID(i int) string { return fmt.Sprintf("load-%06d", i) }

const (
	loadIssuer = "load-issuer"
	loadFund   = int64(1_000_000_000_000)
)

// LoadTarget is one system under test in the ledger experiment.
type LoadTarget struct {
	Name string
	// Open prepares the target for a run over accounts load accounts (created
	// and funded, e.g. with PrepareLoadLedger) and returns its transfer
	// function and a cleanup. It returns ErrSkip (wrapped) when the target is
	// not available (e.g. no PostgreSQL).
	Open func(ctx context.Context, env *experiment.Env, accounts int) (TransferFunc, func(), error)
	// PGBench asks for pgbench's TPC-B TPS at the same concurrency beside it.
	PGBench bool
	// Postgres marks a target whose database is env.Postgres: when that
	// server runs on this machine, its processes' CPU is counted too.
	Postgres bool
}

// ErrSkip marks a target that cannot run in this environment.
var ErrSkip = errors.New("target not available")

// LoadResult is the outcome of one RunLoad cell.
type LoadResult struct {
	Clients   int           `json:"clients"`
	Accounts  int           `json:"accounts"`
	Duration  time.Duration `json:"duration_ns"`
	Transfers int64         `json:"transfers"` // acknowledged
	Errors    int64         `json:"errors"`
	FirstErr  string        `json:"first_error,omitempty"`
	TPS       float64       `json:"tps"`
	P50       time.Duration `json:"p50_ns"`
	P99       time.Duration `json:"p99_ns"`
	// CPU is this process's CPU time during the cell (load generator
	// included) and ServerCPU the local PostgreSQL server's, when measured
	// (runLedgerExperiment).
	CPU       time.Duration `json:"cpu_ns,omitempty"`
	ServerCPU time.Duration `json:"server_cpu_ns,omitempty"`
}

// CPUPerTransfer is the CPU time, this process's and the server's, per
// acknowledged transfer (0 when not measured).
func (r LoadResult) CPUPerTransfer() time.Duration {
	if r.Transfers == 0 {
		return 0
	}
	return (r.CPU + r.ServerCPU) / time.Duration(r.Transfers)
}

// cpuCell formats a cell's CPU per transfer in µs: "142" or, with the
// server's share, "142 (61 server)".
func cpuCell(r LoadResult) string {
	if r.CPU == 0 || r.Transfers == 0 {
		return ""
	}
	total := float64(r.CPUPerTransfer()) / float64(time.Microsecond)
	if r.ServerCPU > 0 {
		return fmt.Sprintf("%.0f (%.0f server)", total, float64(r.ServerCPU)/float64(time.Microsecond)/float64(r.Transfers))
	}
	return fmt.Sprintf("%.0f", total)
}

// localPostgres reports whether dsn names a PostgreSQL server on this
// machine (a loopback address or a Unix socket), whose processes
// postgresCPU can see.
func localPostgres(dsn string) bool {
	if dsn == "" {
		return false
	}
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return false
	}
	if strings.HasPrefix(cfg.Host, "/") || cfg.Host == "localhost" {
		return true
	}
	ip := net.ParseIP(cfg.Host)
	return ip != nil && ip.IsLoopback()
}

// RunLoad runs clients goroutines for duration, each making transfers of 1–100
// units between two distinct random load accounts out of accounts, and reports
// the acknowledged rate and latency percentiles.
func RunLoad(ctx context.Context, clients, accounts int, duration time.Duration, transfer TransferFunc) LoadResult {
	res := LoadResult{Clients: clients, Accounts: accounts}
	if clients < 1 || accounts < 2 {
		res.FirstErr = "need at least 1 client and 2 accounts"
		return res
	}
	var prefix [6]byte
	_, _ = rand.Read(prefix[:])
	run := hex.EncodeToString(prefix[:])
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lat := make([][]time.Duration, clients)
	var nErr atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(duration)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seed := uint64(c)*0x9E3779B97F4A7C15 + uint64(start.UnixNano())
			next := func(n int) int {
				seed ^= seed << 13
				seed ^= seed >> 7
				seed ^= seed << 17
				return int(seed % uint64(n))
			}
			for i := 0; ctx.Err() == nil && time.Now().Before(deadline); i++ {
				a := next(accounts)
				b := next(accounts - 1)
				if b >= a {
					b++
				}
				key := fmt.Sprintf("load-%s-%d-%d", run, c, i)
				t0 := time.Now()
				err := transfer(ctx, LoadAccountID(a), LoadAccountID(b), int64(1+next(100)), key)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					if nErr.Add(1) == 1 {
						firstErr.Store(err.Error())
					}
					continue
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	res.Duration = time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	res.Transfers = int64(len(all))
	res.Errors = nErr.Load()
	if s, ok := firstErr.Load().(string); ok {
		res.FirstErr = s
	}
	res.TPS = float64(res.Transfers) / res.Duration.Seconds()
	if len(all) > 0 {
		res.P50 = all[len(all)/2]
		res.P99 = all[min(len(all)-1, int(math.Ceil(float64(len(all))*0.99))-1)]
	}
	return res
}

// PrepareLoadLedger opens a ledger on db and creates, idempotently, the issuer
// and accounts funded load accounts.
func PrepareLoadLedger(ctx context.Context, db *sqldb.DB, accounts int, opts ...ledger.Option) (*ledger.Ledger, error) {
	l, err := ledger.Open(ctx, db, append([]ledger.Option{ledger.WithSweepInterval(0)}, opts...)...)
	if err != nil {
		return nil, err
	}
	if _, err := l.EnsureAccount(ctx, ledger.NewAccount{ID: loadIssuer, Owner: "load", Kind: ledger.KindSystem, Currency: LoadCurrency, AllowNegative: true}); err != nil {
		l.Close()
		return nil, err
	}
	// Concurrent setup lets the SQLite group commit batch it.
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= accounts {
					return
				}
				id := LoadAccountID(i)
				_, err := l.EnsureAccount(ctx, ledger.NewAccount{ID: id, Owner: "load", Kind: ledger.KindUser, Currency: LoadCurrency})
				if err == nil {
					_, err = l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "fund-" + id, From: loadIssuer, To: id, Amount: loadFund, Currency: LoadCurrency})
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("prepare %s: %w", id, err)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		l.Close()
		return nil, firstErr
	}
	return l, nil
}

// LedgerTransferFunc adapts a ledger to TransferFunc.
func LedgerTransferFunc(l *ledger.Ledger) TransferFunc {
	return func(ctx context.Context, from, to string, amount int64, key string) error {
		_, err := l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: key, From: from, To: to, Amount: amount, Currency: LoadCurrency})
		return err
	}
}

// SQLiteTarget is the ledger in-process on a fresh SQLite file.
func SQLiteTarget() LoadTarget {
	return LoadTarget{Name: "sqlite (in-process)", Open: func(ctx context.Context, env *experiment.Env, accounts int) (TransferFunc, func(), error) {
		dir, err := os.MkdirTemp("", "qshield-ledger-exp-")
		if err != nil {
			return nil, nil, err
		}
		db, err := sqldb.Open(ctx, filepath.Join(dir, "ledger.db"))
		if err != nil {
			os.RemoveAll(dir)
			return nil, nil, err
		}
		l, err := PrepareLoadLedger(ctx, db, accounts)
		if err == nil {
			// Start measuring with an empty WAL, not the setup's backlog.
			_, err = db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
		}
		if err != nil {
			if l != nil {
				l.Close()
			}
			db.Close()
			os.RemoveAll(dir)
			return nil, nil, err
		}
		return LedgerTransferFunc(l), func() { l.Close(); db.Close(); os.RemoveAll(dir) }, nil
	}}
}

// PostgresTarget is the ledger in-process on a fresh schema of env.Postgres.
func PostgresTarget() LoadTarget {
	return LoadTarget{Name: "postgres (in-process)", PGBench: true, Postgres: true, Open: func(ctx context.Context, env *experiment.Env, accounts int) (TransferFunc, func(), error) {
		db, drop, err := FreshPostgres(ctx, env)
		if err != nil {
			return nil, nil, err
		}
		opts, err := pgBatcherOpts(env)
		if err != nil {
			drop()
			return nil, nil, err
		}
		l, err := PrepareLoadLedger(ctx, db, accounts, opts...)
		if err != nil {
			drop()
			return nil, nil, err
		}
		return LedgerTransferFunc(l), func() { l.Close(); drop() }, nil
	}}
}

// pgBatcherOpts returns the ledger options of the pg-batchers parameter
// (empty: the ledger's default).
func pgBatcherOpts(env *experiment.Env) ([]ledger.Option, error) {
	s := env.String("pg-batchers")
	if s == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return nil, fmt.Errorf("parameter pg-batchers: %w", err)
	}
	return []ledger.Option{ledger.WithPostgresBatchers(n)}, nil
}

// FreshPostgres opens a new, empty schema in env.Postgres; cleanup drops it.
func FreshPostgres(ctx context.Context, env *experiment.Env) (*sqldb.DB, func(), error) {
	if env.Postgres == "" {
		return nil, nil, fmt.Errorf("%w: no PostgreSQL reachable", ErrSkip)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "qx_" + hex.EncodeToString(b[:])
	admin, err := sqldb.Open(ctx, env.Postgres)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrSkip, err)
	}
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		return nil, nil, fmt.Errorf("create schema: %w", err)
	}
	u, err := url.Parse(env.Postgres)
	if err != nil {
		admin.Close()
		return nil, nil, err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	db, err := sqldb.Open(ctx, u.String())
	drop := func() {
		if db != nil {
			db.Close()
		}
		_, _ = admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		admin.Close()
	}
	if err != nil {
		db = nil
		drop()
		return nil, nil, err
	}
	return db, drop, nil
}

// LedgerExperiment measures transfer throughput and latency. Targets run in
// order: SQLite and PostgreSQL in-process, then any extra (e.g. the HTTPS API).
func LedgerExperiment(extra ...LoadTarget) experiment.Spec {
	return experiment.Spec{
		Name:    "ledger",
		Summary: "ledger transfers/s and p50/p99 latency by clients and accounts, against pgbench TPC-B",
		Params: []experiment.Param{
			{Name: "duration", Default: "3s", Usage: "length of each measured cell"},
			{Name: "clients", Default: "1,8,64", Usage: "comma-separated concurrent client counts"},
			{Name: "accounts", Default: "10,10000", Usage: "comma-separated account counts"},
			{Name: "targets", Default: "all", Usage: "comma-separated target name prefixes (sqlite, postgres, audited, https) or all"},
			{Name: "pgbench-scale", Default: "10", Usage: "pgbench -i scale factor (0 disables pgbench)"},
			{Name: "audit-checkpoint-every", Default: "1000", Usage: "audited targets: records per signed checkpoint of their publisher (as the platform's default); 0: no publisher"},
			{Name: "pg-batchers", Default: "", Usage: "PostgreSQL transfer batchers of the ledger (ledger.WithPostgresBatchers; empty: its default, 0: none)"},
			{Name: "rounds", Default: "1", Usage: "times every cell runs, the targets alternating (each round on fresh databases); with more than one, medians and each round's audit cost (audited against unaudited cell of the same round)"},
		},
		Run: func(ctx context.Context, env *experiment.Env) (*experiment.Result, error) {
			return runLedgerExperiment(ctx, env, append([]LoadTarget{SQLiteTarget(), PostgresTarget(), SQLiteAuditedTarget(), PostgresAuditedTarget()}, extra...))
		},
	}
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad count %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func runLedgerExperiment(ctx context.Context, env *experiment.Env, targets []LoadTarget) (*experiment.Result, error) {
	dur, err := env.Duration("duration")
	if err != nil {
		return nil, err
	}
	if dur <= 0 {
		return nil, fmt.Errorf("parameter duration must be positive")
	}
	clients, err := intList(env.String("clients"))
	if err != nil {
		return nil, fmt.Errorf("parameter clients: %w", err)
	}
	accounts, err := intList(env.String("accounts"))
	if err != nil {
		return nil, fmt.Errorf("parameter accounts: %w", err)
	}
	for _, a := range accounts {
		if a < 2 {
			return nil, fmt.Errorf("parameter accounts: need at least 2")
		}
	}
	scale, err := env.Int("pgbench-scale")
	if err != nil {
		return nil, err
	}
	rounds, err := env.Int("rounds")
	if err != nil {
		return nil, err
	}
	if rounds < 1 {
		return nil, fmt.Errorf("parameter rounds must be at least 1")
	}
	sel := strings.Split(env.String("targets"), ",")
	chosen := func(name string) bool {
		for _, s := range sel {
			s = strings.TrimSpace(s)
			if s == "all" || strings.HasPrefix(name, s) {
				return true
			}
		}
		return false
	}

	table := experiment.Table{
		Title:  "Ledger transfers (durable, posted, random pairs)",
		Header: []string{"target", "accounts", "clients", "transfers/s", "p50", "p99", "errors", "pgbench TPS", "ours / pgbench", "CPU µs per transfer"},
	}
	serverCPU := localPostgres(env.Postgres)
	if rounds > 1 {
		table.Header = append([]string{"round"}, table.Header...)
	}
	var results []map[string]any
	plot := experiment.Plot{File: "ledger-tps.png", Title: "Ledger throughput", XLabel: "concurrent clients", YLabel: "transfers/s", LogX: true}
	tps := map[ledgerCell][]float64{} // every round's transfers/s of a cell, in round order
	cpu := map[ledgerCell][]float64{} // and its CPU µs per transfer (0: not measured)
	var order []ledgerCell            // cells in the order first run

	// pgbench runs right after each cell of a target that asks for it, so
	// both see the same load on this (possibly shared) machine.
	var pgb *pgBench
	var pgbNote string
	wantPGB := false
	for _, t := range targets {
		wantPGB = wantPGB || (t.PGBench && chosen(t.Name))
	}
	switch {
	case !wantPGB:
	case env.Postgres == "" || scale <= 0:
		pgbNote = "pgbench not run: no PostgreSQL reachable or pgbench-scale=0"
	default:
		if pgb, err = newPGBench(ctx, env, dur, scale); err != nil {
			pgbNote = "pgbench not run: " + err.Error()
		} else {
			defer pgb.drop()
			pgbNote = fmt.Sprintf("pgbench: built-in TPC-B-like script, scale %d, -M prepared, -j ≤ 2, %d s, run on the same server right after each of our cells.", scale, pgb.secs)
		}
	}
	pgSeries := map[int][]float64{}

	total := 0
	for _, t := range targets {
		if chosen(t.Name) {
			total += rounds * len(accounts) * len(clients)
		}
	}
	prog := env.Progress.Start("ledger load cells", int64(total), "cells")
	var notes []string
	sqlite64 := 0.0
	for round := 1; round <= rounds; round++ {
		for _, t := range targets {
			if !chosen(t.Name) {
				continue
			}
			for _, acc := range accounts {
				env.Log.Info("ledger experiment: preparing", "target", t.Name, "accounts", acc)
				transfer, cleanup, err := t.Open(ctx, env, acc)
				if errors.Is(err, ErrSkip) {
					if round == 1 {
						notes = append(notes, fmt.Sprintf("%s skipped: %v", t.Name, err))
					}
					prog.Add(int64(len(clients)))
					continue
				}
				if err != nil {
					return nil, fmt.Errorf("ledger experiment: prepare %s with %d accounts: %w", t.Name, acc, err)
				}
				for _, c := range clients {
					if err := ctx.Err(); err != nil {
						cleanup()
						return nil, err
					}
					onServer := serverCPU && t.Postgres
					p0, okP := processCPU()
					var s0 map[int]int64
					okS := false
					if onServer {
						s0, okS = postgresCPU()
					}
					r := RunLoad(ctx, c, acc, dur, transfer)
					if p1, ok := processCPU(); ok && okP {
						r.CPU = p1 - p0
					}
					if onServer && okS {
						if s1, ok := postgresCPU(); ok {
							r.ServerCPU = serverCPUSince(s0, s1)
						}
					}
					prog.Add(1)
					pg, ratio := "", ""
					var pgTPS float64
					if pgb != nil && t.PGBench {
						if v, err := pgb.run(ctx, c); err != nil {
							pg = err.Error()
						} else {
							pgTPS = v
							pg = strconv.FormatFloat(v, 'f', 0, 64)
							ratio = fmt.Sprintf("%.0f%%", 100*r.TPS/v)
							pgSeries[c] = append(pgSeries[c], v)
						}
					}
					errs := strconv.FormatInt(r.Errors, 10)
					if r.FirstErr != "" {
						errs += " (" + r.FirstErr + ")"
					}
					row := []any{t.Name, acc, c, strconv.FormatFloat(r.TPS, 'f', 0, 64), r.P50, r.P99, errs, pg, ratio, cpuCell(r)}
					if rounds > 1 {
						row = append([]any{round}, row...)
					}
					table.AddRow(row...)
					k := ledgerCell{t.Name, acc, c}
					if _, ok := tps[k]; !ok {
						order = append(order, k)
					}
					tps[k] = append(tps[k], r.TPS)
					cpu[k] = append(cpu[k], float64(r.CPUPerTransfer())/float64(time.Microsecond))
					results = append(results, map[string]any{"round": round, "target": t.Name, "result": r, "pgbench_tps": pgTPS})
					if strings.HasPrefix(t.Name, "sqlite") && c == 64 && (sqlite64 == 0 || r.TPS < sqlite64) {
						sqlite64 = r.TPS
					}
				}
				cleanup()
			}
		}
	}
	prog.Done()
	// The plot shows each cell's median over the rounds.
	seriesOf := map[string]*experiment.Series{}
	var seriesOrder []string
	for _, k := range order {
		name := fmt.Sprintf("%s, %d accounts", k.target, k.accounts)
		s, ok := seriesOf[name]
		if !ok {
			s = &experiment.Series{Name: name}
			seriesOf[name] = s
			seriesOrder = append(seriesOrder, name)
		}
		s.X = append(s.X, float64(k.clients))
		s.Y = append(s.Y, median(tps[k]))
	}
	for _, name := range seriesOrder {
		plot.Series = append(plot.Series, *seriesOf[name])
	}
	var tables []experiment.Table
	if rounds > 1 {
		tables = roundsTables(rounds, order, tps, cpu)
	}
	if len(pgSeries) > 0 {
		s := experiment.Series{Name: "pgbench TPC-B", Points: true}
		for _, c := range clients {
			for _, tps := range pgSeries[c] {
				s.X = append(s.X, float64(c))
				s.Y = append(s.Y, tps)
			}
		}
		plot.Series = append(plot.Series, s)
	}
	table.Notes = append(table.Notes,
		fmt.Sprintf("Each cell runs %s; a transfer is acknowledged only once committed (SQLite WAL synchronous=FULL with group commit; PostgreSQL synchronous_commit as configured on the server).", dur),
		"Targets: PostgreSQL ≥ 60% of pgbench's TPS at equal concurrency; SQLite in-process ≥ 5,000 transfers/s at 64 clients.")
	if sqlite64 > 0 {
		verdict := "met"
		if sqlite64 < 5000 {
			verdict = "NOT met"
		}
		table.Notes = append(table.Notes, fmt.Sprintf("SQLite at 64 clients (worst account count): %.0f transfers/s — target %s.", sqlite64, verdict))
	}
	if pgbNote != "" {
		table.Notes = append(table.Notes, pgbNote)
	}
	table.Notes = append(table.Notes, notes...)
	return &experiment.Result{
		Name:   "ledger",
		Title:  "Ledger throughput and latency",
		Tables: append([]experiment.Table{table}, tables...),
		Plots:  []experiment.Plot{plot},
		Data:   results,
	}, nil
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// pgbenchPath finds pgbench on PATH or in the Debian/Ubuntu PostgreSQL tree.
func pgbenchPath() (string, error) {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
	if len(m) > 0 {
		slices.Sort(m)
		return m[len(m)-1], nil
	}
	return "", errors.New("pgbench not found on PATH or under /usr/lib/postgresql/*/bin")
}

// pgBench is a throwaway database initialised for pgbench's TPC-B-like script.
type pgBench struct {
	bin, conn string
	secs      int
	drop      func()
}

// newPGBench creates the database qshield_pgbench on env.Postgres' server and
// runs pgbench -i at scale.
func newPGBench(ctx context.Context, env *experiment.Env, dur time.Duration, scale int) (*pgBench, error) {
	bin, err := pgbenchPath()
	if err != nil {
		return nil, err
	}
	const dbName = "qshield_pgbench"
	admin, err := sql.Open("pgx", env.Postgres)
	if err != nil {
		return nil, err
	}
	_, _ = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+dbName)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+dbName); err != nil {
		admin.Close()
		return nil, fmt.Errorf("create database %s: %w", dbName, err)
	}
	drop := func() {
		_, _ = admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+dbName)
		admin.Close()
	}
	u, err := url.Parse(env.Postgres)
	if err != nil {
		drop()
		return nil, err
	}
	u.Path = "/" + dbName
	q := u.Query()
	q.Del("search_path")
	u.RawQuery = q.Encode()
	p := &pgBench{bin: bin, conn: u.String(), secs: max(1, int(math.Ceil(dur.Seconds()))), drop: drop}
	env.Log.Info("pgbench: initialising", "scale", scale)
	if b, err := exec.CommandContext(ctx, bin, "-i", "-q", "-s", strconv.Itoa(scale), p.conn).CombinedOutput(); err != nil {
		drop()
		return nil, fmt.Errorf("pgbench -i: %v: %s", err, lastLine(b))
	}
	return p, nil
}

// run returns pgbench's TPS with clients connections.
func (p *pgBench) run(ctx context.Context, clients int) (float64, error) {
	args := []string{"-n", "-M", "prepared", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2)), "-T", strconv.Itoa(p.secs), p.conn}
	b, err := exec.CommandContext(ctx, p.bin, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench -c %d: %v: %s", clients, err, lastLine(b))
	}
	m := tpsRE.FindSubmatch(b)
	if m == nil {
		return 0, fmt.Errorf("pgbench -c %d: no tps in output: %s", clients, lastLine(b))
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// ledgerCell is one cell of the ledger experiment.
type ledgerCell struct {
	target            string
	accounts, clients int
}

// roundsTables summarizes a ledger run of several rounds: each cell's median
// and range, and the cost of auditing — an audited target's transfers/s
// against its unaudited twin's in the same round (so both saw the machine
// of that round), with the median of those per-round costs.
//
// cpu holds each round's CPU µs per transfer of a cell (0 where not
// measured); the cost table gives the audit's CPU per transfer too (audited
// minus unaudited in each round, and against the unaudited figure), which
// is steadier than throughput on a shared machine.
func roundsTables(rounds int, order []ledgerCell, tps, cpu map[ledgerCell][]float64) []experiment.Table {
	med := experiment.Table{
		Title:  fmt.Sprintf("Medians over %d rounds", rounds),
		Header: []string{"target", "accounts", "clients", "median transfers/s", "min", "max"},
	}
	for _, k := range order {
		v := tps[k]
		med.AddRow(k.target, k.accounts, k.clients, strconv.FormatFloat(median(v), 'f', 0, 64),
			strconv.FormatFloat(slices.Min(v), 'f', 0, 64), strconv.FormatFloat(slices.Max(v), 'f', 0, 64))
	}
	cost := experiment.Table{
		Title:  "Cost of auditing, round by round",
		Header: []string{"target", "accounts", "clients", "cost per round (audited vs unaudited)", "median cost", "audit CPU µs per transfer, per round", "median CPU cost"},
		Notes: []string{"Issue 13's target: auditing every transfer costs at most 10% of ledger throughput at 64 clients (SQLite and PostgreSQL).",
			"Audit CPU: the audited cell's CPU per transfer (this process, load generator included, plus a local PostgreSQL server's processes) minus the unaudited cell's in the same round; median CPU cost is that difference against the unaudited figure."},
	}
	for _, k := range order {
		plain, ok := strings.CutPrefix(k.target, "audited ")
		if !ok {
			continue
		}
		pv, ok := tps[ledgerCell{plain, k.accounts, k.clients}]
		if !ok {
			continue
		}
		av := tps[k]
		var per []string
		var costs []float64
		for i := 0; i < len(av) && i < len(pv); i++ {
			if pv[i] <= 0 {
				continue
			}
			x := 100 * (av[i]/pv[i] - 1)
			costs = append(costs, x)
			per = append(per, fmt.Sprintf("%+.1f%%", x))
		}
		if len(costs) == 0 {
			continue
		}
		// The audit's CPU per transfer, where both cells of a round measured it.
		ac, pc := cpu[k], cpu[ledgerCell{plain, k.accounts, k.clients}]
		var cpuPer []string
		var cpuCosts []float64
		for i := 0; i < len(ac) && i < len(pc); i++ {
			if ac[i] <= 0 || pc[i] <= 0 {
				continue
			}
			cpuPer = append(cpuPer, fmt.Sprintf("%+.1f", ac[i]-pc[i]))
			cpuCosts = append(cpuCosts, 100*(ac[i]/pc[i]-1))
		}
		cpuMed := ""
		if len(cpuCosts) > 0 {
			cpuMed = fmt.Sprintf("%+.1f%%", median(cpuCosts))
		}
		cost.AddRow(plain, k.accounts, k.clients, strings.Join(per, " / "), fmt.Sprintf("%+.1f%%", median(costs)), strings.Join(cpuPer, " / "), cpuMed)
	}
	out := []experiment.Table{med}
	if len(cost.Rows) > 0 {
		out = append(out, cost)
	}
	return out
}

// median returns the median of v (the mean of the middle two for an even
// count); 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
