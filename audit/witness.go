package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
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

// Witness checks that a log only ever grows and cosigns what it checked
// (C2SP tlog-witness v1.0.0, cosignatures per tlog-cosignature v1.0.1). It
// witnesses one log (one origin, the name of Log) and keeps the last
// checkpoint it cosigned in StateFile — outside the log's database, ideally
// on another machine — as a signed note carrying the log's signature and
// its own cosignature. A checkpoint is accepted only with a valid log
// signature, from the size held, with a consistency proof from it (same
// size: same root); acceptance and the durable write of the new state
// happen under one lock, before the answer.
//
// Checkpoints arrive two ways: pushed to Handler's POST add-checkpoint by
// the log's publisher (WitnessSink), or pulled from Source by Step/Run.
// Alarms — Alarms is incremented, an "AUDIT LOG ALARM" line logged at
// error level, and the state kept — are raised on evidence of
// misbehaviour: two log-signed checkpoints of one size with different
// roots (push or pull), and, when pulling from the log itself, a smaller
// tree (rollback) or a proof that does not verify (fork). A pushed smaller
// checkpoint or a pushed bad proof is only refused (409, 422) and counted
// in Refused: anyone may replay an old signed checkpoint or send a wrong
// proof, so they are not evidence against the log.
//
// One process per StateFile: the lock is in memory.
type Witness struct {
	Log note.Verifier // the log's checkpoint key; its name is the origin
	// Signer is the witness's own key, a *Cosigner (LoadOrCreateCosigner)
	// for C2SP cosignatures.
	Signer    note.Signer
	Source    Source // for Step and Run (pull mode); nil when only pushed to
	StateFile string
	Logger    *slog.Logger
	// Alarms counts forks and rollbacks seen.
	Alarms atomic.Int64
	// Accepted counts checkpoints verified and cosigned.
	Accepted atomic.Int64
	// Refused counts add-checkpoint requests answered with an error.
	Refused atomic.Int64
	// OnAlarm, when set, is called (after the log line) with each alarm's
	// error, e.g. to stop a witness service.
	OnAlarm func(error)

	mu sync.Mutex // check and store are one step
}

// ErrProof is wrapped by errors for a consistency proof that does not verify.
var ErrProof = errors.New("audit: the consistency proof does not verify")

// WitnessError is a refusal of AddCheckpoint, with its tlog-witness status.
type WitnessError struct {
	// Status is the HTTP status tlog-witness prescribes: 400 malformed or
	// old size above the checkpoint's, 403 no trusted log signature, 404
	// unknown origin, 409 old size not the one held (StoredSize) or same
	// size with another root, 422 proof does not verify.
	Status int
	// StoredSize is the size of the checkpoint held (409 only).
	StoredSize int64
	Err        error
}

func (e *WitnessError) Error() string { return e.Err.Error() }
func (e *WitnessError) Unwrap() error { return e.Err }

func witnessErr(status int, err error) *WitnessError {
	return &WitnessError{Status: status, StoredSize: -1, Err: err}
}

// AddCheckpointRequest is the body of a tlog-witness add-checkpoint call.
type AddCheckpointRequest struct {
	OldSize    int64       // the size the client believes the witness holds
	Proof      []tlog.Hash // consistency proof from OldSize (empty if 0)
	Checkpoint []byte      // the signed checkpoint note
}

// MaxAddCheckpointBody bounds an add-checkpoint request body.
const MaxAddCheckpointBody = 64 << 10

// ParseAddCheckpoint parses an add-checkpoint body: "old <size>", at most
// 63 base64 hashes, an empty line, then the signed checkpoint, every line
// ending in a newline. Sizes are canonical decimals and hashes canonical
// base64, so Marshal gives back the exact body.
func ParseAddCheckpoint(body []byte) (AddCheckpointRequest, error) {
	var r AddCheckpointRequest
	if len(body) > MaxAddCheckpointBody {
		return r, fmt.Errorf("%w: add-checkpoint body over %d bytes", ErrInvalid, MaxAddCheckpointBody)
	}
	line, rest, ok := bytes.Cut(body, []byte("\n"))
	if !ok {
		return r, fmt.Errorf("%w: add-checkpoint body has no old size line", ErrInvalid)
	}
	num, ok := bytes.CutPrefix(line, []byte("old "))
	if !ok {
		return r, fmt.Errorf("%w: add-checkpoint body does not start with \"old <size>\"", ErrInvalid)
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != string(num) {
		return r, fmt.Errorf("%w: bad old size %q", ErrInvalid, num)
	}
	r.OldSize = n
	for {
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return r, fmt.Errorf("%w: add-checkpoint body has no empty line before the checkpoint", ErrInvalid)
		}
		if len(line) == 0 {
			break
		}
		if len(r.Proof) == 63 {
			return r, fmt.Errorf("%w: consistency proof longer than 63 hashes", ErrInvalid)
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(string(line))
		if err != nil || len(raw) != tlog.HashSize {
			return r, fmt.Errorf("%w: consistency proof line is not a base64 hash", ErrInvalid)
		}
		r.Proof = append(r.Proof, tlog.Hash(raw))
	}
	if len(rest) == 0 {
		return r, fmt.Errorf("%w: add-checkpoint body has no checkpoint", ErrInvalid)
	}
	r.Checkpoint = rest
	return r, nil
}

// Marshal renders the request body.
func (r AddCheckpointRequest) Marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "old %d\n", r.OldSize)
	b.WriteString(FormatProof(r.Proof))
	b.WriteByte('\n')
	b.Write(r.Checkpoint)
	return b.Bytes()
}

