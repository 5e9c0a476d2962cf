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
		var rows []Row
		p := env.P
		rep, err := p.Ledger.Reconcile(ctx, p.Audit)
		if err == nil && !rep.OK {
			err = fmt.Errorf("ledger and audit trail disagree: %v", rep.Problems)
		}
		if err := Expect(&rows, "reconcile ledger and audit trail", err, "",
			fmt.Sprintf("%d accounts, %d transfers, %d money records: each audited exactly once", rep.Accounts, rep.Transfers, rep.MoneyRecords)); err != nil {
			return rows, err
		}
		outside, err := os.MkdirTemp("", "qshield-audit-outside-*")
		if err != nil {
			return rows, err
		}
		defer os.RemoveAll(outside)
		if _, _, err := p.Publisher.PublishNow(ctx); err != nil {
			return rows, err
		}
		msg, err := fetchCheckpoint(ctx, env)
		var cp audit.Checkpoint
		var verifier note.Verifier
		if err == nil {
			verifier, err = platformVerifier(p)
		}
		if err == nil {
			cp, _, err = audit.OpenCheckpoint(msg, verifier)
		}
		saved := filepath.Join(outside, "checkpoint.txt")
		if err == nil {
			err = os.WriteFile(saved, msg, 0o644)
		}
		if err := Expect(&rows, "fetch GET /v1/audit/checkpoint, check its signature, save it outside the data directory", err, "",
			fmt.Sprintf("%s: %d records, root %x…", cp.Origin, cp.Size, cp.Hash[:6])); err != nil {
			return rows, err
		}
		_, wkey, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return rows, err
		}
		wsigner, err := audit.NewCosigner("demo-witness", wkey, nil) // C2SP cosignature/v1
		if err != nil {
			return rows, err
		}
		w := &audit.Witness{Log: verifier, Signer: wsigner, StateFile: filepath.Join(outside, "witness-state"),
			Source: audit.HTTPSource{BaseURL: env.URL, Client: &http.Client{Transport: &http.Transport{TLSClientConfig: env.ClientTLS(p.AdminCert)}}}}
		wc, err := w.Step(ctx)
		if err := Expect(&rows, "witness fetches and cosigns the checkpoint", err, "", fmt.Sprintf("witness holds %d records", wc.Size)); err != nil {
			return rows, err
		}
		recs, err := p.Audit.Search(ctx, audit.Query{Event: "ledger.transfer", Limit: 1})
		if err == nil && len(recs) == 0 {
			err = errors.New("no ledger.transfer record")
		}
		var proof audit.InclusionProof
		if err == nil {
			proof, err = p.Audit.ProveInclusion(ctx, recs[0].Seq, cp.Size)
		}
		if err == nil {
			err = tlog.CheckRecord(proof.Proof, cp.Size, cp.Hash, proof.Index, tlog.RecordHash(proof.Entry))
		}
		if err := Expect(&rows, "inclusion proof of the first transfer's audit record", err, "",
			fmt.Sprintf("record %d in the checkpoint's tree, %d hashes", proof.Seq, len(proof.Proof))); err != nil {
			return rows, err
		}

		// An insider works on a copy of the database: drops the last records
		// and moves the head back, so the hash chain is intact again.
		copyPath := filepath.Join(outside, "copy.db")
		if _, err := p.DB.ExecContext(ctx, `VACUUM INTO '`+copyPath+`'`); err != nil {
			return rows, fmt.Errorf("copy the database: %w", err)
		}
		db2, err := sqldb.Open(ctx, copyPath)
		if err != nil {
			return rows, err
		}
		defer db2.Close()
		keep := cp.Size - 5
		err = db2.InTx(ctx, func(tx *sql.Tx) error {
			var h []byte
			if err := tx.QueryRowContext(ctx, `SELECT hash FROM audit_log WHERE seq = ?`, keep).Scan(&h); err != nil {
				return err
			}
			for _, st := range []struct {
				q    string
				args []any
			}{
				{`DELETE FROM audit_log WHERE seq > ?`, []any{keep}},
				{`DELETE FROM audit_tlog WHERE idx >= ?`, []any{tlog.StoredHashCount(keep)}},
				{`UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`, []any{keep, h}},
			} {
				if _, err := tx.ExecContext(ctx, st.q, st.args...); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return rows, fmt.Errorf("tamper with the copy: %w", err)
		}
		l2, err := platform.OpenAudit(ctx, db2)
		if err != nil {
			return rows, err
		}
		chain, err := l2.Verify(ctx)
		if err == nil && !chain.OK {
			err = fmt.Errorf("chain check found %v", chain.Problems)
		}
		if err := Expect(&rows, "copy: last 5 records deleted, old head restored; chain check alone", err, "",
			"passes: a bare hash chain cannot see a truncated tail"); err != nil {
			return rows, err
		}
		vr, err := l2.VerifyCheckpoint(ctx, cp)
		if err == nil && !vr.OK {
			err = fmt.Errorf("%s: %s", vr.Problems[0].Kind, vr.Problems[0].Detail)
		}
		if err := Expect(&rows, "copy: verify against the saved checkpoint", err, string(audit.ProblemRollback), ""); err != nil {
			return rows, err
		}
		return rows, nil
	}}
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
