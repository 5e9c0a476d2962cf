package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/qshield/qshield/fsutil"
)

// Checkpoints.
//
// A checkpoint is a C2SP tlog-checkpoint: the signed-note text
//
//	<origin>
//	<tree size, decimal>
//	<base64 tree hash>
//
// signed with golang.org/x/mod/sumdb/note (Ed25519) by a key named after the
// origin. The private key is a file the platform reads at start and never
// stores in the database; the database keeps only signed checkpoints, which
// are public. Whoever holds an earlier checkpoint outside the database can
// prove the current log extends it (VerifyCheckpoint, CheckConsistency).

// ErrRollback and ErrFork are wrapped by errors that report a log smaller than
// a checkpoint already seen, or a log that is not an extension of it.
var (
	ErrRollback = errors.New("audit: rollback: the log is smaller than a checkpoint already signed or seen")
	ErrFork     = errors.New("audit: fork: the log is not an append-only extension of a checkpoint already signed or seen")
	// ErrSuperseded is wrapped by a witness sink's error when the witness
	// already cosigned a larger checkpoint of this log — another node
	// sharing the database published after this one signed — while the
	// log still holds at least that many records: the checkpoint is stale,
	// not a rollback.
	ErrSuperseded = errors.New("audit: superseded: a witness already holds a larger checkpoint of this log")
)

// Checkpoint is a parsed (size, root) statement of one log.
type Checkpoint struct {
	Origin string
	Tree
}

// Text is the checkpoint's note text (ending in a newline).
func (c Checkpoint) Text() string {
	return fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Hash[:]))
}

// ParseCheckpointText parses a checkpoint's note text (no signatures).
// Extension lines are refused: this log writes none.
func ParseCheckpointText(text string) (Checkpoint, error) {
	lines := strings.Split(text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint must be three lines (origin, size, hash)", ErrInvalid)
	}
	origin := lines[0]
	if origin == "" || strings.ContainsAny(origin, " +") || !isPrint(origin) {
		return Checkpoint{}, fmt.Errorf("%w: bad checkpoint origin %q", ErrInvalid, origin)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("%w: bad checkpoint tree size %q", ErrInvalid, lines[1])
	}
	h, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(h) != tlog.HashSize {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint hash is not 32 bytes of base64", ErrInvalid)
	}
	c := Checkpoint{Origin: origin, Tree: Tree{Size: size}}
	copy(c.Hash[:], h)
	return c, nil
}

func isPrint(s string) bool {
	for _, r := range s {
		if r < 0x21 || r == 0x7f {
			return false
		}
	}
	return true
}

// OpenCheckpoint verifies a signed checkpoint against the log's verifier
// key (its name must equal the checkpoint's origin) and parses it. Other
// signatures (witness cosignatures) are ignored here.
func OpenCheckpoint(msg []byte, log note.Verifier) (Checkpoint, *note.Note, error) {
	n, err := note.Open(msg, note.VerifierList(log))
	if err != nil {
		return Checkpoint{}, nil, fmt.Errorf("audit: checkpoint signature: %w", err)
	}
	c, err := ParseCheckpointText(n.Text)
	if err != nil {
		return Checkpoint{}, nil, err
	}
	if c.Origin != log.Name() {
		return Checkpoint{}, nil, fmt.Errorf("%w: checkpoint origin %q is not the key name %q", ErrInvalid, c.Origin, log.Name())
	}
	return c, n, nil
}

// GenerateCheckpointKey makes an Ed25519 signed-note key pair for origin:
// skey is secret (a file outside the database), vkey is published.
func GenerateCheckpointKey(origin string) (skey, vkey string, err error) {
	return note.GenerateKey(rand.Reader, origin)
}

