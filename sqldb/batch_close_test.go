package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/qshield/qshield/sqldb"
)

// Review finding: Do could wait for ever when its job's send won the race
// with Close after the committer had returned (the job was never taken, and
// Do waited for its result). Every Do racing Close now returns: with the
// job's result, or ErrBatcherClosed for a job never run. Without the fix
// this test hangs (caught by go test's timeout) within a few rounds.
func TestBatcherDoRacingClose(t *testing.T) {
	ctx := context.Background()
	db, err := sqldb.Open(ctx, filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for round := range 300 {
		b := db.NewBatcher(4)
		var wg sync.WaitGroup
		var ran, refused sync.Map
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := b.Do(ctx, func(*sql.Tx) error { ran.Store(i, true); return nil })
				switch {
				case err == nil:
					if _, ok := ran.Load(i); !ok {
						t.Errorf("round %d: job %d reported done but never ran", round, i)
					}
				case errors.Is(err, sqldb.ErrBatcherClosed):
					refused.Store(i, true)
				default:
					t.Errorf("round %d: job %d: %v", round, i, err)
				}
			}()
		}
		b.Close()
		wg.Wait()
		refused.Range(func(k, _ any) bool {
			if _, ok := ran.Load(k); ok {
				t.Errorf("round %d: job %v ran but was reported refused", round, k)
			}
			return true
		})
	}
}

// TestGroupCommitterDoRacingClose is TestBatcherDoRacingClose for a
// GroupCommitter of several workers (as qmsp runs on PostgreSQL): every Do
// racing Close returns, nil only for a job that ran, ErrBatcherClosed only
// for one that did not.
func TestGroupCommitterDoRacingClose(t *testing.T) {
	ctx := context.Background()
	type job struct{ ran bool }
	for round := range 300 {
		g := sqldb.NewGroupCommitter(2, 4, func(batch []*job) {
			for _, j := range batch {
				j.ran = true
			}
		})
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				j := &job{}
				switch err := g.Do(ctx, j); {
				case err == nil && !j.ran:
					t.Errorf("round %d: job reported done but never ran", round)
				case errors.Is(err, sqldb.ErrBatcherClosed) && j.ran:
					t.Errorf("round %d: job ran but was reported refused", round)
				case err != nil && !errors.Is(err, sqldb.ErrBatcherClosed):
					t.Errorf("round %d: %v", round, err)
				}
			}()
		}
		g.Close()
		wg.Wait()
	}
}