// AddCheckpoint checks a checkpoint against the one held and, if it is a
// consistent extension (or the same), cosigns it, stores it durably and
// returns the witness's cosignature lines ("— name base64\n"). A refusal
// is a *WitnessError; nothing is stored then.
func (w *Witness) AddCheckpoint(ctx context.Context, req AddCheckpointRequest) ([]byte, error) {
	out, err := w.addCheckpoint(ctx, req)
	if err != nil {
		w.Refused.Add(1)
	}
	return out, err
}

func (w *Witness) addCheckpoint(ctx context.Context, req AddCheckpointRequest) ([]byte, error) {
	text, _, ok := bytes.Cut(req.Checkpoint, []byte("\n"))
	if !ok {
		return nil, witnessErr(http.StatusBadRequest, fmt.Errorf("%w: the checkpoint is not a signed note", ErrInvalid))
	}
	if string(text) != w.Log.Name() {
		return nil, witnessErr(http.StatusNotFound, fmt.Errorf("%w: unknown log origin %q", ErrInvalid, text))
	}
	n, err := note.Open(req.Checkpoint, note.VerifierList(w.Log))
	if err != nil {
		var none *note.UnverifiedNoteError
		var bad *note.InvalidSignatureError
		if errors.As(err, &none) || errors.As(err, &bad) {
			return nil, witnessErr(http.StatusForbidden, fmt.Errorf("%w: no valid signature by the log's key: %v", ErrInvalid, err))
		}
		return nil, witnessErr(http.StatusBadRequest, fmt.Errorf("%w: malformed checkpoint note: %v", ErrInvalid, err))
	}
	cur, err := ParseCheckpointText(n.Text)
	if err != nil {
		return nil, witnessErr(http.StatusBadRequest, err)
	}
	if req.OldSize > cur.Size {
		return nil, witnessErr(http.StatusBadRequest, fmt.Errorf("%w: old size %d is above the checkpoint's %d", ErrInvalid, req.OldSize, cur.Size))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	held, have, err := w.load()
	if err != nil {
		return nil, witnessErr(http.StatusInternalServerError, err)
	}
	if req.OldSize != held.Size {
		e := fmt.Errorf("%w: old size %d is not the %d records this witness holds", ErrInvalid, req.OldSize, held.Size)
		if cur.Size < held.Size {
			e = fmt.Errorf("%w (offered %d records)", ErrRollback, cur.Size)
		}
		return nil, &WitnessError{Status: http.StatusConflict, StoredSize: held.Size, Err: e}
	}
	switch {
	case have && cur.Size == held.Size:
		if cur.Hash != held.Hash {
			e := fmt.Errorf("%w: two log-signed checkpoints of %d records with different roots", ErrFork, cur.Size)
			w.alarm(ctx, "fork", held, cur, e)
			return nil, &WitnessError{Status: http.StatusConflict, StoredSize: held.Size, Err: e}
		}
		if len(req.Proof) != 0 {
			return nil, witnessErr(http.StatusUnprocessableEntity, fmt.Errorf("%w: a proof between equal sizes must be empty", ErrProof))
		}
	case req.OldSize == 0:
		if len(req.Proof) != 0 {
			return nil, witnessErr(http.StatusUnprocessableEntity, fmt.Errorf("%w: a proof from size 0 must be empty", ErrProof))
		}
	default:
		if err := tlog.CheckTree(req.Proof, cur.Size, cur.Hash, held.Size, held.Hash); err != nil {
			return nil, witnessErr(http.StatusUnprocessableEntity, fmt.Errorf("%w from %d to %d records: %v", ErrProof, held.Size, cur.Size, err))
		}
	}
	sig, err := w.Signer.Sign([]byte(n.Text))
	if err != nil {
		return nil, witnessErr(http.StatusInternalServerError, fmt.Errorf("audit witness: cosign: %w", err))
	}
	var hs [4]byte
	binary.BigEndian.PutUint32(hs[:], w.Signer.KeyHash())
	ours := "— " + w.Signer.Name() + " " + base64.StdEncoding.EncodeToString(append(hs[:], sig...)) + "\n"
	if !have || cur.Size != held.Size {
		var st strings.Builder
		st.WriteString(n.Text)
		st.WriteString("\n")
		for _, s := range n.Sigs {
			st.WriteString("— " + s.Name + " " + s.Base64 + "\n")
		}
		st.WriteString(ours)
		if err := fsutil.WriteFileAtomic(w.StateFile, []byte(st.String()), 0o644, true); err != nil {
			return nil, witnessErr(http.StatusInternalServerError, fmt.Errorf("audit witness: store state: %w", err))
		}
	}
	w.Accepted.Add(1)
	w.logger().InfoContext(ctx, "audit checkpoint cosigned", "origin", cur.Origin, "size", cur.Size, "old_size", held.Size)
	return []byte(ours), nil
}

func (w *Witness) logger() *slog.Logger {
	if w.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return w.Logger
}

func (w *Witness) alarm(ctx context.Context, kind string, held, offered Checkpoint, err error) {
	w.Alarms.Add(1)
	w.logger().ErrorContext(ctx, "AUDIT LOG ALARM", "kind", kind,
		"origin", offered.Origin, "held_size", held.Size, "held_root", base64.StdEncoding.EncodeToString(held.Hash[:]),
		"offered_size", offered.Size, "offered_root", base64.StdEncoding.EncodeToString(offered.Hash[:]), "err", err)
	if w.OnAlarm != nil {
		w.OnAlarm(err)
	}
}

// Handler serves tlog-witness's POST <prefix>/add-checkpoint (prefix ""
// or starting with "/"). Anyone may call it: only the log's signature on
// the checkpoint counts. Errors are plain text; a 409 for a wrong old size
// answers the held size as text/x.tlog.size.
func (w *Witness) Handler(prefix string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+strings.TrimRight(prefix, "/")+"/add-checkpoint", func(rw http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, MaxAddCheckpointBody))
		if err != nil {
			w.Refused.Add(1)
			http.Error(rw, "request body unreadable or over 64 KiB", http.StatusBadRequest)
			return
		}
		req, err := ParseAddCheckpoint(body)
		if err != nil {
			w.Refused.Add(1)
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		cosig, err := w.AddCheckpoint(r.Context(), req)
		var we *WitnessError
		switch {
		case err == nil:
			rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
			rw.Write(cosig)
		case errors.As(err, &we) && we.Status == http.StatusConflict:
			rw.Header().Set("Content-Type", "text/x.tlog.size")
			rw.WriteHeader(http.StatusConflict)
			fmt.Fprintf(rw, "%d\n", we.StoredSize)
		case errors.As(err, &we):
			http.Error(rw, err.Error(), we.Status)
		default:
			http.Error(rw, "witness failed", http.StatusInternalServerError)
		}
	})
	return mux
}

