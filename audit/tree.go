package audit

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/qshield/qshield/sqldb"
)

// The Merkle tree.
//
// Record seq is leaf seq-1 of an RFC 6962 Merkle tree whose leaf data is the
// record's encoding (the same bytes its chain hash covers), so the leaf hash
// is SHA-256(0x00 || encoding). The hashing, storage layout and proofs are
// those of golang.org/x/mod/sumdb/tlog: every stored hash (each leaf hash and
// each complete subtree hash) has a dense index, tlog.StoredHashIndex, so a
// tree head, an inclusion proof or a consistency proof reads O(log n) of
// them. An append stores a contiguous range of indexes (a record's hashes
// follow its predecessor's), so audit_tlog_runs keeps them in runs: a row
// (start, hashes) holds the hashes start, start+1, … concatenated, at most
// runHashes of them. A batch of records thus writes a few rows instead of
// two per record, and a hash is read by one seek (the run with the greatest
// start not after it).
//
// Appending inside a business transaction (AppendTx) only inserts a queue
// row: no log-wide lock, no hashing. Integrate moves queued rows into the log
// in one transaction that holds the head lock, assigning seq, chain hash,
// MAC, leaf hash and the subtree hashes each leaf completes (one on average).

const integrateBatch = 5000

// span is a pack's records in a slice of rows: rows start…start+n-1.
type span struct{ start, n int }

// queued is a record integrated from the queue (queueID is its queue row).
type queued struct {
	Record
	queueID int64
}

