package demo

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/sqldb"
)

// Audit is the final step: the ledger and the audit trail reconcile, a
// signed checkpoint is fetched and saved outside the data directory, a
// witness cosigns it, one money record is proved included, and then a copy
// of the database is tampered with (the tail of the log deleted and the old
// head restored, which the bare hash chain cannot see) and verification
// against the saved checkpoint fails.
func Audit() Scenario {
	return Scenario{Name: "audit", Run: func(ctx context.Context, env *Env) ([]Row, error) {
		outside, err := os.MkdirTemp("", "qshield-audit-outside-*")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(outside)
		r := &auditRun{ctx: ctx, env: env, p: env.P, outside: outside}
		for _, phase := range []func() error{r.reconcile, r.checkpoint, r.witness, r.inclusion, r.rollback} {
			if err := phase(); err != nil {
				return r.rows, err
			}
		}
		return r.rows, nil
	}}
}

// auditRun is one run of the audit scenario: the checkpoint saved outside
// the data directory is what the later phases check against.
type auditRun struct {
	ctx      context.Context
	env      *Env
	p        *platform.Platform
	outside  string // a directory outside the data directory
	rows     []Row
	cp       audit.Checkpoint
	verifier note.Verifier
}

// reconcile checks that every transfer and account is audited exactly once.
func (r *auditRun) reconcile() error {
	rep, err := r.p.Ledger.Reconcile(r.ctx, r.p.Audit)
	if err == nil && !rep.OK {
		err = fmt.Errorf("ledger and audit trail disagree: %v", rep.Problems)
	}
	return Expect(&r.rows, "reconcile ledger and audit trail", err, "",
		fmt.Sprintf("%d accounts, %d transfers, %d money records: each audited exactly once", rep.Accounts, rep.Transfers, rep.MoneyRecords))
}

// checkpoint publishes, fetches and checks the signed checkpoint, and saves
// it outside the data directory.
func (r *auditRun) checkpoint() error {
	if _, _, err := r.p.Publisher.PublishNow(r.ctx); err != nil {
		return err
	}
	msg, err := fetchCheckpoint(r.ctx, r.env)
	if err == nil {
		r.verifier, err = platformVerifier(r.p)
	}
	if err == nil {
		r.cp, _, err = audit.OpenCheckpoint(msg, r.verifier)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(r.outside, "checkpoint.txt"), msg, 0o644)
	}
	return Expect(&r.rows, "fetch GET /v1/audit/checkpoint, check its signature, save it outside the data directory", err, "",
		fmt.Sprintf("%s: %d records, root %x…", r.cp.Origin, r.cp.Size, r.cp.Hash[:6]))
}

// witness has an independent witness fetch and cosign the checkpoint.
func (r *auditRun) witness() error {
	_, wkey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	wsigner, err := audit.NewCosigner("demo-witness", wkey, nil) // C2SP cosignature/v1
	if err != nil {
		return err
	}
	w := &audit.Witness{Log: r.verifier, Signer: wsigner, StateFile: filepath.Join(r.outside, "witness-state"),
		Source: audit.HTTPSource{BaseURL: r.env.URL, Client: &http.Client{Transport: &http.Transport{TLSClientConfig: r.env.ClientTLS(r.p.AdminCert)}}}}
	wc, err := w.Step(r.ctx)
	return Expect(&r.rows, "witness fetches and cosigns the checkpoint", err, "", fmt.Sprintf("witness holds %d records", wc.Size))
}

// inclusion proves the first transfer's record is in the checkpoint's tree.
func (r *auditRun) inclusion() error {
	recs, err := r.p.Audit.Search(r.ctx, audit.Query{Event: "ledger.transfer", Limit: 1})
	if err == nil && len(recs) == 0 {
		err = errors.New("no ledger.transfer record")
	}
	var proof audit.InclusionProof
	if err == nil {
		proof, err = r.p.Audit.ProveInclusion(r.ctx, recs[0].Seq, r.cp.Size)
	}
	if err == nil {
		err = tlog.CheckRecord(proof.Proof, r.cp.Size, r.cp.Hash, proof.Index, tlog.RecordHash(proof.Entry))
	}
	return Expect(&r.rows, "inclusion proof of the first transfer's audit record", err, "",
		fmt.Sprintf("record %d in the checkpoint's tree, %d hashes", proof.Seq, len(proof.Proof)))
}