// Step pulls the latest checkpoint from Source, checks it against the
// stored one with a consistency proof from Source, cosigns and stores it.
// It returns the accepted checkpoint; a rollback or fork is an alarm and
// an error wrapping ErrRollback or ErrFork.
func (w *Witness) Step(ctx context.Context) (Checkpoint, error) {
	msg, err := w.Source.Checkpoint(ctx)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit witness: fetch checkpoint: %w", err)
	}
	cur, _, err := OpenCheckpoint(msg, w.Log)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit witness: %w", err)
	}
	w.mu.Lock()
	held, _, err := w.load()
	w.mu.Unlock()
	if err != nil {
		return Checkpoint{}, err
	}
	if cur.Size < held.Size {
		e := fmt.Errorf("%w (witness holds %d records, the log offers %d)", ErrRollback, held.Size, cur.Size)
		w.alarm(ctx, "rollback", held, cur, e)
		return cur, e
	}
	var proof []tlog.Hash
	if held.Size > 0 && cur.Size > held.Size {
		if proof, err = w.Source.Consistency(ctx, held.Size, cur.Size); err != nil {
			return Checkpoint{}, fmt.Errorf("audit witness: fetch consistency proof: %w", err)
		}
	}
	_, err = w.AddCheckpoint(ctx, AddCheckpointRequest{OldSize: held.Size, Proof: proof, Checkpoint: msg})
	switch {
	case err == nil:
		return cur, nil
	case errors.Is(err, ErrFork):
		return cur, err // alarmed by AddCheckpoint
	case errors.Is(err, ErrProof):
		e := fmt.Errorf("%w: the log's own consistency proof fails: %v", ErrFork, err)
		w.alarm(ctx, "fork", held, cur, e)
		return cur, e
	}
	return Checkpoint{}, fmt.Errorf("audit witness: %w", err)
}

// load reads the last cosigned checkpoint (size 0 and false on the first
// run). Callers hold w.mu.
func (w *Witness) load() (Checkpoint, bool, error) {
	b, err := os.ReadFile(w.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return Checkpoint{Origin: w.Log.Name()}, false, nil
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

// Held returns the checkpoint the witness last cosigned (false if none).
func (w *Witness) Held() (Checkpoint, bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.load()
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
		if err != nil {
			w.logger().WarnContext(ctx, "audit witness step failed", "err", err)
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
