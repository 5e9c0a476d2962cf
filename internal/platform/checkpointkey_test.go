package platform

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/qshield/qshield/audit"
)

// openAt opens a platform on the SQLite database db with its own state
// directory (so its own secret directory), as a second node or a restored
// node would be started.
func openAt(t *testing.T, db, state string, ac AuditConfig) (*Platform, error) {
	t.Helper()
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	return Open(context.Background(), Config{DB: db, StateDir: state, QKD: QKDConfig{Off: true}, Audit: ac})
}

// Finding (#13, missing at the last stop): the checkpoint key was created
// in each node's secret directory, so nodes given the same platform key but
// their own secret directories signed one log under different keys, and a
// witness or auditor holding the platform's verifier key rejected the other
// nodes' checkpoints. The default key is now derived from the platform
// master key: with the per-directory key file restored, the two nodes'
// verifier keys differ and node 2's checkpoint fails node 1's key.
func TestCheckpointKeyOneAcrossNodes(t *testing.T) {
	t.Setenv(EnvSecretDir, "")
	t.Setenv("QSHIELD_PLATFORM_KEY", strings.Repeat("6e", 32))
	t.Setenv(EnvAuditKey, strings.Repeat("e6", 32))
	root := t.TempDir()
	db := filepath.Join(root, "shared.db")
	p1, err := openAt(t, db, filepath.Join(root, "node1"), AuditConfig{})
	if err != nil {
		t.Fatal(err)
	}
	v1 := p1.auditVKey
	p1.Close()
	if _, err := os.Stat(filepath.Join(DefaultSecretDir(filepath.Join(root, "node1")), auditKeyName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a checkpoint key file was written to the secret directory (%v); the key is derived", err)
	}
	p2, err := openAt(t, db, filepath.Join(root, "node2"), AuditConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if p2.auditVKey != v1 {
		t.Fatalf("node 2 signs as %q, node 1 as %q", p2.auditVKey, v1)
	}
	// A checkpoint node 2 signs now verifies under node 1's published key.
	msg, _, err := p2.Publisher.PublishNow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(v1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		t.Fatalf("node 2's checkpoint under node 1's key: %v", err)
	}
	// qshield audit checkpoint, run on node 2's host, signs with the same key.
	s, vk, err := CheckpointSigner(filepath.Join(root, "node2"), "", "qshield-audit")
	if err != nil || vk != v1 || s.KeyHash() != v.KeyHash() {
		t.Fatalf("CheckpointSigner: %q, %v; want %q", vk, err, v1)
	}
}

// A node whose checkpoint key is not the platform's (an explicit key file,
// another master key, a key file an older installation left in one node's
// secret directory) is refused at start, before it signs anything. Without
// the registration in the database it starts and signs the log with a key
// nobody can check it under.
func TestCheckpointKeyMismatchRefused(t *testing.T) {
	t.Setenv(EnvSecretDir, "")
	t.Setenv("QSHIELD_PLATFORM_KEY", strings.Repeat("7f", 32))
	t.Setenv(EnvAuditKey, strings.Repeat("f7", 32))
	root := t.TempDir()
	db := filepath.Join(root, "shared.db")
	p1, err := openAt(t, db, filepath.Join(root, "node1"), AuditConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p1.Close()
	other := filepath.Join(root, "other", "checkpoint.key")
	p2, err := openAt(t, db, filepath.Join(root, "node2"), AuditConfig{KeyFile: other})
	if err == nil {
		p2.Close()
		t.Fatal("a node with another checkpoint key started")
	}
	if !errors.Is(err, ErrCheckpointKeyDiffers) {
		t.Fatalf("got %v, want ErrCheckpointKeyDiffers", err)
	}
	// An older installation's key file in node 3's secret directory is
	// another key too.
	state3 := filepath.Join(root, "node3")
	sd := DefaultSecretDir(state3)
	if err := os.MkdirAll(sd, 0o700); err != nil {
		t.Fatal(err)
	}
	skey, _, err := audit.GenerateCheckpointKey("qshield-audit")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sd, auditKeyName), []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if p3, err := openAt(t, db, state3, AuditConfig{}); !errors.Is(err, ErrCheckpointKeyDiffers) {
		if err == nil {
			p3.Close()
		}
		t.Fatalf("node with an older key file: %v, want ErrCheckpointKeyDiffers", err)
	}
}

// An installation from before the key was derived keeps the key file in its
// secret directory: its checkpoints stay verifiable under the verifier key
// its auditors already hold.
func TestCheckpointKeyFileOfOlderInstallationKept(t *testing.T) {
	t.Setenv(EnvSecretDir, "")
	t.Setenv("QSHIELD_PLATFORM_KEY", strings.Repeat("8a", 32))
	t.Setenv(EnvAuditKey, strings.Repeat("a8", 32))
	state := filepath.Join(t.TempDir(), "state")
	sd := DefaultSecretDir(state)
	if err := os.MkdirAll(sd, 0o700); err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := audit.GenerateCheckpointKey("qshield-audit")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sd, auditKeyName), []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := openAt(t, filepath.Join(state, "qshield.db"), state, AuditConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.auditVKey != vkey {
		t.Fatalf("signs as %q, want the older key %q", p.auditVKey, vkey)
	}
}

// The derived key is a well-formed signed-note key pair: what it signs
// verifies under its verifier key, with the origin as the name.
func TestDerivedNoteKey(t *testing.T) {
	seed := []byte(strings.Repeat("k", 32))
	skey, vkey, err := derivedNoteKey("qshield.test/audit", seed)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := note.Sign(&note.Note{Text: "hello\n"}, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		t.Fatal(err)
	}
	if v.Name() != "qshield.test/audit" {
		t.Fatalf("name %q", v.Name())
	}
	if _, _, err := derivedNoteKey("x", seed[:31]); err == nil {
		t.Fatal("a 31-byte seed was accepted")
	}
}
