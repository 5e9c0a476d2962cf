package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"

	"github.com/qshield/qshield/sqldb"
)

// ProblemKind classifies a break in the chain.
type ProblemKind string

const (
	// ProblemChanged: a record's contents no longer match its stored hash.
	ProblemChanged ProblemKind = "changed"
	// ProblemRelinked: a record's prev_hash is not its predecessor's hash —
	// the predecessor was rewritten with a recomputed hash, or this record
	// was forged in its place.
	ProblemRelinked ProblemKind = "relinked"
	// ProblemDeleted: the records Seq..LastSeq are missing.
	ProblemDeleted ProblemKind = "deleted"
	// ProblemInserted: a record outside the chain (seq ≤ 0 or past the head).
	ProblemInserted ProblemKind = "inserted"
	// ProblemForged: a record's or the head's MAC is missing or wrong (only
	// with Options.Key).
	ProblemForged ProblemKind = "forged"
	// ProblemHead: the head does not match the last record.
	ProblemHead ProblemKind = "head"
	// ProblemRollback: the log is smaller than a checkpoint.
	ProblemRollback ProblemKind = "rollback"
	// ProblemFork: the records before a checkpoint's size do not hash to its
	// root (deleted, inserted, reordered or rewritten records, or a copy of
	// the log that grew apart).
	ProblemFork ProblemKind = "fork"
	// ProblemTree: the stored Merkle tree hashes disagree with the records.
	ProblemTree ProblemKind = "tree"
)

// Problem is one break found by Verify.
type Problem struct {
	Kind    ProblemKind `json:"kind"`
	Seq     int64       `json:"seq"`
	LastSeq int64       `json:"last_seq,omitempty"` // for ranges (deleted)
	Detail  string      `json:"detail"`
}

func (p Problem) String() string {
	if p.LastSeq > p.Seq {
		return fmt.Sprintf("records %d-%d %s: %s", p.Seq, p.LastSeq, p.Kind, p.Detail)
	}
	return fmt.Sprintf("record %d %s: %s", p.Seq, p.Kind, p.Detail)
}

// Report is the result of Verify.
type Report struct {
	OK         bool      `json:"ok"`
	Records    int64     `json:"records"`     // rows examined
	Head       Head      `json:"head"`        // as stored
	MACChecked bool      `json:"mac_checked"` // Options.Key was set
	Problems   []Problem `json:"problems,omitempty"`
	Truncated  bool      `json:"truncated,omitempty"` // more than 1000 problems
}

func (r *Report) add(p Problem) {
	if len(r.Problems) >= maxProblems {
		r.Truncated = true
		return
	}
	r.Problems = append(r.Problems, p)
}

// Verify walks the whole chain and reports every changed, inserted or
// deleted record. A database error is returned as an error; a broken chain
// is a Report with OK false.
//
// It reads one consistent snapshot (a read-only transaction, repeatable read
// on PostgreSQL), so records appended while it runs are neither reported as
// inserted nor make the tail look truncated; appenders are not blocked.
func (l *Log) Verify(ctx context.Context) (Report, error) {
	if _, err := l.Integrate(ctx); err != nil {
		return Report{}, err
	}
	return l.VerifyAnchor(ctx, Head{})
}

func (l *Log) snapshot(ctx context.Context, fn func(tx *sql.Tx) error) error {
	opts := &sql.TxOptions{ReadOnly: true}
	if l.db.Dialect == sqldb.Postgres {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := l.db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("audit: begin snapshot: %w", err)
	}
	defer tx.Rollback()
	return fn(tx)
}

