package keycharge

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
)

// Sentinel errors (HTTP status in brackets).
var (
	ErrForbidden       = errors.New("keycharge: not authorised")                                 // 403
	ErrUnauthenticated = errors.New("keycharge: no verified client certificate")                 // 401
	ErrNotFound        = errors.New("keycharge: not found")                                      // 404
	ErrExists          = errors.New("keycharge: already exists")                                 // 409
	ErrTransition      = errors.New("keycharge: transition not allowed in the device's state")   // 409
	ErrDeviceState     = errors.New("keycharge: device state does not allow this")               // 403
	ErrInvalid         = errors.New("keycharge: invalid request")                                // 400
	ErrCounterfeit     = errors.New("keycharge: device certificate not trusted")                 // 403
	ErrBadSignature    = errors.New("keycharge: device signature does not verify")               // 403
	ErrChargeState     = errors.New("keycharge: charge not in a state that allows this")         // 409
	ErrHashMismatch    = errors.New("keycharge: consistency check failed: charge hashes differ") // 409
	ErrPendingCharge   = errors.New("keycharge: the device has a pending charge; recover it")    // 409
	ErrPINLocked       = errors.New("keycharge: too many wrong PINs reported for this device")   // 403
	ErrKeyUsed         = errors.New("keycharge: key segment already used")                       // 409
	ErrNoKey           = errors.New("keycharge: no usable key")                                  // 409
	ErrNoKME           = errors.New("keycharge: no key manager configured for the QSSC")         // 503
	ErrKME             = errors.New("keycharge: key manager error")                              // 502
)

// State is a device lifecycle state.
type State string

const (
	StateManufactured State = "manufactured"
	StateInitialised  State = "initialised"
	StateDistributed  State = "distributed"
	StateBound        State = "bound"
	StateActive       State = "active"
	StateFrozen       State = "frozen"
	StateLost         State = "lost"
	StateCancelled    State = "cancelled"
)

// Action is a lifecycle transition.
type Action string

const (
	ActInitialise Action = "initialise"
	ActDistribute Action = "distribute"
	ActBind       Action = "bind"
	ActActivate   Action = "activate"
	ActFreeze     Action = "freeze"
	ActReportLost Action = "report_lost"
	ActUnfreeze   Action = "unfreeze"
	ActCancel     Action = "cancel"
	ActUnlockPIN  Action = "unlock_pin" // resets the platform's wrong-PIN count (no state change)
)

// transitions is the state machine: action → allowed from-states and the target.
var transitions = map[Action]struct {
	from []State
	to   State
}{
	ActInitialise: {[]State{StateManufactured}, StateInitialised},
	ActDistribute: {[]State{StateInitialised}, StateDistributed},
	ActBind:       {[]State{StateDistributed}, StateBound},
	ActActivate:   {[]State{StateBound}, StateActive},
	ActFreeze:     {[]State{StateActive}, StateFrozen},
	ActReportLost: {[]State{StateActive, StateFrozen}, StateLost},
	ActUnfreeze:   {[]State{StateFrozen, StateLost}, StateActive},
	ActCancel:     {[]State{StateManufactured, StateInitialised, StateDistributed, StateBound, StateActive, StateFrozen, StateLost}, StateCancelled},
	ActUnlockPIN:  {[]State{StateManufactured, StateInitialised, StateDistributed, StateBound, StateActive, StateFrozen, StateLost}, ""},
}

// Allowed reports whether action may be applied in state s.
func Allowed(s State, a Action) bool {
	t, ok := transitions[a]
	return ok && slices.Contains(t.from, s)
}

// Principal is an authenticated caller: the CA register's principal for
// its verified client certificate (package authz). Kind decides what it may
// do; Name (unique within a kind) identifies a charger's charges and pool.
type Principal struct {
	Name string            `json:"name"`
	Role pki.Role          `json:"role"`
	Kind pki.PrincipalKind `json:"kind"`
}

// KeyFetcher fetches keys by ID as the QSSC (slave SAE) — etsi014.Client's
// DecKeys.
type KeyFetcher interface {
	DecKeys(ctx context.Context, masterSAE string, keyIDs ...string) ([]etsi014.KeyMaterial, error)
}

// Config configures a QKMP.
type Config struct {
	DB    *sqldb.DB
	CA    *pki.CA
	Audit audit.Trail // records every change in its transaction; read back for the admin audit view
	// MasterKey (32 bytes) seals stored key material at rest.
	MasterKey []byte
	// QSSC fetches charged keys from the site-B KME (dec_keys); nil refuses commits.
	QSSC KeyFetcher
	// MaxPINFailures reported by chargers before the platform refuses to
	// charge the device (default 5; reset by unlock_pin or a successful charge authentication).
	MaxPINFailures int
	// MaxChargeBytes bounds one charge (default 64 MiB; the seed offers 1–9 MB).
	MaxChargeBytes int64
	// ChargeTimeout: a challenged or pending charge older than this is
	// aborted when a new charge begins (default 30 min).
	ChargeTimeout time.Duration
	// DecBatch is the number of key IDs per dec_keys call (default 128) and
	// DecParallel the calls in flight (default 4).
	DecBatch, DecParallel int
	// Service answers channel messages (default: echo).
	Service func(ctx context.Context, serial string, msg []byte) ([]byte, error)
	// SessionIdle expires idle channel sessions (default 10 min).
	SessionIdle time.Duration
	Log         *slog.Logger
	Now         func() time.Time
}

