package audit

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// packRows are three chained records as appendRowsTx leaves them.
func packRows(mac bool) []row {
	rs := []row{
		{actor: "alice", event: "ledger.transfer", outcome: OutcomeSuccess, origin: "ledger", resource: "tr_1", details: `{"amount":"5","from":"acc_a","to":"acc_b"}`},
		{actor: "", event: "e", outcome: "o", details: "{}"},
		{actor: "bob", event: "payment.capture", outcome: OutcomeFailure, origin: "qmsp", resource: "pay_9", details: `{"reason":"ünïcode"}`},
	}
	prev := bytes.Repeat([]byte{7}, hashLen)
	for i := range rs {
		r := &rs[i]
		r.seq, r.time, r.prev = int64(41+i), "2026-12-07T16:00:00.000000Z", prev
		r.hash = computeHash(r)
		if mac {
			r.mac = bytes.Repeat([]byte{byte(i + 1)}, 32)
		}
		prev = r.hash
	}
	return rs
}

func TestPackRoundTrip(t *testing.T) {
	for _, mac := range []bool{false, true} {
		rs := packRows(mac)
		got, err := decodePack(rs[0].seq, rs[0].time, encodePack(rs))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, rs) {
			t.Fatalf("mac=%v: decoded %+v, want %+v", mac, got, rs)
		}
	}
	body := encodePack(packRows(true))
	for name, b := range map[string][]byte{
		"empty":          nil,
		"other version":  append([]byte{2}, body[1:]...),
		"truncated":      body[:len(body)-1],
		"trailing bytes": append(append([]byte(nil), body...), 0),
		"zero records":   {packVersion, 0},
		"huge count":     append([]byte{packVersion, 0xff, 0xff, 0xff, 0xff, 0x0f}, body[2:]...),
	} {
		if _, err := decodePack(1, "t", b); !errors.Is(err, errBadPack) {
			t.Errorf("%s: err = %v, want errBadPack", name, err)
		}
	}
}

// FuzzDecodePack: any body either is rejected with errBadPack or decodes to
// chained records that encode back to a body decoding to the same records,
// never more records than the body has room for.
func FuzzDecodePack(f *testing.F) {
	f.Add(encodePack(packRows(false)))
	f.Add(encodePack(packRows(true)))
	f.Add([]byte{packVersion, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := decodePack(10, "2026-12-07T16:00:00.000000Z", b)
		if err != nil {
			if !errors.Is(err, errBadPack) {
				t.Fatalf("error %v does not wrap errBadPack", err)
			}
			return
		}
		if len(rs) == 0 || len(rs)*(7+hashLen) > len(b) {
			t.Fatalf("%d records from %d bytes", len(rs), len(b))
		}
		for i := 1; i < len(rs); i++ {
			if rs[i].seq != rs[i-1].seq+1 || !bytes.Equal(rs[i].prev, rs[i-1].hash) {
				t.Fatalf("record %d not chained to its predecessor", i)
			}
		}
		again, err := decodePack(10, "2026-12-07T16:00:00.000000Z", encodePack(rs))
		if err != nil || !reflect.DeepEqual(again, rs) {
			t.Fatalf("re-encoded pack decodes to %+v, %v; want %+v", again, err, rs)
		}
	})
}

// appendPack appends entries as one pack (what RecordAllTx does on SQLite),
// on either database.
func appendPack(t *testing.T, l *Log, entries []Entry) {
	t.Helper()
	ctx := context.Background()
	err := l.db.InTx(ctx, func(tx *sql.Tx) error { return l.appendBatchTx(ctx, tx, entries, true) })
	if err != nil {
		t.Fatal(err)
	}
}

func transferEntries(actor string, from, n int) []Entry {
	var out []Entry
	for i := from; i < from+n; i++ {
		id := fmt.Sprintf("tr_%d", i)
		out = append(out, Entry{Actor: actor, Event: "ledger.transfer", Outcome: OutcomeSuccess, Origin: "ledger", Resource: id,
			Details: map[string]string{"transfer_id": id, "from": fmt.Sprintf("acc_%d", i%3), "to": "acc_x", "amount": "1"}})
	}
	return out
}

