package audit

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/qshield/qshield/internal/testclock"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

var t0 = time.Date(2026, 11, 20, 22, 0, 0, 0, time.UTC)

func openLog(t *testing.T, db *sqldb.DB, key []byte) *Log {
	t.Helper()
	c := testclock.Stepping(t0, time.Hour)
	l, err := OpenWithOptions(context.Background(), db, Options{Key: key, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// fill appends n records: actors alice/bob, events login/pki.issue/pki.revoke.
func fill(t *testing.T, l *Log, n int) []Record {
	t.Helper()
	var out []Record
	events := []string{"login", "pki.issue", "pki.revoke"}
	for i := 0; i < n; i++ {
		e := Entry{Actor: []string{"alice", "bob"}[i%2], Event: events[i%3], Outcome: OutcomeSuccess,
			Origin: "127.0.0.1", Resource: fmt.Sprintf("device-%d", i%4), Details: map[string]string{"i": fmt.Sprint(i)}}
		if i%5 == 4 {
			e.Outcome = OutcomeFailure
		}
		r, err := l.Append(context.Background(), e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func mustVerify(t *testing.T, l *Log) Report {
	t.Helper()
	rep, err := l.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// emptyLog opens the log on db (without a MAC key) and empties it: the
// PostgreSQL test database is shared by the tests of the package.
func emptyLog(t *testing.T, db *sqldb.DB) *Log {
	t.Helper()
	l := openLog(t, db, nil)
	resetLog(t, db)
	return l
}

// resetLog empties the audit trail (records, packs, tree, queue, checkpoints).
func resetLog(t *testing.T, db *sqldb.DB) {
	t.Helper()
	for _, q := range []string{`DELETE FROM audit_log`, `DELETE FROM audit_packs`, `DELETE FROM audit_pack_terms`, `DELETE FROM audit_tlog_runs`, `DELETE FROM audit_queue`, `DELETE FROM audit_checkpoints`} {
		exec(t, db, q)
	}
	exec(t, db, `UPDATE audit_head SET seq = 0, hash = ?, mac = NULL WHERE id = 1`, make([]byte, 32))
}

func exec(t *testing.T, db *sqldb.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), db.Rebind(q), args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// expectProblems checks that rep names exactly the given (kind, seq) pairs.
func expectProblems(t *testing.T, rep Report, want ...Problem) {
	t.Helper()
	if rep.OK {
		t.Fatalf("Verify OK, want problems %v", want)
	}
	if len(rep.Problems) != len(want) {
		t.Fatalf("problems = %v, want %v", rep.Problems, want)
	}
	for i, w := range want {
		g := rep.Problems[i]
		if g.Kind != w.Kind || g.Seq != w.Seq || g.LastSeq != w.LastSeq {
			t.Fatalf("problem %d = %v, want kind %s seq %d-%d", i, g, w.Kind, w.Seq, w.LastSeq)
		}
	}
}

func TestAppendAndVerify(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		l := openLog(t, db, nil)
		rep := mustVerify(t, l)
		if !rep.OK || rep.Records != 0 || rep.Head.Seq != 0 {
			t.Fatalf("empty log: %+v", rep)
		}
		recs := fill(t, l, 10)
		for i, r := range recs {
			if r.Seq != int64(i+1) {
				t.Fatalf("seq %d at %d", r.Seq, i)
			}
			if i > 0 && string(r.PrevHash) != string(recs[i-1].Hash) {
				t.Fatalf("record %d does not link", r.Seq)
			}
		}
		if string(recs[0].PrevHash) != string(make([]byte, 32)) {
			t.Fatal("first record's prev hash is not zero")
		}
		rep = mustVerify(t, l)
		if !rep.OK || rep.Records != 10 || rep.Head.Seq != 10 || string(rep.Head.Hash) != string(recs[9].Hash) {
			t.Fatalf("report %+v", rep)
		}
		// Reopening (another process) continues the chain.
		l2, err := Open(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		r, err := l2.Append(context.Background(), Entry{Actor: "x", Event: "y", Outcome: "success"})
		if err != nil || r.Seq != 11 {
			t.Fatalf("append after reopen: %+v %v", r, err)
		}
		if rep := mustVerify(t, l2); !rep.OK {
			t.Fatalf("%+v", rep)
		}
	})
}

// TestHashKnownAnswer pins the hash encoding: an independent re-implementation
// of the documented length-prefixed layout must give the stored hash.
func TestHashKnownAnswer(t *testing.T) {
	r := row{seq: 1, time: "2026-11-20T22:00:00.000000Z", actor: "alice", event: "login", outcome: "success",
		origin: "127.0.0.1", resource: "device-0", details: `{"i":"0"}`, prev: make([]byte, 32)}
	var b []byte
	put := func(s string) {
		b = append(b, byte(len(s)>>24), byte(len(s)>>16), byte(len(s)>>8), byte(len(s)))
		b = append(b, s...)
	}
	put("qshield audit record v1")
	b = binary.BigEndian.AppendUint64(b, 1)
	for _, s := range []string{r.time, r.actor, r.event, r.outcome, r.origin, r.resource, r.details, string(r.prev)} {
		put(s)
	}
	want := sha256.Sum256(b)
	if got := computeHash(&r); hex.EncodeToString(got) != hex.EncodeToString(want[:]) {
		t.Fatalf("hash %x, want %x", got, want)
	}
	// Ambiguity: moving a byte between adjacent fields changes the hash.
	r2 := r
	r2.actor, r2.event = "alicel", "ogin"
	if string(computeHash(&r2)) == string(computeHash(&r)) {
		t.Fatal("field boundary not encoded")
	}
}

func TestTamperDetection(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		cases := []struct {
			name   string
			tamper func(t *testing.T, db *sqldb.DB, recs []Record)
			want   []Problem
		}{
			{"update actor", func(t *testing.T, db *sqldb.DB, _ []Record) {
				exec(t, db, `UPDATE audit_log SET actor = 'mallory' WHERE seq = 4`)
			}, []Problem{{Kind: ProblemChanged, Seq: 4}}},
			{"update time", func(t *testing.T, db *sqldb.DB, _ []Record) {
				exec(t, db, `UPDATE audit_log SET time = '2020-01-01T00:00:00.000000Z' WHERE seq = 2`)
			}, []Problem{{Kind: ProblemChanged, Seq: 2}}},
			{"update details", func(t *testing.T, db *sqldb.DB, _ []Record) {
				exec(t, db, `UPDATE audit_log SET details = '{"i":"99"}' WHERE seq = 7`)
			}, []Problem{{Kind: ProblemChanged, Seq: 7}}},
			{"update outcome and recompute hash", func(t *testing.T, db *sqldb.DB, recs []Record) {
				rehash(t, db, 5, func(r *row) { r.outcome = OutcomeSuccess })
			}, []Problem{{Kind: ProblemRelinked, Seq: 6}}},
			{"delete middle", func(t *testing.T, db *sqldb.DB, _ []Record) {
				exec(t, db, `DELETE FROM audit_log WHERE seq = 5`)
			}, []Problem{{Kind: ProblemDeleted, Seq: 5, LastSeq: 5}}},
			{"delete range", func(t *testing.T, db *sqldb.DB, _ []Record) {
				exec(t, db, `DELETE FROM audit_log WHERE seq >= 3 AND seq <= 6`)
			}, []Problem{{Kind: ProblemDeleted, Seq: 3, LastSeq: 6}}},
			{"delete last", func(t *testing.T, db *sqldb.DB, _ []Record) {
				exec(t, db, `DELETE FROM audit_log WHERE seq = 10`)
			}, []Problem{{Kind: ProblemDeleted, Seq: 10, LastSeq: 10}}},
			{"delete first", func(t *testing.T, db *sqldb.DB, _ []Record) {
				exec(t, db, `DELETE FROM audit_log WHERE seq = 1`)
			}, []Problem{{Kind: ProblemDeleted, Seq: 1, LastSeq: 1}}},
			{"insert forged at end", func(t *testing.T, db *sqldb.DB, recs []Record) {
				forge(t, db, 11, recs[9].Hash)
			}, []Problem{{Kind: ProblemInserted, Seq: 11}}},
			{"insert forged before start", func(t *testing.T, db *sqldb.DB, recs []Record) {
				forge(t, db, 0, make([]byte, 32))
			}, []Problem{{Kind: ProblemInserted, Seq: 0}}},
			{"replace middle with forged", func(t *testing.T, db *sqldb.DB, recs []Record) {
				exec(t, db, `DELETE FROM audit_log WHERE seq = 6`)
				forge(t, db, 6, make([]byte, 32)) // well-formed hash, wrong link
			}, []Problem{{Kind: ProblemRelinked, Seq: 6}, {Kind: ProblemRelinked, Seq: 7}}},
			{"head moved back", func(t *testing.T, db *sqldb.DB, recs []Record) {
				exec(t, db, `UPDATE audit_head SET seq = 9, hash = ? WHERE id = 1`, recs[8].Hash)
			}, []Problem{{Kind: ProblemInserted, Seq: 10}}},
			{"head hash changed", func(t *testing.T, db *sqldb.DB, recs []Record) {
				exec(t, db, `UPDATE audit_head SET hash = ? WHERE id = 1`, recs[3].Hash)
			}, []Problem{{Kind: ProblemHead, Seq: 10}}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				l := emptyLog(t, db)
				recs := fill(t, l, 10)
				if rep := mustVerify(t, l); !rep.OK {
					t.Fatalf("before tampering: %+v", rep)
				}
				tc.tamper(t, db, recs)
				expectProblems(t, mustVerify(t, l), tc.want...)
			})
		}
	})
}

// rehash rewrites record seq with f and recomputes its hash (an attacker who
// knows the format but not the audit key).
func rehash(t *testing.T, db *sqldb.DB, seq int64, f func(*row)) {
	t.Helper()
	var r row
	err := db.QueryRowContext(context.Background(), db.Rebind(`SELECT seq, time, actor, event, outcome, origin, resource, details, prev_hash FROM audit_log WHERE seq = ?`), seq).
		Scan(&r.seq, &r.time, &r.actor, &r.event, &r.outcome, &r.origin, &r.resource, &r.details, &r.prev)
	if err != nil {
		t.Fatal(err)
	}
	f(&r)
	exec(t, db, `UPDATE audit_log SET time = ?, actor = ?, event = ?, outcome = ?, origin = ?, resource = ?, details = ?, hash = ? WHERE seq = ?`,
		r.time, r.actor, r.event, r.outcome, r.origin, r.resource, r.details, computeHash(&r), seq)
}

func forge(t *testing.T, db *sqldb.DB, seq int64, prev []byte) row {
	t.Helper()
	r := row{seq: seq, time: "2026-11-21T00:30:00.000000Z", actor: "mallory", event: "login", outcome: "success", details: "{}", prev: prev}
	r.hash = computeHash(&r)
	exec(t, db, `INSERT INTO audit_log (seq, time, actor, event, outcome, origin, resource, details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, '', '', ?, ?, ?)`,
		r.seq, r.time, r.actor, r.event, r.outcome, r.details, r.prev, r.hash)
	return r
}

// With an audit key, rewrites that recompute every hash (undetectable by a
// bare chain) are caught.
func TestKeyedChain(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		key := []byte("0123456789abcdef0123456789abcdef")
		if _, err := OpenWithOptions(context.Background(), db, Options{Key: []byte("short")}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("short key: %v", err)
		}
		l := openLog(t, db, key)
		recs := fill(t, l, 6)
		if rep := mustVerify(t, l); !rep.OK || !rep.MACChecked {
			t.Fatalf("%+v", rep)
		}
		// Forge a well-linked 7th record and move the head: a bare chain
		// cannot tell; the keyed chain can.
		f := forge(t, db, 7, recs[5].Hash)
		exec(t, db, `UPDATE audit_head SET seq = 7, hash = ? WHERE id = 1`, f.hash)
		unkeyed := openLog(t, db, nil)
		if rep := mustVerify(t, unkeyed); !rep.OK {
			t.Fatalf("bare chain unexpectedly detected the forgery: %+v", rep)
		}
		expectProblems(t, mustVerify(t, l), Problem{Kind: ProblemForged, Seq: 7}, Problem{Kind: ProblemForged, Seq: 7})

		// Truncate the tail and move the head back consistently.
		exec(t, db, `DELETE FROM audit_log WHERE seq >= 6`)
		exec(t, db, `UPDATE audit_head SET seq = 5, hash = ? WHERE id = 1`, recs[4].Hash)
		if rep := mustVerify(t, unkeyed); !rep.OK {
			t.Fatalf("bare chain unexpectedly detected the truncation: %+v", rep)
		}
		expectProblems(t, mustVerify(t, l), Problem{Kind: ProblemForged, Seq: 5})
	})
}

func TestVerifyAnchor(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := openLog(t, db, nil)
		fill(t, l, 5)
		anchor, err := l.Head(ctx)
		if err != nil || anchor.Seq != 5 {
			t.Fatalf("head %+v %v", anchor, err)
		}
		fill(t, l, 3)
		if rep, err := l.VerifyAnchor(ctx, anchor); err != nil || !rep.OK {
			t.Fatalf("intact: %+v %v", rep, err)
		}
		// Rewrite record 5 and everything after consistently.
		rehash(t, db, 5, func(r *row) { r.actor = "mallory" })
		var prev []byte
		db.QueryRowContext(ctx, `SELECT hash FROM audit_log WHERE seq = 5`).Scan(&prev)
		for s := int64(6); s <= 8; s++ {
			exec(t, db, `UPDATE audit_log SET prev_hash = ? WHERE seq = ?`, prev, s)
			rehash(t, db, s, func(*row) {})
			db.QueryRowContext(ctx, db.Rebind(`SELECT hash FROM audit_log WHERE seq = ?`), s).Scan(&prev)
		}
		exec(t, db, `UPDATE audit_head SET hash = ? WHERE id = 1`, prev)
		if rep := mustVerify(t, l); !rep.OK {
			t.Fatalf("consistent rewrite detected without anchor? %+v", rep)
		}
		rep, err := l.VerifyAnchor(ctx, anchor)
		if err != nil {
			t.Fatal(err)
		}
		expectProblems(t, rep, Problem{Kind: ProblemChanged, Seq: 5})
	})
}