// QKMP is the quantum key management platform with the QSSC.
type QKMP struct {
	cfg  Config
	db   *sqldb.DB
	seal *sealer

	mu       sync.Mutex
	sessions map[[16]byte]*session
}

// Open migrates the keycharge tables and returns the platform.
func Open(ctx context.Context, cfg Config) (*QKMP, error) {
	if cfg.DB == nil || cfg.CA == nil || cfg.Audit == nil {
		return nil, fmt.Errorf("%w: Config needs DB, CA and Audit", ErrInvalid)
	}
	s, err := newSealer(cfg.MasterKey)
	if err != nil {
		return nil, err
	}
	if cfg.MaxPINFailures <= 0 {
		cfg.MaxPINFailures = 5
	}
	if cfg.MaxChargeBytes <= 0 {
		cfg.MaxChargeBytes = 64 << 20
	}
	if cfg.ChargeTimeout <= 0 {
		cfg.ChargeTimeout = 30 * time.Minute
	}
	if cfg.DecBatch <= 0 {
		cfg.DecBatch = 128
	}
	if cfg.DecParallel <= 0 {
		cfg.DecParallel = 4
	}
	if cfg.Service == nil {
		cfg.Service = func(_ context.Context, _ string, msg []byte) ([]byte, error) { return msg, nil }
	}
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = 10 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.DB.Migrate(ctx, "keycharge", migrations); err != nil {
		return nil, fmt.Errorf("keycharge: %w", err)
	}
	if n, err := reseal(ctx, cfg.DB, s); err != nil {
		return nil, err
	} else if n > 0 {
		cfg.Log.Info("keycharge: resealed stored keys in the current at-rest format", "keys", n)
	}
	return &QKMP{cfg: cfg, db: cfg.DB, seal: s, sessions: map[[16]byte]*session{}}, nil
}

// schema is the platform's tables (PostgreSQL types; see sqldb.Migration).
const schema = `CREATE TABLE keycharge_devices (
		serial TEXT PRIMARY KEY,
		model TEXT NOT NULL,
		kind TEXT NOT NULL,
		state TEXT NOT NULL,
		cert_serial TEXT NOT NULL DEFAULT '',
		cert_der BYTEA,
		administrator TEXT NOT NULL DEFAULT '',
		user_id TEXT NOT NULL DEFAULT '',
		pin_failures INTEGER NOT NULL DEFAULT 0,
		created_at BIGINT NOT NULL,
		updated_at BIGINT NOT NULL);
	CREATE TABLE keycharge_charges (
		id TEXT PRIMARY KEY,
		serial TEXT NOT NULL,
		charger TEXT NOT NULL,
		state TEXT NOT NULL,
		volume BIGINT NOT NULL,
		challenge BYTEA NOT NULL,
		hash BYTEA,
		key_count INTEGER NOT NULL DEFAULT 0,
		bytes BIGINT NOT NULL DEFAULT 0,
		reason TEXT NOT NULL DEFAULT '',
		created_at BIGINT NOT NULL,
		updated_at BIGINT NOT NULL);
	CREATE INDEX keycharge_charges_serial ON keycharge_charges (serial, state);
	CREATE TABLE keycharge_keys (
		key_id TEXT PRIMARY KEY,
		serial TEXT NOT NULL,
		charge_id TEXT NOT NULL,
		seq INTEGER NOT NULL,
		length INTEGER NOT NULL,
		used INTEGER NOT NULL DEFAULT 0,
		state TEXT NOT NULL,
		sealed BYTEA,
		extracted_at BIGINT NOT NULL,
		coded_at BIGINT NOT NULL,
		distributed_at BIGINT NOT NULL,
		last_used_at BIGINT NOT NULL DEFAULT 0,
		frozen_at BIGINT NOT NULL DEFAULT 0,
		restored_at BIGINT NOT NULL DEFAULT 0,
		destroyed_at BIGINT NOT NULL DEFAULT 0,
		owner TEXT NOT NULL DEFAULT '',
		digest BYTEA);
	CREATE INDEX keycharge_keys_serial ON keycharge_keys (serial, charge_id, seq);
	CREATE INDEX keycharge_keys_owner ON keycharge_keys (owner, state);
	CREATE INDEX keycharge_keys_volume ON keycharge_keys (serial, state, length, used)`

var migrations = []sqldb.Migration{{Version: 1, SQL: schema}}

func (q *QKMP) now() int64 { return q.cfg.Now().UnixNano() }

