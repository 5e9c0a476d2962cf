//go:build !wasm

package selfverify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
)

// OperatorConfig configures the network operator N.
type OperatorConfig struct {
	// Key is N's long-term key d_N (see LoadOrCreateOperatorKey). Required.
	Key *ecqv.PrivateKey
	// Ledger moves the money. Required.
	Ledger Ledger
	// Audit records refusals and money movements; nil logs them only.
	Audit audit.Recorder
	// EscrowPrefix names the escrow account per currency: prefix + "." + code
	// (default "selfverify.escrow").
	EscrowPrefix string
	// MaxClockSkew bounds |now − timestamp| of signed requests (default 2 min).
	MaxClockSkew time.Duration
	// TokenTTL is the default token lifetime (24 h); MaxTokenTTL caps requests (30 days).
	TokenTTL, MaxTokenTTL time.Duration
	// ConfirmWindow is how long the user has to confirm a deposit (10 min).
	ConfirmWindow time.Duration
	// DepositGrace is how long after a token's expiry or close vendors may
	// still deposit before the rest of W goes back to the user (24 h).
	DepositGrace time.Duration
	// EnrollTTL is the lifetime of an enrollment code (7 days).
	EnrollTTL time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
	Log *slog.Logger
}

// Operator is the network operator N: registration authority (ECQV issuer),
// token issuer, online spend arbiter and depository.
type Operator struct {
	db     *sqldb.DB
	cfg    OperatorConfig
	key    *ecqv.PrivateKey
	curve  *ecqv.Curve
	issuer *ecqv.Issuer
	log    *slog.Logger

	hot *committer

	mu   sync.Mutex
	ids  map[string]*identity       // registered identities (immutable once stored)
	keys map[string]*ecqv.PublicKey // ID → reconstructed Q_X
	kvn  map[string][]byte          // vendor → K_VN
}

const cacheMax = 100_000

// NewOperator applies the operator's migrations and returns the service.
func NewOperator(ctx context.Context, db *sqldb.DB, cfg OperatorConfig) (*Operator, error) {
	if db == nil || cfg.Key == nil || cfg.Ledger == nil {
		return nil, errors.New("selfverify: operator needs a database, a key and a ledger")
	}
	if cfg.EscrowPrefix == "" {
		cfg.EscrowPrefix = "selfverify.escrow"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.MaxClockSkew, 2*time.Minute)
	def(&cfg.TokenTTL, 24*time.Hour)
	def(&cfg.MaxTokenTTL, 30*24*time.Hour)
	def(&cfg.ConfirmWindow, 10*time.Minute)
	if cfg.DepositGrace < 0 {
		cfg.DepositGrace = 0
	} else if cfg.DepositGrace == 0 {
		cfg.DepositGrace = 24 * time.Hour
	}
	def(&cfg.EnrollTTL, 7*24*time.Hour)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if err := db.Migrate(ctx, "selfverify", operatorMigrations); err != nil {
		return nil, fmt.Errorf("selfverify: %w", err)
	}
	return &Operator{db: db, cfg: cfg, key: cfg.Key, curve: cfg.Key.Curve(), issuer: ecqv.NewIssuer(cfg.Key),
		log: cfg.Log, hot: newCommitter(db), ids: map[string]*identity{}, keys: map[string]*ecqv.PublicKey{}, kvn: map[string][]byte{}}, nil
}

// Close stops the operator's group-commit goroutine (SQLite); it does not
// close the database.
func (o *Operator) Close() error {
	o.hot.close()
	return nil
}

func (o *Operator) now() time.Time { return o.cfg.Now() }

// Curve is the operator's curve.
func (o *Operator) Curve() *ecqv.Curve { return o.curve }

// Params returns the curve and Q_N.
func (o *Operator) Params() Params {
	return Params{Curve: o.curve.Name(), QN: o.key.Public().Bytes()}
}

func (o *Operator) forUpdate() string {
	if o.db.Dialect == sqldb.Postgres {
		return " FOR UPDATE"
	}
	return ""
}

func (o *Operator) logAudit(ctx context.Context, e AuditEvent) {
	level := slog.LevelInfo
	if e.Outcome != "success" {
		level = slog.LevelWarn
	}
	o.log.Log(ctx, level, "selfverify audit", "event", e.Event, "outcome", e.Outcome, "actor", e.Actor, "resource", e.Resource)
}

func (o *Operator) audit(ctx context.Context, e AuditEvent) {
	o.logAudit(ctx, e)
	if o.cfg.Audit == nil {
		return
	}
	if err := o.cfg.Audit.Record(ctx, e.Entry()); err != nil {
		o.log.Error("selfverify: audit append failed", "event", e.Event, "err", err)
	}
}

func (o *Operator) refuse(ctx context.Context, actor, event, resource string, err error) error {
	o.audit(ctx, AuditEvent{Actor: actor, Event: event, Outcome: "denied", Resource: resource,
		Details: map[string]any{"reason": err.Error()}})
	return err
}

func (o *Operator) escrow(currency string) string { return o.cfg.EscrowPrefix + "." + currency }
