package audit

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestSearchPlans checks, with SQLite's EXPLAIN QUERY PLAN, that the
// searches the console and the CLI make stay efficient with the partial
// event index of migration 3 (ledger transfers left out of it): by principal
// (actor), by resource and by a rare event through their indexes, by
// ledger.transfer by walking the log in seq order (no sort); and, on both
// databases, that the event index leaves ledger transfers out and that
// searches by event still find every record.
func TestSearchPlans(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l, err := Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		// The same mix twice: record by record (rows of audit_log), then
		// as one batch (a pack).
		mix := func(prefix string) []Entry {
			var entries []Entry
			for i := range 300 {
				id := prefix + strconv.Itoa(i)
				entries = append(entries, Entry{Actor: "system", Event: bulkEvent, Outcome: OutcomeSuccess, Origin: "ledger", Resource: id,
					Details: map[string]string{"transfer_id": id, "from": "a", "to": "b", "amount": "1", "currency": "XTS", "state": "posted"}})
				if i%50 == 0 {
					entries = append(entries, Entry{Actor: "alice", Event: "ca.issue", Outcome: OutcomeSuccess, Resource: "dev-" + strconv.Itoa(i)})
				}
			}
			return entries
		}
		err = db.InTx(ctx, func(tx *sql.Tx) error {
			for _, e := range mix("tr_") {
				if err := l.RecordTx(ctx, tx, e); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			err = db.InTx(ctx, func(tx *sql.Tx) error { return l.RecordAllTx(ctx, tx, mix("tp_")) })
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			q    Query
			want int
		}{{Query{Event: "ca.issue", Limit: 1000}, 12}, {Query{Event: bulkEvent, Limit: 1000}, 600}, {Query{Actor: "alice", Limit: 1000}, 12},
			{Query{Event: "ca.*", Limit: 1000}, 12}, {Query{Resource: "tr_7"}, 1}, {Query{Resource: "tp_7"}, 1},
			{Query{Event: bulkEvent, AfterSeq: 400, Limit: 1000}, 208}} { // the pack holds seqs 307-612, 4 of 401-612 ca.issue
			recs, err := l.Search(ctx, c.q)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != c.want {
				t.Errorf("Search(%+v): %d records, want %d", c.q, len(recs), c.want)
			}
		}
		counts, err := l.Stats(ctx, Query{Event: "ca.issue"}, ByEvent)
		if err != nil || len(counts) != 1 || counts[0].N != 12 {
			t.Errorf("Stats(ca.issue) = %v, %v; want 12", counts, err)
		}

		if db.Dialect == sqldb.Postgres {
			var def string
			if err := db.QueryRowContext(ctx, `SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'audit_log_event'`).Scan(&def); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(def, "WHERE") || !strings.Contains(def, bulkEvent) {
				t.Errorf("audit_log_event is %q, want a partial index without %s", def, bulkEvent)
			}
			return
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_log INDEXED BY audit_log_event WHERE `+bulkEventTerm).Scan(&n); err != nil || n != 6 {
			t.Errorf("audit_log_event holds %d records (%v), want the 6 that are not %s (rows of audit_log)", n, err, bulkEvent)
		}
		for _, c := range []struct {
			q             Query
			index, absent string
		}{
			{Query{Actor: "alice"}, "audit_log_actor", ""},
			{Query{Resource: "dev-50"}, "audit_log_resource", ""},
			{Query{Event: "ca.issue"}, "audit_log_event", ""},
			{Query{Event: "ca.issue", AfterSeq: 10}, "audit_log_event", ""},
			{Query{Event: bulkEvent}, "", "TEMP B-TREE"},
			{Query{Event: bulkEvent, AfterSeq: 100}, "INTEGER PRIMARY KEY", "TEMP B-TREE"},
		} {
			query, args, err := l.searchSQL(Query{Limit: 100, Actor: c.q.Actor, Resource: c.q.Resource, Event: c.q.Event, AfterSeq: c.q.AfterSeq})
			if err != nil {
				t.Fatal(err)
			}
			plan := explain(t, db, query, args)
			t.Logf("%+v: %s", c.q, plan)
			if c.index != "" && !strings.Contains(plan, c.index) {
				t.Errorf("search %+v: plan %q does not use %s", c.q, plan, c.index)
			}
			if c.absent != "" && strings.Contains(plan, c.absent) {
				t.Errorf("search %+v: plan %q uses %s", c.q, plan, c.absent)
			}
			if c.q.Event == bulkEvent && strings.Contains(plan, "audit_log_event") {
				t.Errorf("search %+v: plan %q uses the event index, which leaves %s out", c.q, plan, bulkEvent)
			}
		}
		// Packs: a page is a key range of audit_packs; terms through
		// their primary key, times through their index.
		for _, c := range []struct {
			q     Query
			index []string
		}{
			{Query{Actor: "alice"}, []string{"audit_pack_terms USING PRIMARY KEY"}},
			{Query{Event: "ca.issue", AfterSeq: 10}, []string{"audit_pack_terms USING PRIMARY KEY", "audit_packs USING INTEGER PRIMARY KEY"}},
			{Query{Resource: "tp_7", From: time.Now().Add(-time.Hour)}, []string{"audit_pack_terms USING PRIMARY KEY"}},
			{Query{Resource: "tp_*", From: time.Now().Add(-time.Hour)}, []string{"audit_packs"}},
		} {
			ps, err := l.packScan(c.q)
			if err != nil {
				t.Fatal(err)
			}
			plan := explain(t, db, ps.packSQL(), append(append([]any{int64(0)}, ps.packArgs...), 128))
			t.Logf("packs %+v: %s", c.q, plan)
			for _, ix := range c.index {
				if !strings.Contains(plan, ix) {
					t.Errorf("pack search %+v: plan %q does not use %s", c.q, plan, ix)
				}
			}
			if strings.Contains(plan, "SCAN audit_pack_terms") || strings.Contains(plan, "TEMP B-TREE") {
				t.Errorf("pack search %+v: plan %q scans the terms or sorts", c.q, plan)
			}
		}
	})
}

func explain(t *testing.T, db *sqldb.DB, query string, args []any) string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), "EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		out = append(out, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, "; ")
}

// TestRecordAllTxOneTime checks that the records of one RecordAllTx call
// carry one time, the transaction's (the clock is read once per call).
func TestRecordAllTxOneTime(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		clock := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
		l, err := OpenWithOptions(ctx, db, Options{Now: func() time.Time { clock = clock.Add(time.Millisecond); return clock }})
		if err != nil {
			t.Fatal(err)
		}
		entries := []Entry{{Actor: "a", Event: "e1", Outcome: OutcomeSuccess}, {Actor: "a", Event: "e2", Outcome: OutcomeSuccess}, {Actor: "a", Event: "e3", Outcome: OutcomeSuccess}}
		if err := db.InTx(ctx, func(tx *sql.Tx) error { return l.RecordAllTx(ctx, tx, entries) }); err != nil {
			t.Fatal(err)
		}
		recs, err := l.Search(ctx, Query{})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 3 {
			t.Fatalf("%d records, want 3", len(recs))
		}
		for _, r := range recs {
			if !r.Time.Equal(recs[0].Time) {
				t.Errorf("record %d at %v, record 1 at %v: want one time per call", r.Seq, r.Time, recs[0].Time)
			}
		}
		if rep, err := l.Verify(ctx); err != nil || !rep.OK {
			t.Fatalf("verify: %v %+v", err, rep)
		}
	})
}
