package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

const testOrigin = "test.qshield.example/audit"

func testKeys(t testing.TB) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := GenerateCheckpointKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

// rewriteAll is what an insider with write access does after changing rows:
// recompute every chain hash in seq order (renumbering from 1), rebuild the
// stored tree and move the head, so that Verify without an outside
// checkpoint finds nothing.
func rewriteAll(t *testing.T, db *sqldb.DB) {
	t.Helper()
	ctx := context.Background()
	err := db.InTx(ctx, func(tx *sql.Tx) error {
		var rs []row
		if err := (&scan{}).run(ctx, db, tx, func(r *row) error { rs = append(rs, *r); return nil }); err != nil {
			return err
		}
		for _, q := range []string{`DELETE FROM audit_log`, `DELETE FROM audit_packs`, `DELETE FROM audit_pack_terms`, `DELETE FROM audit_tlog_runs`} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		prev := make([]byte, 32)
		mt := &memTree{}
		for i := range rs {
			r := &rs[i]
			r.seq, r.prev = int64(i+1), prev
			r.hash = computeHash(r)
			prev = r.hash
			if _, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO audit_log (seq, time, actor, event, outcome, origin, resource, details, prev_hash, hash)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`), r.seq, r.time, r.actor, r.event, r.outcome, r.origin, r.resource, r.details, r.prev, r.hash); err != nil {
				return err
			}
			if err := mt.add(encode(r)); err != nil {
				return err
			}
		}
		starts, blobs := tlogRuns(0, mt.hashes)
		for i := range starts {
			if _, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO audit_tlog_runs (start, hashes) VALUES (?, ?)`), starts[i], blobs[i]); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, db.Rebind(`UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`), int64(len(rs)), prev)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// backup is a copy of the audit tables (an older database backup).
type backup struct {
	log, tlog, cps [][]any
	head           []any
}

func dump(t *testing.T, db *sqldb.DB, q string, ncol int) [][]any {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][]any
	for rows.Next() {
		vals := make([]any, ncol)
		ptrs := make([]any, ncol)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, vals)
	}
	return out
}

func takeBackup(t *testing.T, db *sqldb.DB) backup {
	return backup{
		log:  dump(t, db, `SELECT seq, time, actor, event, outcome, origin, resource, details, prev_hash, hash, mac FROM audit_log`, 11),
		tlog: dump(t, db, `SELECT start, hashes FROM audit_tlog_runs`, 2),
		cps:  dump(t, db, `SELECT size, note FROM audit_checkpoints`, 2),
		head: dump(t, db, `SELECT seq, hash, mac FROM audit_head`, 3)[0],
	}
}

