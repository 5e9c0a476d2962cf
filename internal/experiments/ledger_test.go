package experiments

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestRunLoadCounts(t *testing.T) {
	var calls, fails atomic.Int64
	seen := make(chan string, 1)
	r := RunLoad(context.Background(), 4, 3, 100*time.Millisecond, func(ctx context.Context, from, to string, amount int64, key string) error {
		if from == to || amount < 1 || amount > 100 {
			t.Errorf("bad transfer %s→%s %d", from, to, amount)
		}
		select {
		case seen <- key:
		default:
		}
		if calls.Add(1)%10 == 0 {
			fails.Add(1)
			return errors.New("refused")
		}
		return nil
	})
	if r.Transfers+r.Errors != calls.Load() || r.Errors != fails.Load() || r.Transfers == 0 {
		t.Fatalf("result %+v, calls %d fails %d", r, calls.Load(), fails.Load())
	}
	if r.FirstErr != "refused" || r.P50 <= 0 || r.P99 < r.P50 || r.TPS <= 0 {
		t.Fatalf("result %+v", r)
	}
}

func TestLedgerExperimentRuns(t *testing.T) {
	spec := LedgerExperiment()
	targets := "sqlite"
	if os.Getenv(sqldbtest.EnvPostgres) != "" {
		targets = "sqlite,postgres"
	}
	params, err := experiment.ResolveParams(spec, map[string]string{
		"duration": "200ms", "clients": "1,4", "accounts": "3", "targets": targets, "pgbench-scale": "1",
	})
	if err != nil {
		t.Fatal(err)
	}
	env := &experiment.Env{Params: params, Postgres: os.Getenv(sqldbtest.EnvPostgres), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	res, err := spec.Run(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	rows := res.Tables[0].Rows
	want := 2
	if targets != "sqlite" {
		want = 4
	}
	if len(rows) != want {
		t.Fatalf("%d rows: %v", len(rows), rows)
	}
	for _, row := range rows {
		if row[6] != "0" {
			t.Errorf("errors in %v", row)
		}
		if strings.HasPrefix(row[0], "postgres") && !strings.HasSuffix(row[8], "%") {
			t.Errorf("no pgbench comparison in %v (notes %v)", row, res.Tables[0].Notes)
		}
		// CPU per transfer on Linux; with the server's share for a
		// PostgreSQL on this machine (CI's is).
		if runtime.GOOS == "linux" {
			server := strings.HasSuffix(row[9], " server)")
			if row[9] == "" || server != (strings.HasPrefix(row[0], "postgres") && localPostgres(env.Postgres)) {
				t.Errorf("CPU per transfer %q in %v", row[9], row)
			}
		}
	}
}

// TestLedgerExperimentRounds: with rounds, every cell runs once a round,
// and the audit cost compares each audited cell with its unaudited twin of
// the same round.
func TestLedgerExperimentRounds(t *testing.T) {
	spec := LedgerExperiment()
	params, err := experiment.ResolveParams(spec, map[string]string{
		"duration": "150ms", "clients": "2", "accounts": "3", "targets": "sqlite,audited sqlite", "pgbench-scale": "0",
		"audit-checkpoint-every": "0", "rounds": "2",
	})
	if err != nil {
		t.Fatal(err)
	}
	env := &experiment.Env{Params: params, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	res, err := spec.Run(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Tables) != 3 {
		t.Fatalf("%d tables, want cells, medians and audit cost", len(res.Tables))
	}
	if rows := res.Tables[0].Rows; len(rows) != 4 || rows[0][0] != "1" || rows[3][0] != "2" {
		t.Fatalf("cells: %v", rows)
	}
	if rows := res.Tables[1].Rows; len(rows) != 2 {
		t.Fatalf("medians: %v", rows)
	}
	if rows := res.Tables[2].Rows; len(rows) != 1 || strings.Count(rows[0][3], "%") != 2 {
		t.Fatalf("audit cost: %v", rows)
	}
}

func TestRoundsTablesCost(t *testing.T) {
	plain := ledgerCell{"sqlite (in-process)", 10000, 64}
	audited := ledgerCell{"audited sqlite (in-process)", 10000, 64}
	tps := map[ledgerCell][]float64{plain: {1000, 2000, 1000}, audited: {900, 1000, 950}}
	// CPU µs per transfer; the second round's unaudited cell was not measured.
	cpu := map[ledgerCell][]float64{plain: {100, 0, 120}, audited: {110, 130, 126}}
	tabs := roundsTables(3, []ledgerCell{plain, audited}, tps, cpu)
	if len(tabs) != 2 {
		t.Fatalf("%d tables", len(tabs))
	}
	if got := tabs[0].Rows[0][3]; got != "1000" { // median of 1000, 2000, 1000
		t.Errorf("median %s, want 1000", got)
	}
	row := tabs[1].Rows[0]
	if row[3] != "-10.0% / -50.0% / -5.0%" || row[4] != "-10.0%" {
		t.Errorf("cost row %v", row)
	}
	if row[5] != "+10.0 / +6.0" || row[6] != "+7.5%" { // +10% and +5%
		t.Errorf("CPU cost %q, %q; want +10.0 / +6.0 and +7.5%%", row[5], row[6])
	}
	if median([]float64{4, 1, 3, 2}) != 2.5 || median(nil) != 0 {
		t.Error("median")
	}
}

func TestProcStatCPU(t *testing.T) {
	for _, c := range []struct {
		stat string
		want int64
		ok   bool
	}{
		{"1234 (postgres) S 1 1234 1234 0 -1 4194560 500 0 0 0 150 25 0 0 20 0 1 0 100 0 0", 175, true},
		// A command holding spaces and parentheses.
		{"77 (postgres (x) y) R 1 2 3 0 -1 0 0 0 0 0 7 3 0 0", 0, false},
		{"77 (postgres) R 1 2 3 0 -1 0 0 0 0 0 7", 0, false}, // truncated
		{"77 (postgres) R 1 2 3 0 -1 0 0 0 0 0 x 3 0 0", 0, false},
		{"78 (qshield) R 1 2 3 0 -1 0 0 0 0 0 7 3 0 0", 0, false},
		{"no parentheses", 0, false},
		{")(", 0, false},
	} {
		got, ok := procStatCPU([]byte(c.stat), "postgres")
		if got != c.want || ok != c.ok {
			t.Errorf("procStatCPU(%q) = %d, %v; want %d, %v", c.stat, got, ok, c.want, c.ok)
		}
	}
	if got, ok := procStatCPU([]byte("77 (postgres (x) y) R 1 2 3 0 -1 0 0 0 0 0 7 3 0 0"), "postgres (x) y"); !ok || got != 10 {
		t.Errorf("command with parentheses: %d, %v", got, ok)
	}
}

func TestServerCPUSince(t *testing.T) {
	before := map[int]int64{1: 100, 2: 50, 3: 400} // 3 exits
	now := map[int]int64{1: 130, 2: 50, 4: 7}      // 4 starts
	if got, want := serverCPUSince(before, now), 370*time.Millisecond; got != want {
		t.Errorf("serverCPUSince = %v, want %v", got, want)
	}
	// A reused PID (its time went backwards) is a new process.
	if got := serverCPUSince(map[int]int64{5: 900}, map[int]int64{5: 3}); got != 30*time.Millisecond {
		t.Errorf("a reused PID: %v", got)
	}
}

func TestLocalPostgres(t *testing.T) {
	for dsn, want := range map[string]bool{
		"postgres://postgres@127.0.0.1:5432/test?sslmode=disable": true,
		"postgres://u@localhost/db":                               true,
		"postgres://u@[::1]:5433/db":                              true,
		"host=/var/run/postgresql dbname=test":                    true,
		"postgres://u@db.example.com/test":                        false,
		"postgres://u@10.0.0.5/test":                              false,
		"":                                                        false,
		"postgres://%zz":                                          false,
	} {
		if got := localPostgres(dsn); got != want {
			t.Errorf("localPostgres(%q) = %v, want %v", dsn, got, want)
		}
	}
}

// FuzzProcStatCPU: any line parses without panicking, and a parsed one
// names comm and gives a non-negative time.
func FuzzProcStatCPU(f *testing.F) {
	f.Add([]byte("1234 (postgres) S 1 1234 1234 0 -1 4194560 500 0 0 0 150 25 0 0 20 0 1 0 100 0 0"))
	f.Add([]byte("77 (postgres (x) y) R 1 2 3 0 -1 0 0 0 0 0 7 3 0 0"))
	f.Add([]byte(")("))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := procStatCPU(b, "postgres")
		if !ok {
			if got != 0 {
				t.Fatalf("not parsed but %d", got)
			}
			return
		}
		s := string(b)
		if got < 0 || !strings.Contains(s, "(postgres)") {
			t.Fatalf("parsed %q as %d", s, got)
		}
	})
}