// Integrate gives every queued entry its place in the log and returns how
// many it integrated. It is cheap when the queue is empty (one indexed read).
func (l *Log) Integrate(ctx context.Context) (int, error) {
	total := 0
	for {
		var id int64
		err := l.db.QueryRowContext(ctx, `SELECT id FROM audit_queue ORDER BY id LIMIT 1`).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("audit: read queue: %w", err)
		}
		var n int
		err = l.db.InTx(ctx, func(tx *sql.Tx) error {
			recs, err := l.integrateTx(ctx, tx, integrateBatch)
			n = len(recs)
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < integrateBatch {
			return total, nil
		}
	}
}

func (l *Log) lockHead(ctx context.Context, tx *sql.Tx) (Head, error) {
	q := lockHeadSQL
	if l.db.Dialect == sqldb.Postgres {
		q += ` FOR UPDATE`
	}
	var head Head
	if err := l.queryRowTx(ctx, tx, q).Scan(&head.Seq, &head.Hash); err != nil {
		return Head{}, fmt.Errorf("audit: read head: %w", err)
	}
	return head, nil
}

// integrateTx integrates up to limit (0: integrateBatch) queued entries in
// queue order inside tx, which must be a write transaction.
func (l *Log) integrateTx(ctx context.Context, tx *sql.Tx, limit int) ([]queued, error) {
	if limit <= 0 {
		limit = integrateBatch
	}
	head, err := l.lockHead(ctx, tx)
	if err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, l.db.Rebind(`SELECT id, time, actor, event, outcome, origin, resource, details, batch
		FROM audit_queue ORDER BY id LIMIT ?`), limit)
	if err != nil {
		return nil, fmt.Errorf("audit: read queue: %w", err)
	}
	var pending []queued
	var rs []row
	var packs []span
	for rows.Next() && len(rs) < limit {
		var q queued
		var r row
		var batch []byte
		if err := rows.Scan(&q.queueID, &r.time, &r.actor, &r.event, &r.outcome, &r.origin, &r.resource, &r.details, &batch); err != nil {
			rows.Close()
			return nil, fmt.Errorf("audit: read queue: %w", err)
		}
		if batch == nil {
			pending = append(pending, q)
			rs = append(rs, r)
			continue
		}
		entries, err := decodeEntries(q.queueID, r.time, batch)
		if err != nil {
			rows.Close()
			return nil, err
		}
		packs = append(packs, span{start: len(rs), n: len(entries)})
		for _, e := range entries {
			pending = append(pending, q)
			rs = append(rs, e)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: read queue: %w", err)
	}
	if len(pending) == 0 {
		return nil, nil
	}
	var qids []int64
	if l.db.Dialect == sqldb.Postgres {
		qids = make([]int64, len(pending))
		for i, q := range pending {
			qids[i] = q.queueID
		}
	}
	recs, err := l.appendRowsTx(ctx, tx, head, rs, qids, packs)
	if err != nil {
		return nil, err
	}
	for i := range pending {
		pending[i].Record = recs[i]
	}
	if qids != nil {
		return pending, nil // moved out of the queue by appendRowsTx
	}
	var ids []any
	for i, q := range pending {
		if i == 0 || q.queueID != pending[i-1].queueID {
			ids = append(ids, q.queueID)
		}
	}
	for len(ids) > 0 {
		n := min(len(ids), 500)
		if _, err := tx.ExecContext(ctx, l.db.Rebind(`DELETE FROM audit_queue WHERE id IN (?`+strings.Repeat(", ?", n-1)+`)`), ids[:n]...); err != nil {
			return nil, fmt.Errorf("audit: dequeue: %w", err)
		}
		ids = ids[n:]
	}
	return pending, nil
}

// appendRowsTx gives rs (time and contents set) the places after head in
// the log inside tx, which holds the head lock: seq, chain hash, MAC, leaf
// and subtree hashes, and moves the head. With queueIDs (PostgreSQL), rs
// are the queued entries with those IDs, and they are moved from the queue
// into the log set-based: one statement deletes them from the queue and
// inserts them with their places (sent as arrays), one inserts the tree
// hashes. The records of packs (spans of rs) are stored as rows of
// audit_packs (see pack.go), the others as rows of audit_log.
func (l *Log) appendRowsTx(ctx context.Context, tx *sql.Tx, head Head, rs []row, queueIDs []int64, packs []span) ([]Record, error) {
	inPack := make([]bool, len(rs))
	for _, p := range packs {
		for i := p.start; i < p.start+p.n; i++ {
			inPack[i] = true
		}
	}
	hr := &txHashes{ctx: ctx, tx: tx, db: l.db, log: l, mem: map[int64]tlog.Hash{}}
	l.frontier.load(head, hr.mem)
	// Records are inserted up to 64 per statement (prepared once per chunk
	// size, see execChunked).
	const perInsert = 64
	var pendingArgs []any
	flush := func() error {
		if err := l.execChunked(ctx, tx, insertRecordsSQL, 11, pendingArgs); err != nil {
			return fmt.Errorf("audit: append records: %w", err)
		}
		pendingArgs = pendingArgs[:0]
		return nil
	}
	var newHash []tlog.Hash
	start := head.Seq
	out := make([]Record, len(rs))
	var lastText string // records of a batch mostly share their time
	var lastTime time.Time
	for i := range rs {
		r := &rs[i]
		r.seq, r.prev = head.Seq+1, head.Hash
		enc := encode(r)
		sum := sha256.Sum256(enc)
		r.hash = sum[:]
		r.mac = l.mac("record", r.seq, r.hash)
		hs, err := tlog.StoredHashes(r.seq-1, enc, hr)
		if err != nil {
			return nil, fmt.Errorf("audit: tree hashes for record %d: %w", r.seq, err)
		}
		base := tlog.StoredHashIndex(0, r.seq-1)
		for j, h := range hs {
			hr.mem[base+int64(j)] = h
		}
		newHash = append(newHash, hs...)
		if queueIDs == nil && !inPack[i] {
			pendingArgs = append(pendingArgs, r.seq, r.time, r.actor, r.event, r.outcome, r.origin, r.resource, r.details, r.prev, r.hash, r.mac)
		}
		if len(pendingArgs) >= perInsert*11 {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		head = Head{Seq: r.seq, Hash: r.hash}
		if r.time != lastText {
			lastText = r.time
			lastTime, _ = time.Parse(TimeLayout, r.time)
		}
		out[i] = Record{Seq: r.seq, Time: lastTime, Actor: r.actor, Event: r.event, Outcome: r.outcome, Origin: r.origin,
			Resource: r.resource, PrevHash: r.prev, Hash: r.hash}
	}
	if err := l.insertPacks(ctx, tx, rs, packs); err != nil {
		return nil, err
	}
	if queueIDs != nil {
		// The single entries are moved set-based, the batches deleted.
		var ids, batches []int64
		var singles []row
		for i := range rs {
			switch {
			case !inPack[i]:
				ids, singles = append(ids, queueIDs[i]), append(singles, rs[i])
			case len(batches) == 0 || batches[len(batches)-1] != queueIDs[i]:
				batches = append(batches, queueIDs[i])
			}
		}
		if len(batches) > 0 {
			if _, err := tx.ExecContext(ctx, `DELETE FROM audit_queue WHERE id = ANY($1::bigint[])`, batches); err != nil {
				return nil, fmt.Errorf("audit: dequeue batches: %w", err)
			}
		}
		if err := l.moveQueued(ctx, tx, ids, singles, tlog.StoredHashIndex(0, start), newHash); err != nil {
			return nil, err
		}
	} else {
		if err := flush(); err != nil {
			return nil, err
		}
		if err := l.insertHashes(ctx, tx, tlog.StoredHashIndex(0, start), newHash); err != nil {
			return nil, err
		}
	}
	res, err := l.execResultTx(ctx, tx, updateHeadSQL,
		head.Seq, head.Hash, l.mac("head", head.Seq, head.Hash), start)
	if err != nil {
		return nil, fmt.Errorf("audit: update head: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return nil, fmt.Errorf("audit: head moved during append (concurrent writer without lock?)")
	}
	l.frontier.store(head, hr.mem)
	return out, nil
}

// moveQueued moves the queued entries ids (PostgreSQL) into the log with
// the places computed in rs, and stores the tree hashes hs (stored hash
// indexes first, first+1, …), set-based.
func (l *Log) moveQueued(ctx context.Context, tx *sql.Tx, ids []int64, rs []row, first int64, hs []tlog.Hash) error {
	if len(ids) == 0 {
		return l.insertHashes(ctx, tx, first, hs)
	}
	seqs := make([]int64, len(rs))
	prevs, hashes, macs := make([][]byte, len(rs)), make([][]byte, len(rs)), make([][]byte, len(rs))
	for i := range rs {
		seqs[i], prevs[i], hashes[i], macs[i] = rs[i].seq, rs[i].prev, rs[i].hash, rs[i].mac
	}
	res, err := tx.ExecContext(ctx, `WITH q AS (DELETE FROM audit_queue WHERE id = ANY($1::bigint[]) RETURNING *)
		INSERT INTO audit_log (seq, time, actor, event, outcome, origin, resource, details, prev_hash, hash, mac)
		SELECT u.seq, q.time, q.actor, q.event, q.outcome, q.origin, q.resource, q.details, u.prev, u.hash, u.mac
		FROM q JOIN unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[], $5::bytea[]) AS u (id, seq, prev, hash, mac) ON q.id = u.id`,
		ids, seqs, prevs, hashes, macs)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n != int64(len(ids)) {
			err = fmt.Errorf("moved %d queued entries, want %d", n, len(ids))
		}
	}
	if err != nil {
		return fmt.Errorf("audit: append queued records: %w", err)
	}
	return l.insertHashes(ctx, tx, first, hs)
}

// runHashes is the most hashes a row of audit_tlog_runs holds: 1,792 bytes,
// so that two rows share a 4 KiB SQLite page without overflow pages, and a
// PostgreSQL row stays under the TOAST threshold (2,032 bytes) and in its
// heap page.
const runHashes = 56

// tlogRuns splits the stored hashes first, first+1, … (hs) into the rows of
// audit_tlog_runs: their starts and blobs.
func tlogRuns(first int64, hs []tlog.Hash) (starts []int64, blobs [][]byte) {
	for i := 0; i < len(hs); i += runHashes {
		run := hs[i:min(i+runHashes, len(hs))]
		b := make([]byte, 0, len(run)*tlog.HashSize)
		for _, h := range run {
			b = append(b, h[:]...)
		}
		starts = append(starts, first+int64(i))
		blobs = append(blobs, b)
	}
	return starts, blobs
}

// insertHashes stores the tree hashes first, first+1, … (hs) in runs.
func (l *Log) insertHashes(ctx context.Context, tx *sql.Tx, first int64, hs []tlog.Hash) error {
	starts, blobs := tlogRuns(first, hs)
	var err error
	if l.db.Dialect == sqldb.Postgres {
		// At most pgRunsPerInsert runs (3.5 MiB) a statement: a rebuilt
		// tree (repairTree) can hold millions.
		const pgRunsPerInsert = 2048
		for i := 0; i < len(starts) && err == nil; i += pgRunsPerInsert {
			j := min(i+pgRunsPerInsert, len(starts))
			_, err = tx.ExecContext(ctx, `INSERT INTO audit_tlog_runs (start, hashes) SELECT * FROM unnest($1::bigint[], $2::bytea[])`, starts[i:j], blobs[i:j])
		}
	} else {
		args := make([]any, 0, 2*len(starts))
		for i := range starts {
			args = append(args, starts[i], blobs[i])
		}
		err = l.execChunked(ctx, tx, insertHashesSQL, 2, args)
	}
	if err != nil {
		return fmt.Errorf("audit: store tree hashes: %w", err)
	}
	return nil
}

// Multi-row inserts are prepared for these row counts (largest first, the
// last 1), so that a bulk append compiles no statement.
var chunkRows = []int{64, 16, 4, 1}

func insertRecordsSQL(n int) string {
	return `INSERT INTO audit_log (seq, time, actor, event, outcome, origin, resource, details, prev_hash, hash, mac) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?), ", n), ", ")
}

func insertHashesSQL(n int) string {
	return `INSERT INTO audit_tlog_runs (start, hashes) VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?), ", n), ", ")
}

// execChunked inserts the rows whose arguments (width per row) are args,
// with the statements stmt(n) for n in chunkRows.
func (l *Log) execChunked(ctx context.Context, tx *sql.Tx, stmt func(n int) string, width int, args []any) error {
	for len(args) > 0 {
		rows := len(args) / width
		n := 1
		for _, c := range chunkRows {
			if c <= rows {
				n = c
				break
			}
		}
		if err := l.execTx(ctx, tx, stmt(n), args[:n*width]...); err != nil {
			return err
		}
		args = args[n*width:]
	}
	return nil
}

// execTx runs q in tx, on SQLite through a statement prepared once per Log
// (compiling a multi-row insert costs more than running it, see
// prepareSQLite); PostgreSQL's driver caches prepared statements itself.
func (l *Log) execTx(ctx context.Context, tx *sql.Tx, q string, args ...any) error {
	_, err := l.execResultTx(ctx, tx, q, args...)
	return err
}

// SQLite statements of the append path, prepared once per Log by Open.
const (
	lockHeadSQL   = `SELECT seq, hash FROM audit_head WHERE id = 1`
	updateHeadSQL = `UPDATE audit_head SET seq = ?, hash = ?, mac = ? WHERE id = 1 AND seq = ?`
	// readHashesSQL reads the stored hashes whose indexes are the JSON
	// array ?, each cut from its run (32 = tlog.HashSize). A hash past its
	// run's end reads short, which ReadHashes reports; an index before
	// every run reads no row and is reported missing.
	readHashesSQL = `SELECT j.value, substr(r.hashes, (j.value - r.start) * 32 + 1, 32)
		FROM json_each(?) AS j JOIN audit_tlog_runs AS r
		ON r.start = (SELECT start FROM audit_tlog_runs WHERE start <= j.value ORDER BY start DESC LIMIT 1)`
	// readHashesPG is readHashesSQL on PostgreSQL (the indexes as an array).
	readHashesPG = `SELECT x, substr(r.hashes, (x - r.start)::int * 32 + 1, 32)
		FROM unnest($1::bigint[]) AS x JOIN LATERAL
		(SELECT start, hashes FROM audit_tlog_runs WHERE start <= x ORDER BY start DESC LIMIT 1) AS r ON true`
)

// prepareSQLite prepares the statements of the append path (SQLite), outside
// any transaction: preparing one later, inside a transaction, would need a
// second connection of a pool that may have none free.
func (l *Log) prepareSQLite(ctx context.Context) error {
	qs := []string{lockHeadSQL, updateHeadSQL, readHashesSQL, insertPackSQL}
	for _, n := range chunkRows {
		qs = append(qs, insertRecordsSQL(n), insertHashesSQL(n), insertTermsSQL(n))
	}
	for _, q := range qs {
		p, err := l.db.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("audit: prepare: %w", err)
		}
		l.stmts.Store(q, p)
	}
	return nil
}