// verifyTx walks the chain; onRow, when set, sees every record's encoding as read.
func (l *Log) verifyTx(ctx context.Context, tx *sql.Tx, onRow func(enc []byte) error) (Report, error) {
	rep := Report{MACChecked: l.key != nil}
	var headMAC []byte
	if err := tx.QueryRowContext(ctx, `SELECT seq, hash, mac FROM audit_head WHERE id = 1`).Scan(&rep.Head.Seq, &rep.Head.Hash, &headMAC); err != nil {
		return rep, fmt.Errorf("audit: read head: %w", err)
	}
	expected := int64(1)
	prev := make([]byte, hashLen)
	prevKnown := true
	s := scan{onBad: func(first, last int64, err error) error {
		rep.Records += last - first + 1
		if first > expected {
			rep.add(Problem{Kind: ProblemDeleted, Seq: expected, LastSeq: first - 1, Detail: fmt.Sprintf("%d record(s) missing", first-expected)})
		}
		rep.add(Problem{Kind: ProblemChanged, Seq: first, LastSeq: last, Detail: fmt.Sprintf("pack of records does not decode: %v", err)})
		prevKnown, expected = false, max(expected, last+1)
		return nil
	}}
	err := s.run(ctx, l.db, tx, func(r *row) error {
		rep.Records++
		enc := encode(r)
		if onRow != nil {
			if err := onRow(enc); err != nil {
				return err
			}
		}
		if r.seq < 1 {
			rep.add(Problem{Kind: ProblemInserted, Seq: r.seq, Detail: "sequence number before the first record"})
			return nil
		}
		if r.seq > rep.Head.Seq {
			rep.add(Problem{Kind: ProblemInserted, Seq: r.seq, Detail: fmt.Sprintf("record past the head (seq %d)", rep.Head.Seq)})
			return nil
		}
		if r.seq < expected {
			rep.add(Problem{Kind: ProblemInserted, Seq: r.seq, Detail: "a second record with this sequence number"})
			return nil
		}
		if r.seq > expected {
			rep.add(Problem{Kind: ProblemDeleted, Seq: expected, LastSeq: r.seq - 1, Detail: fmt.Sprintf("%d record(s) missing", r.seq-expected)})
			prevKnown = false
		}
		switch {
		case !bytes.Equal(sha256Sum(enc), r.hash):
			rep.add(Problem{Kind: ProblemChanged, Seq: r.seq, Detail: "contents do not match the stored hash"})
		case l.key != nil && !hmac.Equal(r.mac, l.mac("record", r.seq, r.hash)):
			rep.add(Problem{Kind: ProblemForged, Seq: r.seq, Detail: "MAC missing or wrong: written without the audit key"})
		}
		if prevKnown && !bytes.Equal(r.prev, prev) {
			rep.add(Problem{Kind: ProblemRelinked, Seq: r.seq, Detail: fmt.Sprintf(
				"previous-hash link does not match record %d: record %d was rewritten with a recomputed hash, or record %d was forged", r.seq-1, r.seq-1, r.seq)})
		}
		prev, prevKnown, expected = r.hash, true, r.seq+1
		return nil
	})
	if err != nil {
		return rep, err
	}
	last := expected - 1
	switch {
	case rep.Head.Seq > last:
		rep.add(Problem{Kind: ProblemDeleted, Seq: last + 1, LastSeq: rep.Head.Seq, Detail: fmt.Sprintf("last %d record(s) missing (head is at %d)", rep.Head.Seq-last, rep.Head.Seq)})
	case !bytes.Equal(rep.Head.Hash, prev):
		rep.add(Problem{Kind: ProblemHead, Seq: rep.Head.Seq, Detail: "head hash does not match the last record"})
	}
	if l.key != nil && !hmac.Equal(headMAC, l.mac("head", rep.Head.Seq, rep.Head.Hash)) {
		rep.add(Problem{Kind: ProblemForged, Seq: rep.Head.Seq, Detail: "head MAC missing or wrong: head rewritten (e.g. tail truncated) without the audit key"})
	}
	rep.OK = len(rep.Problems) == 0 && !rep.Truncated
	return rep, nil
}

// VerifyAnchor checks that a head saved earlier (see Head) is still part of
// an intact chain: the record at anchor.Seq must still have anchor.Hash and
// Verify must pass. This detects a rewrite of the whole chain after the
// anchor was taken, which a bare hash chain cannot.
// A zero anchor checks nothing more than Verify.
func (l *Log) VerifyAnchor(ctx context.Context, anchor Head) (Report, error) {
	var rep Report
	err := l.snapshot(ctx, func(tx *sql.Tx) error {
		var err error
		if rep, err = l.verifyTx(ctx, tx, nil); err != nil {
			return err
		}
		if anchor.Seq == 0 {
			return nil
		}
		r, ok, err := l.readRow(ctx, tx, anchor.Seq)
		if err != nil && !errors.Is(err, errBadPack) {
			return fmt.Errorf("audit: read anchored record: %w", err)
		}
		if !ok || !bytes.Equal(r.hash, anchor.Hash) {
			rep.add(Problem{Kind: ProblemChanged, Seq: anchor.Seq, Detail: "record missing or no longer matching the anchored head: the chain was rewritten"})
			rep.OK = false
		}
		return nil
	})
	return rep, err
}

func sha256Sum(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}
