package qmsp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/sqldb"
)

// Payments are group-committed. A payment's cryptography (the gateway's
// signature, expiry, the one-time tag) is checked by the request's own
// goroutine; the payment then waits for a committer, which takes every
// payment waiting (up to maxPayBatch) and decides and writes them together
// in one transaction, with a few statements per batch instead of several per
// payment (the ledger's set-based batches, batch.go, are the model):
//
//  1. read the batch's gateways and payers as committed (a gateway whose
//     key or status changed since its signature was checked, through this
//     node or another, is refused; the phone binding is checked);
//  2. claim the key units with one INSERT … ON CONFLICT DO NOTHING
//     RETURNING: the insert decides which payment claims a unit, on every
//     node; a unit named twice in the batch is inserted once;
//  3. move the money for the claimed units with ledger.TransfersTx, decided
//     in batch order as if one after the other;
//  4. mark refused claims (the unit stays burned) and record the paid
//     ones' transfers with one UPDATE, and append the audit records in one
//     write; commit once.
//
// A payment that loses its unit to a stored claim or to an earlier payment
// of the batch is the same client's retry when it carries the same
// Idempotency-Key and ciphertext (it gets the first outcome), else
// ErrKeyUsed. Refusals of any kind write nothing but the claim, so one
// payment's refusal never fails the others. If the batch's transaction
// fails anyway (a statement error, the audit trail down), each of its
// payments runs again alone in its own transaction, whose outcome is the
// reference.
//
// On SQLite one committer runs (the database has one writer); on
// PostgreSQL a few run side by side (claims are inserted in key order and
// accounts locked in ID order, so two batches cannot deadlock).

const (
	maxPayBatch   = 256
	pgPayWorkers  = 2
	gatewayCache  = 4096
	keyBatchCache = 4096
)

// payJob is one payment whose cryptography verified, waiting for a
// committer.
type payJob struct {
	ctx     context.Context
	phone   string // "" skips the phone binding
	idemKey string
	keyID   string
	unit    int
	ref     string
	gi      string
	pubDER  []byte // the gateway key its signature verified under
	m       PaymentInfo
	cur     money.Currency
	reqHash []byte
	now     time.Time

	// Set while deciding.
	account, merchantAccount string
	first                    *payJob // the batch's earlier payment of the same unit
	claimed                  bool
	refused                  error
	transferID               string

	// The outcome.
	rc  *Receipt
	err error
}

// newPayCommitter starts the committers: one on SQLite, pgPayWorkers on
// PostgreSQL. Do hands a job to them and waits for its outcome (set in the
// job); once a committer took it, it always answers, even if j.ctx ends: an
// acknowledged payment is a committed one.
func newPayCommitter(p *PPS) *sqldb.GroupCommitter[*payJob] {
	n := 1
	if p.cfg.DB.Dialect == sqldb.Postgres {
		n = pgPayWorkers
	}
	return sqldb.NewGroupCommitter(n, maxPayBatch, p.runPayBatch)
}

// runPayBatch decides and writes batch, setting every job's outcome.
func (p *PPS) runPayBatch(batch []*payJob) {
	if p.batchHook != nil {
		p.batchHook(len(batch))
	}
	live := make([]*payJob, 0, len(batch))
	for _, j := range batch {
		if err := j.ctx.Err(); err != nil {
			j.err = err
			continue
		}
		live = append(live, j)
	}
	if len(live) == 0 {
		return
	}
	err := p.payTx(live)
	if err == nil {
		return
	}
	if len(live) == 1 {
		live[0].rc, live[0].err = nil, err
		return
	}
	p.cfg.Log.Warn("qmsp: payment batch failed; running its payments one by one", "payments", len(live), "err", err)
	for _, j := range live {
		if err := p.payTx([]*payJob{j}); err != nil {
			j.rc, j.err = nil, err
		}
	}
}

