//go:build !wasm

package selfverify

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/qshield/qshield/ledger"
)

// CloseToken ends a token at its holder's request (signed with t): no further
// payments are reserved, and the rest of W goes back to the user once every
// deposited payment is decided (at once when nothing is outstanding).
func (o *Operator) CloseToken(ctx context.Context, req CloseRequest) (*TokenStatus, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	t, err := o.loadToken(ctx, o.db, req.Serial, false)
	if err != nil {
		return nil, err
	}
	pk, err := o.curve.NewPublicKey(t.key)
	if err != nil {
		return nil, err
	}
	if !pk.Verify(req.signingBytes(), req.Sig) {
		return nil, o.refuse(ctx, "user:"+req.Serial, "selfverify.close", req.Serial, ErrBadSignature)
	}
	if err := fresh(o.now(), req.Timestamp, o.cfg.MaxClockSkew); err != nil {
		return nil, o.refuse(ctx, "user:"+req.Serial, "selfverify.close", req.Serial, err)
	}
	if _, err := o.db.ExecContext(ctx, o.db.Rebind(`UPDATE sv_tokens SET state = 'closed', closed_at = ? WHERE serial = ? AND state = 'active'`),
		ms(o.now()), req.Serial); err != nil {
		return nil, fmt.Errorf("selfverify: close: %w", err)
	}
	if err := o.refundIfDone(ctx, req.Serial); err != nil {
		return nil, err
	}
	return o.TokenStatus(ctx, req.Serial)
}

// Sweep does the operator's timed work: it expires unanswered confirmations
// (no money moves; audited), retries interrupted settlements, fundings and
// refunds, and refunds the rest of W of tokens that are expired or closed and
// have nothing outstanding (or whose deposit grace period is over).
func (o *Operator) Sweep(ctx context.Context) error {
	if err := o.expireConfirmations(ctx); err != nil {
		return err
	}
	ids, err := o.strings(ctx, `SELECT id FROM sv_confirmations WHERE state = 'agreed'`)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		errs = append(errs, o.settle(ctx, id))
	}
	funding, err := o.strings(ctx, `SELECT serial FROM sv_tokens WHERE state = 'funding' AND issued_at < ?`, ms(o.now().Add(-time.Minute)))
	if err != nil {
		return err
	}
	for _, s := range funding {
		if _, err := o.fund(ctx, s); err != nil && !errors.Is(err, ErrInsufficientFunds) {
			errs = append(errs, err)
		}
	}
	now := ms(o.now())
	serials, err := o.strings(ctx, `SELECT serial FROM sv_tokens WHERE state = 'refunding' OR state = 'closed' OR (state = 'active' AND expires_at <= ?)`, now)
	if err != nil {
		return err
	}
	for _, s := range serials {
		errs = append(errs, o.refundIfDone(ctx, s))
	}
	return errors.Join(errs...)
}

// Run calls Sweep every interval until ctx is done.
func (o *Operator) Run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = 30 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := o.Sweep(ctx); err != nil {
				o.log.Error("selfverify: sweep", "err", err)
			}
		}
	}
}

func (o *Operator) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := o.db.QueryContext(ctx, o.db.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("selfverify: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func (o *Operator) expireConfirmations(ctx context.Context) error {
	now := ms(o.now())
	type exp struct {
		id, serial, vendor string
		amount             int64
	}
	var expired []exp
	err := o.db.InTx(ctx, func(tx *sql.Tx) error {
		expired = expired[:0]
		rows, err := tx.QueryContext(ctx, o.db.Rebind(`SELECT id, serial, vendor, amount FROM sv_confirmations WHERE state = 'awaiting' AND deadline <= ?`), now)
		if err != nil {
			return err
		}
		for rows.Next() {
			var e exp
			if err := rows.Scan(&e.id, &e.serial, &e.vendor, &e.amount); err != nil {
				rows.Close()
				return err
			}
			expired = append(expired, e)
		}
		rows.Close()
		for _, e := range expired {
			if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_confirmations SET state = 'expired', decided_at = ? WHERE id = ? AND state = 'awaiting'`), now, e.id); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_reservations SET state = 'unconfirmed' WHERE confirmation_id = ?`), e.id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("selfverify: expire confirmations: %w", err)
	}
	for _, e := range expired {
		o.audit(ctx, AuditEvent{Actor: "operator", Event: "selfverify.deposit.unconfirmed", Outcome: "denied", Resource: e.id,
			Details: map[string]any{"vendor": e.vendor, "amount": e.amount, "serial": e.serial, "reason": "no answer from the user before the deadline"}})
	}
	return nil
}

// refundIfDone returns W − settled to the user once a closed or expired token
// has nothing outstanding, or its grace period is over.
func (o *Operator) refundIfDone(ctx context.Context, serial string) error {
	now := o.now()
	var ready bool
	var t *tokenRow
	err := o.db.InTx(ctx, func(tx *sql.Tx) error {
		ready = false
		var err error
		if t, err = o.loadToken(ctx, tx, serial, true); err != nil {
			return err
		}
		if t.state == "refunding" {
			ready = true
			return nil
		}
		end := t.expiresAt
		if t.state == "closed" && t.closedAt.Valid && t.closedAt.Int64 < end {
			end = t.closedAt.Int64
		}
		if !(t.state == "closed" || (t.state == "active" && end <= ms(now))) {
			return nil
		}
		var open, undecided int
		if err := tx.QueryRowContext(ctx, o.db.Rebind(`SELECT COUNT(*) FROM sv_reservations WHERE serial = ? AND state IN ('reserved', 'deposited')`), serial).Scan(&open); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, o.db.Rebind(`SELECT COUNT(*) FROM sv_confirmations WHERE serial = ? AND state IN ('awaiting', 'agreed')`), serial).Scan(&undecided); err != nil {
			return err
		}
		graceOver := ms(now) >= end+o.cfg.DepositGrace.Milliseconds()
		if undecided > 0 || (open > 0 && !graceOver) {
			return nil
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_reservations SET state = 'lapsed' WHERE serial = ? AND state = 'reserved'`), serial); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_tokens SET state = 'refunding' WHERE serial = ?`), serial); err != nil {
			return err
		}
		ready = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("selfverify: refund %s: %w", serial, err)
	}
	if !ready {
		return nil
	}
	amount := t.w - t.settled
	err = o.moveMoney(ctx, func(tx *sql.Tx) (*AuditEvent, error) {
		t, err := o.loadToken(ctx, tx, serial, true)
		if err != nil {
			return nil, err
		}
		if t.state != "refunding" {
			return nil, nil // refunded concurrently
		}
		var trID string
		if amount > 0 {
			tr, err := o.cfg.Ledger.TransferTx(ctx, tx, ledger.TransferRequest{IdempotencyKey: "selfverify:refund:" + serial,
				From: o.escrow(t.currency), To: t.account, Amount: amount, Currency: t.currency, Memo: "selfverify token " + serial + " refund"})
			if err != nil {
				return nil, err
			}
			trID = tr.ID
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_tokens SET state = 'refunded', refunded = ?, refund_transfer = ? WHERE serial = ? AND state = 'refunding'`),
			amount, trID, serial); err != nil {
			return nil, err
		}
		return &AuditEvent{Actor: "operator", Event: "selfverify.refund", Outcome: "success", Resource: serial,
			Details: map[string]any{"amount": amount, "settled": t.settled, "w": t.w, "transfer": trID}}, nil
	})
	if err != nil {
		return fmt.Errorf("selfverify: refund %s: %w", serial, err)
	}
	return nil
}
