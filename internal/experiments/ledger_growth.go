package experiments

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
)

// LedgerGrowthExperiment measures how the ledger's cost grows with the data
// it holds (issue 16, item 7): for each size it bulk-loads accounts and a
// history of transfers between them straight into the ledger's tables
// (balances consistent with the history), then measures durable transfers/s
// at 64 clients through the ledger and the latency of history queries.
func LedgerGrowthExperiment() experiment.Spec {
	return experiment.Spec{
		Name:    "ledger-growth",
		Summary: "ledger transfers/s, p99 and history-query latency against the number of accounts and stored transfers (SQLite and PostgreSQL)",
		Params: []experiment.Param{
			{Name: "accounts", Default: "10000,100000,1000000", Usage: "comma-separated account counts"},
			{Name: "transfers-per-account", Default: "2", Usage: "stored transfers per account loaded before measuring (10 gives issue 16's 10^7 at 10^6 accounts)"},
			{Name: "clients", Default: "64", Usage: "concurrent clients of the transfer cell"},
			{Name: "duration", Default: "5s", Usage: "length of each transfer cell"},
			{Name: "queries", Default: "2000", Usage: "history queries per size (8 concurrent readers, 50 transfers per page)"},
			{Name: "targets", Default: "sqlite,postgres", Usage: "sqlite and/or postgres (PostgreSQL needs --db)"},
		},
		Run: runLedgerGrowth,
	}
}

type growthRow struct {
	Target    string        `json:"target"`
	Accounts  int           `json:"accounts"`
	Stored    int64         `json:"stored_transfers"`
	LoadTime  time.Duration `json:"load_ns"`
	Load      LoadResult    `json:"load"`
	HistP50   time.Duration `json:"history_p50_ns"`
	HistP99   time.Duration `json:"history_p99_ns"`
	HistPerS  float64       `json:"history_queries_per_s"`
	DBBytes   int64         `json:"db_bytes,omitempty"`
	TargetMet string        `json:"target_met,omitempty"`
}

