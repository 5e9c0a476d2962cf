package qmsp

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/lease"
	"github.com/qshield/qshield/sqldb"
)

// GatewayStore keeps a gateway's sealed state (GatewayConfig.Store). A
// gateway device keeps it in a file (the default, GatewayConfig.StatePath);
// a gateway the platform runs itself keeps it in the platform's database
// ([GatewaySessions.Store]), so that every node of the platform shows the
// same code, moves to the same next one and keeps the preset-key ratchet in
// step with the CSS.
type GatewayStore interface {
	// Lock serialises the gateway's operations across the processes that
	// share the store and returns its release.
	Lock(ctx context.Context) (unlock func(), err error)
	// Load returns the sealed state.
	Load(ctx context.Context) ([]byte, error)
	// Save replaces the sealed state; durable asks for it to survive a
	// crash before Save returns (a preset-key change).
	Save(ctx context.Context, sealed []byte, durable bool) error
	// Shared reports whether other processes may change the state between
	// two operations (the gateway then reloads it under Lock each time).
	Shared() bool
}

// fileStore is a device's state file, replaced atomically (write, fsync,
// rename); one process owns it.
type fileStore struct{ path string }

func (f fileStore) Lock(context.Context) (func(), error) { return func() {}, nil }
func (f fileStore) Shared() bool                         { return false }

func (f fileStore) Load(context.Context) ([]byte, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("qmsp: gateway state: %w", err)
	}
	return b, nil
}

func (f fileStore) Save(_ context.Context, sealed []byte, durable bool) error {
	if err := fsutil.WriteFileAtomic(f.path, sealed, 0o600, durable); err != nil {
		return fmt.Errorf("qmsp: save gateway state: %w", err)
	}
	return nil
}

// GatewaySessions keeps the gateways a platform runs itself (the screens
// `serve` shows) in the platform's database: each gateway's device state —
// its preset key and the quantum key units it shows, sealed under the
// gateway's storage key exactly as a device seals its state file — and its
// device key (sealed by the caller) and certificate. Any node of the
// platform can then show, advance and refresh the gateway; a lock per
// gateway (package lease: a PostgreSQL advisory lock; nothing on SQLite,
// whose file one process owns) serialises its operations across nodes, so
// the preset-key ratchet never forks.
type GatewaySessions struct {
	db *sqldb.DB
}

// NewGatewaySessions opens the gateway sessions on db (applying the qmsp
// migrations).
func NewGatewaySessions(ctx context.Context, db *sqldb.DB) (*GatewaySessions, error) {
	if db == nil {
		return nil, errors.New("qmsp: gateway sessions need a database")
	}
	if err := migrate(ctx, db); err != nil {
		return nil, err
	}
	return &GatewaySessions{db: db}, nil
}

// GatewaySession is a gateway's row: its device key as the caller sealed it
// and its certificate (DER).
type GatewaySession struct {
	ID          string
	Merchant    uint32
	DeviceKey   []byte
	Certificate []byte
}

// Create provisions gateway s.ID in the database (setup step 3 on the
// device: the preset key pk at epoch 0, sealed under storageKey) unless it
// exists; it reports whether this call created it. Two nodes creating the
// same gateway at once leave one row.
func (gs *GatewaySessions) Create(ctx context.Context, s GatewaySession, storageKey []byte, pk [PresetKeySize]byte) (bool, error) {
	if err := checkGatewayID(s.ID); err != nil {
		return false, err
	}
	if len(s.DeviceKey) == 0 || len(s.Certificate) == 0 {
		return false, fmt.Errorf("%w: gateway %s needs a device key and a certificate", ErrFormat, s.ID)
	}
	sl, err := newSealer(storageKey)
	if err != nil {
		return false, err
	}
	sealed, err := sealState(sl, &GatewayState{ID: s.ID, Merchant: s.Merchant, PK: pk[:]})
	if err != nil {
		return false, err
	}
	return gs.insert(ctx, s, sealed)
}

