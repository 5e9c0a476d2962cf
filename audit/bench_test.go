package audit

import (
	"context"
	"database/sql"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func BenchmarkAppend(b *testing.B) {
	db := sqldbtest.Open(b, sqldbtest.Backends()[0])
	l, err := Open(context.Background(), db)
	if err != nil {
		b.Fatal(err)
	}
	e := Entry{Actor: "pos-1", Event: "payment.authorise", Outcome: OutcomeSuccess, Origin: "10.0.0.1", Resource: "device-1", Details: map[string]string{"amount": "12.50"}}
	for b.Loop() {
		if _, err := l.Append(context.Background(), e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify10k reports the time to verify a 10,000-record chain.
func BenchmarkVerify10k(b *testing.B) {
	db := sqldbtest.Open(b, sqldbtest.Backends()[0])
	ctx := context.Background()
	l, err := Open(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 10000; i++ {
		if _, err := l.AppendTx(ctx, tx, Entry{Actor: "a", Event: "e", Outcome: OutcomeSuccess}); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		rep, err := l.Verify(ctx)
		if err != nil || !rep.OK {
			b.Fatal(err, rep.Problems)
		}
	}
}

// BenchmarkLargeLog measures, on a log of QSHIELD_AUDIT_BENCH_RECORDS records
// (default 100,000; BENCHMARKS.md reports 1,000,000) on every backend
// sqldbtest offers: signing a checkpoint (one new record integrated, tree
// head from stored hashes, consistency proof with the last checkpoint,
// Ed25519 signature, store), verifying the whole log against a checkpoint
// (every leaf recomputed from the records), and one inclusion proof.
func BenchmarkLargeLog(b *testing.B) {
	n := envCount(b, "QSHIELD_AUDIT_BENCH_RECORDS", 100_000)
	// QSHIELD_AUDIT_BENCH_BATCH=64 builds the log as the ledger's group
	// commit does: RecordAllTx batches of 64 (packs on SQLite, queued
	// batches on PostgreSQL) instead of a row per record.
	batch := envCount(b, "QSHIELD_AUDIT_BENCH_BATCH", 0)
	signer, verifier := testKeys(b)
	for _, be := range sqldbtest.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			ctx := context.Background()
			db := sqldbtest.Open(b, be)
			l, err := Open(ctx, db)
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			for done := 0; done < n; {
				k := min(10_000, n-done)
				err := db.InTx(ctx, func(tx *sql.Tx) error {
					var es []Entry
					for i := 0; i < k; i++ {
						e := Entry{Actor: "3f9a" + strconv.Itoa(i%97), Event: "ledger.transfer", Outcome: OutcomeSuccess, Origin: "ledger",
							Resource: "tr_" + strconv.Itoa(done+i), Details: map[string]string{"from": "acc-1", "to": "acc-2", "amount": "1250", "currency": "CNY"}}
						if batch > 0 {
							if es = append(es, e); len(es) == batch || i == k-1 {
								if err := l.RecordAllTx(ctx, tx, es); err != nil {
									return err
								}
								es = es[:0]
							}
							continue
						}
						if _, err := l.AppendTx(ctx, tx, e); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := l.Integrate(ctx); err != nil {
					b.Fatal(err)
				}
				done += k
			}
			b.Logf("%s: %d records appended and integrated in %v", be.Name, n, time.Since(start).Round(time.Millisecond))
			cp := checkpointOf(b, l, signer, verifier)
			b.Run("checkpoint", func(b *testing.B) {
				cpu0 := cpuTime()
				defer func() { b.ReportMetric((cpuTime()-cpu0).Seconds()*1e3/float64(b.N), "cpu-ms/op") }()
				for b.Loop() {
					if _, err := l.Append(ctx, Entry{Actor: "a", Event: "e", Outcome: OutcomeSuccess}); err != nil {
						b.Fatal(err)
					}
					if _, _, err := l.Checkpoint(ctx, signer); err != nil {
						b.Fatal(err)
					}
				}
			})
			for _, o := range []struct {
				name string
				opts VerifyOptions
			}{{"verify-against-checkpoint", VerifyOptions{}}, {"verify-against-checkpoint-stored-tree", VerifyOptions{StoredTree: true}}} {
				b.Run(o.name, func(b *testing.B) {
					cpu0 := cpuTime()
					for b.Loop() {
						rep, err := l.VerifyCheckpointWith(ctx, cp, o.opts)
						if err != nil || !rep.OK {
							b.Fatal(err, rep.Problems)
						}
					}
					b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/op")
				})
			}
			// Searches a console makes: one transfer's record by its
			// resource, and a principal's latest page.
			for _, sc := range []struct {
				name string
				q    func(i int) Query
			}{
				{"search-resource", func(i int) Query { return Query{Resource: "tr_" + strconv.Itoa(i*7919%n)} }},
				{"search-actor", func(i int) Query { return Query{Actor: "3f9a" + strconv.Itoa(i%97), Limit: 50} }},
			} {
				b.Run(sc.name, func(b *testing.B) {
					cpu0 := cpuTime()
					defer func() { b.ReportMetric((cpuTime()-cpu0).Seconds()*1e3/float64(b.N), "cpu-ms/op") }()
					i := 0
					for b.Loop() {
						i++
						recs, err := l.Search(ctx, sc.q(i))
						if err != nil || len(recs) == 0 {
							b.Fatal(len(recs), err)
						}
					}
				})
			}
			b.Run("inclusion-proof", func(b *testing.B) {
				cpu0 := cpuTime()
				defer func() { b.ReportMetric((cpuTime()-cpu0).Seconds()*1e3/float64(b.N), "cpu-ms/op") }()
				seq := int64(1)
				for b.Loop() {
					seq = seq*7919%cp.Size + 1
					if _, err := l.ProveInclusion(ctx, seq, cp.Size); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// envCount is the positive integer in the environment variable name, or
// def when it is unset.
func envCount(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}

// cpuTime is this process's user+system CPU time (the database work of
// SQLite runs in-process, so it is included; PostgreSQL's server is not).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRecordAllTx appends ledger-like records in transactions of 64
// (as the SQLite group committer of the ledger does, issue 13) and reports
// the process's CPU time per record, the writer time auditing adds, and on
// SQLite the WAL pages written per record (write amplification, exact:
// one connection, no checkpoints during the run).
func BenchmarkRecordAllTx(b *testing.B) {
	for _, be := range sqldbtest.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			ctx := context.Background()
			db := sqldbtest.Open(b, be)
			l, err := Open(ctx, db)
			if err != nil {
				b.Fatal(err)
			}
			const batch = 64
			entries := make([]Entry, batch)
			n := 0
			fill := func() {
				for i := range entries {
					n++
					id := "tr_019af3c2" + strconv.FormatInt(int64(1e15+n), 16)
					entries[i] = Entry{Actor: "system", Event: "ledger.transfer", Outcome: OutcomeSuccess, Origin: "ledger", Resource: id,
						Details: map[string]string{"transfer_id": id, "from": "load-00" + strconv.Itoa(n%10000), "to": "load-00" + strconv.Itoa(n*7%10000),
							"amount": strconv.Itoa(1 + n%100), "currency": "XTS", "state": "posted"}}
				}
			}
			// One batch first, so that any statement prepared on first use
			// is prepared before the pool shrinks to one connection.
			fill()
			if err := db.InTx(ctx, func(tx *sql.Tx) error { return l.RecordAllTx(ctx, tx, entries) }); err != nil {
				b.Fatal(err)
			}
			sqlite := db.Dialect == sqldb.SQLite
			if sqlite {
				db.SetMaxOpenConns(1)
				if _, err := db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
					b.Fatal(err)
				}
				if _, err := db.ExecContext(ctx, "PRAGMA wal_autocheckpoint = 0"); err != nil {
					b.Fatal(err)
				}
			}
			cpu0 := cpuTime()
			for b.Loop() {
				fill()
				if err := db.InTx(ctx, func(tx *sql.Tx) error { return l.RecordAllTx(ctx, tx, entries) }); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N*batch), "cpu-µs/record")
			if sqlite {
				var page int64
				if err := db.QueryRowContext(ctx, "PRAGMA page_size").Scan(&page); err != nil {
					b.Fatal(err)
				}
				fi, err := os.Stat(db.Path + "-wal")
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(fi.Size()-32)/float64(page+24)/float64(b.N*batch), "wal-pages/record")
			}
		})
	}
}

// BenchmarkRowAt is the per-record work of an append before the hashes: a
// ledger transfer's entry validated and its details made canonical.
func BenchmarkRowAt(b *testing.B) {
	e := Entry{Actor: "2f9c61a0d3b4e5f6", Event: "ledger.transfer", Outcome: OutcomeSuccess, Origin: "ledger",
		Resource: "tr_0193a5c2e4f1b8d7c6a5e4f3d2c1b0a9", Details: map[string]string{
			"transfer_id": "tr_0193a5c2e4f1b8d7c6a5e4f3d2c1b0a9", "from": "acc_0193a5c2e4f1b8d7c6a5e4f3d2c1b0aa",
			"to": "acc_0193a5c2e4f1b8d7c6a5e4f3d2c1b0ab", "amount": "1250", "currency": "EUR", "state": "posted"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rowAt(e, "2026-12-07T19:00:00.000000Z"); err != nil {
			b.Fatal(err)
		}
	}
}