// payTx runs jobs in one transaction; on error nothing of it is kept and
// the jobs' outcomes are not to be used.
func (p *PPS) payTx(jobs []*payJob) error {
	ctx, cancel := sqldb.BatchContext(jobs, payJobContext)
	defer cancel()
	return p.cfg.DB.InTx(ctx, func(tx *sql.Tx) error { return p.decidePayments(ctx, tx, jobs) })
}

// payJobContext is the context of j's caller (for sqldb.BatchContext).
func payJobContext(j *payJob) context.Context { return j.ctx }

// decidePayments is one attempt at the batch inside tx (steps 1–4 above).
func (p *PPS) decidePayments(ctx context.Context, tx *sql.Tx, jobs []*payJob) error {
	for _, j := range jobs {
		j.rc, j.err = nil, nil
		j.account, j.merchantAccount, j.first, j.claimed, j.refused, j.transferID = "", "", nil, false, nil, ""
	}
	// 1. Gateways and payers as committed (looked up by lists).
	if p.cfg.DB.Dialect == sqldb.Postgres {
		if _, err := tx.ExecContext(ctx, sqldb.IndexPlans); err != nil {
			return fmt.Errorf("qmsp: batch: %w", err)
		}
	}
	gws, err := p.readGateways(ctx, tx, jobs)
	if err != nil {
		return err
	}
	payers, err := p.readPayers(ctx, tx, jobs)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		g, ok := gws[j.gi]
		switch {
		case !ok || g.status != "active":
			p.forgetGateway(j.gi)
			j.err = fmt.Errorf("%w: %s", ErrUnknownGateway, j.gi)
			continue
		case !bytes.Equal(g.pubDER, j.pubDER):
			p.forgetGateway(j.gi)
			j.err = fmt.Errorf("%w: gateway %s has a new key", ErrBadSignature, j.gi)
			continue
		case g.merchant != j.m.Merchant:
			p.forgetGateway(j.gi)
			j.err = fmt.Errorf("%w: M names merchant %d, gateway belongs to %d", ErrMerchant, j.m.Merchant, g.merchant)
			continue
		}
		b, ok := payers[j.m.Payer]
		if !ok || (j.phone != "" && j.phone != b.phone) {
			j.err = fmt.Errorf("%w: payer %d", ErrUnknownPayer, j.m.Payer)
			continue
		}
		j.account, j.merchantAccount = b.account, g.account
	}
	// 2. Claims: the first payment of each unit in the batch is inserted.
	first := make(map[string]*payJob, len(jobs))
	var cands []*payJob
	for _, j := range jobs {
		if j.err != nil {
			continue
		}
		if f, ok := first[j.ref]; ok {
			j.first = f
			continue
		}
		first[j.ref] = j
		cands = append(cands, j)
	}
	if err := p.insertClaims(ctx, tx, cands); err != nil {
		return err
	}
	// 3. The money, for the claimed units, in batch order.
	var ts []ledger.TxTransfer
	var paying []*payJob
	for _, j := range cands {
		if !j.claimed {
			continue
		}
		paying = append(paying, j)
		ts = append(ts, ledger.TxTransfer{Ctx: j.ctx, Request: ledger.TransferRequest{
			IdempotencyKey: "qmsp/" + j.ref, From: j.account, To: j.merchantAccount, Amount: j.m.Amount, Currency: j.cur.Code,
			Memo: "QMSP payment via gateway " + j.gi,
		}})
	}
	if len(ts) > 0 {
		if err := p.cfg.Ledger.TransfersTx(ctx, tx, ts); err != nil {
			return err
		}
	}
	// 4. The claims' outcomes and the audit records.
	var entries []audit.Entry
	for i, j := range paying {
		if ts[i].Err != nil {
			j.refused = ts[i].Err
			continue
		}
		j.transferID = ts[i].Transfer.ID
		entries = append(entries, audit.Entry{Actor: phoneOr(j.phone), Event: "qmsp.pay", Outcome: "success", Origin: "qmsp", Resource: j.gi,
			Details: map[string]string{"key": j.ref, "amount": j.cur.Format(j.m.Amount) + " " + j.cur.Code, "payer": strconv.FormatUint(j.m.Payer, 10), "transfer": j.transferID}})
	}
	if err := p.settleClaims(ctx, tx, paying); err != nil {
		return err
	}
	if err := recordAll(ctx, tx, p.cfg.Audit, p.cfg.DB.Dialect, entries); err != nil {
		return err
	}
	// Outcomes, the units lost to a stored claim included.
	stored := map[string]*storedClaim{}
	for _, j := range jobs {
		if j.err != nil {
			continue
		}
		f := j
		if j.first != nil {
			f = j.first
		}
		if f.claimed {
			if j != f && (j.idemKey == "" || !bytes.Equal(j.reqHash, f.reqHash)) {
				j.err = fmt.Errorf("%w: %s", ErrKeyUsed, j.ref)
				continue
			}
			j.outcome(f.transferID, f.refused)
			continue
		}
		sc, ok := stored[j.ref]
		if !ok {
			if sc, err = p.readClaim(ctx, tx, j); err != nil {
				return err
			}
			stored[j.ref] = sc
		}
		if j.idemKey == "" || !bytes.Equal(sc.reqHash, j.reqHash) {
			j.err = fmt.Errorf("%w: %s", ErrKeyUsed, j.ref)
			continue
		}
		// The same client retrying: the first outcome.
		var refused error
		if sc.state != "paid" {
			refused = errors.New(sc.reason)
		}
		j.outcome(sc.transferID, refused)
	}
	return nil
}

