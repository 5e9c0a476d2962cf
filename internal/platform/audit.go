package platform

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/pki"
)

// AuditConfig configures the audit log's signed checkpoints.
type AuditConfig struct {
	// KeyFile is the checkpoint signing key file (created on first use,
	// mode 0600; its public half is KeyFile + ".vkey"). "" means the
	// platform's own key: audit-checkpoint.key in the secret directory
	// when an older installation has one, else a key derived from the
	// platform master key (purpose "audit-checkpoint"), so that every node
	// given the same QSHIELD_PLATFORM_KEY signs the one log with the same
	// key. Either way its public half is audit-checkpoint.vkey beside the
	// database, and the private part is never stored in the database.
	// A separate KeyFile keeps the checkpoint key apart from the master
	// key (separation of duties); every node then needs the same file.
	KeyFile string
	// Origin names the log in new keys and checkpoints (default "qshield-audit").
	Origin string
	// CheckpointFile, when set, receives every checkpoint; put it outside
	// the data directory so a restored or rewritten database cannot take it along.
	CheckpointFile string
	// CheckpointURL, when set, receives every checkpoint by HTTP POST.
	CheckpointURL string
	// WitnessURLs are C2SP tlog-witnesses every checkpoint is pushed to
	// (with its consistency proof); their cosignatures are stored with the
	// checkpoint and served by GET /v1/audit/checkpoint.
	WitnessURLs []WitnessEndpoint
	// WitnessQuorum is how many witnesses must cosign each checkpoint;
	// fewer is logged as an error.
	WitnessQuorum int
	// Every and Interval: a checkpoint after this many new records or this
	// long since the last (defaults 1000 and 10 s).
	Every    int64
	Interval time.Duration
	// Witnesses are "STATE=VKEY" pairs: an audit witness's state file (the
	// checkpoint it last cosigned) and its public key file, shown in the
	// console's checkpoint view.
	Witnesses []string
}

// WitnessEndpoint is a witness the publisher pushes checkpoints to.
type WitnessEndpoint struct {
	KeyFile string // the witness's public (cosignature) key file
	URL     string // its submission prefix
}

// AuditVerifierKeyFile is the public checkpoint key of a platform whose
// signing key is in its state directory.
func AuditVerifierKeyFile(stateDir string) string {
	return filepath.Join(stateDir, "audit-checkpoint.vkey")
}

// startAudit serves the transparency routes and starts the checkpoint
// publisher (stopped by Close).
func (p *Platform) startAudit(ctx context.Context) error {
	cfg := p.Config.Audit
	origin := cfg.Origin
	if origin == "" {
		origin = "qshield-audit"
	}
	signer, vkey, err := checkpointSigner(p.StateDir, cfg.KeyFile, origin, p.Secret(auditCheckpointPurpose))
	if err != nil {
		return err
	}
	if err := p.registerCheckpointKey(ctx, vkey); err != nil {
		return err
	}
	pub := &audit.Publisher{Log: p.Audit, Signer: signer, Every: cfg.Every, Interval: cfg.Interval, Logger: p.Config.Log}
	if cfg.CheckpointFile != "" {
		pub.Sinks = append(pub.Sinks, audit.FileSink{Path: cfg.CheckpointFile})
	}
	if cfg.CheckpointURL != "" {
		pub.Sinks = append(pub.Sinks, audit.HTTPSink{URL: cfg.CheckpointURL})
	}
	for _, w := range cfg.WitnessURLs {
		v, err := audit.ReadCosignatureVerifier(w.KeyFile)
		if err != nil {
			return fmt.Errorf("platform: audit witness %s: %w", w.URL, err)
		}
		pub.Sinks = append(pub.Sinks, &audit.WitnessSink{URL: w.URL, Witness: v, Log: p.Audit})
	}
	if cfg.WitnessQuorum > len(cfg.WitnessURLs) {
		return fmt.Errorf("platform: audit witness quorum %d above the %d witnesses", cfg.WitnessQuorum, len(cfg.WitnessURLs))
	}
	pub.Quorum = cfg.WitnessQuorum
	// The first checkpoint is signed before serving, so one always exists.
	if _, _, err := pub.PublishNow(ctx); err != nil {
		p.Config.Log.ErrorContext(ctx, "first audit checkpoint", "err", err)
	}
	h := audit.Handler(p.Audit)
	// Checkpoints are signed and proofs are hashes: public, so that
	// witnesses and auditors outside the platform can check the log.
	witness := authz.Public("signed audit checkpoints and consistency proofs, for witnesses")
	p.Router.Handle("GET /v1/audit/checkpoint", witness, h)
	p.Router.Handle("GET /v1/audit/consistency", witness, h)
	// An inclusion proof carries the record itself: only those who may read
	// the audit trail (as `qshield audit prove` on the host, and the console).
	p.Router.Handle("GET /v1/audit/inclusion", authz.Allow(pki.PrincipalAdmin, pki.PrincipalAuditor), h)
	p.auditVKey = vkey
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		// One node at a time publishes on a schedule (the duty
		// "audit-publish"); every node still signs one at start and at
		// shutdown, and a witness sink reports a checkpoint another node
		// overtook as superseded, not as a rollback.
		p.duty(runCtx, "audit-publish", func(ctx context.Context) { _ = pub.Run(ctx) })
	}()
	p.Publisher = pub
	p.closers = append(p.closers, func() error {
		cancel()
		<-done
		// A last checkpoint covering everything written before shutdown.
		_, _, err := pub.PublishNow(context.Background())
		return err
	})
	return nil
}