// rollback: an insider works on a copy of the database, drops the last
// records and moves the head back, so the hash chain is intact again; only
// the saved checkpoint shows it.
func (r *auditRun) rollback() error {
	ctx := r.ctx
	copyPath := filepath.Join(r.outside, "copy.db")
	if _, err := r.p.DB.ExecContext(ctx, `VACUUM INTO '`+copyPath+`'`); err != nil {
		return fmt.Errorf("copy the database: %w", err)
	}
	db2, err := sqldb.Open(ctx, copyPath)
	if err != nil {
		return err
	}
	defer db2.Close()
	l2, err := platform.OpenAudit(ctx, db2)
	if err != nil {
		return err
	}
	keep, err := truncateAuditTail(ctx, db2, l2, r.cp.Size-5)
	if err != nil {
		return fmt.Errorf("tamper with the copy: %w", err)
	}
	chain, err := l2.Verify(ctx)
	if err == nil && !chain.OK {
		err = fmt.Errorf("chain check found %v", chain.Problems)
	}
	if err := Expect(&r.rows, fmt.Sprintf("copy: last %d records deleted, old head restored; chain check alone", r.cp.Size-keep), err, "",
		"passes: a bare hash chain cannot see a truncated tail"); err != nil {
		return err
	}
	vr, err := l2.VerifyCheckpoint(ctx, r.cp)
	if err == nil && !vr.OK {
		err = fmt.Errorf("%s: %s", vr.Problems[0].Kind, vr.Problems[0].Detail)
	}
	return Expect(&r.rows, "copy: verify against the saved checkpoint", err, string(audit.ProblemRollback), "")
}

// truncateAuditTail deletes the records after keep (or after the record
// before keep's pack, when keep is inside one: a pack is one row) and sets
// the head back to the last record kept, as an insider hiding the tail
// would. It returns the last record kept.
func truncateAuditTail(ctx context.Context, db *sqldb.DB, l *audit.Log, keep int64) (int64, error) {
	var first int64
	err := db.QueryRowContext(ctx, `SELECT first_seq FROM audit_packs WHERE first_seq <= ? AND last_seq > ?`, keep, keep).Scan(&first)
	if err == nil {
		keep = first - 1
	} else if !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	last, err := l.Search(ctx, audit.Query{AfterSeq: keep - 1, Limit: 1})
	if err == nil && (len(last) != 1 || last[0].Seq != keep) {
		err = fmt.Errorf("record %d not found", keep)
	}
	if err != nil {
		return 0, err
	}
	h := []byte(last[0].Hash)
	err = db.InTx(ctx, func(tx *sql.Tx) error {
		for _, st := range []struct {
			q    string
			args []any
		}{
			{`DELETE FROM audit_log WHERE seq > ?`, []any{keep}},
			{`DELETE FROM audit_pack_terms WHERE first_seq > ?`, []any{keep}},
			{`DELETE FROM audit_packs WHERE first_seq > ?`, []any{keep}},
			{`DELETE FROM audit_tlog_runs WHERE start >= ?`, []any{tlog.StoredHashCount(keep)}},
			{`UPDATE audit_tlog_runs SET hashes = substr(hashes, 1, (? - start) * 32) WHERE start + length(hashes) / 32 > ?`,
				[]any{tlog.StoredHashCount(keep), tlog.StoredHashCount(keep)}},
			{`UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`, []any{keep, h}},
		} {
			if _, err := tx.ExecContext(ctx, st.q, st.args...); err != nil {
				return err
			}
		}
		return nil
	})
	return keep, err
}

func fetchCheckpoint(ctx context.Context, env *Env) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, env.URL+"/v1/audit/checkpoint", nil)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: env.ClientTLS(env.P.AdminCert)}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/audit/checkpoint: %s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 64<<10))
}

func platformVerifier(p *platform.Platform) (note.Verifier, error) {
	vkey, err := audit.ReadVerifierKey(platform.AuditVerifierKeyFile(p.StateDir))
	if err != nil {
		return nil, err
	}
	return note.NewVerifier(vkey)
}