func TestConcurrentAppend(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		// Two Log values share the db, as two processes would.
		logs := []*Log{openLog(t, db, nil), openLog(t, db, nil)}
		const workers, each = 8, 15
		var wg sync.WaitGroup
		errs := make(chan error, workers*each+1)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < each; i++ {
					if _, err := logs[w%2].Append(ctx, Entry{Actor: fmt.Sprintf("w%d", w), Event: "tick", Outcome: "success"}); err != nil {
						errs <- err
					}
				}
			}(w)
		}
		// Verifying while appends run sees a consistent snapshot.
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < 20; i++ {
				rep, err := logs[1].Verify(ctx)
				if err != nil {
					errs <- err
					return
				}
				if !rep.OK {
					errs <- fmt.Errorf("verify during appends: %v", rep.Problems)
					return
				}
			}
		}()
		wg.Wait()
		<-done
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		rep := mustVerify(t, logs[0])
		if !rep.OK || rep.Records != workers*each || rep.Head.Seq != workers*each {
			t.Fatalf("%+v", rep)
		}
	})
}

func TestAppendTx(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := openLog(t, db, nil)
		fill(t, l, 2)
		boom := errors.New("business failure")
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := l.AppendTx(ctx, tx, Entry{Actor: "a", Event: "payment", Outcome: "success"}); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		if rep := mustVerify(t, l); !rep.OK || rep.Records != 2 {
			t.Fatalf("rolled-back append left a trace: %+v", rep)
		}
		err = db.InTx(ctx, func(tx *sql.Tx) error {
			_, err := l.AppendTx(ctx, tx, Entry{Actor: "a", Event: "payment", Outcome: "success"})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if rep := mustVerify(t, l); !rep.OK || rep.Records != 3 {
			t.Fatalf("%+v", rep)
		}
	})
}

