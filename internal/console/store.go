package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/qshield/qshield/sqldb"
)

// Role is an operator's role in the console.
type Role string

// The console roles, from most to least powerful.
const (
	RoleAdmin    Role = "admin"
	RoleOperator Role = "operator"
	RoleAuditor  Role = "auditor"
)

// ParseRole checks s names a role.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAdmin, RoleOperator, RoleAuditor:
		return r, nil
	}
	return "", fmt.Errorf("console: unknown role %q (admin, operator or auditor)", s)
}

// may reports whether role r includes the rights of need.
func (r Role) may(need Role) bool {
	rank := map[Role]int{RoleAuditor: 1, RoleOperator: 2, RoleAdmin: 3}
	return rank[r] > 0 && rank[r] >= rank[need]
}

// Errors of the console's store.
var (
	ErrInviteInvalid = errors.New("console: invitation unknown, used or expired")
	ErrNoSession     = errors.New("console: no valid session")
	ErrNoOperator    = errors.New("console: no such operator")
)

// Operator is a person who may sign in to the console.
type Operator struct {
	ID        string
	Name      string
	Role      Role
	Handle    []byte // WebAuthn user handle: 32 random bytes
	CreatedAt time.Time
	Disabled  bool
	// PrincipalSerial is the operator's principal in the CA's register
	// ("" for an operator registered before principals, until it signs in).
	PrincipalSerial string
	creds           []webauthn.Credential
}

// WebAuthnID implements webauthn.User.
func (o *Operator) WebAuthnID() []byte { return o.Handle }

// WebAuthnName implements webauthn.User.
func (o *Operator) WebAuthnName() string { return o.ID }

// WebAuthnDisplayName implements webauthn.User.
func (o *Operator) WebAuthnDisplayName() string { return o.Name }

// WebAuthnCredentials implements webauthn.User.
func (o *Operator) WebAuthnCredentials() []webauthn.Credential { return o.creds }

var migrations = []sqldb.Migration{{
	Version: 1,
	SQL: `CREATE TABLE console_operators (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL,
	role TEXT NOT NULL,
	handle BYTEA NOT NULL UNIQUE,
	created_at BIGINT NOT NULL,
	disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE console_credentials (
	id BYTEA PRIMARY KEY,
	operator_id TEXT NOT NULL REFERENCES console_operators(id),
	credential TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	last_used BIGINT NOT NULL
);
CREATE TABLE console_invites (
	token_hash BYTEA PRIMARY KEY,
	operator_id TEXT NOT NULL,
	name TEXT NOT NULL,
	role TEXT NOT NULL,
	created_by TEXT NOT NULL,
	expires_at BIGINT NOT NULL,
	used_at BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE console_sessions (
	id_hash BYTEA PRIMARY KEY,
	operator_id TEXT NOT NULL,
	csrf TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	last_seen BIGINT NOT NULL
);
CREATE TABLE console_ceremonies (
	id_hash BYTEA PRIMARY KEY,
	kind TEXT NOT NULL,
	data TEXT NOT NULL,
	invite_hash BYTEA,
	expires_at BIGINT NOT NULL
);`,
}, {
	// Every signed audit checkpoint the console has seen, to prove later
	// that the log only grew (see auditproof.go).
	Version: 2,
	SQL: `CREATE TABLE console_checkpoints (
	size BIGINT PRIMARY KEY,
	note TEXT NOT NULL,
	seen_at BIGINT NOT NULL
);`,
}, {
	// Operators are principals of the CA's register (principals.go); an
	// invitation may give the principal a scope.
	Version: 3,
	SQL: `ALTER TABLE console_operators ADD COLUMN principal_serial TEXT NOT NULL DEFAULT '';
ALTER TABLE console_invites ADD COLUMN scope TEXT NOT NULL DEFAULT '';`,
}}

// store is the console's tables.
type store struct {
	db  *sqldb.DB
	now func() time.Time
}

func newStore(ctx context.Context, db *sqldb.DB, now func() time.Time) (*store, error) {
	if err := db.Migrate(ctx, "console", migrations); err != nil {
		return nil, fmt.Errorf("console: migrate: %w", err)
	}
	return &store{db: db, now: now}, nil
}

func (s *store) q(query string) string { return s.db.Rebind(query) }

func randomToken() (string, []byte) {
	b := make([]byte, 32)
	rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	t := base64.RawURLEncoding.EncodeToString(b)
	return t, hashToken(t)
}

func hashToken(t string) []byte {
	h := sha256.Sum256([]byte("qshield/console/v1\x00" + t))
	return h[:]
}

