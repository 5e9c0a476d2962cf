package console

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/qshield/qshield/audit"
)

// The audit log's proofs in the console.
//
//   - A record's inclusion proof against the latest signed checkpoint, as
//     `qshield audit prove` prints it, checked here (leaf hash, audit path,
//     checkpoint signature) and offered as a file for a third party.
//   - Checkpoint history: every signed checkpoint the console sees (its
//     background loop looks every few seconds) is kept in its own table, and
//     each view proves, with consistency proofs the log computes now, that
//     each kept checkpoint extends the one before and that the log today
//     extends them all. A log rewritten or rolled back behind the platform's
//     back fails that proof and shows as an alarm here and on the dashboard.
//     The table lives in the same database, so an insider who finds it can
//     rewrite it too: it is one more copy to find, not a witness; witnesses
//     (below) and checkpoint files on other machines are.
//   - Witnesses: the latest checkpoint each configured witness cosigned
//     (its state file), the witness's key, the age of the cosignature, and
//     whether the log today extends it.

// WitnessConfig names an audit witness the console reports on.
type WitnessConfig struct {
	// StateFile is the witness's state (`qshield audit witness --state`):
	// the last checkpoint it cosigned, a signed note.
	StateFile string
	// VerifierKey is the witness's public key (the .vkey beside its --key).
	VerifierKey string
}

// observeCheckpoint keeps the latest signed checkpoint if it is new.
func (c *Console) observeCheckpoint(ctx context.Context) error {
	msg, err := c.cfg.Audit.LatestCheckpoint(ctx)
	if err != nil || msg == nil {
		return err
	}
	cp, err := audit.ParseStoredCheckpoint(msg)
	if err != nil {
		return err
	}
	_, err = c.cfg.DB.ExecContext(ctx, c.st.q(`INSERT INTO console_checkpoints (size, note, seen_at) VALUES (?, ?, ?) ON CONFLICT (size) DO NOTHING`),
		cp.Size, string(msg), c.cfg.Now().UnixNano())
	return err
}

// cpRow is one kept checkpoint with what was proved about it.
type cpRow struct {
	Size     int64
	Root     string // hex, shortened for display
	Seen     time.Time
	Note     string
	SigOK    bool
	SigErr   string
	PrevOK   bool   // extends the previous kept checkpoint (true for the first)
	PrevErr  string // why not
	NowOK    bool   // the log today extends it
	NowErr   string
	HasPrev  bool
	PrevSize int64
}

type historyData struct {
	Rows     []cpRow
	Tree     audit.Tree
	TreeRoot string
	Alarms   []string
	Verified bool // a verifier key is configured
	Total    int
}

const historyShown = 20

