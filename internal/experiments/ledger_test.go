package experiments

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
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
	tabs := roundsTables(3, []ledgerCell{plain, audited}, tps)
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
	if median([]float64{4, 1, 3, 2}) != 2.5 || median(nil) != 0 {
		t.Error("median")
	}
}