// createInvite records a single-use invitation for a new operator and
// returns its token (only its hash is stored).
func (s *store) createInvite(ctx context.Context, name string, role Role, scope []string, by string, ttl time.Duration) (token, operatorID string, expires time.Time, err error) {
	if name == "" || len(name) > 100 {
		return "", "", time.Time{}, fmt.Errorf("console: operator name must be 1 to 100 characters")
	}
	if _, err := ParseRole(string(role)); err != nil {
		return "", "", time.Time{}, err
	}
	tok, h := randomToken()
	idb := make([]byte, 9)
	rand.Read(idb)
	operatorID = "op_" + base64.RawURLEncoding.EncodeToString(idb)
	expires = s.now().Add(ttl)
	sj, _ := json.Marshal(scope)
	_, err = s.db.ExecContext(ctx, s.q(`INSERT INTO console_invites (token_hash, operator_id, name, role, created_by, expires_at, scope) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		h, operatorID, name, string(role), by, expires.UnixNano(), string(sj))
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("console: record invitation: %w", err)
	}
	return tok, operatorID, expires, nil
}

type invite struct {
	hash       []byte
	OperatorID string
	Name       string
	Role       Role
	CreatedBy  string
	Expires    time.Time
	Scope      []string
}

// invite returns the unused, unexpired invitation for token.
func (s *store) invite(ctx context.Context, token string) (*invite, error) {
	h := hashToken(token)
	var inv invite
	var role string
	var exp, used int64
	var scope string
	err := s.db.QueryRowContext(ctx, s.q(`SELECT operator_id, name, role, created_by, expires_at, used_at, scope FROM console_invites WHERE token_hash = ?`), h).
		Scan(&inv.OperatorID, &inv.Name, &role, &inv.CreatedBy, &exp, &used, &scope)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrInviteInvalid
	}
	if err != nil {
		return nil, fmt.Errorf("console: read invitation: %w", err)
	}
	inv.hash, inv.Role, inv.Expires = h, Role(role), time.Unix(0, exp)
	if scope != "" {
		if err := json.Unmarshal([]byte(scope), &inv.Scope); err != nil {
			return nil, fmt.Errorf("console: invitation scope: %w", err)
		}
	}
	if used != 0 || !s.now().Before(inv.Expires) {
		return nil, ErrInviteInvalid
	}
	return &inv, nil
}

// redeemInvite creates the operator with its first credential and marks the
// invitation used, in one transaction: an invitation makes one operator.
func (s *store) redeemInvite(ctx context.Context, inv *invite, handle []byte, cred *webauthn.Credential, principalSerial string) error {
	cj, err := json.Marshal(cred)
	if err != nil {
		return err
	}
	now := s.now().UnixNano()
	return s.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE console_invites SET used_at = ? WHERE token_hash = ? AND used_at = 0 AND expires_at > ?`), now, inv.hash, now)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrInviteInvalid
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO console_operators (id, name, role, handle, created_at, principal_serial) VALUES (?, ?, ?, ?, ?, ?)`),
			inv.OperatorID, inv.Name, string(inv.Role), handle, now, principalSerial); err != nil {
			return fmt.Errorf("console: create operator: %w", err)
		}
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO console_credentials (id, operator_id, credential, created_at, last_used) VALUES (?, ?, ?, ?, ?)`),
			cred.ID, inv.OperatorID, string(cj), now, now)
		return err
	})
}

func (s *store) operatorBy(ctx context.Context, where string, arg any) (*Operator, error) {
	var o Operator
	var role string
	var created, disabled int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT id, name, role, handle, created_at, disabled, principal_serial FROM console_operators WHERE `+where+` = ?`), arg).
		Scan(&o.ID, &o.Name, &role, &o.Handle, &created, &disabled, &o.PrincipalSerial)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNoOperator
	}
	if err != nil {
		return nil, fmt.Errorf("console: read operator: %w", err)
	}
	o.Role, o.CreatedAt, o.Disabled = Role(role), time.Unix(0, created), disabled != 0
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT credential FROM console_credentials WHERE operator_id = ?`), o.ID)
	if err != nil {
		return nil, fmt.Errorf("console: read credentials: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var cj string
		if err := rows.Scan(&cj); err != nil {
			return nil, err
		}
		var c webauthn.Credential
		if err := json.Unmarshal([]byte(cj), &c); err != nil {
			return nil, fmt.Errorf("console: credential of %s: %w", o.ID, err)
		}
		o.creds = append(o.creds, c)
	}
	return &o, rows.Err()
}

func (s *store) operators(ctx context.Context) ([]Operator, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, role, created_at, disabled, principal_serial FROM console_operators ORDER BY created_at`)
	if err != nil {
		return nil, fmt.Errorf("console: list operators: %w", err)
	}
	defer rows.Close()
	var out []Operator
	for rows.Next() {
		var o Operator
		var role string
		var created, disabled int64
		if err := rows.Scan(&o.ID, &o.Name, &role, &created, &disabled, &o.PrincipalSerial); err != nil {
			return nil, err
		}
		o.Role, o.CreatedAt, o.Disabled = Role(role), time.Unix(0, created), disabled != 0
		out = append(out, o)
	}
	return out, rows.Err()
}

// setPrincipal records the principal of an operator that had none.
func (s *store) setPrincipal(ctx context.Context, id, serial string) error {
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE console_operators SET principal_serial = ? WHERE id = ? AND principal_serial = ''`), serial, id)
	return err
}

