//go:build !wasm

package selfverify

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/qshield/qshield/sqldb"
)

// depositDigest identifies a deposit's content (vendor, nonce, payments) for
// idempotent retries: a retry may carry a fresh timestamp and signature.
func depositDigest(req *DepositRequest) string {
	c := newCanon("qshield-sv-deposit-content-v1").str(req.Vendor).str(req.Nonce).i64(int64(len(req.Items)))
	for _, it := range req.Items {
		c = c.str(it.Serial).str(it.Ref).str(it.Item).i64(it.Amount)
	}
	return digestHex(c)
}

// Deposit verifies V's signed batch and marks each valid payment deposited (a
// payment can be deposited once); each token's holder is then asked, under
// K_UN, to confirm. A payment that is unknown, another vendor's, already
// deposited or whose token is settled is rejected individually (listed in
// Rejected, audited); when every payment is rejected the whole request fails
// with the first reason. No money moves until the user agrees (Confirm).
// Retrying the same nonce with the same payments returns the same deposit.
func (o *Operator) Deposit(ctx context.Context, req DepositRequest) (*DepositResponse, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	now := o.now()
	if err := o.authenticateDeposit(ctx, &req, now); err != nil {
		return nil, err
	}
	digest := depositDigest(&req)
	if prev, err := o.previousDeposit(ctx, &req, digest); prev != nil || err != nil {
		return prev, err
	}
	id, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	b := newDepositBatch(o, id, &req, now.Add(o.cfg.ConfirmWindow))
	err = o.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := b.run(ctx, tx); err != nil {
			return err
		}
		rj, _ := json.Marshal(b.rejected)
		_, err := tx.ExecContext(ctx, o.db.Rebind(`INSERT INTO sv_deposits (id, vendor, nonce, digest, rejected, created_at) VALUES (?, ?, ?, ?, ?, ?)`),
			id, req.Vendor, req.Nonce, digest, string(rj), ms(now))
		return err
	})
	if errors.Is(err, errRollback) {
		return nil, o.refuse(ctx, req.Vendor, "selfverify.deposit", req.Vendor, b.firstReason)
	}
	if sqldb.IsUniqueViolation(err) { // concurrent identical deposit
		return o.Deposit(ctx, req)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: deposit: %w", err)
	}
	b.audit(ctx)
	return &DepositResponse{ID: id, Vendor: req.Vendor, Confirmations: b.confs, Rejected: b.rejected}, nil
}

// authenticateDeposit is step 2's first half: the vendor is registered, the
// batch is signed with d_V and fresh. A failure is audited and returned.
func (o *Operator) authenticateDeposit(ctx context.Context, req *DepositRequest, now time.Time) error {
	it, err := o.identity(ctx, req.Vendor)
	if err != nil || it.role != RoleVendor {
		return o.refuse(ctx, req.Vendor, "selfverify.deposit", req.Vendor, fmt.Errorf("%w: %s", ErrNotRegistered, req.Vendor))
	}
	q, err := o.publicKey(it)
	if err != nil {
		return err
	}
	if !q.Verify(req.signingBytes(), req.Sig) {
		return o.refuse(ctx, req.Vendor, "selfverify.deposit", req.Vendor, ErrBadSignature)
	}
	if err := fresh(now, req.Timestamp, o.cfg.MaxClockSkew); err != nil {
		return o.refuse(ctx, req.Vendor, "selfverify.deposit", req.Vendor, err)
	}
	return nil
}

