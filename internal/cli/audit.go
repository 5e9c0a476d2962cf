package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
)

// EnvAuditKey names the environment variable holding the audit MAC key
// (hex or base64, at least 32 bytes). When it is set every qshield process
// that writes or verifies the audit trail must use it: open the log with
// OpenAudit.
const EnvAuditKey = platform.EnvAuditKey

// OpenAudit opens the audit trail in db, keyed with $QSHIELD_AUDIT_KEY when set.
func OpenAudit(ctx context.Context, db *sqldb.DB) (*audit.Log, error) {
	return platform.OpenAudit(ctx, db)
}

// ErrAuditBroken is returned (so the process exits non-zero) when
// `qshield audit verify` finds a broken chain.
var ErrAuditBroken = errors.New("audit chain broken")

// AuditCommand is `qshield audit`: verify, search and count the audit trail.
func AuditCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:          "audit",
		Short:        "Verify, prove, witness, reconcile, search and count the audit log",
		SilenceUsage: true,
	}
	cmd.AddCommand(auditVerifyCommand(g), auditSearchCommand(g), auditStatsCommand(g), auditHeadCommand(g),
		auditReconcileCommand(g), auditCheckpointCommand(g), auditKeyCommand(g), auditProveCommand(g), auditWitnessCommand(g))
	return cmd
}

// withAudit runs fn with the audit log of the platform's database.
func withAudit(g *Globals, cmd *cobra.Command, fn func(ctx context.Context, l *audit.Log) error) error {
	return withAuditDB(g, cmd, func(ctx context.Context, _ *sqldb.DB, l *audit.Log) error { return fn(ctx, l) })
}

func parseAnchor(s string) (audit.Head, error) {
	seqText, hashText, ok := strings.Cut(s, ":")
	if !ok {
		return audit.Head{}, fmt.Errorf("--anchor wants SEQ:HEXHASH as printed by `qshield audit head`")
	}
	seq, err := strconv.ParseInt(seqText, 10, 64)
	if err != nil || seq < 0 {
		return audit.Head{}, fmt.Errorf("--anchor: bad sequence number %q", seqText)
	}
	h, err := hex.DecodeString(hashText)
	if err != nil || len(h) != 32 {
		return audit.Head{}, fmt.Errorf("--anchor: hash must be 64 hex digits")
	}
	return audit.Head{Seq: seq, Hash: h}, nil
}