// checkpointHistory proves the kept checkpoints against each other and the
// log today. It reads the most recent historyShown, and the oldest kept one.
func (c *Console) checkpointHistory(ctx context.Context) (historyData, error) {
	var d historyData
	if err := c.observeCheckpoint(ctx); err != nil {
		c.cfg.Log.Warn("console: observe checkpoint", "err", err)
	}
	var verifier note.Verifier
	if c.cfg.AuditVerifierKey != "" {
		v, err := note.NewVerifier(c.cfg.AuditVerifierKey)
		if err != nil {
			return d, fmt.Errorf("console: audit verifier key: %w", err)
		}
		verifier, d.Verified = v, true
	}
	if err := c.cfg.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM console_checkpoints`).Scan(&d.Total); err != nil {
		return d, fmt.Errorf("console: count checkpoints: %w", err)
	}
	rows, err := c.cfg.DB.QueryContext(ctx, c.st.q(`SELECT size, note, seen_at FROM console_checkpoints ORDER BY size DESC LIMIT ?`), historyShown)
	if err != nil {
		return d, fmt.Errorf("console: read checkpoints: %w", err)
	}
	var kept []cpRow
	for rows.Next() {
		var r cpRow
		var seen int64
		if err := rows.Scan(&r.Size, &r.Note, &seen); err != nil {
			rows.Close()
			return d, err
		}
		r.Seen = time.Unix(0, seen)
		kept = append(kept, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return d, err
	}
	// The oldest kept checkpoint too, when it is not among the recent ones.
	if d.Total > len(kept) {
		var r cpRow
		var seen int64
		if err := c.cfg.DB.QueryRowContext(ctx, `SELECT size, note, seen_at FROM console_checkpoints ORDER BY size LIMIT 1`).Scan(&r.Size, &r.Note, &seen); err == nil {
			r.Seen = time.Unix(0, seen)
			kept = append(kept, r)
		}
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].Size < kept[j].Size })
	if d.Tree, err = c.cfg.Audit.TreeHead(ctx); err != nil {
		return d, fmt.Errorf("console: tree head: %w", err)
	}
	d.TreeRoot = hex.EncodeToString(d.Tree.Hash[:])
	var prev *audit.Checkpoint
	var prevSize int64
	for i := range kept {
		r := &kept[i]
		cp, err := audit.ParseStoredCheckpoint([]byte(r.Note))
		if err != nil {
			r.SigErr = "unreadable: " + err.Error()
			d.Alarms = append(d.Alarms, fmt.Sprintf("The checkpoint kept for %d records is unreadable.", r.Size))
			continue
		}
		r.Root = hex.EncodeToString(cp.Hash[:])
		if verifier != nil {
			if _, _, err := audit.OpenCheckpoint([]byte(r.Note), verifier); err != nil {
				r.SigErr = "the log's signature does not verify"
				d.Alarms = append(d.Alarms, fmt.Sprintf("The checkpoint of %d records is not signed by the log's key.", r.Size))
			} else {
				r.SigOK = true
			}
		}
		if prev != nil {
			r.HasPrev, r.PrevSize = true, prevSize
			if err := c.consistent(ctx, prev.Tree, cp.Tree, d.Tree.Size); err != nil {
				r.PrevErr = err.Error()
				d.Alarms = append(d.Alarms, fmt.Sprintf("The checkpoints of %d and %d records are not one growing log: %v", prevSize, r.Size, err))
			} else {
				r.PrevOK = true
			}
		} else {
			r.PrevOK = true
		}
		if err := c.consistent(ctx, cp.Tree, d.Tree, d.Tree.Size); err != nil {
			r.NowErr = err.Error()
			d.Alarms = append(d.Alarms, fmt.Sprintf("The log today (%d records) does not extend the checkpoint of %d records seen %s: %v",
				d.Tree.Size, r.Size, r.Seen.UTC().Format("2006-01-02 15:04:05 UTC"), err))
		} else {
			r.NowOK = true
		}
		cpc := cp
		prev, prevSize = &cpc, r.Size
	}
	// Newest first on the page.
	for i, j := 0, len(kept)-1; i < j; i, j = i+1, j-1 {
		kept[i], kept[j] = kept[j], kept[i]
	}
	d.Rows = kept
	return d, nil
}

// consistent proves that tree old is a prefix of tree cur with a proof the
// log computes from its stored hashes now (the log holds have records): a
// log rewritten below cur.Size cannot produce a proof joining the two roots.
func (c *Console) consistent(ctx context.Context, old, cur audit.Tree, have int64) error {
	if cur.Size < old.Size {
		return fmt.Errorf("rollback: %d records now, %d before", cur.Size, old.Size)
	}
	if cur.Size > have {
		return fmt.Errorf("rollback: the log holds %d records, fewer than %d", have, cur.Size)
	}
	var proof []tlog.Hash
	if old.Size > 0 && old.Size < cur.Size {
		p, err := c.cfg.Audit.ProveConsistency(ctx, old.Size, cur.Size)
		if err != nil {
			return fmt.Errorf("no consistency proof: %w", err)
		}
		proof = p
	}
	if err := audit.CheckConsistency(old, cur, proof); err != nil {
		return errors.New("fork or rewrite: the consistency proof fails")
	}
	return nil
}

// witnessRow is one witness's latest cosignature.
type witnessRow struct {
	File     string
	Key      string // the witness's key name and hash
	Size     int64
	Root     string
	Age      string
	Cosigned time.Time
	OK       bool
	Problem  string
}

func (c *Console) witnesses(ctx context.Context, cur audit.Tree) ([]witnessRow, []string) {
	var out []witnessRow
	var alarms []string
	var logV note.Verifier
	if c.cfg.AuditVerifierKey != "" {
		logV, _ = note.NewVerifier(c.cfg.AuditVerifierKey)
	}
	for _, w := range c.cfg.Witnesses {
		row := witnessRow{File: w.StateFile}
		wv, err := note.NewVerifier(w.VerifierKey)
		if err != nil {
			row.Problem = "the witness key is not a signed-note verifier key"
			out = append(out, row)
			continue
		}
		row.Key = fmt.Sprintf("%s+%08x", wv.Name(), wv.KeyHash())
		st, err := os.Stat(w.StateFile)
		b, rerr := os.ReadFile(w.StateFile)
		if err != nil || rerr != nil {
			row.Problem = "the witness has cosigned nothing yet (no state file)"
			out = append(out, row)
			continue
		}
		row.Cosigned = st.ModTime()
		row.Age = c.cfg.Now().Sub(st.ModTime()).Round(time.Second).String()
		vs := []note.Verifier{wv}
		if logV != nil {
			vs = append(vs, logV)
		}
		n, err := note.Open(b, note.VerifierList(vs...))
		if err != nil {
			row.Problem = "the cosigned checkpoint does not verify: " + err.Error()
			alarms = append(alarms, "Witness "+wv.Name()+": its checkpoint does not verify.")
			out = append(out, row)
			continue
		}
		signedBy := map[string]bool{}
		for _, s := range n.Sigs {
			signedBy[s.Name] = true
		}
		if !signedBy[wv.Name()] || (logV != nil && !signedBy[logV.Name()]) {
			row.Problem = "the checkpoint lacks the witness's or the log's signature"
			out = append(out, row)
			continue
		}
		cp, err := audit.ParseCheckpointText(n.Text)
		if err != nil {
			row.Problem = err.Error()
			out = append(out, row)
			continue
		}
		row.Size, row.Root = cp.Size, hex.EncodeToString(cp.Hash[:])
		if err := c.consistent(ctx, cp.Tree, cur, cur.Size); err != nil {
			row.Problem = "the log today does not extend what the witness cosigned: " + err.Error()
			alarms = append(alarms, fmt.Sprintf("Witness %s cosigned %d records; the log today does not extend them (%v).", wv.Name(), cp.Size, err))
		} else {
			row.OK = true
		}
		out = append(out, row)
	}
	return out, alarms
}

// proofData is a record with its inclusion proof.
type proofData struct {
	Record     audit.Record
	Proof      *audit.InclusionProof
	Path       []string
	LeafHash   string
	Root       string
	CP         *audit.Checkpoint
	SigOK      bool
	Verified   bool // a verifier key was configured
	ProofOK    bool
	ProofErr   string
	NotCovered bool
}

// inclusion builds and checks record seq's proof against the latest checkpoint.
func (c *Console) inclusion(ctx context.Context, seq int64) (proofData, error) {
	var d proofData
	recs, err := c.cfg.Audit.Search(ctx, audit.Query{AfterSeq: seq - 1, Limit: 1})
	if err != nil {
		return d, err
	}
	if len(recs) == 0 || recs[0].Seq != seq {
		return d, errNoRecord
	}
	d.Record = recs[0]
	msg, err := c.cfg.Audit.LatestCheckpoint(ctx)
	if err != nil {
		return d, err
	}
	if msg == nil {
		d.NotCovered = true
		return d, nil
	}
	cp, err := audit.ParseStoredCheckpoint(msg)
	if err != nil {
		return d, err
	}
	d.CP = &cp
	if c.cfg.AuditVerifierKey != "" {
		d.Verified = true
		if v, err := note.NewVerifier(c.cfg.AuditVerifierKey); err == nil {
			_, _, oerr := audit.OpenCheckpoint(msg, v)
			d.SigOK = oerr == nil
		}
	}
	if seq > cp.Size {
		d.NotCovered = true
		return d, nil
	}
	p, err := c.cfg.Audit.ProveInclusion(ctx, seq, cp.Size)
	if err != nil {
		return d, err
	}
	p.Checkpoint = string(msg)
	d.Proof = &p
	for _, h := range p.Proof {
		d.Path = append(d.Path, hex.EncodeToString(h[:]))
	}
	d.LeafHash = hex.EncodeToString(p.LeafHash[:])
	d.Root = hex.EncodeToString(cp.Hash[:])
	// Check it as a third party would: the leaf from the entry bytes, the
	// path to the checkpoint's root (not the root the log computed).
	leaf := tlog.RecordHash(p.Entry)
	if err := tlog.CheckRecord(p.Proof, cp.Size, cp.Hash, seq-1, leaf); err != nil {
		d.ProofErr = "the audit path does not lead to the checkpoint's root"
	} else {
		d.ProofOK = true
	}
	return d, nil
}

var errNoRecord = errors.New("console: no such audit record")

func (c *Console) auditRecord(w http.ResponseWriter, r *http.Request, s *Session) {
	seq, err := strconv.ParseInt(r.PathValue("seq"), 10, 64)
	if err != nil || seq < 1 {
		c.fail(w, r, s, http.StatusBadRequest, "That is not a record number.")
		return
	}
	d, err := c.inclusion(r.Context(), seq)
	if errors.Is(err, errNoRecord) {
		c.fail(w, r, s, http.StatusNotFound, fmt.Sprintf("The audit trail has no record %d.", seq))
		return
	}
	if err != nil {
		c.cfg.Log.Error("console: inclusion proof", "seq", seq, "err", err)
		c.fail(w, r, s, http.StatusServiceUnavailable, "The proof could not be made right now; try again shortly.")
		return
	}
	c.render(w, r, http.StatusOK, "record", page{Title: fmt.Sprintf("Audit record %d", seq), Nav: "audit", S: s, Data: d})
}

// auditProofFile is the proof as `qshield audit prove SEQ` prints it, as a
// file to hand to a third party (it carries the record).
func (c *Console) auditProofFile(w http.ResponseWriter, r *http.Request, s *Session) {
	name, ok := strings.CutSuffix(r.PathValue("file"), ".json")
	seq, err := strconv.ParseInt(name, 10, 64)
	if !ok || err != nil || seq < 1 {
		http.NotFound(w, r)
		return
	}
	d, err := c.inclusion(r.Context(), seq)
	if err != nil || d.Proof == nil {
		c.fail(w, r, s, http.StatusNotFound, "No proof of that record exists yet (it is not covered by a signed checkpoint).")
		return
	}
	c.record(r.Context(), s, "console.audit.prove", audit.OutcomeSuccess, strconv.FormatInt(seq, 10), map[string]any{"tree_size": d.Proof.TreeSize})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="audit-record-%d-proof.json"`, seq))
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(d.Proof)
}

