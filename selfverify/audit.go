package selfverify

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/qshield/qshield/audit"
)

// AuditTo records events in the platform's tamper-evident audit log, with
// Origin "selfverify". The auditor is a TxAuditor: money movements are
// recorded in their own transaction.
func AuditTo(l *audit.Log) TxAuditor { return auditLog{l} }

type auditLog struct{ l *audit.Log }

func (a auditLog) Record(ctx context.Context, e AuditEvent) error {
	_, err := a.l.Append(ctx, entryOf(e))
	return err
}

func (a auditLog) RecordTx(ctx context.Context, tx *sql.Tx, e AuditEvent) error {
	_, err := a.l.AppendTx(ctx, tx, entryOf(e))
	return err
}

func entryOf(e AuditEvent) audit.Entry {
	d := make(map[string]string, len(e.Details))
	for k, v := range e.Details {
		d[k] = fmt.Sprint(v)
	}
	return audit.Entry{Actor: e.Actor, Event: e.Event, Outcome: e.Outcome, Origin: "selfverify", Resource: e.Resource, Details: d}
}
