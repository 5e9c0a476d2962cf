//go:build !wasm

package selfverify

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
)

// Enroll is the operator's out-of-band step before registration: it binds an
// identity and role to a ledger account and returns a one-time code that the
// entity presents when it registers (the seed's "secure channel"). The
// account must exist. Enrolling an already registered identity fails.
func (o *Operator) Enroll(ctx context.Context, id, role, account string) (string, error) {
	if err := checkID("id", id); err != nil {
		return "", err
	}
	if role != RoleUser && role != RoleVendor {
		return "", invalid("role must be %q or %q", RoleUser, RoleVendor)
	}
	if _, err := o.cfg.Ledger.Account(ctx, account); err != nil {
		return "", fmt.Errorf("selfverify: enroll %s: account %s: %w", id, account, err)
	}
	code, err := randomHex(16)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(code))
	exp := ms(o.now().Add(o.cfg.EnrollTTL))
	err = o.db.InTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, o.db.Rebind(`SELECT COUNT(*) FROM sv_identities WHERE id = ?`), id).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: %s is already registered", ErrBadEnrollment, id)
		}
		if _, err := tx.ExecContext(ctx, o.db.Rebind(`DELETE FROM sv_enrollments WHERE id = ?`), id); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, o.db.Rebind(`INSERT INTO sv_enrollments (id, role, account, code_hash, expires_at) VALUES (?, ?, ?, ?, ?)`),
			id, role, account, hex.EncodeToString(h[:]), exp)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("selfverify: enroll %s: %w", id, err)
	}
	o.audit(ctx, AuditEvent{Actor: "operator", Event: "selfverify.enroll", Outcome: "success", Resource: id,
		Details: map[string]any{"role": role, "account": account}})
	return code, nil
}

// Register answers an ECQV registration request (SEC 4 steps 2): it checks
// the enrollment code, computes P_X and r, and stores (ID_X, P_X) — no
// certificate. The code is single-use.
func (o *Operator) Register(ctx context.Context, req RegisterRequest) (*RegisterResponse, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	rPt, err := o.curve.ParsePoint(req.R)
	if err != nil {
		return nil, fmt.Errorf("%w: r: %v", ErrInvalidMessage, err)
	}
	var account, role, codeHash string
	var expires int64
	var used sql.NullInt64
	err = o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT role, account, code_hash, expires_at, used_at FROM sv_enrollments WHERE id = ?`), req.ID).
		Scan(&role, &account, &codeHash, &expires, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, o.refuse(ctx, req.ID, "selfverify.register", req.ID, ErrBadEnrollment)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: register %s: %w", req.ID, err)
	}
	h := sha256.Sum256([]byte(req.Code))
	want, _ := hex.DecodeString(codeHash)
	if subtle.ConstantTimeCompare(h[:], want) != 1 || used.Valid || expires < ms(o.now()) || role != req.Role {
		return nil, o.refuse(ctx, req.ID, "selfverify.register", req.ID, ErrBadEnrollment)
	}
	acct, err := o.cfg.Ledger.Account(ctx, account)
	if err != nil {
		return nil, fmt.Errorf("selfverify: register %s: account %s: %w", req.ID, account, err)
	}
	resp, err := o.issuer.Issue(rand.Reader, &ecqv.Request{ID: req.ID, R: rPt})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	now := ms(o.now())
	err = o.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, o.db.Rebind(`UPDATE sv_enrollments SET used_at = ? WHERE id = ? AND used_at IS NULL`), now, req.ID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrBadEnrollment
		}
		_, err = tx.ExecContext(ctx, o.db.Rebind(`INSERT INTO sv_identities (id, role, account, currency, p, registered_at) VALUES (?, ?, ?, ?, ?, ?)`),
			req.ID, req.Role, account, acct.Currency, hex.EncodeToString(resp.P.Bytes()), now)
		if sqldb.IsUniqueViolation(err) {
			return ErrBadEnrollment
		}
		return err
	})
	if errors.Is(err, ErrBadEnrollment) {
		return nil, o.refuse(ctx, req.ID, "selfverify.register", req.ID, ErrBadEnrollment)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: register %s: %w", req.ID, err)
	}
	o.audit(ctx, AuditEvent{Actor: req.ID, Event: "selfverify.register", Outcome: "success", Resource: req.ID,
		Details: map[string]any{"role": req.Role, "p": hex.EncodeToString(resp.P.Bytes())}})
	return &RegisterResponse{ID: req.ID, Role: req.Role, Curve: o.curve.Name(), Currency: acct.Currency,
		P: resp.P.Bytes(), R: o.curve.EncodeScalar(resp.R), QN: o.key.Public().Bytes()}, nil
}

type identity struct {
	id, role, account, currency string
	p                           *ecqv.Point
}

func (o *Operator) identity(ctx context.Context, id string) (*identity, error) {
	o.mu.Lock()
	cached, ok := o.ids[id]
	o.mu.Unlock()
	if ok {
		return cached, nil
	}
	var it identity
	var pHex string
	err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT id, role, account, currency, p FROM sv_identities WHERE id = ?`), id).
		Scan(&it.id, &it.role, &it.account, &it.currency, &pHex)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNotRegistered, id)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: look up %s: %w", id, err)
	}
	raw, err := hex.DecodeString(pHex)
	if err != nil {
		return nil, fmt.Errorf("selfverify: stored point of %s: %w", id, err)
	}
	if it.p, err = o.curve.ParsePoint(raw); err != nil {
		return nil, fmt.Errorf("selfverify: stored point of %s: %w", id, err)
	}
	o.mu.Lock()
	if len(o.ids) >= cacheMax {
		clear(o.ids)
	}
	o.ids[id] = &it
	o.mu.Unlock()
	return &it, nil
}