func (c *Console) auditHistory(w http.ResponseWriter, r *http.Request, s *Session) {
	ctx := r.Context()
	d, err := c.checkpointHistory(ctx)
	if err != nil {
		c.cfg.Log.Error("console: checkpoint history", "err", err)
		c.fail(w, r, s, http.StatusServiceUnavailable, "The checkpoints cannot be checked right now; try again shortly.")
		return
	}
	ws, walarms := c.witnesses(ctx, d.Tree)
	d.Alarms = append(d.Alarms, walarms...)
	if len(d.Alarms) > 0 {
		c.record(ctx, s, "console.audit.alarm", audit.OutcomeFailure, "audit", map[string]any{"alarms": len(d.Alarms), "first": d.Alarms[0]})
	}
	c.render(w, r, http.StatusOK, "checkpoints", page{Title: "Audit checkpoints", Nav: "audit", S: s, Data: struct {
		historyData
		Witnesses   []witnessRow
		HasWitness  bool
		VerifierKey string
	}{d, ws, len(c.cfg.Witnesses) > 0, c.cfg.AuditVerifierKey}})
}

// auditAlarms is what the dashboard shows about the audit log (a short
// check: the newest kept checkpoint against the log today).
func (c *Console) auditAlarms(ctx context.Context) []string {
	var note string
	var size int64
	err := c.cfg.DB.QueryRowContext(ctx, `SELECT size, note FROM console_checkpoints ORDER BY size DESC LIMIT 1`).Scan(&size, &note)
	if errors.Is(err, sql.ErrNoRows) || err != nil {
		return nil
	}
	cp, err := audit.ParseStoredCheckpoint([]byte(note))
	if err != nil {
		return []string{"Audit log: a kept checkpoint is unreadable."}
	}
	cur, err := c.cfg.Audit.TreeHead(ctx)
	if err != nil {
		return nil
	}
	if err := c.consistent(ctx, cp.Tree, cur, cur.Size); err != nil {
		return []string{fmt.Sprintf("AUDIT LOG REWRITTEN OR ROLLED BACK: the log today does not extend the checkpoint of %d records (%v).", cp.Size, err)}
	}
	return nil
}

// auditRecordQuery is the "prove record N" form.
func (c *Console) auditRecordQuery(w http.ResponseWriter, r *http.Request, s *Session) {
	seq, err := strconv.ParseInt(strings.TrimSpace(r.URL.Query().Get("seq")), 10, 64)
	if err != nil || seq < 1 {
		c.fail(w, r, s, http.StatusBadRequest, "Enter a record number (1 or more).")
		return
	}
	http.Redirect(w, r, "/console/audit/records/"+strconv.FormatInt(seq, 10), http.StatusSeeOther)
}
