package console

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/url"
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
	if err := c.observeCheckpoint(ctx, 0); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	kept, _, err := c.cfg.Audit.Checkpoint(ctx, sg)
	if err != nil {
		t.Fatal(err)
	}
	// A checkpoint kept outside (pasted) is verified against the log.
	ck2, aus := signIn(t, c, "au2", RoleAuditor)
	w = request(c, http.MethodPost, "/console/audit/verify-checkpoint", ck2, aus.CSRF, url.Values{"checkpoint": {string(kept)}})
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "append-only extension") {
		t.Fatalf("kept checkpoint: %d %s", w.Code, w.Body)
	}
	if w := request(c, http.MethodPost, "/console/audit/verify-checkpoint", ck2, aus.CSRF, url.Values{"checkpoint": {"qshield-audit-test\n9\nAAAA\n"}}); w.Code != http.StatusBadRequest {
		t.Fatalf("unsigned checkpoint: %d", w.Code)
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
		`DELETE FROM audit_tlog_runs WHERE start >= ` + itoa(tlog.StoredHashIndex(0, 5)),
		`UPDATE audit_tlog_runs SET hashes = substr(hashes, 1, (` + itoa(tlog.StoredHashIndex(0, 5)) + ` - start) * 32)
			WHERE start + length(hashes) / 32 > ` + itoa(tlog.StoredHashIndex(0, 5)),
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
	w = request(c, http.MethodPost, "/console/audit/verify-checkpoint", ck2, aus.CSRF, url.Values{"checkpoint": {string(kept)}})
	if !strings.Contains(w.Body.String(), "NOT an extension") {
		t.Fatalf("kept checkpoint after the rollback: %s", w.Body)
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

// logSource serves a log's checkpoints and proofs to a witness in-process.
type logSource struct{ l *audit.Log }

func (s logSource) Checkpoint(ctx context.Context) ([]byte, error) { return s.l.LatestCheckpoint(ctx) }
func (s logSource) Consistency(ctx context.Context, o, n int64) ([]tlog.Hash, error) {
	return s.l.ProveConsistency(ctx, o, n)
}

// TestWitnessView: the checkpoint a witness cosigned is shown with its key
// and age, verified with both keys; a log that no longer extends it is an
// alarm.
func TestWitnessView(t *testing.T) {
	clk := newClock()
	c := newConsole(t, clk)
	ctx := context.Background()
	sg, vkey := signer(t)
	c.cfg.AuditVerifierKey = vkey
	_, wpriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	wsg, err := audit.NewCosigner("witness-test", wpriv, clk.Now) // C2SP cosignature/v1, as qshield audit witness signs
	if err != nil {
		t.Fatal(err)
	}
	wvkey := wsg.VerifierKey()
	lv, _ := note.NewVerifier(vkey)
	state := t.TempDir() + "/witness.state"
	w := &audit.Witness{Log: lv, Signer: wsg, Source: logSource{c.cfg.Audit}, StateFile: state}
	appendN(t, c.cfg.Audit, 6)
	if _, _, err := c.cfg.Audit.Checkpoint(ctx, sg); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Step(ctx); err != nil {
		t.Fatal(err)
	}
	c.cfg.Witnesses = []WitnessConfig{{StateFile: state, VerifierKey: wvkey}}
	ck, _ := signIn(t, c, "au", RoleAuditor)
	body := request(c, http.MethodGet, "/console/audit/checkpoints", ck, "", nil).Body.String()
	if !strings.Contains(body, "witness-test&#43;") || !strings.Contains(body, "the log extends it") || strings.Contains(body, `id="cp-alarm"`) {
		t.Fatalf("witness view: %s", body)
	}
	// A witness key that did not sign the state is refused.
	_, otherV, _ := audit.GenerateCheckpointKey("witness-other")
	c.cfg.Witnesses = []WitnessConfig{{StateFile: state, VerifierKey: otherV}}
	if body := request(c, http.MethodGet, "/console/audit/checkpoints", ck, "", nil).Body.String(); !strings.Contains(body, "lacks the witness") {
		t.Fatalf("wrong witness key accepted: %s", body)
	}
	c.cfg.Witnesses = []WitnessConfig{{StateFile: state, VerifierKey: wvkey}}
	// Roll the log back below what the witness cosigned.
	for _, q := range []string{
		`DELETE FROM audit_log WHERE seq > 2`,
		`DELETE FROM audit_tlog_runs WHERE start >= ` + itoa(tlog.StoredHashIndex(0, 2)),
		`UPDATE audit_tlog_runs SET hashes = substr(hashes, 1, (` + itoa(tlog.StoredHashIndex(0, 2)) + ` - start) * 32)
			WHERE start + length(hashes) / 32 > ` + itoa(tlog.StoredHashIndex(0, 2)),
		`UPDATE audit_head SET seq = 2, hash = (SELECT hash FROM audit_log WHERE seq = 2) WHERE id = 1`,
		`DELETE FROM audit_checkpoints`,
		`DELETE FROM console_checkpoints`,
	} {
		if _, err := c.cfg.DB.ExecContext(ctx, q); err != nil {
			t.Fatal(q, err)
		}
	}
	body = request(c, http.MethodGet, "/console/audit/checkpoints", ck, "", nil).Body.String()
	if !strings.Contains(body, `id="cp-alarm"`) || !strings.Contains(body, "Witness witness-test cosigned 6 records") {
		t.Fatalf("rollback below the witness not an alarm: %s", body)
	}
}

// TestCheckpointGap: the background loop keeps at most one checkpoint a
// minute; a page view keeps the latest at once.
func TestCheckpointGap(t *testing.T) {
	clk := newClock()
	c := newConsole(t, clk)
	ctx := context.Background()
	sg, _ := signer(t)
	count := func() (n int) {
		c.cfg.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM console_checkpoints`).Scan(&n)
		return n
	}
	for i := range 3 {
		appendN(t, c.cfg.Audit, 2)
		if _, _, err := c.cfg.Audit.Checkpoint(ctx, sg); err != nil {
			t.Fatal(err)
		}
		if err := c.observeCheckpoint(ctx, checkpointGap); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			clk.Add(10 * time.Second)
		}
	}
	if n := count(); n != 1 {
		t.Fatalf("kept %d checkpoints within a minute, want 1", n)
	}
	clk.Add(checkpointGap)
	appendN(t, c.cfg.Audit, 1)
	c.cfg.Audit.Checkpoint(ctx, sg)
	if err := c.observeCheckpoint(ctx, checkpointGap); err != nil || count() != 2 {
		t.Fatalf("after a minute: %d (%v)", count(), err)
	}
	appendN(t, c.cfg.Audit, 1)
	c.cfg.Audit.Checkpoint(ctx, sg)
	if err := c.observeCheckpoint(ctx, 0); err != nil || count() != 3 {
		t.Fatalf("a page view: %d (%v)", count(), err)
	}
}

// TestSignCheckpointNow: an operator signs a checkpoint now (an auditor may
// not); the new checkpoint is kept and audited.
func TestSignCheckpointNow(t *testing.T) {
	clk := newClock()
	c := newConsole(t, clk)
	ctx := context.Background()
	sg, vkey := signer(t)
	c.cfg.AuditVerifierKey = vkey
	c.cfg.SignCheckpoint = func(ctx context.Context) error { _, _, err := c.cfg.Audit.Checkpoint(ctx, sg); return err }
	appendN(t, c.cfg.Audit, 3)
	ack, as := signIn(t, c, "au", RoleAuditor)
	if w := request(c, http.MethodPost, "/console/audit/checkpoints", ack, as.CSRF, nil); w.Code != http.StatusForbidden {
		t.Fatalf("auditor: %d", w.Code)
	}
	if msg, _ := c.cfg.Audit.LatestCheckpoint(ctx); msg != nil {
		t.Fatal("a refused request signed a checkpoint")
	}
	ock, os := signIn(t, c, "op", RoleOperator)
	if w := request(c, http.MethodPost, "/console/audit/checkpoints", ock, os.CSRF, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("operator: %d %s", w.Code, w.Body)
	}
	msg, _ := c.cfg.Audit.LatestCheckpoint(ctx)
	cp, err := audit.ParseStoredCheckpoint(msg)
	if err != nil || cp.Size < 3 {
		t.Fatalf("checkpoint %+v (%v)", cp, err)
	}
	var kept int
	c.cfg.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM console_checkpoints`).Scan(&kept)
	if kept != 1 {
		t.Fatalf("kept %d checkpoints", kept)
	}
	if recs, _ := c.cfg.Audit.Search(ctx, audit.Query{Event: "console.audit.checkpoint"}); len(recs) != 1 {
		t.Fatalf("audited %d times", len(recs))
	}
}