// Identity returns the public directory entry of a registered vendor.
// Users are not listed, so that the directory reveals nobody's customers.
func (o *Operator) Identity(ctx context.Context, id string) (*Identity, error) {
	it, err := o.identity(ctx, id)
	if err != nil {
		return nil, err
	}
	if it.role != RoleVendor {
		return nil, fmt.Errorf("%w: %s", ErrNotRegistered, id)
	}
	return &Identity{ID: it.id, Role: it.role, Curve: o.curve.Name(), P: it.p.Bytes()}, nil
}

// publicKey reconstructs Q_X = e·P_X + Q_N (cached).
func (o *Operator) publicKey(it *identity) (*ecqv.PublicKey, error) {
	cacheKey := it.id + "\x00" + string(it.p.Bytes())
	o.mu.Lock()
	k, ok := o.keys[cacheKey]
	o.mu.Unlock()
	if ok {
		return k, nil
	}
	k, err := ecqv.Reconstruct(o.curve, it.id, it.p, o.key.Public())
	if err != nil {
		return nil, fmt.Errorf("selfverify: reconstruct key of %s: %w", it.id, err)
	}
	o.mu.Lock()
	if len(o.keys) >= cacheMax {
		clear(o.keys)
	}
	o.keys[cacheKey] = k
	o.mu.Unlock()
	return k, nil
}

func (o *Operator) vendorKVN(it *identity) ([]byte, error) {
	o.mu.Lock()
	k, ok := o.kvn[it.id]
	o.mu.Unlock()
	if ok {
		return k, nil
	}
	q, err := o.publicKey(it)
	if err != nil {
		return nil, err
	}
	z, err := o.key.ECDH(q)
	if err != nil {
		return nil, err
	}
	if k, err = deriveKVN(o.curve, z, it.id); err != nil {
		return nil, err
	}
	o.mu.Lock()
	if len(o.kvn) >= cacheMax {
		clear(o.kvn)
	}
	o.kvn[it.id] = k
	o.mu.Unlock()
	return k, nil
}