func auditVerifyCommand(g *Globals) *cobra.Command {
	var anchor, cpFile, logKey string
	var witnessKeys []string
	var quorum int
	var noReconcile bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit log (against a saved checkpoint with --checkpoint) and reconcile it with the ledger (exit status 1 on any problem)",
		Long: `verify walks the hash chain, and with --checkpoint FILE proves that the log is an
append-only extension of that signed checkpoint: every leaf is recomputed from the
records as stored and the Merkle tree rebuilt, so deletion, insertion, reordering,
rewriting (even with every hash recomputed) and rollback are detected. Without a
checkpoint held outside the database, an insider who rewrites the records and
recomputes every hash is NOT detected (see SECURITY.md). It then runs
'qshield audit reconcile'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAuditDB(g, cmd, func(ctx context.Context, db *sqldb.DB, l *audit.Log) error {
				var rep audit.Report
				var cpRep *audit.CheckpointReport
				switch {
				case cpFile != "":
					cp, err := readCheckpoint(db, cpFile, logKey, witnessKeys, quorum)
					if err != nil {
						return err
					}
					r, err := l.VerifyCheckpoint(ctx, cp)
					if err != nil {
						return err
					}
					rep, cpRep = r.Report, &r
				case anchor != "":
					a, perr := parseAnchor(anchor)
					if perr != nil {
						return perr
					}
					r, err := l.VerifyAnchor(ctx, a)
					if err != nil {
						return err
					}
					rep = r
				default:
					r, err := l.Verify(ctx)
					if err != nil {
						return err
					}
					rep = r
				}
				var rec *ledger.ReconcileReport
				if !noReconcile {
					r, err := reconcile(ctx, db, l)
					if err != nil {
						return err
					}
					rec = &r
				}
				if g.JSON {
					out := map[string]any{"chain": rep, "ok": rep.OK && (rec == nil || rec.OK)}
					if cpRep != nil {
						out["checkpoint"] = cpRep.Checkpoint
						out["tree"] = cpRep.Tree
					}
					if rec != nil {
						out["reconcile"] = rec
					}
					if err := g.PrintJSON(out); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(g.Out, "records: %d, head: %d %x, keyed: %v\n", rep.Records, rep.Head.Seq, rep.Head.Hash, rep.MACChecked)
					if cpRep != nil {
						fmt.Fprintf(g.Out, "checkpoint: %d records, root %x; log now %d records, root %x\n", cpRep.Checkpoint.Size, cpRep.Checkpoint.Hash[:], cpRep.Tree.Size, cpRep.Tree.Hash[:])
					}
					for _, p := range rep.Problems {
						fmt.Fprintln(g.Out, "BROKEN:", p)
					}
					if rep.Truncated {
						fmt.Fprintln(g.Out, "(more problems not shown)")
					}
					switch {
					case rep.OK && cpRep != nil:
						fmt.Fprintln(g.Out, "OK: the audit log is intact and extends the checkpoint")
					case rep.OK:
						fmt.Fprintln(g.Out, "OK: the audit chain is intact (without --checkpoint a rewrite with recomputed hashes is not detectable)")
					}
					if rec != nil {
						printReconcile(g, *rec)
					}
				}
				if !rep.OK {
					return fmt.Errorf("%w: %d problem(s)", ErrAuditBroken, len(rep.Problems))
				}
				if rec != nil && !rec.OK {
					return fmt.Errorf("%w: ledger and audit trail disagree (%d problem(s))", ErrAuditBroken, len(rec.Problems))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&anchor, "anchor", "", "also check a head saved earlier (SEQ:HEXHASH, as printed by 'qshield audit head')")
	cmd.Flags().StringVar(&cpFile, "checkpoint", "", "prove the log extends this signed checkpoint (a file saved outside the database)")
	cmd.Flags().StringVar(&logKey, "log-key", "", "the log's checkpoint verifier key file (default: audit-checkpoint.vkey in the platform state directory)")
	cmd.Flags().StringArrayVar(&witnessKeys, "witness-key", nil, "a trusted witness's public key file (repeatable); with --quorum")
	cmd.Flags().IntVar(&quorum, "quorum", 0, "require valid cosignatures on the --checkpoint from this many --witness-key witnesses")
	cmd.Flags().BoolVar(&noReconcile, "no-reconcile", false, "do not reconcile the ledger with the audit trail")
	return cmd
}

// withAuditDB opens the platform's database and its audit log and runs
// fn with both.
func withAuditDB(g *Globals, cmd *cobra.Command, fn func(ctx context.Context, db *sqldb.DB, l *audit.Log) error) error {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	db, err := g.OpenDB(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	l, err := OpenAudit(ctx, db)
	if err != nil {
		return err
	}
	return fn(ctx, db, l)
}

// logKeyFile is --log-key, or the platform state directory's verifier key.
func logKeyFile(db *sqldb.DB, flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	dir, err := platform.StateDir("", db)
	if err != nil {
		return "", err
	}
	return platform.AuditVerifierKeyFile(dir), nil
}

func readCheckpoint(db *sqldb.DB, file, keyFlag string, witnessKeys []string, quorum int) (audit.Checkpoint, error) {
	if quorum < 0 || quorum > len(witnessKeys) {
		return audit.Checkpoint{}, Usagef("--quorum %d: want 0 to the %d --witness-key files given", quorum, len(witnessKeys))
	}
	var ws []note.Verifier
	for _, f := range witnessKeys {
		v, err := audit.ReadCosignatureVerifier(f)
		if err != nil {
			return audit.Checkpoint{}, err
		}
		ws = append(ws, v)
	}
	kf, err := logKeyFile(db, keyFlag)
	if err != nil {
		return audit.Checkpoint{}, err
	}
	vkey, err := audit.ReadVerifierKey(kf)
	if err != nil {
		return audit.Checkpoint{}, err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return audit.Checkpoint{}, err
	}
	msg, err := os.ReadFile(file)
	if err != nil {
		return audit.Checkpoint{}, fmt.Errorf("--checkpoint: %w", err)
	}
	cp, _, err := audit.VerifyCosigned(msg, v, ws, quorum)
	if err != nil {
		return audit.Checkpoint{}, fmt.Errorf("--checkpoint %s: %w", file, err)
	}
	return cp, nil
}

func reconcile(ctx context.Context, db *sqldb.DB, l *audit.Log) (ledger.ReconcileReport, error) {
	led, err := ledger.Open(ctx, db, ledger.WithSweepInterval(0))
	if err != nil {
		return ledger.ReconcileReport{}, err
	}
	defer led.Close()
	return led.Reconcile(ctx, l)
}

func printReconcile(g *Globals, r ledger.ReconcileReport) {
	for _, p := range r.Problems {
		fmt.Fprintln(g.Out, "MISMATCH:", p)
	}
	if r.Truncated {
		fmt.Fprintln(g.Out, "(more mismatches not shown)")
	}
	if r.OK {
		fmt.Fprintf(g.Out, "OK: ledger and audit trail agree (%d accounts, %d transfers, %d money records)\n", r.Accounts, r.Transfers, r.MoneyRecords)
	}
}

func auditReconcileCommand(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "reconcile",
		Short: "Prove the ledger and the audit trail agree: every transfer audited exactly once with the same accounts and amount (exit status 1 if not)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAuditDB(g, cmd, func(ctx context.Context, db *sqldb.DB, l *audit.Log) error {
				r, err := reconcile(ctx, db, l)
				if err != nil {
					return err
				}
				if g.JSON {
					if err := g.PrintJSON(r); err != nil {
						return err
					}
				} else {
					printReconcile(g, r)
				}
				if !r.OK {
					return fmt.Errorf("%w: ledger and audit trail disagree (%d problem(s))", ErrAuditBroken, len(r.Problems))
				}
				return nil
			})
		},
	}
}

func auditCheckpointCommand(g *Globals) *cobra.Command {
	var keyFile, out, origin string
	cmd := &cobra.Command{
		Use:   "checkpoint",
		Short: "Sign a checkpoint of the audit log now and print it (save it outside the database)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAuditDB(g, cmd, func(ctx context.Context, db *sqldb.DB, l *audit.Log) error {
				dir, err := platform.StateDir("", db)
				if err != nil {
					return err
				}
				signer, vkey, err := platform.CheckpointSigner(dir, keyFile, origin)
				if err != nil {
					return err
				}
				if err := platform.RecordCheckpointKey(ctx, db, dir, keyFile, vkey, g.Log); err != nil {
					return err
				}
				msg, cp, err := l.Checkpoint(ctx, signer)
				if err != nil {
					return err
				}
				if out != "" {
					if err := (audit.FileSink{Path: out}).Publish(ctx, msg); err != nil {
						return err
					}
				}
				if g.JSON {
					return g.PrintJSON(map[string]any{"origin": cp.Origin, "size": cp.Size, "hash": cp.Hash, "checkpoint": string(msg)})
				}
				_, err = g.Out.Write(msg)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "checkpoint signing key file (default: the platform's own key, as qshield serve signs: audit-checkpoint.key in its secret directory if one exists, else derived from the platform master key)")
	cmd.Flags().StringVar(&out, "out", "", "also write the checkpoint to this file")
	cmd.Flags().StringVar(&origin, "origin", "qshield-audit", "log name for a key created now")
	return cmd
}

func auditKeyCommand(g *Globals) *cobra.Command {
	var keyFile, origin string
	var record bool
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Show the checkpoint verifier key this host signs with and the one the platform recorded; --record replaces the record",
		Long: `Every node of a platform signs the audit log's checkpoints with one key, whose
verifier key the first node records in the database; a node with another key refuses
to start. key prints this host's key (as qshield serve and qshield audit checkpoint
pick it: --key, else audit-checkpoint.key in the secret directory if one exists,
else the key derived from the platform master key) and the recorded one. With
--record it records this host's key in place of the recorded one (a key rotation,
or nodes that each had their own key before upgrading: record the one to keep, then
give every node that key), with an audit record of both keys. Tell witnesses and
auditors the new verifier key: checkpoints signed before stay verifiable only with
the old one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAuditDB(g, cmd, func(ctx context.Context, db *sqldb.DB, l *audit.Log) error {
				dir, err := platform.StateDir("", db)
				if err != nil {
					return err
				}
				_, vkey, err := platform.CheckpointSigner(dir, keyFile, origin)
				if err != nil {
					return err
				}
				recorded, err := platform.RecordedCheckpointKey(ctx, db)
				if err != nil {
					return err
				}
				out := map[string]any{"key": vkey, "recorded": recorded, "same": vkey == recorded}
				if record {
					if recorded, err = platform.ReplaceCheckpointKey(ctx, db, l, "cli:audit key --record", vkey); err != nil {
						return err
					}
					out["previous"], out["recorded"], out["same"] = recorded, vkey, true
					if keyFile == "" {
						if err := platform.RecordCheckpointKey(ctx, db, dir, keyFile, vkey, g.Log); err != nil {
							return err
						}
					}
				}
				text := fmt.Sprintf("this host signs with: %s\nrecorded:             %s", vkey, out["recorded"])
				if record && recorded != vkey {
					text += fmt.Sprintf("\nreplaced:             %s", recorded)
				} else if !record && recorded != "" && recorded != vkey {
					text += "\nthe keys differ: a platform node with this key refuses to start"
				}
				return g.Report(out, text)
			})
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "checkpoint signing key file (default: the platform's own key, as qshield serve signs)")
	cmd.Flags().StringVar(&origin, "origin", "qshield-audit", "log name of the key")
	cmd.Flags().BoolVar(&record, "record", false, "record this host's key as the platform's, replacing the recorded one (audited)")
	return cmd
}