// outcome sets j's result: a receipt for transfer id, or the ledger's
// refusal.
func (j *payJob) outcome(transferID string, refused error) {
	if refused != nil {
		j.err = fmt.Errorf("%w: %w", ErrRefused, refused)
		return
	}
	j.rc = &Receipt{KeyRef: j.ref, TransferID: transferID, Payer: j.m.Payer, Merchant: j.m.Merchant, Amount: j.m.Amount, Currency: j.cur.Code}
}

type gatewayRow struct {
	merchant uint32
	account  string
	pubDER   []byte
	status   string
}

type payerRow struct{ account, phone string }

type storedClaim struct {
	reqHash                   []byte
	state, transferID, reason string
}

// Statements of a batch: lists travel as one JSON text (SQLite) or as
// arrays (PostgreSQL), so each statement's text is the same whatever the
// batch size.
var (
	sqliteGateways = `SELECT gi, merchant, merchant_account, public_key, status FROM qmsp_pps_gateways WHERE gi IN (SELECT value FROM json_each(?))`
	pgGateways     = `SELECT gi, merchant, merchant_account, public_key, status FROM qmsp_pps_gateways WHERE gi = ANY($1::text[])`
	sqlitePayers   = `SELECT payer, account, phone FROM qmsp_pps_payers WHERE payer IN (SELECT value FROM json_each(?))`
	pgPayers       = `SELECT payer, account, phone FROM qmsp_pps_payers WHERE payer = ANY($1::bigint[])`
	sqliteClaims   = `INSERT INTO qmsp_payments (key_id, unit, gi, payer, amount, currency, state, request_hash, created_at)
		SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, 'paid', unhex(value->>6), value->>7 FROM json_each(?) WHERE true
		ON CONFLICT (key_id, unit) DO NOTHING RETURNING key_id, unit`
	pgClaims = `INSERT INTO qmsp_payments (key_id, unit, gi, payer, amount, currency, state, request_hash, created_at)
		SELECT k, u, g, p, a, c, 'paid', h, t
		FROM unnest($1::text[], $2::integer[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::bytea[], $8::bigint[])
			WITH ORDINALITY AS x (k, u, g, p, a, c, h, t, n)
		ORDER BY n
		ON CONFLICT (key_id, unit) DO NOTHING RETURNING key_id, unit`
	sqliteSettle = `UPDATE qmsp_payments SET state = v.value->>2, transfer_id = v.value->>3, reason = v.value->>4
		FROM json_each(?) AS v WHERE qmsp_payments.key_id = v.value->>0 AND qmsp_payments.unit = v.value->>1`
	pgSettle = `UPDATE qmsp_payments q SET state = u.s, transfer_id = u.t, reason = u.r
		FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[], $5::text[]) AS u (k, n, s, t, r)
		WHERE q.key_id = u.k AND q.unit = u.n`
	claimRow = `SELECT request_hash, state, transfer_id, reason FROM qmsp_payments WHERE key_id = ? AND unit = ?`
)

