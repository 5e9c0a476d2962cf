package console

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestStoreBothDatabases runs the console's own tables (migrations, kept
// checkpoints, scoped invitations, operator principals) on SQLite and, with
// QSHIELD_TEST_POSTGRES set, on PostgreSQL.
func TestStoreBothDatabases(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		clk := newClock()
		c := newConsoleOn(t, clk, db)
		ctx := context.Background()
		sg, vkey := signer(t)
		c.cfg.AuditVerifierKey = vkey
		appendN(t, c.cfg.Audit, 4)
		if _, _, err := c.cfg.Audit.Checkpoint(ctx, sg); err != nil {
			t.Fatal(err)
		}
		if err := c.observeCheckpoint(ctx, checkpointGap); err != nil {
			t.Fatal(err)
		}
		appendN(t, c.cfg.Audit, 2)
		if _, _, err := c.cfg.Audit.Checkpoint(ctx, sg); err != nil {
			t.Fatal(err)
		}
		d, err := c.checkpointHistory(ctx)
		if err != nil || len(d.Rows) != 2 || len(d.Alarms) != 0 || !d.Rows[0].SigOK || !d.Rows[0].PrevOK || !d.Rows[0].NowOK {
			t.Fatalf("history %+v (%v)", d, err)
		}
		tok, _, _, err := c.st.createInvite(ctx, "Mia", RoleOperator, []string{"merchant:1"}, "test", DefaultInviteTTL)
		if err != nil {
			t.Fatal(err)
		}
		inv, err := c.st.invite(ctx, tok)
		if err != nil || len(inv.Scope) != 1 || inv.Scope[0] != "merchant:1" {
			t.Fatalf("invitation scope %+v (%v)", inv, err)
		}
		ck, s := signIn(t, c, "Olga", RoleOperator)
		_, cred := passkey(t)
		serial, err := c.issueOperatorPrincipal(ctx, s.Operator, nil, cred, "test")
		if err != nil || c.st.setPrincipal(ctx, s.Operator.ID, serial) != nil {
			t.Fatal(err)
		}
		if w := request(c, http.MethodGet, "/console/operators", ck, "", nil); w.Code != http.StatusForbidden {
			t.Fatalf("operator on the operators page: %d", w.Code)
		}
		if w := request(c, http.MethodGet, "/console/audit/checkpoints", ck, "", nil); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `id="cp-verdict"`) {
			t.Fatalf("checkpoints: %d", w.Code)
		}
	})
}