func TestInvalidEntries(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		l := openLog(t, db, nil)
		big := map[string]string{}
		for i := 0; i <= maxDetails; i++ {
			big[fmt.Sprint(i)] = "v"
		}
		for name, e := range map[string]Entry{
			"no actor":     {Event: "e", Outcome: "success"},
			"no event":     {Actor: "a", Outcome: "success"},
			"no outcome":   {Actor: "a", Event: "e"},
			"long actor":   {Actor: strings.Repeat("a", 257), Event: "e", Outcome: "success"},
			"bad utf8":     {Actor: "\xff", Event: "e", Outcome: "success"},
			"nul":          {Actor: "a\x00b", Event: "e", Outcome: "success"},
			"many details": {Actor: "a", Event: "e", Outcome: "success", Details: big},
			"empty key":    {Actor: "a", Event: "e", Outcome: "success", Details: map[string]string{"": "v"}},
		} {
			if _, err := l.Append(context.Background(), e); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %v", name, err)
			}
		}
		if rep := mustVerify(t, l); !rep.OK || rep.Records != 0 {
			t.Fatalf("rejected entries were written: %+v", rep)
		}
	})
}

func TestSearchAndStats(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := openLog(t, db, nil)
		// 10 records, one per hour from 2026-11-20 22:00 UTC: 2 on the 20th, 8 on the 21st.
		recs := fill(t, l, 10)
		got, err := l.Search(ctx, Query{Actor: "alice"})
		if err != nil || len(got) != 5 {
			t.Fatalf("actor: %d %v", len(got), err)
		}
		for _, r := range got {
			if r.Actor != "alice" || r.Details["i"] == "" {
				t.Fatalf("record %+v", r)
			}
		}
		got, _ = l.Search(ctx, Query{Event: "pki.*"})
		if len(got) != 6 {
			t.Fatalf("event prefix: %d", len(got))
		}
		got, _ = l.Search(ctx, Query{Event: "pki.issue", Resource: "device-1"})
		if len(got) != 1 || got[0].Seq != 2 { // i=1: pki.issue, device-1 (i=9 is device-1 but login)
			t.Fatalf("event+resource: %+v", got)
		}
		got, _ = l.Search(ctx, Query{From: recs[2].Time, To: recs[5].Time})
		if len(got) != 3 || got[0].Seq != 3 || got[2].Seq != 5 {
			t.Fatalf("time range: %+v", got)
		}
		if !got[0].Time.Equal(recs[2].Time) {
			t.Fatalf("time %v != %v", got[0].Time, recs[2].Time)
		}
		page1, _ := l.Search(ctx, Query{Limit: 4})
		page2, _ := l.Search(ctx, Query{Limit: 4, AfterSeq: page1[3].Seq})
		if len(page1) != 4 || len(page2) != 4 || page2[0].Seq != 5 {
			t.Fatalf("paging: %d %d", len(page1), len(page2))
		}
		if _, err := l.Search(ctx, Query{Limit: -1}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("bad limit: %v", err)
		}
		// Injection attempt is just a value.
		if got, err := l.Search(ctx, Query{Actor: "x' OR '1'='1"}); err != nil || len(got) != 0 {
			t.Fatalf("injection: %d %v", len(got), err)
		}

		counts, err := l.Stats(ctx, Query{}, ByEvent)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int64{"login": 4, "pki.issue": 3, "pki.revoke": 3}
		if len(counts) != 3 {
			t.Fatalf("by event: %+v", counts)
		}
		for _, c := range counts {
			if want[c.Keys[0]] != c.N {
				t.Fatalf("by event: %+v", counts)
			}
		}
		counts, _ = l.Stats(ctx, Query{}, ByDay)
		if len(counts) != 2 || counts[0].Keys[0] != "2026-11-20" || counts[0].N != 2 || counts[1].N != 8 {
			t.Fatalf("by day: %+v", counts)
		}
		counts, _ = l.Stats(ctx, Query{Event: "login"}, ByResource, ByDay)
		// login at i = 0, 3, 6, 9 → device-0 (20th), device-3 (21st), device-2 (21st), device-1 (21st)
		if len(counts) != 4 || counts[0].Keys[0] != "device-0" || counts[0].Keys[1] != "2026-11-20" {
			t.Fatalf("by resource,day: %+v", counts)
		}
		counts, _ = l.Stats(ctx, Query{}, ByOutcome)
		if len(counts) != 2 || counts[0].Keys[0] != "failure" || counts[0].N != 2 {
			t.Fatalf("by outcome: %+v", counts)
		}
		if _, err := l.Stats(ctx, Query{}, "bogus"); !errors.Is(err, ErrInvalid) {
			t.Fatalf("bad group: %v", err)
		}
		if g, err := ParseGroupBy("event, day"); err != nil || len(g) != 2 || g[1] != ByDay {
			t.Fatalf("ParseGroupBy: %v %v", g, err)
		}
		if _, err := ParseGroupBy("event;drop"); err == nil {
			t.Fatal("ParseGroupBy accepted junk")
		}
	})
}
