package platform

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/sqldb"
)

// The audit log's checkpoint signing key. Every node of one platform signs
// the one log, so they must sign with one key: by default it is derived
// from the platform master key (nodes given the same QSHIELD_PLATFORM_KEY
// agree without sharing a file); an installation from before keeps the
// audit-checkpoint.key of its secret directory; AuditConfig.KeyFile names a
// separate key file. The first node records the verifier key in the
// database (platform_state_files), and a node whose key differs refuses to
// start before it signs or writes anything; `qshield audit key --record`
// replaces the record on purpose (a key rotation, an upgrade).

// auditCheckpointPurpose derives the platform's checkpoint signing key from
// its master key (Platform.Secret).
const auditCheckpointPurpose = "audit-checkpoint"

// checkpointKeyName is the platform_state_files row holding the verifier
// key of the platform's checkpoints.
const checkpointKeyName = "audit-checkpoint.vkey"

// ErrCheckpointKeyDiffers is a node whose checkpoint key is not the one
// the platform's log is signed with: witnesses and auditors holding the
// platform's verifier key would reject its checkpoints.
var ErrCheckpointKeyDiffers = errors.New("platform: this node's audit checkpoint key is not the platform's")

// CheckpointSigner returns the checkpoint signer of the platform whose state
// directory is stateDir, and its signed-note verifier key, as the platform
// itself signs (see AuditConfig.KeyFile): keyFile when given, else the
// secret directory's audit-checkpoint.key if one exists, else the key
// derived from the platform master key — QSHIELD_PLATFORM_KEY or the
// secret directory's platform.key, never created here. For commands that
// sign beside a running platform (qshield audit checkpoint).
func CheckpointSigner(stateDir, keyFile, origin string) (note.Signer, string, error) {
	return checkpointSigner(stateDir, keyFile, origin, func() ([]byte, error) {
		m, err := existingMaster(stateDir)
		if err != nil {
			return nil, err
		}
		return derive(m, auditCheckpointPurpose)
	})
}

// checkpointSigner picks the key (see CheckpointSigner); seed is called
// only for the derived key. It writes nothing beside the database: the
// verifier key file is written once the key is recorded
// (RecordCheckpointKey).
func checkpointSigner(stateDir, keyFile, origin string, seed func() ([]byte, error)) (note.Signer, string, error) {
	if keyFile != "" {
		s, v, err := audit.LoadOrCreateSigner(keyFile, keyFile+".vkey", origin)
		if err != nil {
			return nil, "", fmt.Errorf("platform: %w", err)
		}
		return s, v, nil
	}
	f, err := AuditKeyFile(stateDir)
	if err != nil {
		return nil, "", err
	}
	if _, err := os.Stat(f); err == nil {
		// An installation from before the key was derived keeps its key.
		s, v, err := audit.LoadSigner(f)
		if err != nil {
			return nil, "", fmt.Errorf("platform: %w", err)
		}
		return s, v, nil
	}
	k, err := seed()
	if err != nil {
		return nil, "", err
	}
	skey, vkey, err := derivedNoteKey(origin, k)
	if err != nil {
		return nil, "", err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, "", fmt.Errorf("platform: checkpoint key: %w", err)
	}
	return signer, vkey, nil
}

// derivedNoteKey makes the signed-note Ed25519 key pair for origin whose
// private key is seed (32 bytes): "PRIVATE+KEY+name+hash+base64(1 ‖ seed)"
// and "name+hash+base64(1 ‖ public key)".
func derivedNoteKey(origin string, seed []byte) (skey, vkey string, err error) {
	if len(seed) != ed25519.SeedSize {
		return "", "", fmt.Errorf("platform: checkpoint key seed of %d bytes", len(seed))
	}
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	vkey, err = note.NewEd25519VerifierKey(origin, pub)
	if err != nil {
		return "", "", fmt.Errorf("platform: checkpoint key for %q: %w", origin, err)
	}
	parts := strings.SplitN(vkey, "+", 3) // name, hash, base64 key
	skey = "PRIVATE+KEY+" + parts[0] + "+" + parts[1] + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, seed...))
	return skey, vkey, nil
}

