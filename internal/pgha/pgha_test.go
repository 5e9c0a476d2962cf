package pgha

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

func TestFailoverLosesNoAcknowledgedCommit(t *testing.T) {
	if os.Getenv(EnvCluster) == "" {
		t.Skip(EnvCluster + " not set: skipping the Patroni cluster test")
	}
	if m := Missing(); m != "" {
		t.Fatalf("%s is set but %s is missing", EnvCluster, m)
	}
	ctx := context.Background()
	c, err := Start(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	first := c.Primary()
	db, err := sql.Open("pgx", c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(8)
	if _, err := db.ExecContext(ctx, `CREATE TABLE acks (k TEXT PRIMARY KEY, v BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	// Writers insert keyed rows and remember which ones were acknowledged;
	// a failed insert is retried with the same key (an in-doubt commit shows
	// up as a unique violation, which counts as acknowledged).
	var acked sync.Map
	var nAck, nErr atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var firstErr, lastErr atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("w%d-%d", w, i)
				for {
					cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					_, err := db.ExecContext(cctx, `INSERT INTO acks (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING`, k, i)
					cancel()
					if err == nil {
						acked.Store(k, true)
						nAck.Add(1)
						break
					}
					now := time.Now().UnixNano()
					firstErr.CompareAndSwap(0, now)
					lastErr.Store(now)
					nErr.Add(1)
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		}()
	}
	time.Sleep(2 * time.Second)
	before := nAck.Load()
	crashAt := time.Now()
	if err := c.Crash(first); err != nil {
		t.Fatal(err)
	}
	second, err := c.WaitPrimary(ctx, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	promoted := time.Since(crashAt)
	// Keep writing on the new primary for a while.
	for nAck.Load() < before+200 {
		if time.Since(crashAt) > 90*time.Second {
			t.Fatalf("writes did not resume after failover (%d acknowledged before, %d now)", before, nAck.Load())
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if second == first {
		t.Fatalf("the crashed node %s is still primary", first.Name)
	}
	var missing int
	acked.Range(func(k, _ any) bool {
		var v int64
		if err := db.QueryRowContext(ctx, `SELECT v FROM acks WHERE k = $1`, k).Scan(&v); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				missing++
			} else {
				t.Fatal(err)
			}
		}
		return true
	})
	window := time.Duration(0)
	if f := firstErr.Load(); f != 0 {
		window = time.Duration(lastErr.Load() - f)
	}
	t.Logf("primary %s crashed; %s promoted after %v; %d writes acknowledged, %d failed attempts over %v; %d acknowledged rows missing",
		first.Name, second.Name, promoted.Round(time.Millisecond), nAck.Load(), nErr.Load(), window.Round(time.Millisecond), missing)
	if missing != 0 {
		t.Fatalf("%d acknowledged commits lost in the failover", missing)
	}
}
