//go:build !wasm

package selfverify

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/qshield/qshield/ledger"
)

// Confirmations lists the undecided confirmation requests of a token,
// encrypted under K_UN; only the token's holder can read them.
func (o *Operator) Confirmations(ctx context.Context, serial string) (*ConfirmationList, error) {
	if err := checkHex("serial", serial, serialHex); err != nil {
		return nil, err
	}
	rows, err := o.db.QueryContext(ctx, o.db.Rebind(`SELECT id, deadline, ciphertext FROM sv_confirmations WHERE serial = ? AND state = 'awaiting' ORDER BY id`), serial)
	if err != nil {
		return nil, fmt.Errorf("selfverify: confirmations: %w", err)
	}
	defer rows.Close()
	out := &ConfirmationList{Confirmations: []ConfirmationRequest{}}
	for rows.Next() {
		c := ConfirmationRequest{Serial: serial}
		var ctHex string
		if err := rows.Scan(&c.ID, &c.Deadline, &ctHex); err != nil {
			return nil, err
		}
		if c.Ciphertext, err = hex.DecodeString(ctHex); err != nil {
			return nil, err
		}
		out.Confirmations = append(out.Confirmations, c)
	}
	return out, rows.Err()
}

// Confirm applies the user's answer, authenticated under K_UN. On agreement
// before the deadline the amount moves from escrow to the vendor; on refusal
// nothing moves and the refusal is audited.
func (o *Operator) Confirm(ctx context.Context, ans ConfirmAnswer) (*ConfirmationStatus, error) {
	if err := ans.validate(); err != nil {
		return nil, err
	}
	var serial, vendor, state string
	var amount, deadline int64
	err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT serial, vendor, amount, state, deadline FROM sv_confirmations WHERE id = ?`), ans.ID).
		Scan(&serial, &vendor, &amount, &state, &deadline)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && serial != ans.Serial) {
		return nil, fmt.Errorf("%w: confirmation %s", ErrNotFound, ans.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: confirm: %w", err)
	}
	t, err := o.loadToken(ctx, o.db, serial, false)
	if err != nil {
		return nil, err
	}
	kun, err := o.kun(t)
	if err != nil {
		return nil, err
	}
	if ans.Total != amount || !macEqual(o.curve, kun, ans.macBytes(), ans.MAC) {
		return nil, o.refuse(ctx, "user:"+serial, "selfverify.confirm", ans.ID, ErrBadMAC)
	}
	now := ms(o.now())
	newState := StateRefused
	if ans.Agree {
		newState = StateAgreed
	}
	var outcome error
	err = o.db.InTx(ctx, func(tx *sql.Tx) error {
		outcome = nil
		if _, err := o.loadToken(ctx, tx, serial, true); err != nil {
			return err
		}
		var cur string
		var dl int64
		if err := tx.QueryRowContext(ctx, o.db.Rebind(`SELECT state, deadline FROM sv_confirmations WHERE id = ?`+o.forUpdate()), ans.ID).Scan(&cur, &dl); err != nil {
			return err
		}
		switch {
		case cur == StateAwaiting && dl <= now:
			outcome = ErrDeadline
			return nil
		case cur == StateAwaiting:
		case cur == newState || (cur == StateSettled && newState == StateAgreed):
			return nil // same answer again: idempotent
		default:
			outcome = fmt.Errorf("%w: %s", ErrDecided, cur)
			return nil
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_confirmations SET state = ?, decided_at = ? WHERE id = ?`), newState, now, ans.ID); err != nil {
			return err
		}
		resState := "refused"
		if ans.Agree {
			resState = "agreed"
			if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_tokens SET settled = settled + ? WHERE serial = ?`), amount, serial); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_reservations SET state = ? WHERE confirmation_id = ?`), resState, ans.ID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("selfverify: confirm: %w", err)
	}
	if outcome != nil {
		if errors.Is(outcome, ErrDeadline) {
			_ = o.expireConfirmations(ctx)
		}
		return nil, o.refuse(ctx, "user:"+serial, "selfverify.confirm", ans.ID, outcome)
	}
	if !ans.Agree {
		o.audit(ctx, AuditEvent{Actor: "user:" + serial, Event: "selfverify.deposit.refused_by_user", Outcome: "denied", Resource: ans.ID,
			Details: map[string]any{"vendor": vendor, "amount": amount, "serial": serial}})
		return o.confirmationStatus(ctx, ans.ID)
	}
	if err := o.settle(ctx, ans.ID); err != nil {
		return nil, err
	}
	return o.confirmationStatus(ctx, ans.ID)
}

func (o *Operator) confirmationStatus(ctx context.Context, id string) (*ConfirmationStatus, error) {
	var c ConfirmationStatus
	var tr sql.NullString
	err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT id, serial, amount, state, deadline, transfer_id FROM sv_confirmations WHERE id = ?`), id).
		Scan(&c.ID, &c.Serial, &c.Amount, &c.State, &c.Deadline, &tr)
	if err != nil {
		return nil, fmt.Errorf("selfverify: confirmation %s: %w", id, err)
	}
	c.TransferID = tr.String
	return &c, nil
}

// settle moves an agreed confirmation's amount from escrow to the vendor
// (idempotent: the ledger transfer's key is derived from the confirmation).
func (o *Operator) settle(ctx context.Context, cid string) error {
	var serial, vendor, state string
	var amount int64
	err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT serial, vendor, amount, state FROM sv_confirmations WHERE id = ?`), cid).Scan(&serial, &vendor, &amount, &state)
	if err != nil {
		return fmt.Errorf("selfverify: settle %s: %w", cid, err)
	}
	if state != StateAgreed {
		return nil
	}
	it, err := o.identity(ctx, vendor)
	if err != nil {
		return err
	}
	err = o.moveMoney(ctx, func(tx *sql.Tx) (*AuditEvent, error) {
		var state string
		if err := tx.QueryRowContext(ctx, o.db.Rebind(`SELECT state FROM sv_confirmations WHERE id = ?`+o.forUpdate()), cid).Scan(&state); err != nil {
			return nil, err
		}
		if state != StateAgreed {
			return nil, nil // settled concurrently
		}
		tr, err := o.cfg.Ledger.TransferTx(ctx, tx, ledger.TransferRequest{IdempotencyKey: "selfverify:settle:" + cid,
			From: o.escrow(it.currency), To: it.account, Amount: amount, Currency: it.currency,
			Memo: "selfverify deposit " + cid + " token " + serial})
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_confirmations SET state = 'settled', transfer_id = ? WHERE id = ? AND state = 'agreed'`), tr.ID, cid); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_reservations SET state = 'settled' WHERE confirmation_id = ?`), cid); err != nil {
			return nil, err
		}
		return &AuditEvent{Actor: "operator", Event: "selfverify.settle", Outcome: "success", Resource: cid,
			Details: map[string]any{"vendor": vendor, "amount": amount, "serial": serial, "transfer": tr.ID}}, nil
	})
	if err != nil {
		o.audit(ctx, AuditEvent{Actor: "operator", Event: "selfverify.settle", Outcome: "failure", Resource: cid, Details: map[string]any{"error": err.Error()}})
		return fmt.Errorf("selfverify: settle %s: %w", cid, err)
	}
	return nil
}
