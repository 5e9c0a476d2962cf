package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
	"golang.org/x/mod/sumdb/tlog"
)

// appendBatch appends n entries in one transaction (RecordAllTx; on
// PostgreSQL they are queued and integrated), tagged with tag.
func appendBatch(t *testing.T, l *Log, n int, tag string) {
	t.Helper()
	ctx := context.Background()
	entries := make([]Entry, n)
	for i := range entries {
		entries[i] = Entry{Actor: "ledger", Event: "ledger.transfer", Outcome: OutcomeSuccess,
			Resource: fmt.Sprintf("%s-%d", tag, i), Details: map[string]string{"amount": fmt.Sprint(i)}}
	}
	if err := l.db.InTx(ctx, func(tx *sql.Tx) error { return l.RecordAllTx(ctx, tx, entries) }); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Integrate(ctx); err != nil {
		t.Fatal(err)
	}
}

// checkFrontier checks that every hash the frontier keeps is the one the
// database stores, and that it belongs to the current head.
func checkFrontier(t *testing.T, l *Log) {
	t.Helper()
	ctx := context.Background()
	head, err := l.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l.frontier.mu.Lock()
	seq, hashes := l.frontier.seq, l.frontier.hashes
	l.frontier.mu.Unlock()
	if seq != head.Seq {
		t.Fatalf("frontier kept for %d records, head at %d", seq, head.Seq)
	}
	if len(hashes) == 0 {
		t.Fatalf("no frontier kept at %d records", seq)
	}
	for x, h := range hashes {
		got, err := (&txHashes{ctx: ctx, tx: l.db, db: l.db}).ReadHashes([]int64{x})
		if err != nil {
			t.Fatal(err)
		}
		if got[0] != h {
			t.Fatalf("frontier hash %d = %v, stored %v", x, h, got[0])
		}
	}
}

// verifyTree verifies the chain and every stored tree hash against the
// records.
func verifyTree(t *testing.T, l *Log) Report {
	t.Helper()
	empty, err := tlog.TreeHash(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cp Checkpoint
	cp.Hash = empty
	rep, err := l.VerifyCheckpointWith(context.Background(), cp, VerifyOptions{StoredTree: true})
	if err != nil {
		t.Fatal(err)
	}
	return rep.Report
}

// TestFrontierCache appends batches of every size (so the frontier has
// every shape) and checks the tree after each against the records.
func TestFrontierCache(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		l := emptyLog(t, db)
		for i, n := range []int{1, 2, 3, 7, 1, 64, 5, 128, 1, 33} {
			appendBatch(t, l, n, fmt.Sprint("b", i))
			checkFrontier(t, l)
		}
		fill(t, l, 3) // single appends
		checkFrontier(t, l)
		if rep := verifyTree(t, l); !rep.OK || rep.Records != 248 {
			t.Fatalf("%+v", rep)
		}
	})
}

// TestFrontierRolledBack: an append that is rolled back leaves a frontier
// for a head that never existed (it covers the rolled-back records). When
// another writer then appends as many different records, the head has the
// same place again but another hash; the frontier must not be used, or the
// tree would be built on the rolled-back records.
func TestFrontierRolledBack(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		if db.Dialect != sqldb.SQLite {
			t.Skip("on PostgreSQL the caller's transaction only queues; Integrate appends")
		}
		ctx := context.Background()
		l1 := emptyLog(t, db)
		l2 := openLog(t, db, nil)
		appendBatch(t, l1, 5, "a")
		boom := errors.New("business failure")
		entries := []Entry{{Actor: "x", Event: "e", Outcome: OutcomeSuccess}, {Actor: "y", Event: "e", Outcome: OutcomeSuccess}, {Actor: "z", Event: "e", Outcome: OutcomeSuccess}}
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if err := l1.RecordAllTx(ctx, tx, entries); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		l1.frontier.mu.Lock()
		if l1.frontier.seq != 8 {
			t.Fatalf("rolled-back append kept a frontier at %d, want 8", l1.frontier.seq)
		}
		l1.frontier.mu.Unlock()
		appendBatch(t, l2, 3, "other") // head at 8 again, other records
		for i := 0; i < 4; i++ {
			appendBatch(t, l1, 3, fmt.Sprint("c", i))
			checkFrontier(t, l1)
		}
		if rep := verifyTree(t, l1); !rep.OK || rep.Records != 20 {
			t.Fatalf("%+v", rep)
		}
	})
}

// TestFrontierUsed checks the append takes the frontier from memory: a
// wrong hash kept for the current head makes a wrong tree, which Verify
// reports (so the cache, not the database, was read).
func TestFrontierUsed(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		l := emptyLog(t, db)
		appendBatch(t, l, 6, "a") // frontier of 6: levels 1 and 2
		l.frontier.mu.Lock()
		for x := range l.frontier.hashes {
			l.frontier.hashes[x] = tlog.Hash{1}
		}
		l.frontier.mu.Unlock()
		appendBatch(t, l, 2, "b")
		rep := verifyTree(t, l)
		if rep.OK {
			t.Fatal("a wrong frontier in memory did not reach the tree: the append read the database")
		}
		for _, p := range rep.Problems {
			if p.Kind != ProblemTree {
				t.Fatalf("problem %v, want only tree problems", p)
			}
		}
	})
}

// TestFrontierTwoWriters: two Logs (two processes) append to one database
// in turn; each finds the head moved by the other and reads the database.
func TestFrontierTwoWriters(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		l1 := emptyLog(t, db)
		l2 := openLog(t, db, nil)
		for i := 0; i < 6; i++ {
			appendBatch(t, l1, 1+i, fmt.Sprint("p", i))
			appendBatch(t, l2, 7-i, fmt.Sprint("q", i))
			checkFrontier(t, l2)
		}
		if rep := verifyTree(t, l1); !rep.OK || rep.Records != 48 {
			t.Fatalf("%+v", rep)
		}
	})
}

func TestFrontierIndexes(t *testing.T) {
	for n := int64(0); n < 300; n++ {
		// The frontier of n is what tlog.TreeHash(n) reads.
		var read []int64
		_, err := tlog.TreeHash(n, hashReaderFunc(func(xs []int64) ([]tlog.Hash, error) {
			read = append(read, xs...)
			return make([]tlog.Hash, len(xs)), nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		got := frontierIndexes(n)
		slices.Sort(got)
		slices.Sort(read)
		if !slices.Equal(got, read) {
			t.Fatalf("frontier of %d = %v, TreeHash reads %v", n, got, read)
		}
	}
}

type hashReaderFunc func([]int64) ([]tlog.Hash, error)

func (f hashReaderFunc) ReadHashes(xs []int64) ([]tlog.Hash, error) { return f(xs) }
