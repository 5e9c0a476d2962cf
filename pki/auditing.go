package pki

import (
	"context"
	"database/sql"
	"errors"

	"github.com/qshield/qshield/audit"
)

// WithAudit returns a copy of ca that records its security events in log
// with the given actor (who operates the CA: "cli", "server", a user name):
//
//   - pki.issue (resource: serial) and pki.revoke, each in the same
//     transaction as the register change, so neither exists without the other;
//   - pki.verify with outcome "denied" for every refused certificate (in
//     Verify and so in every refused TLS handshake), as PCI DSS 10.2.1.4 asks
//     for invalid access attempts. Successful verifications are not recorded
//     (one per handshake would flood the trail); callers audit the business
//     action instead.
func (ca *CA) WithAudit(rec audit.Recorder, actor string) *CA {
	c := *ca
	c.audit = rec
	c.actor = actor
	if c.actor == "" {
		c.actor = "pki:" + ca.name
	}
	return &c
}

func (ca *CA) auditTx(ctx context.Context, tx *sql.Tx, event, outcome, resource string, details map[string]string) error {
	if ca.audit == nil {
		return nil
	}
	return ca.audit.RecordTx(ctx, tx, ca.auditEntry(event, outcome, resource, details))
}

func (ca *CA) auditEntry(event, outcome, resource string, details map[string]string) audit.Entry {
	for k, v := range details {
		if v == "" {
			delete(details, k)
		}
	}
	return audit.Entry{Actor: ca.actor, Event: event, Outcome: outcome, Origin: "pki/" + ca.name, Resource: resource, Details: details}
}

// auditDenied records a refused certificate; the verification error is
// returned unchanged (joined with any audit failure, so it still matches
// ErrRevoked etc.).
func (ca *CA) auditDenied(ctx context.Context, serial, cn string, verr error) error {
	if ca.audit == nil {
		return verr
	}
	msg := verr.Error()
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	err := ca.audit.Record(ctx, ca.auditEntry("pki.verify", audit.OutcomeDenied, serial, map[string]string{"common_name": truncate(cn, 256), "error": msg}))
	if err != nil {
		return errors.Join(verr, err)
	}
	return verr
}
