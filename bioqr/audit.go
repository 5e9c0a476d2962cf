package bioqr

import (
	"context"
	"database/sql"
	"log/slog"
	"sort"
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

// Entry is e as an audit record with Origin "bioqr": Event is the action,
// Outcome "success" or "failure" (the refusal code goes into the details).
func (e AuditEvent) Entry() audit.Entry {
	actor := e.Actor
	if actor == "" {
		actor = "bioqr"
	}
	d := make(map[string]string, len(e.Detail)+1)
	for k, v := range e.Detail {
		d[k] = clip(v, 1024)
	}
	outcome := audit.OutcomeSuccess
	if e.Outcome != "ok" {
		outcome = audit.OutcomeFailure
		d["code"] = e.Outcome
	}
	return audit.Entry{Actor: clip(actor, 256), Event: e.Action, Outcome: outcome, Origin: "bioqr", Resource: clip(e.Subject, 256), Details: d}
}

// LogAuditor is an audit.Recorder that writes events to a structured
// logger (for tools without an audit trail).
type LogAuditor struct{ Log *slog.Logger }

// Record logs e.
func (a LogAuditor) Record(ctx context.Context, e audit.Entry) error {
	if a.Log == nil {
		return nil
	}
	args := []any{"event", e.Event, "actor", e.Actor, "resource", e.Resource, "outcome", e.Outcome}
	for _, k := range sortedKeys(e.Details) {
		args = append(args, k, e.Details[k])
	}
	a.Log.InfoContext(ctx, "audit", args...)
	return nil
}

// RecordTx logs e (nothing is written to tx).
func (a LogAuditor) RecordTx(ctx context.Context, _ *sql.Tx, e audit.Entry) error {
	return a.Record(ctx, e)
}

// MemoryAuditor is an audit.Recorder that keeps entries in memory.
type MemoryAuditor struct {
	mu     sync.Mutex
	Events []audit.Entry
}

// Record appends e.
func (a *MemoryAuditor) Record(_ context.Context, e audit.Entry) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.Events = append(a.Events, e)
	return nil
}

// RecordTx appends e (regardless of whether tx commits).
func (a *MemoryAuditor) RecordTx(ctx context.Context, _ *sql.Tx, e audit.Entry) error {
	return a.Record(ctx, e)
}

// Snapshot returns a copy of the entries.
func (a *MemoryAuditor) Snapshot() []audit.Entry {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]audit.Entry(nil), a.Events...)
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

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