func auditProveCommand(g *Globals) *cobra.Command {
	var size int64
	cmd := &cobra.Command{
		Use:   "prove SEQ",
		Short: "Print an inclusion proof of record SEQ in the latest checkpoint (JSON a third party checks with any RFC 6962 verifier)",
		Long: `prove prints record SEQ's leaf data (entry, base64), its leaf index, the tree size, the
audit path and the signed checkpoint of that size. To check it without qshield: verify
the checkpoint's Ed25519 signed-note signature with the log's public key, compute
SHA-256(0x00 || entry), and walk the audit path to the checkpoint's root as in
RFC 9162 section 2.1.3.2.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || seq < 1 {
				return fmt.Errorf("SEQ must be a record number ≥ 1, not %q", args[0])
			}
			return withAudit(g, cmd, func(ctx context.Context, l *audit.Log) error {
				msg, err := l.LatestCheckpoint(ctx)
				if err != nil {
					return err
				}
				n := size
				var cpText string
				if n == 0 {
					if msg == nil {
						return errors.New("no checkpoint yet: run 'qshield audit checkpoint' (or serve) first, or pass --size")
					}
					cp, err := audit.ParseStoredCheckpoint(msg)
					if err != nil {
						return err
					}
					n, cpText = cp.Size, string(msg)
				}
				if seq > n {
					return fmt.Errorf("record %d is not in the latest checkpoint (%d records); wait for the next one", seq, n)
				}
				p, err := l.ProveInclusion(ctx, seq, n)
				if err != nil {
					return err
				}
				p.Checkpoint = cpText
				return g.PrintJSON(p)
			})
		},
	}
	cmd.Flags().Int64Var(&size, "size", 0, "prove against the tree of this many records instead of the latest checkpoint")
	return cmd
}

func auditWitnessCommand(g *Globals) *cobra.Command {
	var server, logKey, key, name, state, caFile, listen, prefix, certFile, keyFile string
	var interval time.Duration
	var once bool
	cmd := &cobra.Command{
		Use:   "witness",
		Short: "Run a witness: check each checkpoint extends the last one seen, cosign it (C2SP cosignature/v1); exit non-zero on a fork or rollback",
		Long: "Run an audit witness, as its own process (on another machine in production). It holds the\n" +
			"last checkpoint it cosigned in --state and cosigns a new one only with the log's signature\n" +
			"(--log-key) and a consistency proof from the one held.\n\n" +
			"With --listen it serves C2SP tlog-witness v1.0.0: POST <--prefix>/add-checkpoint, to which\n" +
			"`qshield serve --audit-witness-url` pushes every checkpoint, and GET /metrics. Without\n" +
			"--listen it pulls GET /v1/audit/checkpoint from --server every --interval. On a fork or\n" +
			"rollback it logs AUDIT LOG ALARM, counts it in qshield_audit_witness_alarms_total, keeps its\n" +
			"state and exits non-zero. Its public key (for the platform's --audit-witness-url) is\n" +
			"written to <--key>.vkey and printed at start.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			if logKey == "" || key == "" || state == "" {
				return Usagef("witness needs --log-key, --key and --state")
			}
			if (certFile == "") != (keyFile == "") {
				return Usagef("give both --tls-cert and --tls-key, or neither")
			}
			vkey, err := audit.ReadVerifierKey(logKey)
			if err != nil {
				return err
			}
			v, err := note.NewVerifier(vkey)
			if err != nil {
				return err
			}
			cosigner, err := audit.LoadOrCreateCosigner(key, key+".vkey", name, nil)
			if err != nil {
				return err
			}
			ctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stopSignals()
			ctx, stop := context.WithCancelCause(ctx)
			defer stop(nil)
			w := &audit.Witness{Log: v, Signer: cosigner, StateFile: state, Logger: g.Log, OnAlarm: func(err error) { stop(err) }}
			if _, _, err := w.Held(); err != nil {
				return err
			}
			g.Log.Info("witness started", "log", v.Name(), "witness_key", cosigner.VerifierKey())
			fmt.Fprintf(g.Err, "witness key: %s\n", cosigner.VerifierKey())
			if listen != "" {
				return serveWitness(ctx, g, w, listen, prefix, certFile, keyFile)
			}
			client := &http.Client{Timeout: 10 * time.Second}
			if caFile != "" {
				pem, err := os.ReadFile(caFile)
				if err != nil {
					return fmt.Errorf("--ca: %w", err)
				}
				roots := x509.NewCertPool()
				if !roots.AppendCertsFromPEM(pem) {
					return fmt.Errorf("--ca %s: no PEM certificate", caFile)
				}
				client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}}
			}
			w.Source = audit.HTTPSource{BaseURL: server, Client: client}
			if once {
				cp, err := w.Step(ctx)
				if err != nil {
					return err
				}
				return g.Report(map[string]any{"origin": cp.Origin, "size": cp.Size, "hash": cp.Hash, "alarms": w.Alarms.Load()},
					fmt.Sprintf("cosigned %s at %d records (state %s)\n", cp.Origin, cp.Size, state))
			}
			err = w.Run(ctx, interval)
			fmt.Fprintf(g.Err, "witness: %d checkpoints cosigned, %d alarms\n", w.Accepted.Load(), w.Alarms.Load())
			if errors.Is(err, context.Canceled) && w.Alarms.Load() == 0 {
				return nil // interrupted
			}
			return err
		},
	}
	serverFlag(cmd.Flags(), &server, "the platform's URL, serving GET /v1/audit/checkpoint (pull mode)")
	cmd.Flags().StringVar(&logKey, "log-key", "", "the log's checkpoint verifier key file")
	cmd.Flags().StringVar(&key, "key", "", "the witness's own signing key file (created on first use; public key in KEY.vkey)")
	cmd.Flags().StringVar(&name, "name", "qshield-witness", "the witness's key name, used when --key is created")
	cmd.Flags().StringVar(&state, "state", "", "file holding the last cosigned checkpoint (keep it off the platform's machine)")
	cmd.Flags().StringVar(&caFile, "ca", "", "PEM root to trust for the server's certificate (pull mode)")
	cmd.Flags().DurationVar(&interval, "interval", 10*time.Second, "how often to fetch a checkpoint (pull mode)")
	cmd.Flags().BoolVar(&once, "once", false, "check one checkpoint and exit (pull mode)")
	cmd.Flags().StringVar(&listen, "listen", "", "serve tlog-witness add-checkpoint on this address instead of pulling")
	cmd.Flags().StringVar(&prefix, "prefix", "", "URL prefix of the add-checkpoint route, e.g. /witness")
	cmd.Flags().StringVar(&certFile, "tls-cert", "", "TLS certificate (PEM) for --listen (default plain HTTP: requests and answers are signed)")
	cmd.Flags().StringVar(&keyFile, "tls-key", "", "TLS private key (PEM) for --listen")
	return cmd
}

// serveWitness serves the witness's add-checkpoint route and its metrics
// until ctx ends (nil) or an alarm stops it (the alarm's error).
func serveWitness(ctx context.Context, g *Globals, w *audit.Witness, listen, prefix, certFile, keyFile string) error {
	if prefix != "" && !strings.HasPrefix(prefix, "/") {
		return Usagef("--prefix must start with /")
	}
	reg := prometheus.NewRegistry()
	for _, c := range []struct {
		name, help string
		v          func() int64
	}{
		{"qshield_audit_witness_alarms_total", "Forks and rollbacks of the audit log seen by this witness.", w.Alarms.Load},
		{"qshield_audit_witness_cosigned_total", "Checkpoints verified and cosigned.", w.Accepted.Load},
		{"qshield_audit_witness_refused_total", "add-checkpoint requests refused.", w.Refused.Load},
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help}, func() float64 { return float64(c.v()) }))
	}
	mux := http.NewServeMux()
	mux.Handle("/", w.Handler(prefix))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 15 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	errc := make(chan error, 1)
	scheme := "http"
	if certFile != "" {
		scheme = "https"
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS13}
		go func() { errc <- srv.ServeTLS(ln, certFile, keyFile) }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	fmt.Fprintf(g.Err, "witness serving %s://%s%s/add-checkpoint\n", scheme, ln.Addr(), prefix)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	fmt.Fprintf(g.Err, "witness: %d checkpoints cosigned, %d alarms\n", w.Accepted.Load(), w.Alarms.Load())
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

func auditHeadCommand(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "head",
		Short: "Print the chain head (SEQ:HEXHASH) to keep outside the database as an anchor",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAudit(g, cmd, func(ctx context.Context, l *audit.Log) error {
				h, err := l.Head(ctx)
				if err != nil {
					return err
				}
				if g.JSON {
					return g.PrintJSON(map[string]any{"seq": h.Seq, "hash": hex.EncodeToString(h.Hash), "anchor": fmt.Sprintf("%d:%x", h.Seq, h.Hash)})
				}
				fmt.Fprintf(g.Out, "%d:%x\n", h.Seq, h.Hash)
				return nil
			})
		},
	}
}

type queryFlags struct {
	from, to, actor, event, resource, outcome, account string
}

func (f *queryFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.from, "from", "", "from this time, inclusive (RFC 3339, YYYY-MM-DD in UTC, or a duration ago such as 24h)")
	fl.StringVar(&f.to, "to", "", "until this time, exclusive (same forms as --from)")
	fl.StringVar(&f.actor, "actor", "", "only this actor")
	fl.StringVar(&f.event, "event", "", "only this event (a trailing * matches a prefix, e.g. 'pki.*')")
	fl.StringVar(&f.resource, "resource", "", "only this resource (a trailing * matches a prefix)")
	fl.StringVar(&f.outcome, "outcome", "", "only this outcome (success, failure, …)")
	fl.StringVar(&f.account, "account", "", "only records about this ledger account (its creation and every money movement from or to it)")
	fl.StringVar(&f.actor, "principal", "", "only this principal (certificate serial in hex; same as --actor)")
}

func (f *queryFlags) query() (audit.Query, error) {
	now := time.Now()
	from, err := audit.ParseTime(f.from, now)
	if err != nil {
		return audit.Query{}, fmt.Errorf("--from: %w", err)
	}
	to, err := audit.ParseTime(f.to, now)
	if err != nil {
		return audit.Query{}, fmt.Errorf("--to: %w", err)
	}
	return audit.Query{From: from, To: to, Actor: f.actor, Event: f.event, Resource: f.resource, Outcome: f.outcome, Account: f.account}, nil
}

func auditSearchCommand(g *Globals) *cobra.Command {
	var qf queryFlags
	var limit int
	var after int64
	cmd := &cobra.Command{
		Use:   "search",
		Short: "List audit records by time, actor, event, resource or outcome",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := qf.query()
			if err != nil {
				return err
			}
			q.Limit, q.AfterSeq = limit, after
			return withAudit(g, cmd, func(ctx context.Context, l *audit.Log) error {
				recs, err := l.Search(ctx, q)
				if err != nil {
					return err
				}
				if g.JSON {
					if recs == nil {
						recs = []audit.Record{}
					}
					return g.PrintJSON(recs)
				}
				tw := tabwriter.NewWriter(g.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tEVENT\tOUTCOME\tORIGIN\tRESOURCE\tDETAILS")
				for _, r := range recs {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Time.Format(time.RFC3339), r.Actor, r.Event,
						r.Outcome, r.Origin, r.Resource, formatDetails(r.Details))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if n := len(recs); n > 0 && (n == q.Limit || (q.Limit == 0 && n == 100)) {
					fmt.Fprintf(g.Err, "more records may follow: --after %d\n", recs[len(recs)-1].Seq)
				}
				return nil
			})
		},
	}
	qf.add(cmd)
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many records (max 10000)")
	cmd.Flags().Int64Var(&after, "after", 0, "only records after this sequence number (paging)")
	return cmd
}

func formatDetails(d map[string]string) string {
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.Quote(d[k])
	}
	return strings.Join(parts, " ")
}

func auditStatsCommand(g *Globals) *cobra.Command {
	var qf queryFlags
	var by string
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Count audit records by event, day, resource, actor, outcome or origin",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			groups, err := audit.ParseGroupBy(by)
			if err != nil {
				return err
			}
			q, err := qf.query()
			if err != nil {
				return err
			}
			return withAudit(g, cmd, func(ctx context.Context, l *audit.Log) error {
				counts, err := l.Stats(ctx, q, groups...)
				if err != nil {
					return err
				}
				if g.JSON {
					out := make([]map[string]any, 0, len(counts))
					for _, c := range counts {
						m := map[string]any{"count": c.N}
						for i, gb := range groups {
							m[string(gb)] = c.Keys[i]
						}
						out = append(out, m)
					}
					return g.PrintJSON(out)
				}
				tw := tabwriter.NewWriter(g.Out, 0, 4, 2, ' ', 0)
				for _, gb := range groups {
					fmt.Fprintf(tw, "%s\t", strings.ToUpper(string(gb)))
				}
				fmt.Fprintln(tw, "COUNT")
				var total int64
				for _, c := range counts {
					fmt.Fprintf(tw, "%s\t%d\n", strings.Join(c.Keys, "\t"), c.N)
					total += c.N
				}
				fmt.Fprintf(tw, "%s%d\n", strings.Repeat("\t", len(groups)-1)+"total\t", total)
				return tw.Flush()
			})
		},
	}
	qf.add(cmd)
	cmd.Flags().StringVar(&by, "by", "event", "group by event, day, resource, actor, outcome, origin (comma-separated for several)")
	return cmd
}