func (b backup) restore(t *testing.T, db *sqldb.DB) {
	t.Helper()
	resetLog(t, db)
	for _, r := range b.log {
		exec(t, db, `INSERT INTO audit_log (seq, time, actor, event, outcome, origin, resource, details, prev_hash, hash, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, r...)
	}
	for _, r := range b.tlog {
		exec(t, db, `INSERT INTO audit_tlog_runs (start, hashes) VALUES (?, ?)`, r...)
	}
	for _, r := range b.cps {
		exec(t, db, `INSERT INTO audit_checkpoints (size, note) VALUES (?, ?)`, r...)
	}
	exec(t, db, `UPDATE audit_head SET seq = ?, hash = ?, mac = ? WHERE id = 1`, b.head...)
}

func appendN(t *testing.T, l *Log, n int, actor string) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := l.Append(context.Background(), Entry{Actor: actor, Event: "ledger.transfer", Outcome: OutcomeSuccess, Resource: fmt.Sprintf("tr_%s_%d", actor, i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTamperAgainstCheckpoint: each tampering of a database copy is detected
// against a checkpoint signed earlier and held outside the database, even
// when the insider recomputed every hash in the database so that the plain
// chain check passes.
func TestTamperAgainstCheckpoint(t *testing.T) {
	signer, verifier := testKeys(t)
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		cases := []struct {
			name string
			// tamper runs after 20 records and a checkpoint of them (cp).
			tamper func(t *testing.T, l *Log)
			want   ProblemKind
		}{
			{"one record deleted", func(t *testing.T, l *Log) {
				exec(t, db, `DELETE FROM audit_log WHERE seq = 7`)
				rewriteAll(t, db)
			}, ProblemRollback}, // 19 records left: fewer than the checkpoint
			{"one record deleted, then the log grew past the checkpoint", func(t *testing.T, l *Log) {
				exec(t, db, `DELETE FROM audit_log WHERE seq = 7`)
				rewriteAll(t, db)
				appendN(t, l, 5, "later")
			}, ProblemFork},
			{"tail deleted and an older head restored", func(t *testing.T, l *Log) {
				exec(t, db, `DELETE FROM audit_log WHERE seq > 15`)
				var h []byte
				if err := db.QueryRowContext(ctx, `SELECT hash FROM audit_log WHERE seq = 15`).Scan(&h); err != nil {
					t.Fatal(err)
				}
				exec(t, db, `DELETE FROM audit_tlog_runs WHERE start >= ?`, stored(15))
				exec(t, db, `UPDATE audit_tlog_runs SET hashes = substr(hashes, 1, CAST((? - start) * 32 AS INTEGER)) WHERE start + length(hashes) / 32 > ?`, stored(15), stored(15))
				exec(t, db, `UPDATE audit_head SET seq = 15, hash = ? WHERE id = 1`, h)
			}, ProblemRollback},
			{"an actor rewritten and everything re-hashed", func(t *testing.T, l *Log) {
				exec(t, db, `UPDATE audit_log SET actor = 'someone-else' WHERE actor = 'mallory'`)
				rewriteAll(t, db)
			}, ProblemFork},
			{"two records swapped", func(t *testing.T, l *Log) {
				exec(t, db, `UPDATE audit_log SET seq = -1 WHERE seq = 3`)
				exec(t, db, `UPDATE audit_log SET seq = 3 WHERE seq = 4`)
				exec(t, db, `UPDATE audit_log SET seq = 4 WHERE seq = -1`)
				rewriteAll(t, db)
			}, ProblemFork},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				l := emptyLog(t, db)
				appendN(t, l, 10, "alice")
				appendN(t, l, 1, "mallory")
				appendN(t, l, 9, "bob")
				cp := checkpointOf(t, l, signer, verifier) // held outside the database
				if rep, err := l.VerifyCheckpoint(ctx, cp); err != nil || !rep.OK {
					t.Fatalf("before tampering: %+v %v", rep, err)
				}
				tc.tamper(t, l)
				rep, err := l.VerifyCheckpoint(ctx, cp)
				if err != nil {
					t.Fatal(err)
				}
				if rep.OK || !hasKind(rep.Problems, tc.want) {
					t.Fatalf("want a %s problem, got %+v", tc.want, rep.Problems)
				}
				// The signer refuses to bless the rewritten log.
				if _, _, err := l.Checkpoint(ctx, signer); !errors.Is(err, ErrFork) && !errors.Is(err, ErrRollback) {
					t.Fatalf("checkpoint of a tampered log: %v", err)
				}
			})
		}

		t.Run("whole database restored from an older backup", func(t *testing.T) {
			l := emptyLog(t, db)
			appendN(t, l, 12, "alice")
			old := takeBackup(t, db)
			appendN(t, l, 8, "mallory")
			cp := checkpointOf(t, l, signer, verifier)
			old.restore(t, db)
			if rep := mustVerify(t, l); !rep.OK {
				t.Fatalf("the restored backup is internally consistent, Verify should pass: %+v", rep)
			}
			rep, err := l.VerifyCheckpoint(ctx, cp)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK || !hasKind(rep.Problems, ProblemRollback) {
				t.Fatalf("rollback not detected: %+v", rep.Problems)
			}
		})

		t.Run("two copies grown apart (fork)", func(t *testing.T) {
			l := emptyLog(t, db)
			appendN(t, l, 10, "alice")
			common := takeBackup(t, db)
			appendN(t, l, 5, "copy-a")
			msgA, _, err := l.Checkpoint(ctx, signer)
			if err != nil {
				t.Fatal(err)
			}
			cpA, _, err := OpenCheckpoint(msgA, verifier)
			if err != nil {
				t.Fatal(err)
			}
			common.restore(t, db) // the other copy
			appendN(t, l, 7, "copy-b")
			msgB, _, err := l.Checkpoint(ctx, signer) // copy B signs its own view
			if err != nil {
				t.Fatal(err)
			}
			rep, err := l.VerifyCheckpoint(ctx, cpA)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK || !hasKind(rep.Problems, ProblemFork) {
				t.Fatalf("fork not detected: %+v", rep.Problems)
			}
			// A witness that cosigned copy A's checkpoint refuses copy B's.
			cpB, _, err := OpenCheckpoint(msgB, verifier)
			if err != nil {
				t.Fatal(err)
			}
			proof, err := l.ProveConsistency(ctx, cpA.Size, cpB.Size)
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckConsistency(cpA.Tree, cpB.Tree, proof); err == nil {
				t.Fatal("copy B's checkpoint passed as an extension of copy A's")
			}
		})
	})
}

func stored(n int64) int64 { return tlog.StoredHashCount(n) }

// checkpointOf signs a checkpoint of l's current tree and opens it, as a
// party outside the database would keep it.
func checkpointOf(t testing.TB, l *Log, signer note.Signer, verifier note.Verifier) Checkpoint {
	t.Helper()
	msg, _, err := l.Checkpoint(context.Background(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err := OpenCheckpoint(msg, verifier)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func hasKind(ps []Problem, k ProblemKind) bool {
	for _, p := range ps {
		if p.Kind == k {
			return true
		}
	}
	return false
}

// TestInclusionProofIndependent checks `audit prove` output with an RFC 9162
// §2.1.3.2 verifier written here from the RFC, independently of tlog.
func TestInclusionProofIndependent(t *testing.T) {
	signer, verifier := testKeys(t)
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := openLog(t, db, nil)
		for _, n := range []int{1, 2, 3, 7, 8, 13} {
			resetLog(t, db)
			appendN(t, l, n, "alice")
			cp := checkpointOf(t, l, signer, verifier)
			for seq := int64(1); seq <= int64(n); seq++ {
				p, err := l.ProveInclusion(ctx, seq, cp.Size)
				if err != nil {
					t.Fatal(err)
				}
				path := proofPath(p)
				if !rfc9162VerifyInclusion(p.Index, p.TreeSize, p.Entry, path, cp.Hash) {
					t.Fatalf("n=%d seq=%d: inclusion proof rejected", n, seq)
				}
				bad := append([]byte(nil), p.Entry...)
				bad[len(bad)-1] ^= 1
				if rfc9162VerifyInclusion(p.Index, p.TreeSize, bad, path, cp.Hash) {
					t.Fatalf("n=%d seq=%d: proof accepted for a changed entry", n, seq)
				}
				if n > 1 && rfc9162VerifyInclusion((p.Index+1)%int64(n), p.TreeSize, p.Entry, path, cp.Hash) {
					t.Fatalf("n=%d seq=%d: proof accepted at another index", n, seq)
				}
			}
		}
	})
}

// proofPath is p's audit path as rfc9162VerifyInclusion takes it.
func proofPath(p InclusionProof) [][32]byte {
	var path [][32]byte
	for _, h := range p.Proof {
		path = append(path, h)
	}
	return path
}

// rfc9162VerifyInclusion is RFC 9162 §2.1.3.2, written from the RFC text.
func rfc9162VerifyInclusion(index, size int64, entry []byte, path [][32]byte, root [32]byte) bool {
	if index >= size {
		return false
	}
	h := func(parts ...[]byte) [32]byte {
		s := sha256.New()
		for _, p := range parts {
			s.Write(p)
		}
		var out [32]byte
		copy(out[:], s.Sum(nil))
		return out
	}
	fn, sn := index, size-1
	r := h([]byte{0}, entry)
	for _, p := range path {
		if sn == 0 {
			return false
		}
		if fn&1 == 1 || fn == sn {
			r = h([]byte{1}, p[:], r[:])
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = h([]byte{1}, r[:], p[:])
		}
		fn >>= 1
		sn >>= 1
	}
	return sn == 0 && r == root
}

// TestStoredTreeHashes: a rewritten stored tree hash is found by the default
// verification when it is part of the current tree head, and by
// VerifyOptions.StoredTree wherever it is.
func TestStoredTreeHashes(t *testing.T) {
	signer, verifier := testKeys(t)
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := emptyLog(t, db)
		appendN(t, l, 20, "alice")
		cp := checkpointOf(t, l, signer, verifier)
		bad := make([]byte, 32)
		// The stored hash of the complete subtree over leaves 0..15 (level 4)
		// is on the tree head's path for 20 records; the leaf hash of record
		// 2 is not (only the level-4 hash above it is read).
		for _, tc := range []struct {
			name   string
			idx    int64
			inHead bool
		}{
			{"subtree on the head's path", tlog.StoredHashIndex(4, 0), true},
			{"leaf inside a complete subtree", tlog.StoredHashIndex(0, 2), false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				orig := setStoredHash(t, db, tc.idx, bad)
				defer setStoredHash(t, db, tc.idx, orig)
				rep, err := l.VerifyCheckpoint(ctx, cp)
				if err != nil {
					t.Fatal(err)
				}
				if got := hasKind(rep.Problems, ProblemTree); got != tc.inHead {
					t.Fatalf("default verification found a tree problem: %v, want %v (%+v)", got, tc.inHead, rep.Problems)
				}
				full, err := l.VerifyCheckpointWith(ctx, cp, VerifyOptions{StoredTree: true})
				if err != nil {
					t.Fatal(err)
				}
				if full.OK || !hasKind(full.Problems, ProblemTree) {
					t.Fatalf("full verification: want a tree problem, got %+v", full.Problems)
				}
			})
		}
	})
}

// setStoredHash overwrites stored tree hash idx inside its run with h and
// returns the hash it held.
func setStoredHash(t *testing.T, db *sqldb.DB, idx int64, h []byte) []byte {
	t.Helper()
	var start int64
	var run []byte
	if err := db.QueryRowContext(context.Background(), db.Rebind(`SELECT start, hashes FROM audit_tlog_runs WHERE start <= ? ORDER BY start DESC LIMIT 1`), idx).Scan(&start, &run); err != nil {
		t.Fatal(err)
	}
	off := (idx - start) * tlog.HashSize
	if off+tlog.HashSize > int64(len(run)) {
		t.Fatalf("stored hash %d is not in the run at %d (%d bytes)", idx, start, len(run))
	}
	orig := bytes.Clone(run[off : off+tlog.HashSize])
	copy(run[off:], h)
	exec(t, db, `UPDATE audit_tlog_runs SET hashes = ? WHERE start = ?`, run, start)
	return orig
}

// storedRuns reads audit_tlog_runs, fails unless its rows are well-formed
// runs (contiguous from index 0, each of 1..runHashes whole hashes), and
// returns the stored hashes concatenated.
func storedRuns(t *testing.T, db *sqldb.DB) []byte {
	t.Helper()
	var all []byte
	for _, r := range dump(t, db, `SELECT start, hashes FROM audit_tlog_runs ORDER BY start`, 2) {
		start, b := r[0].(int64), r[1].([]byte)
		if next := int64(len(all) / tlog.HashSize); start != next || len(b) == 0 || len(b)%tlog.HashSize != 0 || len(b) > runHashes*tlog.HashSize {
			t.Fatalf("run at %d (%d bytes) after %d hashes", start, len(b), next)
		}
		all = append(all, b...)
	}
	return all
}

// TestTreeRuns checks the stored hashes kept in runs: bulk appends whose
// hashes cross run boundaries give contiguous runs of at most runHashes
// that verify and prove; logs migrated from one row per hash (runs of one)
// read and grow the same; a missing or shortened run is a tree problem.
func TestTreeRuns(t *testing.T) {
	signer, verifier := testKeys(t)
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := emptyLog(t, db)
		bulk := func(n int) {
			t.Helper()
			es := make([]Entry, n)
			for i := range es {
				es[i] = Entry{Actor: "bob", Event: "test.bulk", Outcome: OutcomeSuccess, Resource: fmt.Sprint(i)}
			}
			if err := db.InTx(ctx, func(tx *sql.Tx) error { return l.RecordAllTx(ctx, tx, es) }); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Integrate(ctx); err != nil {
				t.Fatal(err)
			}
		}
		check := func(what string) {
			t.Helper()
			var size int64
			if err := db.QueryRowContext(ctx, `SELECT seq FROM audit_head WHERE id = 1`).Scan(&size); err != nil {
				t.Fatal(err)
			}
			if n := int64(len(storedRuns(t, db)) / tlog.HashSize); n != stored(size) {
				t.Fatalf("%s: runs end at %d, want %d", what, n, stored(size))
			}
			cp := checkpointOf(t, l, signer, verifier)
			rep, err := l.VerifyCheckpointWith(ctx, cp, VerifyOptions{StoredTree: true})
			if err != nil || !rep.OK {
				t.Fatalf("%s: verify: %v %+v", what, err, rep.Problems)
			}
			for _, seq := range []int64{1, size / 2, size - 1, size} {
				p, err := l.ProveInclusion(ctx, seq, cp.Size)
				if err != nil {
					t.Fatal(err)
				}
				if err := tlog.CheckRecord(p.Proof, p.TreeSize, p.Root, p.Index, p.LeafHash); err != nil || p.Root != cp.Hash {
					t.Fatalf("%s: inclusion proof of %d: %v", what, seq, err)
				}
			}
		}
		for _, n := range []int{1, 27, 28, 29, 3, 130} {
			bulk(n)
		}
		check("bulk appends")
		// The shape migration 4 gives a log stored one hash a row.
		all := storedRuns(t, db)
		exec(t, db, `DELETE FROM audit_tlog_runs`)
		for i := 0; i < len(all); i += tlog.HashSize {
			exec(t, db, `INSERT INTO audit_tlog_runs (start, hashes) VALUES (?, ?)`, int64(i/tlog.HashSize), all[i:i+tlog.HashSize])
		}
		bulk(70)
		appendN(t, l, 3, "carol")
		check("runs of one, grown")

		cp := checkpointOf(t, l, signer, verifier)
		for _, tc := range []struct{ name, q string }{
			{"a run deleted", `DELETE FROM audit_tlog_runs WHERE start = 1`},
			{"a run shortened into a hash", `UPDATE audit_tlog_runs SET hashes = substr(hashes, 1, length(hashes) - 20)
				WHERE start = (SELECT MIN(start) FROM audit_tlog_runs WHERE length(hashes) > 64)`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := takeBackup(t, db)
				defer b.restore(t, db)
				exec(t, db, tc.q)
				rep, err := l.VerifyCheckpointWith(ctx, cp, VerifyOptions{StoredTree: true})
				if err != nil {
					t.Fatal(err)
				}
				if !hasKind(rep.Problems, ProblemTree) {
					t.Fatalf("not found: %+v", rep.Problems)
				}
			})
		}
	})
}

// TestRepairTree: a log whose stored tree hashes are missing (written before
// the tree existed, schema version 1) gets them rebuilt, in runs, when
// opened; checkpoints and full stored-tree verification then hold.
func TestRepairTree(t *testing.T) {
	signer, verifier := testKeys(t)
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := emptyLog(t, db)
		appendN(t, l, 150, "dave")
		want := storedRuns(t, db)
		exec(t, db, `DELETE FROM audit_tlog_runs`)
		l = openLog(t, db, nil)
		if got := storedRuns(t, db); !bytes.Equal(got, want) || int64(len(want)/tlog.HashSize) != stored(150) {
			t.Fatalf("rebuilt %d hashes, want the %d stored before", len(got)/tlog.HashSize, stored(150))
		}
		cp := checkpointOf(t, l, signer, verifier)
		if rep, err := l.VerifyCheckpointWith(ctx, cp, VerifyOptions{StoredTree: true}); err != nil || !rep.OK {
			t.Fatalf("verify after rebuild: %v %+v", err, rep.Problems)
		}
	})
}
