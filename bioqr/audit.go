package bioqr

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"unicode/utf8"

	"github.com/qshield/qshield/audit"
)

// AuditEvent is one step of the protocol as the audit trail records it.
// Detail never contains a template, a probe or key material.
type AuditEvent struct {
	Action  string            // e.g. "bioqr.settle"
	Actor   string            // who asked (certificate subject)
	Subject string            // what it is about (RandCode, serial)
	Outcome string            // "ok" or the refusal code
	Detail  map[string]string // small, non-secret facts
}

// Auditor records events. The platform's audit trail is adapted to it by
// AuditLog; LogAuditor and MemoryAuditor are for tools and tests.
//
// RecordTx records inside the caller's database transaction: the settlement
// server writes a payment's outcome, its ledger transfer and its audit record
// in one transaction, so either all three happen or none does. Only
// AuditLog's RecordTx is transactional; LogAuditor and MemoryAuditor record
// at once, whatever becomes of the transaction.
type Auditor interface {
	Record(ctx context.Context, e AuditEvent) error
	RecordTx(ctx context.Context, tx *sql.Tx, e AuditEvent) error
}

// LogAuditor writes events to a structured logger.
type LogAuditor struct{ Log *slog.Logger }

// Record logs e.
func (a LogAuditor) Record(ctx context.Context, e AuditEvent) error {
	if a.Log == nil {
		return nil
	}
	args := []any{"action", e.Action, "actor", e.Actor, "subject", e.Subject, "outcome", e.Outcome}
	for _, k := range sortedKeys(e.Detail) {
		args = append(args, k, e.Detail[k])
	}
	a.Log.InfoContext(ctx, "audit", args...)
	return nil
}

// RecordTx logs e (a log is not transactional).
func (a LogAuditor) RecordTx(ctx context.Context, _ *sql.Tx, e AuditEvent) error {
	return a.Record(ctx, e)
}

// MemoryAuditor keeps events in memory.
type MemoryAuditor struct {
	mu     sync.Mutex
	Events []AuditEvent
}

// Record appends e.
func (a *MemoryAuditor) Record(_ context.Context, e AuditEvent) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.Events = append(a.Events, e)
	return nil
}

// RecordTx appends e (memory is not transactional).
func (a *MemoryAuditor) RecordTx(ctx context.Context, _ *sql.Tx, e AuditEvent) error {
	return a.Record(ctx, e)
}

// Snapshot returns a copy of the events.
func (a *MemoryAuditor) Snapshot() []AuditEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]AuditEvent(nil), a.Events...)
}

// AuditLog records events in the platform's hash-chained audit trail.
type AuditLog struct{ L *audit.Log }

// Record appends e as an audit entry: Event is the action, Outcome
// "success" or "failure" (the refusal code goes into the details).
func (a AuditLog) Record(ctx context.Context, e AuditEvent) error {
	if a.L == nil {
		return nil
	}
	if _, err := a.L.Append(ctx, entryOf(e)); err != nil {
		return fmt.Errorf("bioqr: audit: %w", err)
	}
	return nil
}

// RecordTx appends e inside tx: it commits or rolls back with it.
func (a AuditLog) RecordTx(ctx context.Context, tx *sql.Tx, e AuditEvent) error {
	if a.L == nil {
		return nil
	}
	if _, err := a.L.AppendTx(ctx, tx, entryOf(e)); err != nil {
		return fmt.Errorf("bioqr: audit: %w", err)
	}
	return nil
}

func entryOf(e AuditEvent) audit.Entry {
	actor := e.Actor
	if actor == "" {
		actor = "bioqr"
	}
	d := make(map[string]string, len(e.Detail)+1)
	for k, v := range e.Detail {
		if len(v) > 1024 {
			v = v[:1024]
		}
		d[k] = v
	}
	outcome := "success"
	if e.Outcome != "ok" {
		outcome = "failure"
		d["code"] = e.Outcome
	}
	return audit.Entry{Actor: clip(actor, 256), Event: e.Action, Outcome: outcome, Origin: "bioqr", Resource: clip(e.Subject, 256), Details: d}
}

func clip(s string, n int) string {
	for len(s) > n {
		s = s[:n]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}
