//go:build !wasm

package selfverify

import (
	"fmt"

	"github.com/qshield/qshield/audit"
)

// Entry is e as an audit record with Origin "selfverify".
func (e AuditEvent) Entry() audit.Entry {
	d := make(map[string]string, len(e.Details))
	for k, v := range e.Details {
		d[k] = fmt.Sprint(v)
	}
	return audit.Entry{Actor: e.Actor, Event: e.Event, Outcome: e.Outcome, Origin: "selfverify", Resource: e.Resource, Details: d}
}
