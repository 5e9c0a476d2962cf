package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/qshield/qshield/fsutil"
)

// Source is where a witness gets checkpoints and consistency proofs.
type Source interface {
	Checkpoint(ctx context.Context) ([]byte, error)
	Consistency(ctx context.Context, oldSize, newSize int64) ([]tlog.Hash, error)
}

// HTTPSource reads a platform's Handler routes under BaseURL.
type HTTPSource struct {
	BaseURL string
	Client  *http.Client // nil: a client with a 10 s timeout
}

func (s HTTPSource) get(ctx context.Context, path string) ([]byte, error) {
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(s.BaseURL, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// Checkpoint implements Source.
func (s HTTPSource) Checkpoint(ctx context.Context) ([]byte, error) {
	return s.get(ctx, "/v1/audit/checkpoint")
}

// Consistency implements Source.
func (s HTTPSource) Consistency(ctx context.Context, oldSize, newSize int64) ([]tlog.Hash, error) {
	body, err := s.get(ctx, fmt.Sprintf("/v1/audit/consistency?old=%d&new=%d", oldSize, newSize))
	if err != nil {
		return nil, err
	}
	return parseProof(body)
}

// parseProof parses one base64 hash per line (at most 63 lines, as C2SP
// tlog-witness allows).
func parseProof(b []byte) ([]tlog.Hash, error) {
	if len(b) == 0 {
		return []tlog.Hash{}, nil
	}
	lines := strings.Split(string(b), "\n")
	if lines[len(lines)-1] != "" {
		return nil, fmt.Errorf("%w: consistency proof does not end in a newline", ErrInvalid)
	}
	lines = lines[:len(lines)-1]
	if len(lines) > 63 {
		return nil, fmt.Errorf("%w: consistency proof longer than 63 hashes", ErrInvalid)
	}
	out := make([]tlog.Hash, 0, len(lines))
	for _, line := range lines {
		raw, err := base64.StdEncoding.Strict().DecodeString(line)
		if err != nil || len(raw) != tlog.HashSize {
			return nil, fmt.Errorf("%w: consistency proof line is not a base64 hash", ErrInvalid)
		}
		out = append(out, tlog.Hash(raw))
	}
	return out, nil
}

// Witness checks that a log only ever grows: it keeps the last checkpoint it
// verified (in StateFile, outside the log's database, ideally on another
// machine), accepts a new one only with a valid log signature, a size no
// smaller and a consistency proof from the one it holds, and cosigns what it
// accepts (a signed note with the log's and the witness's signatures,
// written to StateFile). A rollback or fork is an alarm: Step returns an
// error wrapping ErrRollback or ErrFork, logs at error level, increments
// Alarms (expose it as a metric) and keeps the old state.
type Witness struct {
	Log       note.Verifier // the log's checkpoint key
	Signer    note.Signer   // the witness's own key
	Source    Source
	StateFile string
	Logger    *slog.Logger
	// Alarms counts forks and rollbacks seen.
	Alarms atomic.Int64
	// Accepted counts checkpoints verified and cosigned.
	Accepted atomic.Int64
}

// Step fetches the latest checkpoint, checks it against the stored one,
// cosigns and stores it. It returns the accepted checkpoint.
func (w *Witness) Step(ctx context.Context) (Checkpoint, error) {
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	msg, err := w.Source.Checkpoint(ctx)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit witness: fetch checkpoint: %w", err)
	}
	cur, n, err := OpenCheckpoint(msg, w.Log)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit witness: %w", err)
	}
	prev, havePrev, err := w.load()
	if err != nil {
		return Checkpoint{}, err
	}
	if havePrev {
		var proof []tlog.Hash
		if prev.Size > 0 && cur.Size > prev.Size {
			if proof, err = w.Source.Consistency(ctx, prev.Size, cur.Size); err != nil {
				return Checkpoint{}, fmt.Errorf("audit witness: fetch consistency proof: %w", err)
			}
		}
		if cerr := CheckConsistency(prev.Tree, cur.Tree, proof); cerr != nil {
			kind := ErrFork
			if cur.Size < prev.Size {
				kind = ErrRollback
			}
			w.Alarms.Add(1)
			log.ErrorContext(ctx, "AUDIT LOG ALARM", "kind", map[bool]string{true: "rollback", false: "fork"}[kind == ErrRollback],
				"origin", cur.Origin, "held_size", prev.Size, "held_root", base64.StdEncoding.EncodeToString(prev.Hash[:]),
				"offered_size", cur.Size, "offered_root", base64.StdEncoding.EncodeToString(cur.Hash[:]), "err", cerr)
			return cur, fmt.Errorf("%w: %v", kind, cerr)
		}
	}
	// Cosign: the log's verified signature plus ours.
	cosigned, err := note.Sign(&note.Note{Text: n.Text, Sigs: n.Sigs}, w.Signer)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit witness: cosign: %w", err)
	}
	if err := fsutil.WriteFileAtomic(w.StateFile, cosigned, 0o644, true); err != nil {
		return Checkpoint{}, fmt.Errorf("audit witness: store state: %w", err)
	}
	w.Accepted.Add(1)
	log.InfoContext(ctx, "audit checkpoint cosigned", "origin", cur.Origin, "size", cur.Size)
	return cur, nil
}

// load reads the last cosigned checkpoint (none on the first run).
func (w *Witness) load() (Checkpoint, bool, error) {
	b, err := os.ReadFile(w.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit witness: read state: %w", err)
	}
	c, _, err := OpenCheckpoint(b, w.Log)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit witness: state file %s: %w", w.StateFile, err)
	}
	return c, true, nil
}

// Run calls Step every interval until ctx ends or an alarm is raised (a
// fetch error is logged and retried). It returns the alarm's error.
func (w *Witness) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		_, err := w.Step(ctx)
		if errors.Is(err, ErrFork) || errors.Is(err, ErrRollback) {
			return err
		}
		if err != nil && w.Logger != nil {
			w.Logger.WarnContext(ctx, "audit witness step failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// FormatProof renders a consistency proof as Handler does.
func FormatProof(p []tlog.Hash) string {
	var b strings.Builder
	for _, h := range p {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]))
		b.WriteByte('\n')
	}
	return b.String()
}
