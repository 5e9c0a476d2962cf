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

// Review finding: a node refused for its checkpoint key wrote its own
// verifier key beside the database first, and that file kept it refused
// after its configuration was fixed. A refused start now writes nothing,
// and the fixed node starts.
func TestCheckpointKeyRefusalWritesNothing(t *testing.T) {
	t.Setenv(EnvSecretDir, "")
	t.Setenv("QSHIELD_PLATFORM_KEY", strings.Repeat("9b", 32))
	t.Setenv(EnvAuditKey, strings.Repeat("b9", 32))
	root := t.TempDir()
	db := filepath.Join(root, "shared.db")
	p1, err := openAt(t, db, filepath.Join(root, "node1"), AuditConfig{})
	if err != nil {
		t.Fatal(err)
	}
	v1 := p1.auditVKey
	p1.Close()
	state2 := filepath.Join(root, "node2")
	if p2, err := openAt(t, db, state2, AuditConfig{Origin: "other.example/log"}); !errors.Is(err, ErrCheckpointKeyDiffers) {
		if err == nil {
			p2.Close()
		}
		t.Fatalf("node with another origin: %v, want ErrCheckpointKeyDiffers", err)
	}
	if _, err := os.Stat(AuditVerifierKeyFile(state2)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused node wrote %s (%v)", AuditVerifierKeyFile(state2), err)
	}
	p2, err := openAt(t, db, state2, AuditConfig{})
	if err != nil {
		t.Fatalf("node 2 with its configuration fixed: %v", err)
	}
	defer p2.Close()
	if got, err := audit.ReadVerifierKey(AuditVerifierKeyFile(state2)); err != nil || got != v1 {
		t.Fatalf("node 2's verifier key file %q (%v), want %q", got, err, v1)
	}
}

// Review finding: nothing could replace the recorded key (a rotation, or an
// upgrade of nodes that each had their own key). ReplaceCheckpointKey
// (qshield audit key --record) records another key, audited; a node with
// it then starts and one with the old key is refused.
func TestReplaceCheckpointKey(t *testing.T) {
	t.Setenv(EnvSecretDir, "")
	t.Setenv("QSHIELD_PLATFORM_KEY", strings.Repeat("ac", 32))
	t.Setenv(EnvAuditKey, strings.Repeat("ca", 32))
	root := t.TempDir()
	db := filepath.Join(root, "shared.db")
	p1, err := openAt(t, db, filepath.Join(root, "node1"), AuditConfig{})
	if err != nil {
		t.Fatal(err)
	}
	v1 := p1.auditVKey
	ctx := context.Background()
	keyFile := filepath.Join(root, "rotated", "checkpoint.key")
	_, v2, err := CheckpointSigner(filepath.Join(root, "node1"), keyFile, "qshield-audit")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReplaceCheckpointKey(ctx, p1.DB, p1.Audit, "test", "not a key"); err == nil {
		t.Fatal("a malformed verifier key was recorded")
	}
	if rec, _ := RecordedCheckpointKey(ctx, p1.DB); rec != v1 {
		t.Fatalf("a refused replacement changed the record to %q", rec)
	}
	prev, err := ReplaceCheckpointKey(ctx, p1.DB, p1.Audit, "test", v2)
	if err != nil || prev != v1 {
		t.Fatalf("ReplaceCheckpointKey: previous %q, %v; want %q", prev, err, v1)
	}
	recs, err := p1.Audit.Search(ctx, audit.Query{Event: "audit.checkpoint_key.record"})
	if err != nil || len(recs) != 1 || recs[0].Details["previous"] != v1 || recs[0].Details["key"] != v2 {
		t.Fatalf("audit record of the replacement: %+v %v", recs, err)
	}
	p1.Close()
	if p, err := openAt(t, db, filepath.Join(root, "node2"), AuditConfig{}); !errors.Is(err, ErrCheckpointKeyDiffers) {
		if err == nil {
			p.Close()
		}
		t.Fatalf("a node with the replaced key: %v, want ErrCheckpointKeyDiffers", err)
	}
	p3, err := openAt(t, db, filepath.Join(root, "node3"), AuditConfig{KeyFile: keyFile})
	if err != nil {
		t.Fatalf("a node with the recorded key: %v", err)
	}
	p3.Close()
}

// Review finding: `qshield audit checkpoint` on a host without the
// platform's key created a random platform.key as a side effect. It now
// fails and creates nothing.
func TestCheckpointSignerCreatesNoMasterKey(t *testing.T) {
	t.Setenv(EnvSecretDir, "")
	t.Setenv("QSHIELD_PLATFORM_KEY", "")
	state := filepath.Join(t.TempDir(), "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := CheckpointSigner(state, "", "qshield-audit"); err == nil {
		t.Fatal("signed with a master key that did not exist")
	}
	if _, err := os.Stat(filepath.Join(DefaultSecretDir(state), "platform.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("platform.key was created (%v)", err)
	}
}