func runLedgerGrowth(ctx context.Context, env *experiment.Env) (*experiment.Result, error) {
	sizes, err := intList(env.String("accounts"))
	if err != nil {
		return nil, fmt.Errorf("parameter accounts: %w", err)
	}
	perAcc, err := env.Int("transfers-per-account")
	if err != nil || perAcc < 0 {
		return nil, fmt.Errorf("parameter transfers-per-account: must be a count ≥ 0")
	}
	clients, err := env.Int("clients")
	if err != nil || clients < 1 {
		return nil, fmt.Errorf("parameter clients: must be ≥ 1")
	}
	dur, err := env.Duration("duration")
	if err != nil || dur <= 0 {
		return nil, fmt.Errorf("parameter duration: must be positive")
	}
	queries, err := env.Int("queries")
	if err != nil || queries < 1 {
		return nil, fmt.Errorf("parameter queries: must be ≥ 1")
	}
	var targets []string
	for _, t := range strings.Split(env.String("targets"), ",") {
		switch t = strings.TrimSpace(t); t {
		case "sqlite", "postgres":
			targets = append(targets, t)
		default:
			return nil, fmt.Errorf("parameter targets: unknown target %q", t)
		}
	}
	table := experiment.Table{
		Title:  "Ledger growth: durable transfers and history queries against stored data",
		Header: []string{"target", "accounts", "stored transfers", "bulk load", "transfers/s", "p50", "p99", "vs smallest", "history p50", "history p99", "history queries/s"},
	}
	tpsPlot := experiment.Plot{File: "ledger-growth-tps.png", Title: "Transfers/s against accounts", XLabel: "accounts (stored transfers = accounts × " + strconv.Itoa(perAcc+1) + ")", YLabel: "durable transfers/s", LogX: true}
	histPlot := experiment.Plot{File: "ledger-growth-history.png", Title: "History query p99 against accounts", XLabel: "accounts", YLabel: "p99 (ms)", LogX: true}
	var rows []growthRow
	var notes []string
	prog := env.Progress.Start("ledger growth cells", int64(len(sizes)*len(targets)), "cells")
	for _, target := range targets {
		tps := experiment.Series{Name: target}
		hist := experiment.Series{Name: target}
		base := 0.0
		for _, n := range sizes {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			env.Log.Info("ledger growth: loading", "target", target, "accounts", n, "transfers", n*perAcc)
			db, cleanup, err := growthDB(ctx, env, target)
			if errors.Is(err, ErrSkip) {
				notes = append(notes, fmt.Sprintf("%s skipped: %v", target, err))
				prog.Add(int64(len(sizes)))
				break
			}
			if err != nil {
				return nil, err
			}
			r, err := growthCell(ctx, env, db, target, n, perAcc, clients, dur, queries)
			cleanup()
			prog.Add(1)
			if err != nil {
				return nil, fmt.Errorf("ledger growth %s at %d accounts: %w", target, n, err)
			}
			if base == 0 {
				base = r.Load.TPS
			}
			ratio := r.Load.TPS / base
			r.TargetMet = fmt.Sprintf("%.0f%%", 100*ratio)
			rows = append(rows, r)
			table.AddRow(target, n, r.Stored, r.LoadTime.Round(time.Millisecond), strconv.FormatFloat(r.Load.TPS, 'f', 0, 64),
				r.Load.P50, r.Load.P99, r.TargetMet, r.HistP50, r.HistP99, strconv.FormatFloat(r.HistPerS, 'f', 0, 64))
			tps.X, tps.Y = append(tps.X, float64(n)), append(tps.Y, r.Load.TPS)
			hist.X, hist.Y = append(hist.X, float64(n)), append(hist.Y, float64(r.HistP99)/1e6)
		}
		if len(tps.X) > 0 {
			tpsPlot.Series = append(tpsPlot.Series, tps)
			histPlot.Series = append(histPlot.Series, hist)
		}
	}
	prog.Done()
	table.Notes = append(table.Notes,
		fmt.Sprintf("Each size: accounts funded from one issuer (one transfer each) and accounts × %d more transfers between random pairs bulk-loaded into the ledger's tables (with every index), balances equal to the history; then %d clients make durable posted transfers between random accounts for %s through ledger.Transfer; then %d history queries (first page of 50, 8 concurrent readers) of random accounts.", perAcc, clients, dur, queries),
		"Targets (issue 16, item 7): at 10⁶ accounts and 10⁷ stored transfers, transfers/s ≥ 80% of the 10,000-account figure (column \"vs smallest\" when the smallest size is 10,000) and history p99 < 10 ms.")
	table.Notes = append(table.Notes, notes...)
	return &experiment.Result{
		Name:   "ledger-growth",
		Title:  "Ledger growth",
		Tables: []experiment.Table{table},
		Plots:  []experiment.Plot{tpsPlot, histPlot},
		Data:   rows,
	}, nil
}

