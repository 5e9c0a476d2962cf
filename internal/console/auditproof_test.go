package console

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/qshield/qshield/audit"
)

func signer(t *testing.T) (note.Signer, string) {
	t.Helper()
	skey, vkey, err := audit.GenerateCheckpointKey("qshield-audit-test")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s, vkey
}

func appendN(t *testing.T, l *audit.Log, n int) {
	t.Helper()
	for i := range n {
		if _, err := l.Append(context.Background(), audit.Entry{Actor: "test", Event: "test.event", Outcome: audit.OutcomeSuccess, Resource: "r", Details: map[string]string{"i": string(rune('a' + i%26))}}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAuditProofAndHistory: a record's inclusion proof is shown checked
// and downloads as the CLI prints it; kept checkpoints are proved against
// the log, and a log whose stored tree was rewritten shows as an alarm on
// the checkpoint view and the dashboard.
func TestAuditProofAndHistory(t *testing.T) {
	clk := newClock()
	c := newConsole(t, clk)
	ctx := context.Background()
	sg, vkey := signer(t)
	c.cfg.AuditVerifierKey = vkey
	ck, _ := signIn(t, c, "au", RoleAuditor)
	appendN(t, c.cfg.Audit, 5)
	if _, _, err := c.cfg.Audit.Checkpoint(ctx, sg); err != nil {
		t.Fatal(err)
	}
	w := request(c, http.MethodGet, "/console/audit/records/3", ck, "", nil)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "Proved: record 3") || !strings.Contains(w.Body.String(), "signature verifies") {
		t.Fatalf("record page: %d %s", w.Code, w.Body)
	}
	w = request(c, http.MethodGet, "/console/audit/proofs/3.json", ck, "", nil)
	var p audit.InclusionProof
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || w.Code != http.StatusOK {
		t.Fatalf("proof file: %d %v", w.Code, err)
	}
	v, _ := note.NewVerifier(vkey)
	cp, _, err := audit.OpenCheckpoint([]byte(p.Checkpoint), v)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckRecord(p.Proof, cp.Size, cp.Hash, p.Index, tlog.RecordHash(p.Entry)); err != nil {
		t.Fatalf("downloaded proof does not check: %v", err)
	}
	if w := request(c, http.MethodGet, "/console/audit/records/999", ck, "", nil); w.Code != http.StatusNotFound {
		t.Fatalf("missing record: %d", w.Code)
	}
	// A record after the checkpoint is not proved yet, in words.
	appendN(t, c.cfg.Audit, 3)
	head, _ := c.cfg.Audit.Head(ctx)
	if w := request(c, http.MethodGet, "/console/audit/records/"+itoa(head.Seq), ck, "", nil); !strings.Contains(w.Body.String(), "newer than the latest signed checkpoint") {
		t.Fatalf("uncovered record: %s", w.Body)
	}
	// History: two kept checkpoints, each proved.
	if err := c.observeCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	if _, _, err := c.cfg.Audit.Checkpoint(ctx, sg); err != nil {
		t.Fatal(err)
	}
	w = request(c, http.MethodGet, "/console/audit/checkpoints", ck, "", nil)
	body := w.Body.String()
	if w.Code != http.StatusOK || !strings.Contains(body, `id="cp-verdict"`) || strings.Contains(body, `id="cp-alarm"`) || !strings.Contains(body, "yes (from ") {
		t.Fatalf("history: %d %s", w.Code, body)
	}
	if w := request(c, http.MethodGet, "/console/", ck, "", nil); strings.Contains(w.Body.String(), "REWRITTEN") {
		t.Fatal("alarm on an intact log")
	}
	// A signed checkpoint of another tree (a fork shown to the console; here
	// signed with the log's own key, as a stolen key would) is an alarm.
	forged := audit.Checkpoint{Origin: sg.Name(), Tree: audit.Tree{Size: 7}}
	forged.Hash[0] = 1
	fmsg, err := note.Sign(&note.Note{Text: forged.Text()}, sg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.cfg.DB.ExecContext(ctx, `INSERT INTO console_checkpoints (size, note, seen_at) VALUES (7, ?, 1)`, string(fmsg)); err != nil {
		t.Fatal(err)
	}
	w = request(c, http.MethodGet, "/console/audit/checkpoints", ck, "", nil)
	if !strings.Contains(w.Body.String(), `id="cp-alarm"`) || !strings.Contains(w.Body.String(), "fork or rewrite") {
		t.Fatalf("forked checkpoint not shown as an alarm: %s", w.Body)
	}
	if _, err := c.cfg.DB.ExecContext(ctx, `DELETE FROM console_checkpoints WHERE size = 7`); err != nil {
		t.Fatal(err)
	}
	// An insider rolls the log back to 5 records (the tail deleted, the
	// head, tree and the log's own checkpoints restored to match): every
	// check of the database alone passes, the kept checkpoint does not.
	for _, q := range []string{
		`DELETE FROM audit_log WHERE seq > 5`,
		`DELETE FROM audit_tlog WHERE idx >= ` + itoa(tlog.StoredHashIndex(0, 5)),
		`UPDATE audit_head SET seq = 5, hash = (SELECT hash FROM audit_log WHERE seq = 5) WHERE id = 1`,
		`DELETE FROM audit_checkpoints WHERE size > 5`,
	} {
		if _, err := c.cfg.DB.ExecContext(ctx, q); err != nil {
			t.Fatal(q, err)
		}
	}
	if rep, err := c.cfg.Audit.Verify(ctx); err != nil || !rep.OK {
		t.Fatalf("the rolled-back log should pass the database-only check: %+v %v", rep, err)
	}
	w = request(c, http.MethodGet, "/console/audit/checkpoints", ck, "", nil)
	if !strings.Contains(w.Body.String(), `id="cp-alarm"`) || !strings.Contains(w.Body.String(), "does not extend") {
		t.Fatalf("rollback not shown as an alarm: %s", w.Body)
	}
	if w := request(c, http.MethodGet, "/console/", ck, "", nil); !strings.Contains(w.Body.String(), "AUDIT LOG REWRITTEN OR ROLLED BACK") {
		t.Fatalf("dashboard without the alarm: %s", w.Body)
	}
	if recs, _ := c.cfg.Audit.Search(ctx, audit.Query{Event: "console.audit.alarm"}); len(recs) == 0 {
		t.Fatal("the alarm seen is not in the audit trail")
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestSchemeSeries: payments, refusals and amounts per scheme come from the
// audit trail, the amount from the ledger record of the payment's transfer.
func TestSchemeSeries(t *testing.T) {
	clk := newClock()
	c := newConsole(t, clk)
	ctx := context.Background()
	// The records carry the wall-clock time; the series follow it.
	c.cfg.Now = time.Now
	for _, e := range []audit.Entry{
		{Actor: "phone-1", Event: "qmsp.pay", Outcome: audit.OutcomeSuccess, Origin: "qmsp", Resource: "k1", Details: map[string]string{"transfer": "tr_1"}},
		{Actor: "system", Event: "ledger.transfer", Outcome: audit.OutcomeSuccess, Origin: "ledger", Resource: "tr_1", Details: map[string]string{"transfer_id": "tr_1", "amount": "1234", "currency": "CNY"}},
		{Actor: "system", Event: "ledger.transfer", Outcome: audit.OutcomeSuccess, Origin: "ledger", Resource: "tr_2", Details: map[string]string{"transfer_id": "tr_2", "amount": "66", "currency": "CNY"}},
		{Actor: "phone-1", Event: "qmsp.pay", Outcome: audit.OutcomeSuccess, Origin: "qmsp", Resource: "k2", Details: map[string]string{"transfer": "tr_2"}},
		{Actor: "scanner-1", Event: "watermark.pay", Outcome: audit.OutcomeFailure, Origin: "watermark", Resource: "c1"},
	} {
		if _, err := c.cfg.Audit.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.pollSeries(ctx); err != nil {
		t.Fatal(err)
	}
	snap := c.seriesSnapshot()
	q, wm := snap.Schemes[0], snap.Schemes[3]
	if q.Paid != 2 || q.Refused != 0 || q.Total != "13.00 CNY" {
		t.Fatalf("QMSP %+v", q)
	}
	if wm.Paid != 0 || wm.Refused != 1 {
		t.Fatalf("watermark %+v", wm)
	}
	// Polling again reads nothing twice.
	if err := c.pollSeries(ctx); err != nil {
		t.Fatal(err)
	}
	if s := c.seriesSnapshot(); s.Schemes[0].Paid != 2 {
		t.Fatalf("counted twice: %+v", s.Schemes[0])
	}
	ck, _ := signIn(t, c, "au", RoleAuditor)
	w := request(c, http.MethodGet, "/console/qkd", ck, "", nil)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "13.00 CNY") || strings.Contains(w.Body.String(), `"rate"`) {
		t.Fatalf("charts page: %d %s", w.Code, w.Body)
	}
}
