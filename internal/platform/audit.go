package platform

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/authz"
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
	signer, vkey, err := checkpointSigner(p.StateDir, cfg.KeyFile, origin, func() ([]byte, error) { return p.Secret(auditCheckpointPurpose), nil })
	if err != nil {
		return err
	}
	if err := RecordCheckpointKey(ctx, p.DB, p.StateDir, cfg.KeyFile, vkey, p.Config.Log); err != nil {
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