// TestPackedRecords: records stored in packs and rows of audit_log are one
// log to every reader.
func TestPackedRecords(t *testing.T) {
	signer, verifier := testKeys(t)
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := openLog(t, db, bytes.Repeat([]byte{1}, 32))
		resetLog(t, db)
		fill(t, l, 3)                                    // 1-3 rows
		appendPack(t, l, transferEntries("alice", 0, 5)) // 4-8 a pack
		fill(t, l, 2)                                    // 9-10 rows
		appendPack(t, l, transferEntries("bob", 5, 4))   // 11-14 a pack
		var packs int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_packs`).Scan(&packs); err != nil || packs != 2 {
			t.Fatalf("%d packs (%v), want 2", packs, err)
		}
		if rep := mustVerify(t, l); !rep.OK || rep.Records != 14 {
			t.Fatalf("verify: %+v", rep)
		}
		all, err := l.Search(ctx, Query{})
		if err != nil || len(all) != 14 {
			t.Fatalf("search: %d records, %v", len(all), err)
		}
		for i, r := range all {
			if r.Seq != int64(i+1) {
				t.Fatalf("record %d has seq %d: not in seq order", i, r.Seq)
			}
		}
		if all[4].Actor != "alice" || all[4].Resource != "tr_1" || all[4].Details["from"] != "acc_1" {
			t.Fatalf("record 5 = %+v", all[4])
		}
		for _, c := range []struct {
			q    Query
			seqs []int64
		}{
			{Query{Resource: "tr_6"}, []int64{12}},
			{Query{Resource: "tr_*", Limit: 3}, []int64{4, 5, 6}},
			{Query{Actor: "bob", Event: "ledger.transfer"}, []int64{11, 12, 13, 14}},
			{Query{Account: "acc_2"}, []int64{6, 11, 14}}, // tr_2, tr_5 and tr_8 come from acc_2
			{Query{Event: "ledger.*", AfterSeq: 7, Limit: 2}, []int64{8, 11}},
			{Query{Outcome: OutcomeFailure}, nil},
		} {
			expectSearch(t, l, c.q, c.seqs)
		}
		counts, err := l.Stats(ctx, Query{}, ByActor, ByEvent)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, c := range counts {
			got[c.Keys[0]+"/"+c.Keys[1]] += c.N
		}
		if got["alice/ledger.transfer"] != 5 || got["bob/ledger.transfer"] != 4 {
			t.Errorf("stats = %v", counts)
		}
		var events int
		err = l.Snapshot(ctx, func(tx *sql.Tx) error {
			return l.ScanEvents(ctx, tx, "ledger.", func(Record) error { events++; return nil })
		})
		if err != nil || events != 9 {
			t.Errorf("ScanEvents found %d ledger records (%v), want 9", events, err)
		}
		// Proofs and anchors reach records inside packs.
		cp := checkpointOf(t, l, signer, verifier)
		for _, seq := range []int64{4, 6, 8, 11, 14} {
			p, err := l.ProveInclusion(ctx, seq, cp.Size)
			if err != nil {
				t.Fatal(err)
			}
			if !rfc9162VerifyInclusion(p.Index, p.TreeSize, p.Entry, proofPath(p), cp.Hash) {
				t.Fatalf("seq %d: inclusion proof rejected", seq)
			}
		}
		if rep, err := l.VerifyAnchor(ctx, Head{Seq: 6, Hash: all[5].Hash}); err != nil || !rep.OK {
			t.Fatalf("anchor inside a pack: %+v %v", rep, err)
		}
		if rep, err := l.VerifyCheckpoint(ctx, cp); err != nil || !rep.OK {
			t.Fatalf("checkpoint: %+v %v", rep, err)
		}
	})
}

// TestPackTamper: changes to packs are found by Verify (and against a
// checkpoint held outside the database).
func TestPackTamper(t *testing.T) {
	signer, verifier := testKeys(t)
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		cases := []struct {
			name   string
			tamper func(t *testing.T)
			want   []Problem
		}{
			{"a byte of a record changed", func(t *testing.T) {
				body := packBody(t, db, 4)
				i := bytes.Index(body, []byte("tr_2"))
				body[i+3] = '9' // tr_2 -> tr_9
				exec(t, db, `UPDATE audit_packs SET body = ? WHERE first_seq = 4`, body)
			}, []Problem{{Kind: ProblemChanged, Seq: 6}}},
			{"the pack's time changed", func(t *testing.T) {
				exec(t, db, `UPDATE audit_packs SET time = '2020-01-01T00:00:00.000000Z' WHERE first_seq = 4`)
			}, []Problem{{Kind: ProblemChanged, Seq: 4}, {Kind: ProblemChanged, Seq: 5}, {Kind: ProblemChanged, Seq: 6}, {Kind: ProblemChanged, Seq: 7}, {Kind: ProblemChanged, Seq: 8}}},
			{"a body cut short", func(t *testing.T) {
				body := packBody(t, db, 4)
				exec(t, db, `UPDATE audit_packs SET body = ? WHERE first_seq = 4`, body[:len(body)-40])
			}, []Problem{{Kind: ProblemChanged, Seq: 4, LastSeq: 8}}},
			{"a pack deleted", func(t *testing.T) {
				exec(t, db, `DELETE FROM audit_packs WHERE first_seq = 4`)
			}, []Problem{{Kind: ProblemDeleted, Seq: 4, LastSeq: 8}}},
			{"a pack's places moved", func(t *testing.T) {
				exec(t, db, `UPDATE audit_packs SET last_seq = 7 WHERE first_seq = 4`)
			}, []Problem{{Kind: ProblemChanged, Seq: 4, LastSeq: 7}, {Kind: ProblemDeleted, Seq: 8, LastSeq: 8}}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				l := emptyLog(t, db)
				fill(t, l, 3)
				appendPack(t, l, transferEntries("alice", 0, 5))
				fill(t, l, 2)
				cp := checkpointOf(t, l, signer, verifier)
				tc.tamper(t)
				rep := mustVerify(t, l)
				if rep.OK {
					t.Fatal("tampering not detected")
				}
				var got []Problem
				for _, p := range rep.Problems {
					got = append(got, Problem{Kind: p.Kind, Seq: p.Seq, LastSeq: p.LastSeq})
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("problems %v, want %v", rep.Problems, tc.want)
				}
				if rep, err := l.VerifyCheckpoint(ctx, cp); err != nil || rep.OK {
					t.Fatalf("against the checkpoint: %+v %v", rep, err)
				}
			})
		}
	})
}

func packBody(t *testing.T, db *sqldb.DB, first int64) []byte {
	t.Helper()
	var b []byte
	if err := db.QueryRowContext(context.Background(), db.Rebind(`SELECT body FROM audit_packs WHERE first_seq = ?`), first).Scan(&b); err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzDecodeEntries(f *testing.F) {
	f.Add(encodeEntries(packRows(false)))
	f.Add([]byte{packVersion, 1, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := decodeEntries(1, "t", b)
		if err != nil {
			if !errors.Is(err, errBadPack) {
				t.Fatalf("error %v does not wrap errBadPack", err)
			}
			return
		}
		if len(rs) == 0 || len(rs)*6 > len(b) {
			t.Fatalf("%d entries from %d bytes", len(rs), len(b))
		}
		again, err := decodeEntries(1, "t", encodeEntries(rs))
		if err != nil || !reflect.DeepEqual(again, rs) {
			t.Fatalf("re-encoded batch decodes to %+v, %v; want %+v", again, err, rs)
		}
	})
}

// TestQueuedBatch (PostgreSQL): AppendAllSQL queues a batch as one row;
// before integration ScanEvents sees its entries, Integrate stores it as one
// pack, and a batch that does not decode stops Integrate with an error
// naming it, leaving the queue as it was.
func TestQueuedBatch(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		if db.Dialect != sqldb.Postgres {
			t.Skip("the queue is PostgreSQL's")
		}
		ctx := context.Background()
		l := emptyLog(t, db)
		fill(t, l, 2)
		q, args, err := l.AppendAllSQL(transferEntries("alice", 0, 3))
		if err != nil {
			t.Fatal(err)
		}
		exec(t, db, q, args...)
		count := func(q string) (n int) {
			t.Helper()
			if err := db.QueryRowContext(ctx, q).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if n := count(`SELECT COUNT(*) FROM audit_queue`); n != 1 {
			t.Fatalf("%d queue rows for a batch of 3, want 1", n)
		}
		var seen []string
		err = l.Snapshot(ctx, func(tx *sql.Tx) error {
			return l.ScanEvents(ctx, tx, "ledger.", func(r Record) error { seen = append(seen, r.Resource); return nil })
		})
		if err != nil || !reflect.DeepEqual(seen, []string{"tr_0", "tr_1", "tr_2"}) {
			t.Fatalf("queued entries seen: %v, %v", seen, err)
		}
		if n, err := l.Integrate(ctx); err != nil || n != 3 {
			t.Fatalf("integrated %d, %v; want 3", n, err)
		}
		if count(`SELECT COUNT(*) FROM audit_packs`) != 1 || count(`SELECT COUNT(*) FROM audit_queue`) != 0 {
			t.Fatal("the batch did not become one pack")
		}
		recs, err := l.Search(ctx, Query{Resource: "tr_2"})
		if err != nil || len(recs) != 1 || recs[0].Seq != 5 {
			t.Fatalf("search: %+v %v", recs, err)
		}
		if rep := mustVerify(t, l); !rep.OK || rep.Records != 5 {
			t.Fatalf("verify: %+v", rep)
		}
		exec(t, db, `INSERT INTO audit_queue (time, actor, event, outcome, origin, resource, details, batch) VALUES ('t', '', '', '', '', '', '', ?)`, []byte{packVersion, 9})
		if _, err := l.Integrate(ctx); !errors.Is(err, errBadPack) {
			t.Fatalf("integrating a malformed batch: %v", err)
		}
		if count(`SELECT COUNT(*) FROM audit_queue`) != 1 || count(`SELECT seq FROM audit_head`) != 5 {
			t.Fatal("a failed integration changed the log or the queue")
		}
		exec(t, db, `DELETE FROM audit_queue`)
	})
}

// TestPackSearchEscapedAccount: an account whose JSON form is escaped in the
// details (encoding/json writes < as \u003c) is still found in packs.
func TestPackSearchEscapedAccount(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := emptyLog(t, db)
		appendPack(t, l, []Entry{
			{Actor: "a", Event: "ledger.transfer", Outcome: OutcomeSuccess, Resource: "tr_1", Details: map[string]string{"from": "acc<1>", "to": "acc_2"}},
			{Actor: "a", Event: "ledger.transfer", Outcome: OutcomeSuccess, Resource: "tr_2", Details: map[string]string{"from": "acc_2", "to": "acc_3"}},
		})
		recs, err := l.Search(ctx, Query{Account: "acc<1>"})
		if err != nil || len(recs) != 1 || recs[0].Resource != "tr_1" {
			t.Fatalf("Search(acc<1>) = %+v, %v", recs, err)
		}
	})
}

// TestQueuedBatchesOneIntegrate: several queued batches and single entries
// integrated in one call (PostgreSQL's publisher stores all their packs and
// terms with one statement each) are one log to every reader.
func TestQueuedBatchesOneIntegrate(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		if db.Dialect != sqldb.Postgres {
			t.Skip("the queue is PostgreSQL's")
		}
		ctx := context.Background()
		l := emptyLog(t, db)
		queue := func(entries []Entry) {
			t.Helper()
			q, args, err := l.AppendAllSQL(entries)
			if err != nil {
				t.Fatal(err)
			}
			exec(t, db, q, args...)
		}
		queue(transferEntries("alice", 0, 3)) // 1-3
		if err := db.InTx(ctx, func(tx *sql.Tx) error {
			return l.RecordTx(ctx, tx, Entry{Actor: "ca", Event: "ca.issue", Outcome: OutcomeSuccess, Resource: "cert_1"})
		}); err != nil { // 4
			t.Fatal(err)
		}
		queue(transferEntries("bob", 3, 2))   // 5-6
		queue(transferEntries("alice", 5, 4)) // 7-10
		if n, err := l.Integrate(ctx); err != nil || n != 10 {
			t.Fatalf("integrated %d, %v; want 10", n, err)
		}
		var packs, terms int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_packs`).Scan(&packs); err != nil || packs != 3 {
			t.Fatalf("%d packs (%v), want 3", packs, err)
		}
		// Per pack: its actor, ledger.transfer and a term per transfer.
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_pack_terms`).Scan(&terms); err != nil || terms != 3*2+9 {
			t.Fatalf("%d term rows (%v), want 15", terms, err)
		}
		for _, c := range []struct {
			q    Query
			seqs []int64
		}{
			{Query{Resource: "tr_4"}, []int64{6}},
			{Query{Resource: "tr_8"}, []int64{10}},
			{Query{Actor: "alice"}, []int64{1, 2, 3, 7, 8, 9, 10}},
			{Query{Resource: "cert_1"}, []int64{4}},
		} {
			expectSearch(t, l, c.q, c.seqs)
		}
		if rep := mustVerify(t, l); !rep.OK || rep.Records != 10 {
			t.Fatalf("verify: %+v", rep)
		}
	})
}

// expectSearch checks that l.Search(q) finds the records seqs, in order.
func expectSearch(t *testing.T, l *Log, q Query, seqs []int64) {
	t.Helper()
	recs, err := l.Search(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, r := range recs {
		got = append(got, r.Seq)
	}
	if !reflect.DeepEqual(got, seqs) {
		t.Errorf("Search(%+v) = %v, want %v", q, got, seqs)
	}
}