func (p *PPS) readGateways(ctx context.Context, tx *sql.Tx, jobs []*payJob) (map[string]gatewayRow, error) {
	var gis []string
	seen := map[string]bool{}
	for _, j := range jobs {
		if !seen[j.gi] {
			seen[j.gi] = true
			gis = append(gis, j.gi)
		}
	}
	var rows *sql.Rows
	var err error
	if p.cfg.DB.Dialect == sqldb.SQLite {
		rows, err = p.query(ctx, tx, sqliteGateways, jsonText(gis))
	} else {
		rows, err = tx.QueryContext(ctx, pgGateways, gis)
	}
	if err != nil {
		return nil, fmt.Errorf("qmsp: read gateways: %w", err)
	}
	defer rows.Close()
	out := make(map[string]gatewayRow, len(gis))
	for rows.Next() {
		var gi string
		var merchant int64
		var g gatewayRow
		if err := rows.Scan(&gi, &merchant, &g.account, &g.pubDER, &g.status); err != nil {
			return nil, fmt.Errorf("qmsp: read gateways: %w", err)
		}
		g.merchant = uint32(merchant)
		out[gi] = g
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("qmsp: read gateways: %w", err)
	}
	return out, nil
}

func (p *PPS) readPayers(ctx context.Context, tx *sql.Tx, jobs []*payJob) (map[uint64]payerRow, error) {
	var ids []int64
	seen := map[uint64]bool{}
	for _, j := range jobs {
		if j.err == nil && !seen[j.m.Payer] && j.m.Payer <= math.MaxInt64 {
			seen[j.m.Payer] = true
			ids = append(ids, int64(j.m.Payer))
		}
	}
	out := make(map[uint64]payerRow, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	var rows *sql.Rows
	var err error
	if p.cfg.DB.Dialect == sqldb.SQLite {
		rows, err = p.query(ctx, tx, sqlitePayers, jsonText(ids))
	} else {
		rows, err = tx.QueryContext(ctx, pgPayers, ids)
	}
	if err != nil {
		return nil, fmt.Errorf("qmsp: read payers: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var b payerRow
		if err := rows.Scan(&id, &b.account, &b.phone); err != nil {
			return nil, fmt.Errorf("qmsp: read payers: %w", err)
		}
		out[uint64(id)] = b
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("qmsp: read payers: %w", err)
	}
	return out, nil
}

// insertClaims inserts the claims of cands (one per unit) and marks the
// ones inserted; the others' units were claimed before.
func (p *PPS) insertClaims(ctx context.Context, tx *sql.Tx, cands []*payJob) error {
	if len(cands) == 0 {
		return nil
	}
	// Key order: two PostgreSQL batches claiming the same units wait for
	// each other in one order, never in a cycle.
	sorted := append([]*payJob(nil), cands...)
	sort.Slice(sorted, func(a, b int) bool {
		if sorted[a].keyID != sorted[b].keyID {
			return sorted[a].keyID < sorted[b].keyID
		}
		return sorted[a].unit < sorted[b].unit
	})
	var rows *sql.Rows
	var err error
	if p.cfg.DB.Dialect == sqldb.SQLite {
		vals := make([][]any, len(sorted))
		for i, j := range sorted {
			vals[i] = []any{j.keyID, j.unit, j.gi, int64(j.m.Payer), j.m.Amount, j.cur.Code, hex.EncodeToString(j.reqHash), j.now.UnixNano()}
		}
		rows, err = p.query(ctx, tx, sqliteClaims, jsonText(vals))
	} else {
		n := len(sorted)
		k, g, c := make([]string, n), make([]string, n), make([]string, n)
		u := make([]int32, n)
		py, a, t := make([]int64, n), make([]int64, n), make([]int64, n)
		h := make([][]byte, n)
		for i, j := range sorted {
			k[i], u[i], g[i], py[i], a[i], c[i], h[i], t[i] = j.keyID, int32(j.unit), j.gi, int64(j.m.Payer), j.m.Amount, j.cur.Code, j.reqHash, j.now.UnixNano()
		}
		rows, err = tx.QueryContext(ctx, pgClaims, k, u, g, py, a, c, h, t)
	}
	if err != nil {
		return fmt.Errorf("qmsp: claim key units: %w", err)
	}
	defer rows.Close()
	byRef := make(map[string]*payJob, len(cands))
	for _, j := range cands {
		byRef[j.ref] = j
	}
	for rows.Next() {
		var keyID string
		var unit int
		if err := rows.Scan(&keyID, &unit); err != nil {
			return fmt.Errorf("qmsp: claim key units: %w", err)
		}
		j := byRef[keyID+"/"+strconv.Itoa(unit)]
		if j == nil {
			return fmt.Errorf("qmsp: claim key units: the database claimed %s/%d, which no payment named", keyID, unit)
		}
		j.claimed = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("qmsp: claim key units: %w", err)
	}
	return nil
}

// settleClaims records the outcome of each claimed unit: its transfer, or
// refused with the ledger's reason (the unit stays burned).
func (p *PPS) settleClaims(ctx context.Context, tx *sql.Tx, paying []*payJob) error {
	if len(paying) == 0 {
		return nil
	}
	n := len(paying)
	state := func(j *payJob) (string, string) {
		if j.refused != nil {
			return "refused", j.refused.Error()
		}
		return "paid", ""
	}
	var res sql.Result
	var err error
	if p.cfg.DB.Dialect == sqldb.SQLite {
		vals := make([][]any, n)
		for i, j := range paying {
			s, r := state(j)
			vals[i] = []any{j.keyID, j.unit, s, j.transferID, r}
		}
		res, err = p.exec(ctx, tx, sqliteSettle, jsonText(vals))
	} else {
		k, s, t, r := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		u := make([]int32, n)
		for i, j := range paying {
			k[i], u[i], t[i] = j.keyID, int32(j.unit), j.transferID
			s[i], r[i] = state(j)
		}
		res, err = tx.ExecContext(ctx, pgSettle, k, u, s, t, r)
	}
	if err != nil {
		return fmt.Errorf("qmsp: record payments: %w", err)
	}
	if got, err := res.RowsAffected(); err != nil || got != int64(n) {
		return fmt.Errorf("qmsp: record payments: updated %d rows of %d (%v)", got, n, err)
	}
	return nil
}

func (p *PPS) readClaim(ctx context.Context, tx *sql.Tx, j *payJob) (*storedClaim, error) {
	var c storedClaim
	err := tx.QueryRowContext(ctx, p.cfg.DB.Rebind(claimRow), j.keyID, j.unit).Scan(&c.reqHash, &c.state, &c.transferID, &c.reason)
	if err != nil {
		return nil, fmt.Errorf("qmsp: read the claim of %s: %w", j.ref, err)
	}
	return &c, nil
}

// recordAll appends entries inside tx in one write when the recorder can
// (*audit.Log), else one by one.
func recordAll(ctx context.Context, tx *sql.Tx, rec audit.Recorder, dialect sqldb.Dialect, entries []audit.Entry) error {
	if rec == nil || len(entries) == 0 {
		return nil
	}
	if dialect == sqldb.Postgres {
		if ba, ok := rec.(interface {
			AppendAllSQL([]audit.Entry) (string, []any, error)
		}); ok {
			q, args, err := ba.AppendAllSQL(entries)
			if err == nil {
				_, err = tx.ExecContext(ctx, q, args...)
			}
			return err
		}
	} else if br, ok := rec.(interface {
		RecordAllTx(context.Context, *sql.Tx, []audit.Entry) error
	}); ok {
		return br.RecordAllTx(ctx, tx, entries)
	}
	for _, e := range entries {
		if err := rec.RecordTx(ctx, tx, e); err != nil {
			return err
		}
	}
	return nil
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // strings, numbers and arrays of them always marshal
	}
	return string(b)
}

// query and exec run q on tx through a statement prepared once (SQLite,
// where preparing is a large part of a statement's cost; PostgreSQL's
// driver caches prepared statements itself).
func (p *PPS) query(ctx context.Context, tx *sql.Tx, q string, args ...any) (*sql.Rows, error) {
	st, err := p.stmt(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (p *PPS) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	st, err := p.stmt(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (p *PPS) stmt(ctx context.Context, tx *sql.Tx, q string) (*sql.Stmt, error) {
	p.stmtMu.Lock()
	st, ok := p.stmts[q]
	if !ok {
		var err error
		if st, err = p.cfg.DB.PrepareContext(ctx, q); err != nil {
			p.stmtMu.Unlock()
			return nil, err
		}
		p.stmts[q] = st
	}
	p.stmtMu.Unlock()
	return tx.StmtContext(ctx, st), nil
}

// gatewayKey is what the PPS keeps of a registered gateway to check its
// codes' signatures without a read and a parse per payment. The
// committer re-reads the gateway in the payment's transaction and refuses
// the payment if the key, the merchant or the status changed meanwhile.
type gatewayKey struct {
	merchant uint32
	pubDER   []byte
	pub      *ecdsa.PublicKey
}

func (p *PPS) gatewayKey(ctx context.Context, gi string) (*gatewayKey, error) {
	p.cacheMu.RLock()
	g := p.gwKeys[gi]
	p.cacheMu.RUnlock()
	if g != nil {
		return g, nil
	}
	row, pub, err := p.gateway(ctx, gi)
	if err != nil {
		return nil, err
	}
	g = &gatewayKey{merchant: row.merchant, pubDER: row.pubDER, pub: pub}
	p.cacheMu.Lock()
	boundedPut(p.gwKeys, gi, g, gatewayCache)
	p.cacheMu.Unlock()
	return g, nil
}

func (p *PPS) forgetGateway(gi string) {
	p.cacheMu.Lock()
	delete(p.gwKeys, gi)
	p.cacheMu.Unlock()
}

// keyBatch returns quantum key batch keyID split into units. The batch
// never changes once fetched (the claims, not the batch, say which units
// are spent), so it is kept in memory after its first use instead of being
// read and unsealed for every payment.
func (p *PPS) keyBatch(ctx context.Context, keyID string) (*Batch, error) {
	p.cacheMu.RLock()
	b := p.batches[keyID]
	p.cacheMu.RUnlock()
	if b != nil {
		return b, nil
	}
	qk, err := p.material(ctx, keyID)
	if err != nil {
		return nil, err
	}
	b, err = DivQ(qk)
	clear(qk)
	if err != nil {
		return nil, err
	}
	p.cacheMu.Lock()
	boundedPut(p.batches, keyID, b, keyBatchCache)
	p.cacheMu.Unlock()
	return b, nil
}

// boundedPut stores v under k, first dropping an arbitrary entry when m
// holds max.
func boundedPut[V any](m map[string]V, k string, v V, max int) {
	if _, ok := m[k]; !ok && len(m) >= max {
		for old := range m {
			delete(m, old)
			break
		}
	}
	m[k] = v
}