// Checkpoint integrates the queue and signs a checkpoint of the current tree
// with signer (whose name is the origin), stores it and returns the signed
// note. It refuses — ErrRollback or ErrFork — to sign a tree that is not an
// extension of the last checkpoint it stored, so a database rewritten behind
// its back makes it stop instead of blessing the rewrite. When the tree has
// not grown it returns the stored checkpoint of that size.
func (l *Log) Checkpoint(ctx context.Context, signer note.Signer) ([]byte, Checkpoint, error) {
	if _, err := l.Integrate(ctx); err != nil {
		return nil, Checkpoint{}, err
	}
	var cur Tree
	var last []byte
	var proof []tlog.Hash
	var lastCP Checkpoint
	err := l.snapshot(ctx, func(tx *sql.Tx) error {
		var err error
		if cur, err = l.treeTx(ctx, tx); err != nil {
			return err
		}
		err = tx.QueryRowContext(ctx, `SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1`).Scan(&last)
		if errors.Is(err, sql.ErrNoRows) {
			last = nil
			return nil
		}
		if err != nil {
			return fmt.Errorf("audit: read last checkpoint: %w", err)
		}
		if lastCP, err = parseStored(last); err != nil {
			return err
		}
		if lastCP.Size > 0 && lastCP.Size < cur.Size {
			proof, err = tlog.ProveTree(cur.Size, lastCP.Size, &txHashes{ctx: ctx, tx: tx, db: l.db})
			if err != nil {
				return fmt.Errorf("audit: consistency proof: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, Checkpoint{}, err
	}
	if last != nil {
		if lastCP.Size > cur.Size {
			return nil, Checkpoint{}, fmt.Errorf("%w (checkpoint %d, log %d records)", ErrRollback, lastCP.Size, cur.Size)
		}
		if err := CheckConsistency(lastCP.Tree, cur, proof); err != nil {
			return nil, Checkpoint{}, fmt.Errorf("%w: %v", ErrFork, err)
		}
		if lastCP.Size == cur.Size {
			return last, lastCP, nil
		}
	}
	c := Checkpoint{Origin: signer.Name(), Tree: cur}
	msg, err := note.Sign(&note.Note{Text: c.Text()}, signer)
	if err != nil {
		return nil, Checkpoint{}, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	q := `INSERT INTO audit_checkpoints (size, note) VALUES (?, ?) ON CONFLICT (size) DO NOTHING`
	if _, err := l.db.ExecContext(ctx, l.db.Rebind(q), c.Size, string(msg)); err != nil {
		return nil, Checkpoint{}, fmt.Errorf("audit: store checkpoint: %w", err)
	}
	return msg, c, nil
}

// ParseStoredCheckpoint parses a signed checkpoint without checking its
// signature (for the log's own bookkeeping; outside holders use OpenCheckpoint).
func ParseStoredCheckpoint(msg []byte) (Checkpoint, error) { return parseStored(msg) }

// parseStored parses a stored signed checkpoint without checking its
// signature (the database is not trusted for that: outside holders check).
func parseStored(msg []byte) (Checkpoint, error) {
	text, _, ok := bytes.Cut(msg, []byte("\n\n"))
	if !ok {
		return Checkpoint{}, fmt.Errorf("%w: stored checkpoint is not a signed note", ErrInvalid)
	}
	return ParseCheckpointText(string(text) + "\n")
}

// LatestCheckpoint returns the last signed checkpoint stored (nil if none).
func (l *Log) LatestCheckpoint(ctx context.Context) ([]byte, error) {
	var msg []byte
	err := l.db.QueryRowContext(ctx, `SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1`).Scan(&msg)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: read checkpoint: %w", err)
	}
	return msg, nil
}

// CheckpointReport is the result of VerifyCheckpoint.
type CheckpointReport struct {
	Report
	// Checkpoint is the (verified) checkpoint the log was checked against.
	Checkpoint Tree `json:"checkpoint"`
	// Tree is the head recomputed from the records.
	Tree Tree `json:"tree"`
}

// VerifyOptions tunes VerifyCheckpointWith.
type VerifyOptions struct {
	// StoredTree compares every stored tree hash (2 per record) with the
	// recomputed tree. Without it only the stored hashes that make up the
	// current tree head (O(log n) of them) are compared: the checkpoint
	// checks themselves never trust a stored hash either way, and a wrong
	// interior hash can only make an inclusion or consistency proof fail its
	// verification against a signed checkpoint, never make a false one pass.
	StoredTree bool
}

// VerifyCheckpoint is VerifyCheckpointWith without the full comparison of
// the stored tree hashes.
func (l *Log) VerifyCheckpoint(ctx context.Context, cp Checkpoint) (CheckpointReport, error) {
	return l.VerifyCheckpointWith(ctx, cp, VerifyOptions{})
}

// VerifyCheckpointWith checks that the log is an append-only extension of a
// checkpoint signed earlier and held outside the database. It recomputes
// every leaf from the records as stored — so no stored hash is trusted — and
// rebuilds the tree in memory; the tree of the checkpoint's size must have
// the checkpoint's hash. That detects deletion, insertion, reordering and
// rewriting of any record before the checkpoint even when every hash in the
// database was recomputed, and a rollback (fewer records than the
// checkpoint). It also runs Verify's chain checks and compares the stored
// tree hashes with the recomputed ones (a mismatch would make proofs
// fail): those of the current tree head, or all with opts.StoredTree.
func (l *Log) VerifyCheckpointWith(ctx context.Context, cp Checkpoint, opts VerifyOptions) (CheckpointReport, error) {
	if _, err := l.Integrate(ctx); err != nil {
		return CheckpointReport{}, err
	}
	rep := CheckpointReport{Checkpoint: cp.Tree}
	err := l.snapshot(ctx, func(tx *sql.Tx) error {
		var err error
		t := &memTree{}
		if rep.Report, err = l.verifyTx(ctx, tx, t.add); err != nil {
			return err
		}
		rep.Tree.Size = t.n
		if rep.Tree.Hash, err = t.root(t.n); err != nil {
			return err
		}
		if t.n < cp.Size {
			rep.add(Problem{Kind: ProblemRollback, Seq: t.n + 1, LastSeq: cp.Size,
				Detail: fmt.Sprintf("the log has %d records, the checkpoint %d: records deleted or the database rolled back", t.n, cp.Size)})
		} else {
			h, err := t.root(cp.Size)
			if err != nil {
				return err
			}
			if h != cp.Hash {
				rep.add(Problem{Kind: ProblemFork, Seq: cp.Size,
					Detail: fmt.Sprintf("the first %d records do not hash to the checkpoint's root: records before it were deleted, inserted, reordered or rewritten, or this is another copy of the log", cp.Size)})
			}
		}
		if opts.StoredTree {
			return l.compareStored(ctx, tx, t, &rep.Report)
		}
		return l.compareStoredHead(ctx, tx, t, &rep.Report)
	})
	rep.OK = len(rep.Problems) == 0 && !rep.Truncated
	return rep, err
}

// compareStoredHead reports a tree head computed from the stored hashes
// that differs from the recomputed one (reading O(log n) stored hashes).
func (l *Log) compareStoredHead(ctx context.Context, tx *sql.Tx, t *memTree, rep *Report) error {
	if t.n == 0 {
		return nil
	}
	want, err := t.root(t.n)
	if err != nil {
		return err
	}
	got, err := tlog.TreeHash(t.n, &txHashes{ctx: ctx, tx: tx, db: l.db})
	if err != nil || got != want {
		detail := "the tree head computed from the stored tree hashes differs from the records'"
		if err != nil {
			detail = fmt.Sprintf("the stored tree hashes of the tree head cannot be read: %v", err)
		}
		rep.add(Problem{Kind: ProblemTree, Seq: t.n, Detail: detail})
	}
	return nil
}

// compareStored reports stored tree hashes that differ from the recomputed
// ones, and runs that leave gaps, overlap or hold a partial hash.
func (l *Log) compareStored(ctx context.Context, tx *sql.Tx, t *memTree, rep *Report) error {
	rows, err := tx.QueryContext(ctx, `SELECT start, hashes FROM audit_tlog_runs ORDER BY start`)
	if err != nil {
		return fmt.Errorf("audit: read tree hashes: %w", err)
	}
	defer rows.Close()
	bad, n, next, misplaced := int64(0), int64(0), int64(0), 0
	for rows.Next() {
		var start int64
		var b []byte
		if err := rows.Scan(&start, &b); err != nil {
			return fmt.Errorf("audit: read tree hashes: %w", err)
		}
		if start != next || len(b)%tlog.HashSize != 0 {
			misplaced++
		}
		for i := 0; i+tlog.HashSize <= len(b); i += tlog.HashSize {
			x := start + int64(i/tlog.HashSize)
			n++
			if x < 0 || x >= int64(len(t.hashes)) || !bytes.Equal(b[i:i+tlog.HashSize], t.hashes[x][:]) {
				bad++
			}
		}
		next = start + int64(len(b)/tlog.HashSize)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audit: read tree hashes: %w", err)
	}
	if bad > 0 || misplaced > 0 || n != int64(len(t.hashes)) {
		detail := fmt.Sprintf("%d of %d stored tree hashes differ from the records (%d expected)", bad, n, len(t.hashes))
		if misplaced > 0 {
			detail += fmt.Sprintf("; %d runs of stored hashes leave a gap, overlap or end inside a hash", misplaced)
		}
		rep.add(Problem{Kind: ProblemTree, Seq: t.n, Detail: detail})
	}
	return nil
}

// LoadOrCreateSigner reads the checkpoint signing key from keyFile (a
// signed-note private key) and its verifier key from vkeyFile, creating
// both for origin on first use (keyFile mode 0600). Keep keyFile out of the
// database and its backups; publish vkeyFile to witnesses and auditors.
func LoadOrCreateSigner(keyFile, vkeyFile, origin string) (note.Signer, string, error) {
	skey, err := os.ReadFile(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		s, _, gerr := GenerateCheckpointKey(origin)
		if gerr != nil {
			return nil, "", fmt.Errorf("audit: generate checkpoint key: %w", gerr)
		}
		for _, f := range []string{keyFile, vkeyFile} {
			if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
				return nil, "", fmt.Errorf("audit: key directory: %w", err)
			}
		}
		// Nodes starting together may race here: exactly one key wins, and
		// everyone derives the verifier key from the winner's below.
		if err := fsutil.CreateExclusive(keyFile, []byte(s+"\n"), 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, "", fmt.Errorf("audit: write checkpoint key: %w", err)
		}
		skey, err = os.ReadFile(keyFile)
	}
	if err != nil {
		return nil, "", fmt.Errorf("audit: read checkpoint key: %w", err)
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return nil, "", fmt.Errorf("audit: checkpoint key %s: %w", keyFile, err)
	}
	derived, err := verifierOf(strings.TrimSpace(string(skey)))
	if err != nil {
		return nil, "", fmt.Errorf("audit: checkpoint key %s: %w", keyFile, err)
	}
	if _, err := os.Stat(vkeyFile); errors.Is(err, fs.ErrNotExist) {
		if err := fsutil.WriteFileAtomic(vkeyFile, []byte(derived+"\n"), 0o644, true); err != nil {
			return nil, "", fmt.Errorf("audit: write checkpoint verifier key: %w", err)
		}
	}
	vkey, err := ReadVerifierKey(vkeyFile)
	if err != nil {
		return nil, "", err
	}
	v, _ := note.NewVerifier(vkey)
	if vkey != derived || v.Name() != signer.Name() || v.KeyHash() != signer.KeyHash() {
		return nil, "", fmt.Errorf("audit: %s and %s are not one key pair", keyFile, vkeyFile)
	}
	return signer, vkey, nil
}

// verifierOf derives the verifier key of a signed-note Ed25519 signer key
// ("PRIVATE+KEY+name+hash+base64(1 ‖ seed)").
func verifierOf(skey string) (string, error) {
	parts := strings.SplitN(skey, "+", 5) // the base64 may hold "+" too
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return "", errors.New("not a signed-note private key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", errors.New("not an Ed25519 signed-note private key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(parts[2], pub)
}

// ReadVerifierKey reads a signed-note verifier key ("name+hash+base64") from a file.
func ReadVerifierKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("audit: read checkpoint verifier key: %w", err)
	}
	vkey := strings.TrimSpace(string(b))
	if _, err := note.NewVerifier(vkey); err != nil {
		return "", fmt.Errorf("audit: verifier key %s: %w", path, err)
	}
	return vkey, nil
}

// AddCosignatures adds witness cosignature lines ("— name base64\n") to
// the stored checkpoint of size records, replacing an earlier signature of
// the same key (name and key ID). The lines are not checked here (the
// caller verified them; readers verify again). Concurrent writers are
// resolved by compare-and-swap on the stored note.
func (l *Log) AddCosignatures(ctx context.Context, size int64, lines []byte) error {
	for range 8 {
		var cur string
		err := l.db.QueryRowContext(ctx, l.db.Rebind(`SELECT note FROM audit_checkpoints WHERE size = ?`), size).Scan(&cur)
		if err != nil {
			return fmt.Errorf("audit: read checkpoint %d: %w", size, err)
		}
		merged, err := mergeSignatures(cur, string(lines))
		if err != nil {
			return err
		}
		if merged == cur {
			return nil
		}
		res, err := l.db.ExecContext(ctx, l.db.Rebind(`UPDATE audit_checkpoints SET note = ? WHERE size = ? AND note = ?`), merged, size, cur)
		if err != nil {
			return fmt.Errorf("audit: store cosignatures: %w", err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 1 {
			return nil
		}
	}
	return fmt.Errorf("audit: store cosignatures on checkpoint %d: too many concurrent updates", size)
}

// mergeSignatures adds signature lines to a signed note, a new line
// replacing an old one of the same key (name and 4-byte key ID).
func mergeSignatures(msg, lines string) (string, error) {
	text, sigs, ok := strings.Cut(msg, "\n\n")
	if !ok {
		return "", fmt.Errorf("%w: stored checkpoint is not a signed note", ErrInvalid)
	}
	type entry struct{ key, line string }
	var all []entry
	keyOf := func(line string) (string, error) {
		rest, ok := strings.CutPrefix(line, "— ")
		name, b64, ok2 := strings.Cut(rest, " ")
		raw, err := base64.StdEncoding.DecodeString(b64)
		if !ok || !ok2 || err != nil || len(raw) < 5 {
			return "", fmt.Errorf("%w: malformed signature line %q", ErrInvalid, line)
		}
		return name + "\x00" + string(raw[:4]), nil
	}
	for _, l := range strings.Split(strings.TrimSuffix(sigs, "\n"), "\n") {
		k, err := keyOf(l)
		if err != nil {
			return "", err
		}
		all = append(all, entry{k, l})
	}
	for _, l := range strings.Split(strings.TrimSuffix(lines, "\n"), "\n") {
		if l == "" {
			continue
		}
		k, err := keyOf(l)
		if err != nil {
			return "", err
		}
		replaced := false
		for i := range all {
			if all[i].key == k {
				all[i].line, replaced = l, true
			}
		}
		if !replaced {
			all = append(all, entry{k, l})
		}
	}
	var b strings.Builder
	b.WriteString(text)
	b.WriteString("\n\n")
	for _, e := range all {
		b.WriteString(e.line)
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// VerifyCosigned opens a checkpoint signed by the log (as OpenCheckpoint)
// and requires valid cosignatures from at least quorum distinct keys among
// witnesses (C2SP cosignature/v1 verifiers, NewCosignatureVerifier).
// Signatures of unknown keys are ignored; a trusted witness's signature
// that does not verify is an error. It returns the checkpoint and the
// cosignatures that counted.
func VerifyCosigned(msg []byte, log note.Verifier, witnesses []note.Verifier, quorum int) (Checkpoint, []note.Signature, error) {
	cp, _, err := OpenCheckpoint(msg, log)
	if err != nil {
		return Checkpoint{}, nil, err
	}
	if quorum <= 0 {
		return cp, nil, nil
	}
	if len(witnesses) < quorum {
		return Checkpoint{}, nil, fmt.Errorf("%w: a quorum of %d cosignatures needs at least %d trusted witnesses, %d given", ErrInvalid, quorum, quorum, len(witnesses))
	}
	n, err := note.Open(msg, note.VerifierList(witnesses...))
	var none *note.UnverifiedNoteError
	if errors.As(err, &none) {
		return Checkpoint{}, nil, fmt.Errorf("audit: checkpoint of %d records has no trusted cosignature, %d required", cp.Size, quorum)
	}
	if err != nil {
		return Checkpoint{}, nil, fmt.Errorf("audit: checkpoint cosignatures: %w", err)
	}
	if len(n.Sigs) < quorum {
		return Checkpoint{}, nil, fmt.Errorf("audit: checkpoint of %d records has %d trusted cosignatures, %d required", cp.Size, len(n.Sigs), quorum)
	}
	return cp, n.Sigs, nil
}
