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