// prepared returns the statement for q (already rebound) bound to tx:
// prepared once per Log (prepareSQLite), or else for tx alone.
func (l *Log) prepared(ctx context.Context, tx *sql.Tx, q string) (*sql.Stmt, error) {
	if st, ok := l.stmts.Load(q); ok {
		return tx.StmtContext(ctx, st.(*sql.Stmt)), nil
	}
	return tx.PrepareContext(ctx, q)
}

// execResultTx is execTx returning the result.
func (l *Log) execResultTx(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	q = l.db.Rebind(q)
	if l.db.Dialect != sqldb.SQLite {
		return tx.ExecContext(ctx, q, args...)
	}
	st, err := l.prepared(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// queryRowTx is QueryRowContext in tx through a prepared statement on
// SQLite (see execTx).
func (l *Log) queryRowTx(ctx context.Context, tx *sql.Tx, q string, args ...any) *sql.Row {
	q = l.db.Rebind(q)
	if l.db.Dialect != sqldb.SQLite {
		return tx.QueryRowContext(ctx, q, args...)
	}
	st, err := l.prepared(ctx, tx, q)
	if err != nil {
		// A failed prepare is reported by Scan, as QueryRowContext would.
		return tx.QueryRowContext(ctx, q, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// querier is a *sql.Tx or *sqldb.DB.
type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

// txHashes reads stored hashes from the database (inside one transaction),
// with the hashes computed but not yet written in mem.
type txHashes struct {
	ctx context.Context
	tx  querier
	db  *sqldb.DB
	// log, when set with tx a *sql.Tx on SQLite, reads through one
	// prepared statement (the indexes as a JSON array).
	log *Log
	mem map[int64]tlog.Hash
}

// ReadHashes implements tlog.HashReader.
func (r *txHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	var missing []any
	pos := map[int64][]int{}
	for i, x := range indexes {
		if h, ok := r.mem[x]; ok {
			out[i] = h
			continue
		}
		if _, seen := pos[x]; !seen {
			missing = append(missing, x)
		}
		pos[x] = append(pos[x], i)
	}
	if len(missing) == 0 {
		return out, nil
	}
	for len(missing) > 0 {
		n := min(len(missing), 500)
		rows, err := r.query(missing[:n])
		if err != nil {
			return nil, fmt.Errorf("audit: read tree hashes: %w", err)
		}
		for rows.Next() {
			var x int64
			var h []byte
			if err := rows.Scan(&x, &h); err != nil {
				rows.Close()
				return nil, fmt.Errorf("audit: read tree hashes: %w", err)
			}
			if len(h) != tlog.HashSize {
				rows.Close()
				return nil, fmt.Errorf("audit: stored tree hash %d has %d bytes", x, len(h))
			}
			for _, i := range pos[x] {
				copy(out[i][:], h)
			}
			if r.mem != nil {
				r.mem[x] = out[pos[x][0]]
			}
			delete(pos, x)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("audit: read tree hashes: %w", err)
		}
		missing = missing[n:]
	}
	if len(pos) > 0 {
		for x := range pos {
			return nil, fmt.Errorf("audit: stored tree hash %d missing (run `qshield audit verify`)", x)
		}
	}
	return out, nil
}

// query reads the stored hashes of indexes (rows of index and hash).
func (r *txHashes) query(indexes []any) (*sql.Rows, error) {
	if r.db.Dialect == sqldb.Postgres {
		xs := make([]int64, len(indexes))
		for i, x := range indexes {
			xs[i] = x.(int64)
		}
		return r.tx.QueryContext(r.ctx, readHashesPG, xs)
	}
	b := make([]byte, 0, 16*len(indexes))
	b = append(b, '[')
	for i, x := range indexes {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, x.(int64), 10)
	}
	b = append(b, ']')
	if tx, ok := r.tx.(*sql.Tx); ok && r.log != nil {
		st, err := r.log.prepared(r.ctx, tx, readHashesSQL)
		if err != nil {
			return nil, err
		}
		return st.QueryContext(r.ctx, string(b))
	}
	return r.tx.QueryContext(r.ctx, readHashesSQL, string(b))
}

// repairTree builds the stored tree hashes of records written before the
// tree existed (schema version 1), once.
func (l *Log) repairTree(ctx context.Context) error {
	var seq int64
	if err := l.db.QueryRowContext(ctx, `SELECT seq FROM audit_head WHERE id = 1`).Scan(&seq); err != nil {
		return fmt.Errorf("audit: read head: %w", err)
	}
	// The stored hashes end where the last run does.
	var start, size int64
	err := l.db.QueryRowContext(ctx, `SELECT start, length(hashes) FROM audit_tlog_runs ORDER BY start DESC LIMIT 1`).Scan(&start, &size)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("audit: read tree: %w", err)
	}
	if start+size/tlog.HashSize >= tlog.StoredHashCount(seq) {
		return nil
	}
	return l.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := l.lockHead(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM audit_tlog_runs`); err != nil {
			return fmt.Errorf("audit: rebuild tree: %w", err)
		}
		st := &memTree{}
		if err := l.scanRows(ctx, tx, func(r *row) error { return st.add(encode(r)) }); err != nil {
			return err
		}
		return l.insertHashes(ctx, tx, 0, st.hashes)
	})
}

// scanRows calls fn for every stored record in seq order (rows of
// audit_log and records of packs).
func (l *Log) scanRows(ctx context.Context, q querier, fn func(r *row) error) error {
	var s scan
	return s.run(ctx, l.db, q, fn)
}

// memHashes is a tlog.HashReader over a dense slice of stored hashes.
type memHashes []tlog.Hash

// ReadHashes implements tlog.HashReader.
func (m memHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(m)) {
			return nil, fmt.Errorf("audit: tree hash %d not computed", x)
		}
		out[i] = m[x]
	}
	return out, nil
}

// memTree recomputes the stored hashes of a tree from its leaves in memory.
type memTree struct {
	n      int64
	hashes []tlog.Hash
}

func (t *memTree) add(leaf []byte) error {
	hs, err := tlog.StoredHashes(t.n, leaf, memHashes(t.hashes))
	if err != nil {
		return err
	}
	t.hashes = append(t.hashes, hs...)
	t.n++
	return nil
}

// root is the tree hash of the first n leaves (n ≤ t.n).
func (t *memTree) root(n int64) (tlog.Hash, error) {
	if n == 0 {
		return emptyRoot, nil
	}
	return tlog.TreeHash(n, memHashes(t.hashes))
}

// emptyRoot is the RFC 6962 hash of the empty tree, SHA-256("").
var emptyRoot = tlog.Hash(sha256.Sum256(nil))

// Tree is a tree head: the number of records and the Merkle tree hash.
type Tree struct {
	Size int64     `json:"size"`
	Hash tlog.Hash `json:"hash"`
}

// TreeHead integrates the queue and returns the current tree head, computed
// from the stored hashes (O(log n) reads).
func (l *Log) TreeHead(ctx context.Context) (Tree, error) {
	if _, err := l.Integrate(ctx); err != nil {
		return Tree{}, err
	}
	var t Tree
	err := l.snapshot(ctx, func(tx *sql.Tx) error {
		var err error
		t, err = l.treeTx(ctx, tx)
		return err
	})
	return t, err
}

func (l *Log) treeTx(ctx context.Context, tx *sql.Tx) (Tree, error) {
	var n int64
	if err := tx.QueryRowContext(ctx, `SELECT seq FROM audit_head WHERE id = 1`).Scan(&n); err != nil {
		return Tree{}, fmt.Errorf("audit: read head: %w", err)
	}
	if n == 0 {
		return Tree{Size: 0, Hash: emptyRoot}, nil
	}
	h, err := tlog.TreeHash(n, &txHashes{ctx: ctx, tx: tx, db: l.db})
	if err != nil {
		return Tree{}, fmt.Errorf("audit: tree hash: %w", err)
	}
	return Tree{Size: n, Hash: h}, nil
}

// InclusionProof is the evidence that record Seq is leaf Seq-1 of the tree
// of TreeSize records: with Entry (the leaf data), a verifier computes the
// leaf hash SHA-256(0x00 || Entry) and walks Proof (RFC 9162 §2.1.3.2) to
// the tree hash, which a signed checkpoint of that size must carry.
type InclusionProof struct {
	Seq      int64       `json:"seq"`
	Index    int64       `json:"leaf_index"`
	TreeSize int64       `json:"tree_size"`
	Entry    []byte      `json:"entry"` // base64 in JSON
	LeafHash tlog.Hash   `json:"leaf_hash"`
	Proof    []tlog.Hash `json:"proof"`
	Root     tlog.Hash   `json:"root"`
	// Checkpoint is the signed checkpoint of TreeSize (when one was given).
	Checkpoint string `json:"checkpoint,omitempty"`
}

// ProveInclusion proves that record seq is in the tree of size records.
func (l *Log) ProveInclusion(ctx context.Context, seq, size int64) (InclusionProof, error) {
	if seq < 1 || size < seq {
		return InclusionProof{}, fmt.Errorf("%w: record %d is not in a tree of %d records", ErrInvalid, seq, size)
	}
	var p InclusionProof
	err := l.snapshot(ctx, func(tx *sql.Tx) error {
		t, err := l.treeTx(ctx, tx)
		if err != nil {
			return err
		}
		if size > t.Size {
			return fmt.Errorf("%w: the log has %d records, fewer than %d", ErrInvalid, t.Size, size)
		}
		r, ok, err := l.readRow(ctx, tx, seq)
		if err == nil && !ok {
			err = sql.ErrNoRows
		}
		if err != nil {
			return fmt.Errorf("audit: read record %d: %w", seq, err)
		}
		hr := &txHashes{ctx: ctx, tx: tx, db: l.db}
		proof, err := tlog.ProveRecord(size, seq-1, hr)
		if err != nil {
			return fmt.Errorf("audit: inclusion proof: %w", err)
		}
		root, err := tlog.TreeHash(size, hr)
		if err != nil {
			return fmt.Errorf("audit: tree hash: %w", err)
		}
		p = InclusionProof{Seq: seq, Index: seq - 1, TreeSize: size, Entry: encode(&r), Proof: proof, Root: root}
		p.LeafHash = tlog.RecordHash(p.Entry)
		return nil
	})
	return p, err
}

// ProveConsistency returns the RFC 6962 consistency proof that the tree of
// oldSize records is a prefix of the tree of newSize records (empty when
// oldSize is 0 or equals newSize).
func (l *Log) ProveConsistency(ctx context.Context, oldSize, newSize int64) ([]tlog.Hash, error) {
	if oldSize < 0 || newSize < oldSize {
		return nil, fmt.Errorf("%w: no consistency proof from %d to %d records", ErrInvalid, oldSize, newSize)
	}
	if oldSize == 0 || oldSize == newSize {
		return []tlog.Hash{}, nil
	}
	var p tlog.TreeProof
	err := l.snapshot(ctx, func(tx *sql.Tx) error {
		t, err := l.treeTx(ctx, tx)
		if err != nil {
			return err
		}
		if newSize > t.Size {
			return fmt.Errorf("%w: the log has %d records, fewer than %d", ErrInvalid, t.Size, newSize)
		}
		p, err = tlog.ProveTree(newSize, oldSize, &txHashes{ctx: ctx, tx: tx, db: l.db})
		if err != nil {
			return fmt.Errorf("audit: consistency proof: %w", err)
		}
		return nil
	})
	return p, err
}

// CheckConsistency verifies a consistency proof between two tree heads
// (with tlog.CheckTree); an old size of 0 is consistent with any tree.
func CheckConsistency(old, cur Tree, proof []tlog.Hash) error {
	switch {
	case old.Size < 0 || cur.Size < old.Size:
		return fmt.Errorf("%w: tree of %d records is smaller than the earlier %d (rollback)", ErrBroken, cur.Size, old.Size)
	case old.Size == 0:
		return nil
	case old.Size == cur.Size:
		if old.Hash != cur.Hash {
			return fmt.Errorf("%w: two different trees of %d records (fork)", ErrBroken, cur.Size)
		}
		return nil
	}
	if err := tlog.CheckTree(proof, cur.Size, cur.Hash, old.Size, old.Hash); err != nil {
		return fmt.Errorf("%w: tree of %d records is not an extension of the tree of %d (fork or rewrite): %v", ErrBroken, cur.Size, old.Size, err)
	}
	return nil
}