// auditCheckpointPurpose derives the platform's checkpoint signing key from
// its master key (Platform.Secret).
const auditCheckpointPurpose = "audit-checkpoint"

// CheckpointSigner returns the audit log's checkpoint signer of the platform
// whose state directory is stateDir, and its signed-note verifier key, as
// the platform itself signs (see AuditConfig.KeyFile): keyFile when given,
// else the secret directory's audit-checkpoint.key if one exists, else the
// key derived from the platform master key. For commands that sign a
// checkpoint beside a running platform (qshield audit checkpoint).
func CheckpointSigner(stateDir, keyFile, origin string) (note.Signer, string, error) {
	seed, err := SecretIn(stateDir, auditCheckpointPurpose)
	if err != nil {
		return nil, "", err
	}
	return checkpointSigner(stateDir, keyFile, origin, seed)
}

func checkpointSigner(stateDir, keyFile, origin string, seed []byte) (note.Signer, string, error) {
	if keyFile != "" {
		s, v, err := audit.LoadOrCreateSigner(keyFile, keyFile+".vkey", origin)
		if err != nil {
			return nil, "", fmt.Errorf("platform: %w", err)
		}
		return s, v, nil
	}
	vkeyFile := AuditVerifierKeyFile(stateDir)
	f, err := AuditKeyFile(stateDir)
	if err != nil {
		return nil, "", err
	}
	if _, err := os.Stat(f); err == nil {
		// An installation from before the key was derived keeps its key.
		s, v, err := audit.LoadOrCreateSigner(f, vkeyFile, origin)
		if err != nil {
			return nil, "", fmt.Errorf("platform: %w", err)
		}
		return s, v, nil
	}
	skey, vkey, err := derivedNoteKey(origin, seed)
	if err != nil {
		return nil, "", err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, "", fmt.Errorf("platform: checkpoint key: %w", err)
	}
	switch old, err := audit.ReadVerifierKey(vkeyFile); {
	case errors.Is(err, fs.ErrNotExist):
		if err := fsutil.WriteFileAtomic(vkeyFile, []byte(vkey+"\n"), 0o644, true); err != nil {
			return nil, "", fmt.Errorf("platform: write checkpoint verifier key: %w", err)
		}
	case err != nil:
		return nil, "", fmt.Errorf("platform: %w", err)
	case old != vkey:
		return nil, "", fmt.Errorf("%w: %s holds %q, but this node's key (derived from the platform master key) is %q: the master key changed, or the verifier file is another platform's", ErrCheckpointKeyDiffers, vkeyFile, old, vkey)
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

// ErrCheckpointKeyDiffers is a node whose checkpoint key is not the one
// the platform's log is signed with: nodes of one platform must sign with
// one key, or witnesses and auditors holding the platform's verifier key
// would reject every other node's checkpoints.
var ErrCheckpointKeyDiffers = errors.New("platform: this node's audit checkpoint key is not the platform's")

// checkpointKeyName is the row of platform_state_files holding the verifier
// key of the platform's checkpoints, registered by its first node.
const checkpointKeyName = "audit-checkpoint.vkey"

// registerCheckpointKey records vkey as the platform's checkpoint verifier
// key when none is recorded yet, and refuses to start a node whose key is
// another (ErrCheckpointKeyDiffers). The record is public: it does not
// authenticate checkpoints (the verifier key file kept by auditors and
// witnesses does); it stops a misconfigured node before it signs.
func (p *Platform) registerCheckpointKey(ctx context.Context, vkey string) error {
	if err := p.DB.Migrate(ctx, "platform_state", stateMigrations); err != nil {
		return fmt.Errorf("platform: %w", err)
	}
	if _, err := p.DB.ExecContext(ctx, p.DB.Rebind(`INSERT INTO platform_state_files (name, data, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO NOTHING`), checkpointKeyName, []byte(vkey), time.Now().UnixNano()); err != nil {
		return fmt.Errorf("platform: register checkpoint key: %w", err)
	}
	theirs, err := p.stateFile(ctx, checkpointKeyName)
	if err != nil {
		return err
	}
	if string(theirs) != vkey {
		return fmt.Errorf("%w: the log is signed by %q (registered by the platform's first node), this node's key is %q: give every node the same QSHIELD_PLATFORM_KEY (and the same audit key file, if one is set or left by an older installation in the secret directory)", ErrCheckpointKeyDiffers, theirs, vkey)
	}
	return nil
}
