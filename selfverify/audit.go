package selfverify

import (
	"context"
	"fmt"

	"github.com/qshield/qshield/audit"
)

// AuditTo records events in the platform's tamper-evident audit log, with
// Origin "selfverify".
func AuditTo(l *audit.Log) Auditor {
	return AuditFunc(func(ctx context.Context, e AuditEvent) error {
		d := make(map[string]string, len(e.Details))
		for k, v := range e.Details {
			d[k] = fmt.Sprint(v)
		}
		_, err := l.Append(ctx, audit.Entry{Actor: e.Actor, Event: e.Event, Outcome: e.Outcome, Origin: "selfverify",
			Resource: e.Resource, Details: d})
		return err
	})
}