func (q *QKMP) forUpdate() string {
	if q.db.Dialect == sqldb.Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// isAdmin: the platform administrator or an operator (decided by the
// principal's kind in the CA register, never by its name).
func (q *QKMP) isAdmin(p Principal) bool {
	return p.Name != "" && (p.Kind == pki.PrincipalAdmin || p.Kind == pki.PrincipalOperator)
}

// isCharger: a charger principal, or an administrator.
func (q *QKMP) isCharger(p Principal) bool {
	return q.isAdmin(p) || (p.Name != "" && p.Kind == pki.PrincipalCharger)
}

// ownsCharge: the charger that began the charge, or an administrator.
func (q *QKMP) ownsCharge(p Principal, charger string) bool {
	return q.isAdmin(p) || (p.Kind == pki.PrincipalCharger && p.Name == charger)
}

// auditDenied records a refused request (outside any transaction).
func (q *QKMP) auditDenied(ctx context.Context, p Principal, event, resource string, err error) {
	if aerr := q.cfg.Audit.Record(ctx, audit.Entry{Actor: actorName(p), Event: event, Outcome: audit.OutcomeDenied, Origin: "qkmp", Resource: resource,
		Details: map[string]string{"error": truncate(err.Error(), 1000)}}); aerr != nil {
		q.cfg.Log.Error("audit append failed", "event", event, "err", aerr)
	}
}

func actorName(p Principal) string {
	if p.Name == "" {
		return "anonymous"
	}
	return truncate(p.Name, 200)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func randomID(prefix string) (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s%x", prefix, b), nil
}

// Device is a registry entry.
type Device struct {
	Serial        string    `json:"serial"`
	Model         string    `json:"model,omitempty"`
	Kind          string    `json:"kind"`
	State         State     `json:"state"`
	CertSerial    string    `json:"cert_serial,omitempty"`
	Administrator string    `json:"administrator,omitempty"`
	User          string    `json:"user,omitempty"`
	PINFailures   int       `json:"pin_failures"`
	Created       time.Time `json:"created"`
	Updated       time.Time `json:"updated"`
	// Key volume on the platform (bytes).
	KeyBytes  int64 `json:"key_bytes"`
	KeyUsed   int64 `json:"key_used"`
	Remaining int64 `json:"remaining"`
	certDER   []byte
}

const deviceCols = `serial, model, kind, state, cert_serial, cert_der, administrator, user_id, pin_failures, created_at, updated_at`

type scanner interface{ Scan(...any) error }

func scanDevice(r scanner) (*Device, error) {
	var d Device
	var st string
	var c, u int64
	if err := r.Scan(&d.Serial, &d.Model, &d.Kind, &st, &d.CertSerial, &d.certDER, &d.Administrator, &d.User, &d.PINFailures, &c, &u); err != nil {
		return nil, err
	}
	d.State = State(st)
	d.Created, d.Updated = time.Unix(0, c).UTC(), time.Unix(0, u).UTC()
	return &d, nil
}

func (q *QKMP) getDeviceTx(ctx context.Context, tx *sql.Tx, serial string, lock bool) (*Device, error) {
	qs := `SELECT ` + deviceCols + ` FROM keycharge_devices WHERE serial = ?`
	if lock {
		qs += q.forUpdate()
	}
	d, err := scanDevice(tx.QueryRowContext(ctx, q.db.Rebind(qs), serial))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: device %q", ErrNotFound, serial)
	}
	if err != nil {
		return nil, fmt.Errorf("keycharge: read device %s: %w", serial, err)
	}
	return d, nil
}

// Device returns a registry entry with its key volume.
func (q *QKMP) Device(ctx context.Context, p Principal, serial string) (*Device, error) {
	if !q.isAdmin(p) && !q.isCharger(p) {
		return nil, ErrForbidden
	}
	d, err := scanDevice(q.db.QueryRowContext(ctx, q.db.Rebind(`SELECT `+deviceCols+` FROM keycharge_devices WHERE serial = ?`), serial))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: device %q", ErrNotFound, serial)
	}
	if err != nil {
		return nil, fmt.Errorf("keycharge: read device: %w", err)
	}
	if err := q.db.QueryRowContext(ctx, q.db.Rebind(`SELECT COALESCE(SUM(length),0), COALESCE(SUM(used),0) FROM keycharge_keys WHERE serial = ? AND state <> 'destroyed'`), serial).Scan(&d.KeyBytes, &d.KeyUsed); err != nil {
		return nil, fmt.Errorf("keycharge: key volume: %w", err)
	}
	d.Remaining = d.KeyBytes - d.KeyUsed
	return d, nil
}

// Devices lists the registry (at most limit entries, by serial).
func (q *QKMP) Devices(ctx context.Context, p Principal, limit int) ([]*Device, error) {
	if !q.isAdmin(p) {
		return nil, ErrForbidden
	}
	if limit <= 0 || limit > 10000 {
		limit = 1000
	}
	rows, err := q.db.QueryContext(ctx, q.db.Rebind(`SELECT `+deviceCols+` FROM keycharge_devices ORDER BY serial LIMIT ?`), limit)
	if err != nil {
		return nil, fmt.Errorf("keycharge: list devices: %w", err)
	}
	defer rows.Close()
	var out []*Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("keycharge: list devices: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}
