//go:build !wasm

package selfverify

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
)

// Withdraw authenticates U (signature with d_U over the request and a fresh
// timestamp), moves W from U's account into escrow and returns a token signed
// by N. Retrying the identical signed request returns the same token without
// moving money again; any other reuse of its nonce is a replay.
func (o *Operator) Withdraw(ctx context.Context, req WithdrawRequest) (*SignedToken, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	it, err := o.identity(ctx, req.User)
	if err != nil || it.role != RoleUser {
		return nil, o.refuse(ctx, req.User, "selfverify.withdraw", req.User, fmt.Errorf("%w: %s", ErrNotRegistered, req.User))
	}
	q, err := o.publicKey(it)
	if err != nil {
		return nil, err
	}
	if !q.Verify(req.signingBytes(), req.Sig) {
		return nil, o.refuse(ctx, req.User, "selfverify.withdraw", req.User, ErrBadSignature)
	}
	now := o.now()
	if err := fresh(now, req.Timestamp, o.cfg.MaxClockSkew); err != nil {
		return nil, o.refuse(ctx, req.User, "selfverify.withdraw", req.User, err)
	}
	if req.Currency != it.currency {
		return nil, fmt.Errorf("%w: account is in %s", ErrCurrency, it.currency)
	}
	tKey, err := o.curve.ParsePoint(req.TokenKey)
	if err != nil {
		return nil, fmt.Errorf("%w: token_key: %v", ErrInvalidMessage, err)
	}
	ttl := time.Duration(req.TTLSeconds) * time.Second
	if ttl == 0 {
		ttl = o.cfg.TokenTTL
	}
	if ttl > o.cfg.MaxTokenTTL {
		ttl = o.cfg.MaxTokenTTL
	}
	serial, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	tok := Token{Serial: serial, Curve: o.curve.Name(), Currency: req.Currency, Limit: req.Amount,
		IssuedAt: ms(now), ExpiresAt: ms(now.Add(ttl)), Key: tKey.Bytes()}
	sig, err := o.key.Sign(rand.Reader, tok.signingBytes())
	if err != nil {
		return nil, err
	}
	st := &SignedToken{Token: tok, Sig: sig}
	tj, _ := json.Marshal(st)
	digest := digestHex(req.signingBytes())
	err = o.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`INSERT INTO sv_withdrawals (nonce, user_id, digest, serial, created_at) VALUES (?, ?, ?, ?, ?)`),
			req.Nonce, req.User, digest, serial, ms(now)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, o.db.Rebind(`INSERT INTO sv_tokens (serial, user_id, account, currency, w, token_key, token_json, issued_at, expires_at, state)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'funding')`),
			serial, req.User, it.account, req.Currency, req.Amount, hex.EncodeToString(tKey.Bytes()), string(tj), tok.IssuedAt, tok.ExpiresAt)
		return err
	})
	if sqldb.IsUniqueViolation(err) {
		// The nonce was used before: an identical retry gets its token back.
		var prevUser, prevDigest, prevSerial string
		if qerr := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT user_id, digest, serial FROM sv_withdrawals WHERE nonce = ?`), req.Nonce).
			Scan(&prevUser, &prevDigest, &prevSerial); qerr != nil {
			return nil, fmt.Errorf("selfverify: withdraw: %w", qerr)
		}
		if prevUser != req.User || subtle.ConstantTimeCompare([]byte(prevDigest), []byte(digest)) != 1 {
			return nil, o.refuse(ctx, req.User, "selfverify.withdraw", req.User, ErrReplay)
		}
		return o.fund(ctx, prevSerial)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: withdraw: %w", err)
	}
	return o.fund(ctx, serial)
}

// fund moves W into escrow for a token in state 'funding' (idempotent).
func (o *Operator) fund(ctx context.Context, serial string) (*SignedToken, error) {
	var user, account, currency, state, tj string
	var w int64
	err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT user_id, account, currency, w, state, token_json FROM sv_tokens WHERE serial = ?`), serial).
		Scan(&user, &account, &currency, &w, &state, &tj)
	if err != nil {
		return nil, fmt.Errorf("selfverify: withdraw: load token: %w", err)
	}
	var st SignedToken
	if err := json.Unmarshal([]byte(tj), &st); err != nil {
		return nil, fmt.Errorf("selfverify: withdraw: stored token: %w", err)
	}
	switch state {
	case "funding":
	case "failed":
		return nil, ErrInsufficientFunds
	default:
		return &st, nil
	}
	escrow := o.escrow(currency)
	if _, err := o.cfg.Ledger.EnsureAccount(ctx, ledger.NewAccount{ID: escrow, Owner: "selfverify", Kind: ledger.KindEscrow, Currency: currency}); err != nil {
		return nil, fmt.Errorf("selfverify: withdraw: escrow account: %w", err)
	}
	var refusal error
	err = o.moveMoney(ctx, func(tx *sql.Tx) (*AuditEvent, error) {
		refusal = nil
		t, err := o.loadToken(ctx, tx, serial, true)
		if err != nil {
			return nil, err
		}
		if t.state != "funding" {
			return nil, nil // funded (or refused) concurrently
		}
		tr, err := o.cfg.Ledger.TransferTx(ctx, tx, ledger.TransferRequest{IdempotencyKey: "selfverify:withdraw:" + serial,
			From: account, To: escrow, Amount: w, Currency: currency, Memo: "selfverify token " + serial})
		if errors.Is(err, ledger.ErrInsufficientFunds) {
			// A refused transfer writes nothing: the refusal commits alone.
			refusal = fmt.Errorf("%w: %v", ErrInsufficientFunds, err)
			if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_tokens SET state = 'failed' WHERE serial = ? AND state = 'funding'`), serial); err != nil {
				return nil, err
			}
			return &AuditEvent{Actor: user, Event: "selfverify.withdraw", Outcome: "denied", Resource: serial,
				Details: map[string]any{"reason": refusal.Error()}}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("move W to escrow: %w", err)
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_tokens SET state = 'active', escrow_transfer = ? WHERE serial = ? AND state = 'funding'`), tr.ID, serial); err != nil {
			return nil, fmt.Errorf("activate token: %w", err)
		}
		return &AuditEvent{Actor: user, Event: "selfverify.withdraw", Outcome: "success", Resource: serial,
			Details: map[string]any{"w": w, "currency": currency, "transfer": tr.ID}}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("selfverify: withdraw: %w", err)
	}
	if refusal != nil {
		return nil, refusal
	}
	var state2 string
	if err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT state FROM sv_tokens WHERE serial = ?`), serial).Scan(&state2); err != nil {
		return nil, fmt.Errorf("selfverify: withdraw: %w", err)
	}
	if state2 == "failed" {
		return nil, ErrInsufficientFunds
	}
	return &st, nil
}

// moveMoney runs fn, which claims what it moves money for (a state change
// under a row lock) and calls Ledger.TransferTx, in one transaction together
// with the audit record fn returns (nil: nothing happened, nothing to
// record). If anything fails nothing is written.
func (o *Operator) moveMoney(ctx context.Context, fn func(tx *sql.Tx) (*AuditEvent, error)) error {
	var ev *AuditEvent
	err := o.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		if ev, err = fn(tx); err != nil || ev == nil || o.cfg.Audit == nil {
			return err
		}
		if err := o.cfg.Audit.RecordTx(ctx, tx, ev.Entry()); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		return nil
	})
	if err != nil || ev == nil {
		return err
	}
	o.logAudit(ctx, *ev)
	return nil
}

type tokenRow struct {
	serial, user, account, currency, state string
	w, reserved, settled, refunded         int64
	expiresAt                              int64
	closedAt                               sql.NullInt64
	key                                    *ecqv.Point
}

func (o *Operator) loadToken(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, serial string, lock bool) (*tokenRow, error) {
	query := `SELECT serial, user_id, account, currency, state, w, reserved, settled, refunded, expires_at, closed_at, token_key FROM sv_tokens WHERE serial = ?`
	if lock {
		query += o.forUpdate()
	}
	var t tokenRow
	var keyHex string
	err := q.QueryRowContext(ctx, o.db.Rebind(query), serial).Scan(&t.serial, &t.user, &t.account, &t.currency, &t.state,
		&t.w, &t.reserved, &t.settled, &t.refunded, &t.expiresAt, &t.closedAt, &keyHex)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrTokenNotFound, serial)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: load token %s: %w", serial, err)
	}
	raw, _ := hex.DecodeString(keyHex)
	if t.key, err = o.curve.ParsePoint(raw); err != nil {
		return nil, fmt.Errorf("selfverify: stored token key: %w", err)
	}
	return &t, nil
}

// TokenStatus returns N's view of a token.
func (o *Operator) TokenStatus(ctx context.Context, serial string) (*TokenStatus, error) {
	t, err := o.loadToken(ctx, o.db, serial, false)
	if err != nil {
		return nil, err
	}
	return &TokenStatus{Serial: t.serial, State: t.state, Limit: t.w, Reserved: t.reserved, Settled: t.settled,
		Refunded: t.refunded, Currency: t.currency}, nil
}

// kun derives K_UN for a token on N's side: HKDF(x(d_N·T), serial, ID_U).
func (o *Operator) kun(t *tokenRow) ([]byte, error) {
	pk, err := o.curve.NewPublicKey(t.key)
	if err != nil {
		return nil, err
	}
	z, err := o.key.ECDH(pk)
	if err != nil {
		return nil, err
	}
	return deriveKUN(o.curve, z, t.serial, t.user)
}