// setDisabled disables or enables an operator; disabling ends its sessions.
func (s *store) setDisabled(ctx context.Context, id string, disabled bool) error {
	d := 0
	if disabled {
		d = 1
	}
	return s.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE console_operators SET disabled = ? WHERE id = ?`), d, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNoOperator
		}
		if disabled {
			_, err = tx.ExecContext(ctx, s.q(`DELETE FROM console_sessions WHERE operator_id = ?`), id)
		}
		return err
	})
}

// updateCredential stores the credential after a sign-in (its sign count
// and flags change).
func (s *store) updateCredential(ctx context.Context, operatorID string, cred *webauthn.Credential) error {
	cj, err := json.Marshal(cred)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, s.q(`UPDATE console_credentials SET credential = ?, last_used = ? WHERE id = ? AND operator_id = ?`),
		string(cj), s.now().UnixNano(), cred.ID, operatorID)
	return err
}

// Session is a signed-in operator's session.
type Session struct {
	Operator *Operator
	CSRF     string
	idHash   []byte
}

func (s *store) createSession(ctx context.Context, operatorID string) (token string, err error) {
	tok, h := randomToken()
	csrf, _ := randomToken()
	now := s.now().UnixNano()
	_, err = s.db.ExecContext(ctx, s.q(`INSERT INTO console_sessions (id_hash, operator_id, csrf, created_at, last_seen) VALUES (?, ?, ?, ?, ?)`),
		h, operatorID, csrf, now, now)
	if err != nil {
		return "", fmt.Errorf("console: create session: %w", err)
	}
	return tok, nil
}

// session returns the live session for token and records the request, or
// ErrNoSession when it is unknown, idle too long, too old, or its operator
// is disabled (the expired row is deleted).
func (s *store) session(ctx context.Context, token string, idle, maxAge time.Duration) (*Session, error) {
	h := hashToken(token)
	var opID, csrf string
	var created, seen int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT operator_id, csrf, created_at, last_seen FROM console_sessions WHERE id_hash = ?`), h).
		Scan(&opID, &csrf, &created, &seen)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNoSession
	}
	if err != nil {
		return nil, fmt.Errorf("console: read session: %w", err)
	}
	now := s.now()
	if now.Sub(time.Unix(0, seen)) > idle || now.Sub(time.Unix(0, created)) > maxAge {
		s.endSession(ctx, h)
		return nil, ErrNoSession
	}
	op, err := s.operatorBy(ctx, "id", opID)
	if err != nil || op.Disabled {
		s.endSession(ctx, h)
		return nil, ErrNoSession
	}
	if _, err := s.db.ExecContext(ctx, s.q(`UPDATE console_sessions SET last_seen = ? WHERE id_hash = ?`), now.UnixNano(), h); err != nil {
		return nil, fmt.Errorf("console: touch session: %w", err)
	}
	return &Session{Operator: op, CSRF: csrf, idHash: h}, nil
}

func (s *store) endSession(ctx context.Context, idHash []byte) {
	s.db.ExecContext(ctx, s.q(`DELETE FROM console_sessions WHERE id_hash = ?`), idHash)
}

// saveCeremony keeps a WebAuthn ceremony's session data for ceremonyTTL.
func (s *store) saveCeremony(ctx context.Context, kind string, data *webauthn.SessionData, inviteHash []byte) (string, error) {
	dj, err := json.Marshal(data)
	if err != nil {
		return "", err
	}
	tok, h := randomToken()
	now := s.now()
	if _, err := s.db.ExecContext(ctx, s.q(`DELETE FROM console_ceremonies WHERE expires_at < ?`), now.UnixNano()); err != nil {
		return "", err
	}
	_, err = s.db.ExecContext(ctx, s.q(`INSERT INTO console_ceremonies (id_hash, kind, data, invite_hash, expires_at) VALUES (?, ?, ?, ?, ?)`),
		h, kind, string(dj), inviteHash, now.Add(ceremonyTTL).UnixNano())
	return tok, err
}

// takeCeremony returns and deletes a ceremony (each is used once).
func (s *store) takeCeremony(ctx context.Context, token, kind string) (*webauthn.SessionData, []byte, error) {
	h := hashToken(token)
	var data string
	var inviteHash []byte
	var exp int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT data, invite_hash, expires_at FROM console_ceremonies WHERE id_hash = ? AND kind = ?`), h, kind).Scan(&data, &inviteHash, &exp)
	if err != nil {
		return nil, nil, errors.New("console: the sign-in attempt expired; start again")
	}
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM console_ceremonies WHERE id_hash = ?`), h)
	if err != nil {
		return nil, nil, err
	}
	if n, _ := res.RowsAffected(); n != 1 || !s.now().Before(time.Unix(0, exp)) {
		return nil, nil, errors.New("console: the sign-in attempt expired; start again")
	}
	var sd webauthn.SessionData
	if err := json.Unmarshal([]byte(data), &sd); err != nil {
		return nil, nil, err
	}
	return &sd, inviteHash, nil
}
