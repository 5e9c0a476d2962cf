package lease

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func newElector(t *testing.T, db *sqldb.DB, holder string, ttl time.Duration) *Elector {
	t.Helper()
	e, err := New(context.Background(), db, "duty", holder, ttl, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestOneHolder: of processes racing for a free duty, exactly one gets it.
func TestOneHolder(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		held := 0
		for _, h := range []string{"a", "b", "c", "d"} {
			e := newElector(t, db, h, time.Minute)
			wg.Add(1)
			go func() {
				defer wg.Done()
				tok, ok, err := e.TryAcquire(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					mu.Lock()
					held++
					mu.Unlock()
					if tok != 1 {
						t.Errorf("first token %d", tok)
					}
				}
			}()
		}
		wg.Wait()
		if held != 1 {
			t.Fatalf("%d holders", held)
		}
	})
}

// TestTakeoverFences: after the holder's lease expires another process
// takes the duty with a higher token, and the old holder's writes are
// fenced off; renewing keeps the token.
func TestTakeoverFences(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		now := time.Now()
		a, b := newElector(t, db, "a", 10*time.Second), newElector(t, db, "b", 10*time.Second)
		a.now = func() time.Time { return now }
		b.now = func() time.Time { return now }
		ta, ok, err := a.TryAcquire(ctx)
		if err != nil || !ok {
			t.Fatalf("a: %v %v", ok, err)
		}
		if _, ok, _ := b.TryAcquire(ctx); ok {
			t.Fatal("b took a live lease")
		}
		if t2, ok, _ := a.TryAcquire(ctx); !ok || t2 != ta {
			t.Fatalf("renewal: %v token %d, want %d", ok, t2, ta)
		}
		now = now.Add(11 * time.Second) // a stopped renewing
		tb, ok, err := b.TryAcquire(ctx)
		if err != nil || !ok || tb != ta+1 {
			t.Fatalf("takeover: %v %v token %d", ok, err, tb)
		}
		fence := func(e *Elector, tok int64) error {
			return db.InTx(ctx, func(tx *sql.Tx) error { return e.Fence(ctx, tx, tok) })
		}
		if err := fence(a, ta); !errors.Is(err, ErrFenced) {
			t.Fatalf("old holder not fenced: %v", err)
		}
		if err := fence(b, tb); err != nil {
			t.Fatalf("new holder fenced: %v", err)
		}
		if _, ok, _ := a.TryAcquire(ctx); ok {
			t.Fatal("old holder took the duty back from a live lease")
		}
	})
}

// TestDutyMoves: when the holder dies (stops renewing, no release) the duty
// runs elsewhere within TTL + TTL/3; when a holder stops cleanly it moves at
// once.
func TestDutyMoves(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		const ttl = 900 * time.Millisecond
		dead := newElector(t, db, "dead", ttl)
		if _, ok, err := dead.TryAcquire(context.Background()); err != nil || !ok {
			t.Fatalf("%v %v", ok, err)
		}
		died := time.Now()
		b := newElector(t, db, "b", ttl)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		started := make(chan time.Time, 4)
		go b.Run(ctx, func(ctx context.Context, token int64) error {
			started <- time.Now()
			<-ctx.Done()
			return nil
		})
		select {
		case at := <-started:
			if d := at.Sub(died); d > ttl+ttl/3+500*time.Millisecond {
				t.Errorf("duty moved after %v", d)
			} else {
				t.Logf("duty moved %v after the holder died (TTL %v)", d, ttl)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("duty never moved")
		}
		// b stops cleanly: c gets the duty without waiting for the expiry.
		c := newElector(t, db, "c", ttl)
		cctx, ccancel := context.WithCancel(context.Background())
		defer ccancel()
		cStarted := make(chan time.Time, 1)
		go c.Run(cctx, func(ctx context.Context, token int64) error {
			cStarted <- time.Now()
			<-ctx.Done()
			return nil
		})
		time.Sleep(50 * time.Millisecond)
		stopped := time.Now()
		cancel()
		select {
		case at := <-cStarted:
			if d := at.Sub(stopped); d > ttl {
				t.Errorf("clean hand-over took %v", d)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("duty never moved after a clean stop")
		}
	})
}

// TestLockExcludes: of processes taking the same named lock on one
// PostgreSQL database, at most one is inside at a time; another name does
// not wait; a cancelled wait returns an error.
func TestLockExcludes(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backend{Name: "postgres", DSN: sqldbtest.PostgresDSN})
	ctx := context.Background()
	var inside, most, entered int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := Lock(ctx, db, "admin")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inside++
			entered++
			most = max(most, inside)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			inside--
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if most != 1 || entered != 6 {
		t.Fatalf("%d inside at once, %d entered", most, entered)
	}

	unlock, err := Lock(ctx, db, "admin")
	if err != nil {
		t.Fatal(err)
	}
	other, err := Lock(ctx, db, "another duty")
	if err != nil {
		t.Fatal(err)
	}
	other()
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if u, err := Lock(cctx, db, "admin"); err == nil {
		u()
		t.Fatal("took a lock another session holds")
	}
	unlock()
	again, err := Lock(ctx, db, "admin")
	if err != nil {
		t.Fatalf("lock not released: %v", err)
	}
	again()
}
