// Package console is qshield's operator console, served by `qshield serve`
// under /console: the pages the people who run the platform use to look after
// accounts, devices, certificates, the audit trail and the QKD link.
//
// # Design
//
// Server-rendered HTML (html/template) with a small stylesheet and one small
// script, every asset embedded in the binary: the console works offline and
// loads nothing from elsewhere. The live parts (the transfers feed and the QKD
// link's charts) are server-sent events; the charts are drawn by the page's own
// few lines of SVG code, not a library.
//
// # Who may sign in
//
// Operators sign in with passkeys (WebAuthn, github.com/go-webauthn/webauthn):
// no passwords exist. The first operator, and every later one, is created
// through a single-use invitation link that `qshield admin operator invite`
// (the platform's administrative client certificate) or an admin in the console
// issues; the link names the role and expires after InviteTTL. Opening it
// registers a passkey and creates the operator. Each operator has one role:
//
//	admin     everything below, plus inviting operators, issuing and revoking certificates
//	operator  accounts (create, fund with a confirmation step), device lifecycle, tills
//	auditor   read-only: every view, the audit trail, its proofs and verification
//
// Every action checks the role on the server (Route.Role), whatever the page
// showed, and every action, allowed or refused, is written to the audit trail
// with the operator as actor ("operator:<id>").
//
// Every operator is also a principal of the platform CA's register (kind
// admin, operator or auditor, scheme "console"), whose certificate certifies
// the operator's passkey key; sign-in maps the passkey to it, and a revoked
// principal can neither sign in nor keep a session (principals.go). An
// invitation may give the principal a scope, e.g. "merchant:7" for the
// operator of that merchant's tills.
//
// # What the console does beyond viewing
//
//   - Certificates (certs.go): an admin issues a principal's certificate with
//     pki.CA.IssuePrincipal, the operation `qshield admin cert issue` calls.
//     The private key is generated in the admin's browser (WebCrypto ECDSA
//     P-256) and saved from the page, or on the device; the server receives
//     only a signed certificate request, never a key.
//   - Key storage devices: every record-keeping step of the QKMP lifecycle
//     (distribute, bind, activate, freeze, report lost, unfreeze, cancel,
//     reset the wrong-PIN count). Initialise is not offered: the device signs
//     its own key and stores the certificate, so it must be connected; the
//     page shows the `qshield admin init` step instead.
//   - Tills (tills.go): a merchant's operator sets the sale amount of the
//     platform's QMSP gateways; the platform checks the principal's scope.
//   - Audit proofs (auditproof.go): a record's inclusion proof against the
//     latest signed checkpoint, checked and downloadable; the checkpoints the
//     console has seen, proved against the log today (a rewrite or rollback
//     is an alarm, also on the dashboard); the witnesses' cosignatures.
//   - Live charts (schemes.go): payments per second, refusals and amounts
//     per scheme, tailed from the audit trail, beside the QKD link's.
//
// # Sessions
//
// A session is a random 256-bit identifier in a __Host- cookie (HttpOnly,
// Secure, SameSite=Strict, Path=/); the database keeps only its SHA-256, so a
// copy of the database does not let anyone sign in. Sessions end after
// IdleTimeout without a request and after MaxSessionAge in any case, and at
// sign-out. Every state-changing request must carry the session's CSRF token
// (a form field or the X-CSRF-Token header) and, when the browser sends one,
// an Origin equal to the console's own; SameSite=Strict is the second line.
package console