// Import copies a device state already sealed under the gateway's storage
// key (a state file of an older installation) into the database unless the
// gateway exists there; it reports whether this call stored it.
func (gs *GatewaySessions) Import(ctx context.Context, s GatewaySession, storageKey, sealedState []byte) (bool, error) {
	if err := checkGatewayID(s.ID); err != nil {
		return false, err
	}
	sl, err := newSealer(storageKey)
	if err != nil {
		return false, err
	}
	st, err := openState(sl, sealedState)
	if err != nil {
		return false, err
	}
	if st.ID != s.ID {
		return false, fmt.Errorf("qmsp: state of gateway %s imported as %s", st.ID, s.ID)
	}
	return gs.insert(ctx, s, sealedState)
}

func (gs *GatewaySessions) insert(ctx context.Context, s GatewaySession, sealed []byte) (bool, error) {
	res, err := gs.db.ExecContext(ctx, gs.db.Rebind(`INSERT INTO qmsp_gateway_sessions (gi, merchant, state, device_key, certificate, updated_at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (gi) DO NOTHING`), s.ID, int64(s.Merchant), sealed, s.DeviceKey, s.Certificate, time.Now().UnixNano())
	if err != nil {
		return false, fmt.Errorf("qmsp: create gateway session %s: %w", s.ID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Session returns gateway gi's row, or ErrUnknownGateway.
func (gs *GatewaySessions) Session(ctx context.Context, gi string) (*GatewaySession, error) {
	s := GatewaySession{ID: gi}
	var merchant int64
	err := gs.db.QueryRowContext(ctx, gs.db.Rebind(`SELECT merchant, device_key, certificate FROM qmsp_gateway_sessions WHERE gi = ?`), gi).Scan(&merchant, &s.DeviceKey, &s.Certificate)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: no session for %s", ErrUnknownGateway, gi)
	}
	if err != nil {
		return nil, fmt.Errorf("qmsp: gateway session %s: %w", gi, err)
	}
	s.Merchant = uint32(merchant)
	return &s, nil
}

// List returns the IDs of the gateways with a session, in order.
func (gs *GatewaySessions) List(ctx context.Context) ([]string, error) {
	rows, err := gs.db.QueryContext(ctx, `SELECT gi FROM qmsp_gateway_sessions ORDER BY gi`)
	if err != nil {
		return nil, fmt.Errorf("qmsp: list gateway sessions: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var gi string
		if err := rows.Scan(&gi); err != nil {
			return nil, err
		}
		out = append(out, gi)
	}
	return out, rows.Err()
}

// Store returns gateway gi's state in the database, for GatewayConfig.Store.
func (gs *GatewaySessions) Store(gi string) GatewayStore { return dbStore{db: gs.db, gi: gi} }

type dbStore struct {
	db *sqldb.DB
	gi string
}

func (d dbStore) Shared() bool { return true }

func (d dbStore) Lock(ctx context.Context) (func(), error) {
	return lease.Lock(ctx, d.db, "qmsp-gateway/"+d.gi)
}

func (d dbStore) Load(ctx context.Context) ([]byte, error) {
	var b []byte
	err := d.db.QueryRowContext(ctx, d.db.Rebind(`SELECT state FROM qmsp_gateway_sessions WHERE gi = ?`), d.gi).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: no session for %s", ErrUnknownGateway, d.gi)
	}
	if err != nil {
		return nil, fmt.Errorf("qmsp: gateway state %s: %w", d.gi, err)
	}
	return b, nil
}

// Save updates the row; every commit is durable in the database, so
// durable changes nothing.
func (d dbStore) Save(ctx context.Context, sealed []byte, _ bool) error {
	res, err := d.db.ExecContext(ctx, d.db.Rebind(`UPDATE qmsp_gateway_sessions SET state = ?, updated_at = ? WHERE gi = ?`), sealed, time.Now().UnixNano(), d.gi)
	if err != nil {
		return fmt.Errorf("qmsp: save gateway state %s: %w", d.gi, err)
	}
	if n, err := res.RowsAffected(); err == nil && n != 1 {
		return fmt.Errorf("%w: no session for %s", ErrUnknownGateway, d.gi)
	}
	return nil
}