// growthDB opens an empty database of the target.
func growthDB(ctx context.Context, env *experiment.Env, target string) (*sqldb.DB, func(), error) {
	if target == "postgres" {
		return FreshPostgres(ctx, env)
	}
	dir, err := os.MkdirTemp("", "qshield-growth-")
	if err != nil {
		return nil, nil, err
	}
	db, err := sqldb.Open(ctx, filepath.Join(dir, "ledger.db"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return db, func() { db.Close(); os.RemoveAll(dir) }, nil
}

func growthCell(ctx context.Context, env *experiment.Env, db *sqldb.DB, target string, n, perAcc, clients int, dur time.Duration, queries int) (growthRow, error) {
	r := growthRow{Target: target, Accounts: n, Stored: int64(n) * int64(perAcc+1)}
	l, err := ledger.Open(ctx, db, ledger.WithSweepInterval(0))
	if err != nil {
		return r, err
	}
	l.Close() // tables created; the bulk load writes them directly
	t0 := time.Now()
	loader := db
	if db.Dialect == sqldb.SQLite {
		// Load through a connection with a large page cache (random index
		// inserts); the ledger is then measured with the defaults.
		if loader, err = sqldb.OpenWith(ctx, db.Path, sqldb.Options{MaxOpenConns: 1, Pragmas: []string{"cache_size(-524288)"}}); err != nil {
			return r, err
		}
	}
	err = bulkLoadLedger(ctx, loader, n, perAcc)
	if loader != db {
		loader.Close()
	}
	if err != nil {
		return r, fmt.Errorf("bulk load: %w", err)
	}
	r.LoadTime = time.Since(t0)
	if db.Dialect == sqldb.SQLite {
		if _, err := db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			return r, err
		}
		if fi, err := os.Stat(db.Path); err == nil {
			r.DBBytes = fi.Size()
		}
	} else if _, err := db.ExecContext(ctx, "ANALYZE"); err != nil {
		return r, err
	}
	l, err = ledger.Open(ctx, db, ledger.WithSweepInterval(0))
	if err != nil {
		return r, err
	}
	defer l.Close()
	env.Log.Info("ledger growth: measuring", "target", target, "accounts", n)
	r.Load = RunLoad(ctx, clients, n, dur, LedgerTransferFunc(l))
	if r.Load.Errors > 0 {
		return r, fmt.Errorf("%d transfer errors, first: %s", r.Load.Errors, r.Load.FirstErr)
	}
	lat := make([]time.Duration, queries)
	const readers = 8
	errc := make(chan error, readers)
	h0 := time.Now()
	for w := 0; w < readers; w++ {
		go func() {
			for i := w; i < queries; i += readers {
				acc := LoadAccountID(rand.IntN(n))
				q0 := time.Now()
				page, _, err := l.History(ctx, acc, "", 50)
				lat[i] = time.Since(q0)
				if err != nil {
					errc <- fmt.Errorf("history of %s: %w", acc, err)
					return
				}
				if len(page) == 0 {
					// Every load account has at least its funding transfer.
					errc <- fmt.Errorf("history of %s is empty", acc)
					return
				}
			}
			errc <- nil
		}()
	}
	for w := 0; w < readers; w++ {
		if err := <-errc; err != nil {
			return r, err
		}
	}
	r.HistPerS = float64(queries) / time.Since(h0).Seconds()
	slices.Sort(lat)
	r.HistP50 = lat[len(lat)/2]
	r.HistP99 = lat[min(len(lat)-1, int(math.Ceil(float64(len(lat))*0.99))-1)]
	return r, nil
}

// bulkLoadLedger writes the issuer, n funded load accounts and n×perAcc
// posted transfers between random pairs straight into the ledger's tables,
// with every account's balance equal to what its history says.
func bulkLoadLedger(ctx context.Context, db *sqldb.DB, n, perAcc int) error {
	now := time.Now().Add(-time.Hour).UnixNano()
	bal := make([]int64, n)
	type tr struct {
		id, key, from, to string
		amount, at        int64
	}
	seq := 0
	mk := func(from, to string, amount int64) tr {
		seq++
		return tr{id: fmt.Sprintf("tr_%016x%016x", now+int64(seq), seq), key: "growth-" + strconv.Itoa(seq), from: from, to: to, amount: amount, at: now + int64(seq)}
	}
	// The transfers are generated in chunks so that memory stays bounded.
	gen := func(emit func([]tr) error) error {
		chunk := make([]tr, 0, 10000)
		flush := func() error {
			if len(chunk) == 0 {
				return nil
			}
			err := emit(chunk)
			chunk = chunk[:0]
			return err
		}
		for i := 0; i < n; i++ {
			bal[i] += loadFund
			chunk = append(chunk, mk(loadIssuer, LoadAccountID(i), loadFund))
			if len(chunk) == cap(chunk) {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		for k := 0; k < n*perAcc; k++ {
			a := rand.IntN(n)
			b := rand.IntN(n - 1)
			if b >= a {
				b++
			}
			amt := int64(1 + rand.IntN(100))
			bal[a] -= amt
			bal[b] += amt
			chunk = append(chunk, mk(LoadAccountID(a), LoadAccountID(b), amt))
			if len(chunk) == cap(chunk) {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return flush()
	}
	issuerBal := -int64(n) * loadFund
	if db.Dialect == sqldb.Postgres {
		return bulkLoadPG(ctx, db, n, now, issuerBal, bal, func(emit func([][]any) error) error {
			return gen(func(ts []tr) error {
				rows := make([][]any, len(ts))
				for i, t := range ts {
					rows[i] = []any{t.id, t.key, t.from, t.to, t.amount, LoadCurrency, "", int32(0), "posted", t.at, int64(0), int64(0), int64(0)}
				}
				return emit(rows)
			})
		})
	}
	// SQLite: the transfers first (one transaction per 10,000), then the
	// accounts with their final balances; foreign keys are checked at each
	// commit, so the accounts are created first with zero balances.
	if err := db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO ledger_accounts (id, owner, kind, currency, allow_negative, balance, pending_debit, pending_credit, created_at) VALUES (?, 'load', 'system', ?, 1, 0, 0, 0, ?)`, loadIssuer, LoadCurrency, now); err != nil {
			return err
		}
		st, err := tx.PrepareContext(ctx, `INSERT INTO ledger_accounts (id, owner, kind, currency, allow_negative, balance, pending_debit, pending_credit, created_at) VALUES (?, 'load', 'user', ?, 0, 0, 0, 0, ?)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for i := 0; i < n; i++ {
			if _, err := st.ExecContext(ctx, LoadAccountID(i), LoadCurrency, now); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := gen(func(ts []tr) error {
		return db.InTx(ctx, func(tx *sql.Tx) error {
			st, err := tx.PrepareContext(ctx, `INSERT INTO ledger_transfers (id, idempotency_key, from_id, to_id, amount, currency, memo, pending, state, created_at, expires_at, resolved_at, posted_amount) VALUES (?, ?, ?, ?, ?, ?, '', 0, 'posted', ?, 0, 0, 0)`)
			if err != nil {
				return err
			}
			defer st.Close()
			for _, t := range ts {
				if _, err := st.ExecContext(ctx, t.id, t.key, t.from, t.to, t.amount, LoadCurrency, t.at); err != nil {
					return err
				}
			}
			return nil
		})
	}); err != nil {
		return err
	}
	return db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE ledger_accounts SET balance = ? WHERE id = ?`, issuerBal, loadIssuer); err != nil {
			return err
		}
		st, err := tx.PrepareContext(ctx, `UPDATE ledger_accounts SET balance = ? WHERE id = ?`)
		if err != nil {
			return err
		}
		defer st.Close()
		for i, b := range bal {
			if _, err := st.ExecContext(ctx, b, LoadAccountID(i)); err != nil {
				return err
			}
		}
		return nil
	})
}

// bulkLoadPG loads with COPY (accounts with their final balances first).
func bulkLoadPG(ctx context.Context, db *sqldb.DB, n int, now, issuerBal int64, bal []int64, gen func(emit func([][]any) error) error) error {
	return db.WithPgx(ctx, func(pc *pgx.Conn) error {
		// Setting 10⁶ balances takes longer than the pool's statement timeout.
		if _, err := pc.Exec(ctx, "SET statement_timeout = 0"); err != nil {
			return err
		}
		defer pc.Exec(context.Background(), "RESET statement_timeout")
		acctCols := []string{"id", "owner", "kind", "currency", "allow_negative", "balance", "pending_debit", "pending_credit", "created_at"}
		// The balances are only known once the history is generated: generate
		// it into COPY first (foreign keys need the accounts, so they are
		// inserted with zero balances and updated at the end).
		rows := make([][]any, 0, n+1)
		rows = append(rows, []any{loadIssuer, "load", "system", LoadCurrency, int32(1), int64(0), int64(0), int64(0), now})
		for i := 0; i < n; i++ {
			rows = append(rows, []any{LoadAccountID(i), "load", "user", LoadCurrency, int32(0), int64(0), int64(0), int64(0), now})
		}
		if _, err := pc.CopyFrom(ctx, pgx.Identifier{"ledger_accounts"}, acctCols, pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("copy accounts: %w", err)
		}
		trCols := []string{"id", "idempotency_key", "from_id", "to_id", "amount", "currency", "memo", "pending", "state", "created_at", "expires_at", "resolved_at", "posted_amount"}
		if err := gen(func(rs [][]any) error {
			_, err := pc.CopyFrom(ctx, pgx.Identifier{"ledger_transfers"}, trCols, pgx.CopyFromRows(rs))
			return err
		}); err != nil {
			return fmt.Errorf("copy transfers: %w", err)
		}
		ids := make([]string, n+1)
		bs := make([]int64, n+1)
		ids[0], bs[0] = loadIssuer, issuerBal
		for i, b := range bal {
			ids[i+1], bs[i+1] = LoadAccountID(i), b
		}
		if _, err := pc.Exec(ctx, `UPDATE ledger_accounts a SET balance = u.b FROM unnest($1::text[], $2::bigint[]) AS u (id, b) WHERE a.id = u.id`, ids, bs); err != nil {
			return fmt.Errorf("set balances: %w", err)
		}
		return nil
	})
}