// previousDeposit returns the deposit already made with req's nonce (a
// retry), refuses the nonce's reuse for other payments, and returns nil, nil
// for a new nonce.
func (o *Operator) previousDeposit(ctx context.Context, req *DepositRequest, digest string) (*DepositResponse, error) {
	var prevID, prevVendor, prevDigest string
	err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT id, vendor, digest FROM sv_deposits WHERE nonce = ?`), req.Nonce).Scan(&prevID, &prevVendor, &prevDigest)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: deposit: %w", err)
	}
	if prevVendor != req.Vendor || prevDigest != digest {
		return nil, o.refuse(ctx, req.Vendor, "selfverify.deposit", req.Vendor, ErrReplay)
	}
	return o.DepositStatus(ctx, prevID)
}

// depositBatch is one deposit request being applied in a transaction: its
// payments grouped by token, and what the transaction decided for them.
type depositBatch struct {
	o        *Operator
	id       string
	vendor   string
	deadline time.Time
	bySerial map[string][]DepositItem
	serials  []string // sorted: tokens are locked in a fixed order

	// Set by run (reset on each attempt of the transaction).
	confs       []ConfirmationStatus
	rejected    []RejectedItem
	firstReason error
}

func newDepositBatch(o *Operator, id string, req *DepositRequest, deadline time.Time) *depositBatch {
	b := &depositBatch{o: o, id: id, vendor: req.Vendor, deadline: deadline, bySerial: map[string][]DepositItem{}}
	for _, item := range req.Items {
		b.bySerial[item.Serial] = append(b.bySerial[item.Serial], item)
	}
	for s := range b.bySerial {
		b.serials = append(b.serials, s)
	}
	sort.Strings(b.serials)
	return b
}

// reject lists item as rejected for reason (the first reason is the whole
// request's refusal when nothing is accepted).
func (b *depositBatch) reject(item DepositItem, reason error) {
	if b.firstReason == nil {
		b.firstReason = reason
	}
	code := "rejected"
	if c, ok := codes.Lookup(reason); ok {
		code = c.Code
	}
	b.rejected = append(b.rejected, RejectedItem{Ref: item.Ref, Serial: item.Serial, Code: code, Reason: reason.Error()})
}

// run applies the batch in tx, token by token; it returns errRollback when
// no payment was accepted.
func (b *depositBatch) run(ctx context.Context, tx *sql.Tx) error {
	b.confs, b.rejected, b.firstReason = b.confs[:0], b.rejected[:0], nil
	for _, serial := range b.serials {
		if err := b.token(ctx, tx, serial); err != nil {
			return err
		}
	}
	if len(b.confs) == 0 {
		return errRollback
	}
	return nil
}

// token deposits the payments made with one token: the token must be active
// or closed; each payment must be this vendor's reservation, still reserved;
// the accepted ones go to one confirmation sealed under K_UN.
func (b *depositBatch) token(ctx context.Context, tx *sql.Tx, serial string) error {
	t, err := b.o.loadToken(ctx, tx, serial, true)
	if err != nil && !errors.Is(err, ErrTokenNotFound) {
		return err
	}
	if t == nil || (t.state != "active" && t.state != "closed") {
		reason := fmt.Errorf("%w: token %s", ErrUnknownPayment, serial)
		if t != nil {
			reason = fmt.Errorf("%w: token %s is %s", ErrTokenClosed, serial, t.state)
		}
		for _, item := range b.bySerial[serial] {
			b.reject(item, reason)
		}
		return nil
	}
	cid, err := randomHex(16)
	if err != nil {
		return err
	}
	var accepted []DepositItem
	var total int64
	for _, item := range b.bySerial[serial] {
		ok, err := b.claim(ctx, tx, serial, cid, item)
		if err != nil {
			return err
		}
		if ok {
			accepted = append(accepted, item)
			total += item.Amount
		}
	}
	if len(accepted) == 0 {
		return nil
	}
	return b.askConfirmation(ctx, tx, t, cid, serial, accepted, total)
}

// claim marks one payment's reservation deposited, or rejects the item.
func (b *depositBatch) claim(ctx context.Context, tx *sql.Tx, serial, cid string, item DepositItem) (bool, error) {
	o := b.o
	var vendor, state string
	var amount int64
	err := tx.QueryRowContext(ctx, o.db.Rebind(`SELECT vendor, amount, state FROM sv_reservations WHERE ref = ? AND serial = ?`+o.forUpdate()),
		item.Ref, serial).Scan(&vendor, &amount, &state)
	switch {
	case errors.Is(err, sql.ErrNoRows) || (err == nil && (vendor != b.vendor || amount != item.Amount)):
		b.reject(item, fmt.Errorf("%w: %s", ErrUnknownPayment, item.Ref))
		return false, nil
	case err != nil:
		return false, err
	case state != "reserved":
		b.reject(item, fmt.Errorf("%w: %s is %s", ErrDoubleDeposit, item.Ref, state))
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_reservations SET state = 'deposited', deposit_id = ?, confirmation_id = ? WHERE ref = ?`),
		b.id, cid, item.Ref); err != nil {
		return false, err
	}
	return true, nil
}