// RecordCheckpointKey records vkey as the platform's checkpoint verifier
// key when none is recorded yet (at a node's start, and before qshield audit
// checkpoint signs beside the platform) and refuses another (ErrCheckpointKeyDiffers,
// nothing written). Then, for the platform's own key (keyFile ""), it makes
// audit-checkpoint.vkey beside the database say the recorded key,
// replacing a stale file. The record is public: it does not authenticate
// checkpoints (the verifier key auditors and witnesses keep does); it stops a
// misconfigured node before it signs.
func RecordCheckpointKey(ctx context.Context, db *sqldb.DB, stateDir, keyFile, vkey string, log *slog.Logger) error {
	theirs, err := recordStateOnce(ctx, db, checkpointKeyName, []byte(vkey))
	if err != nil {
		return err
	}
	if string(theirs) != vkey {
		return fmt.Errorf("%w: the log is signed by %q (recorded in the database), this node's key is %q: give every node the same QSHIELD_PLATFORM_KEY (and the same audit key file, if one is set or left by an older installation in a secret directory), or replace the record with `qshield audit key --record` on purpose", ErrCheckpointKeyDiffers, theirs, vkey)
	}
	if keyFile != "" {
		return nil
	}
	return writeVerifierKey(AuditVerifierKeyFile(stateDir), vkey, log)
}

// writeVerifierKey makes path hold vkey (the recorded key), replacing a
// file that says another.
func writeVerifierKey(path, vkey string, log *slog.Logger) error {
	old, err := audit.ReadVerifierKey(path)
	switch {
	case err == nil && old == vkey:
		return nil
	case err == nil:
		log.Warn("audit: replacing a checkpoint verifier key file that named another key", "file", path, "was", old, "now", vkey)
	case !errors.Is(err, fs.ErrNotExist):
		log.Warn("audit: replacing an unreadable checkpoint verifier key file", "file", path, "err", err)
	}
	if err := fsutil.WriteFileAtomic(path, []byte(vkey+"\n"), 0o644, true); err != nil {
		return fmt.Errorf("platform: write checkpoint verifier key: %w", err)
	}
	return nil
}

// RecordedCheckpointKey returns the verifier key recorded as the
// platform's ("" when none is).
func RecordedCheckpointKey(ctx context.Context, db *sqldb.DB) (string, error) {
	if err := db.Migrate(ctx, "platform_state", stateMigrations); err != nil {
		return "", fmt.Errorf("platform: %w", err)
	}
	b, err := readStateFile(ctx, db, checkpointKeyName)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return string(b), err
}

// ReplaceCheckpointKey records vkey as the platform's checkpoint verifier
// key in place of the recorded one (a key rotation, or nodes that each
// had their own key before an upgrade), with an audit record of both. It
// returns the key it replaced ("" when none was recorded).
func ReplaceCheckpointKey(ctx context.Context, db *sqldb.DB, rec audit.Recorder, actor, vkey string) (string, error) {
	if _, err := note.NewVerifier(vkey); err != nil {
		return "", fmt.Errorf("platform: checkpoint verifier key: %w", err)
	}
	old, err := RecordedCheckpointKey(ctx, db)
	if err != nil {
		return "", err
	}
	if old == vkey {
		return old, nil
	}
	if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO platform_state_files (name, data, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at`), checkpointKeyName, []byte(vkey), time.Now().UnixNano()); err != nil {
		return "", fmt.Errorf("platform: record checkpoint key: %w", err)
	}
	if err := rec.Record(ctx, audit.Entry{Actor: actor, Event: "audit.checkpoint_key.record", Resource: "audit-checkpoint", Outcome: "success",
		Details: map[string]string{"previous": old, "key": vkey}}); err != nil {
		return old, fmt.Errorf("platform: the checkpoint key was recorded, its audit record failed: %w", err)
	}
	return old, nil
}

// recordStateOnce stores data as the platform_state_files row name unless
// one exists, and returns the stored row (another node's when it got there
// first).
func recordStateOnce(ctx context.Context, db *sqldb.DB, name string, data []byte) ([]byte, error) {
	if err := db.Migrate(ctx, "platform_state", stateMigrations); err != nil {
		return nil, fmt.Errorf("platform: %w", err)
	}
	if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO platform_state_files (name, data, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO NOTHING`), name, data, time.Now().UnixNano()); err != nil {
		return nil, fmt.Errorf("platform: store %s: %w", name, err)
	}
	return readStateFile(ctx, db, name)
}
