//go:build !wasm

package selfverify

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/qshield/qshield/sqldb"
)

// Reserve records a payment against a token before V releases goods. It is
// N's arbiter step against overspending: the token's reserved sum is raised
// with a conditional UPDATE (reserved + amount ≤ W), so of two concurrent
// payments at two vendors that together exceed W, one is refused. A repeated
// request for the same ref is idempotent.
func (o *Operator) Reserve(ctx context.Context, req ReserveRequest) (*ReserveResponse, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	it, err := o.identity(ctx, req.Vendor)
	if err != nil || it.role != RoleVendor {
		return nil, o.refuse(ctx, req.Vendor, "selfverify.reserve", req.Serial, fmt.Errorf("%w: %s", ErrNotRegistered, req.Vendor))
	}
	kvn, err := o.vendorKVN(it)
	if err != nil {
		return nil, err
	}
	if !macEqual(o.curve, kvn, req.macBytes(), req.MAC) {
		return nil, o.refuse(ctx, req.Vendor, "selfverify.reserve", req.Serial, ErrBadMAC)
	}
	now := ms(o.now())
	if o.db.Dialect == sqldb.Postgres {
		// Fast path, one round trip: reserve and record in one statement.
		// Anything else (a repeated ref, a refusal, a race on the same ref)
		// takes the transaction below, which also explains refusals.
		res, err := o.db.ExecContext(ctx, `WITH upd AS (
			UPDATE sv_tokens SET reserved = reserved + $1
			WHERE serial = $2 AND state = 'active' AND expires_at > $3 AND reserved + $1 <= w AND currency = $4
			AND NOT EXISTS (SELECT 1 FROM sv_reservations WHERE ref = $5)
			RETURNING serial)
			INSERT INTO sv_reservations (ref, serial, vendor, amount, state, created_at)
			SELECT $5, serial, $6, $1, 'reserved', $3 FROM upd`,
			req.Amount, req.Serial, now, it.currency, req.Ref, req.Vendor)
		if err == nil {
			if n, _ := res.RowsAffected(); n == 1 {
				return &ReserveResponse{Ref: req.Ref, State: "reserved"}, nil
			}
		} else if !sqldb.IsUniqueViolation(err) {
			return nil, fmt.Errorf("selfverify: reserve: %w", err)
		}
	}
	var refusal error
	err = o.hot.run(ctx, func(tx *sql.Tx) error {
		refusal = nil
		var serial, vendor string
		var amount int64
		err := tx.QueryRowContext(ctx, o.db.Rebind(`SELECT serial, vendor, amount FROM sv_reservations WHERE ref = ?`), req.Ref).Scan(&serial, &vendor, &amount)
		if err == nil {
			if serial != req.Serial || vendor != req.Vendor || amount != req.Amount {
				refusal = fmt.Errorf("%w: ref %s already reserved with other parameters", ErrReplay, req.Ref)
			}
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		res, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_tokens SET reserved = reserved + ?
			WHERE serial = ? AND state = 'active' AND expires_at > ? AND reserved + ? <= w AND currency = ?`),
			req.Amount, req.Serial, now, req.Amount, it.currency)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			refusal = o.whyNotReservable(ctx, tx, req.Serial, req.Amount, it.currency, now)
			return nil
		}
		_, err = tx.ExecContext(ctx, o.db.Rebind(`INSERT INTO sv_reservations (ref, serial, vendor, amount, state, created_at) VALUES (?, ?, ?, ?, 'reserved', ?)`),
			req.Ref, req.Serial, req.Vendor, req.Amount, now)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("selfverify: reserve: %w", err)
	}
	if refusal != nil {
		return nil, o.refuse(ctx, req.Vendor, "selfverify.reserve", req.Serial, refusal)
	}
	return &ReserveResponse{Ref: req.Ref, State: "reserved"}, nil
}

func (o *Operator) whyNotReservable(ctx context.Context, tx *sql.Tx, serial string, amount int64, currency string, now int64) error {
	t, err := o.loadToken(ctx, tx, serial, false)
	if err != nil {
		return err
	}
	switch {
	case t.currency != currency:
		return fmt.Errorf("%w: token in %s, vendor in %s", ErrCurrency, t.currency, currency)
	case t.state != "active":
		return fmt.Errorf("%w: state %s", ErrTokenClosed, t.state)
	case t.expiresAt <= now:
		return ErrTokenExpired
	default:
		return fmt.Errorf("%w: reserved %d + %d > W %d", ErrOverspend, t.reserved, amount, t.w)
	}
}