// askConfirmation is step 3: the accepted payments of one token, sealed for
// its holder under K_UN, await the user's answer until the deadline.
func (b *depositBatch) askConfirmation(ctx context.Context, tx *sql.Tx, t *tokenRow, cid, serial string, accepted []DepositItem, total int64) error {
	o := b.o
	kun, err := o.kun(t)
	if err != nil {
		return err
	}
	details := ConfirmationDetails{ID: cid, Serial: serial, Vendor: b.vendor, Items: accepted, Total: total, Deadline: ms(b.deadline)}
	pt, _ := json.Marshal(details)
	ct, err := sealRandom(o.curve, kun, pt, confirmAAD(cid, serial))
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, o.db.Rebind(`INSERT INTO sv_confirmations (id, deposit_id, serial, vendor, amount, ciphertext, deadline, state)
		VALUES (?, ?, ?, ?, ?, ?, ?, 'awaiting')`), cid, b.id, serial, b.vendor, total, hex.EncodeToString(ct), ms(b.deadline)); err != nil {
		return err
	}
	b.confs = append(b.confs, ConfirmationStatus{ID: cid, Serial: serial, Amount: total, State: StateAwaiting, Deadline: ms(b.deadline)})
	return nil
}

// audit records each rejected payment and each confirmation asked for,
// after the commit.
func (b *depositBatch) audit(ctx context.Context) {
	for _, r := range b.rejected {
		b.o.audit(ctx, AuditEvent{Actor: b.vendor, Event: "selfverify.deposit.item", Outcome: "denied", Resource: r.Ref,
			Details: map[string]any{"deposit": b.id, "serial": r.Serial, "reason": r.Reason}})
	}
	for _, c := range b.confs {
		b.o.audit(ctx, AuditEvent{Actor: b.vendor, Event: "selfverify.deposit", Outcome: "success", Resource: c.Serial,
			Details: map[string]any{"deposit": b.id, "confirmation": c.ID, "amount": c.Amount}})
	}
}

var errRollback = errors.New("selfverify: rollback")

// DepositStatus returns a deposit with the state of its confirmations.
func (o *Operator) DepositStatus(ctx context.Context, id string) (*DepositResponse, error) {
	var vendor, rj string
	err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT vendor, rejected FROM sv_deposits WHERE id = ?`), id).Scan(&vendor, &rj)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: deposit %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: deposit status: %w", err)
	}
	rows, err := o.db.QueryContext(ctx, o.db.Rebind(`SELECT id, serial, amount, state, deadline, transfer_id FROM sv_confirmations WHERE deposit_id = ? ORDER BY serial`), id)
	if err != nil {
		return nil, fmt.Errorf("selfverify: deposit status: %w", err)
	}
	defer rows.Close()
	out := &DepositResponse{ID: id, Vendor: vendor}
	if err := json.Unmarshal([]byte(rj), &out.Rejected); err != nil {
		return nil, fmt.Errorf("selfverify: deposit %s: stored rejections: %w", id, err)
	}
	for rows.Next() {
		var c ConfirmationStatus
		var tr sql.NullString
		if err := rows.Scan(&c.ID, &c.Serial, &c.Amount, &c.State, &c.Deadline, &tr); err != nil {
			return nil, err
		}
		c.TransferID = tr.String
		out.Confirmations = append(out.Confirmations, c)
	}
	return out, rows.Err()
}
