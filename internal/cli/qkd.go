package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qkd/bb84"
	"github.com/qshield/qshield/qkd/cascade"
	"github.com/qshield/qshield/qkd/link"
)

// QKDCommand is `qshield qkd`: run the simulated decoy-state BB84 link with real
// post-processing, in one process (link) or as two processes over mutual TLS
// (alice, bob).
func QKDCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "qkd",
		Short: "Quantum key distribution: simulated decoy-state BB84 link with Cascade, verification and Toeplitz privacy amplification",
	}
	cmd.AddCommand(qkdLinkCommand(g), qkdAliceCommand(g), qkdBobCommand(g))
	return cmd
}

type qkdFlags struct {
	distance, rate, eve, eps float64
	pulses                   float64
	blocks, frame, keyBytes  int
	overlap                  int
	eveMode                  string
	keepGoing                bool
}

func (f *qkdFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.Float64Var(&f.distance, "distance", 25, "fibre length in km (GYS link: 0.21 dB/km, η_Bob 4.5%, e_d 3.3%, Y0 1.7e-6)")
	fl.Float64Var(&f.rate, "rate", 40e6, "source pulse rate in Hz (for the key rate in bit/s)")
	fl.Float64Var(&f.pulses, "pulses", 0, "pulses per block (e.g. 1e9); 0 chooses twice the minimum block with a positive finite key at --distance")
	fl.Float64Var(&f.eve, "eve", 0, "fraction of pulses the eavesdropper attacks (0 … 1)")
	fl.StringVar(&f.eveMode, "eve-mode", "intercept-resend", "eavesdropping attack: intercept-resend or pns (photon-number splitting)")
	fl.IntVar(&f.blocks, "blocks", 1, "blocks to run (0: until interrupted)")
	fl.Float64Var(&f.eps, "epsilon", 1e-10, "secrecy parameter ε_sec of each block's key (finite-key bounds of Lim et al. 2014; there is no asymptotic mode)")
	fl.IntVar(&f.frame, "frame", 16384, "Cascade frame length in bits")
	fl.IntVar(&f.overlap, "cascade-overlap", 0, cascadeOverlapUsage)
	fl.IntVar(&f.keyBytes, "key-bytes", 32, "size of each delivered key in bytes")
	fl.BoolVar(&f.keepGoing, "continue-on-abort", false, "keep running after a block aborts")
}

func (f *qkdFlags) config() (link.Config, error) {
	cfg := link.DefaultConfig(f.distance)
	cfg.SourceRateHz = f.rate
	if f.pulses != math.Trunc(f.pulses) || f.pulses < 0 || f.pulses > 1<<44 {
		return cfg, fmt.Errorf("--pulses %g: want 0 (planned) or a whole number up to 2^44", f.pulses)
	}
	cfg.PulsesPerBlock = int64(f.pulses)
	cfg.Blocks = f.blocks
	cfg.Epsilon = f.eps
	cfg.FrameBits = f.frame
	cfg.Cascade = cascadeSchedule(f.overlap)
	cfg.KeyBytes = f.keyBytes
	cfg.ContinueOnAbort = f.keepGoing
	if f.eve > 0 {
		mode, err := bb84.ParseEveMode(f.eveMode)
		if err != nil {
			return cfg, err
		}
		cfg.Physics.Eve, cfg.Physics.EveFraction = mode, f.eve
	}
	if f.blocks < 0 {
		return cfg, fmt.Errorf("--blocks must be ≥ 0")
	}
	if cfg.PulsesPerBlock == 0 {
		honest := cfg.Physics
		honest.Eve, honest.EveFraction = bb84.EveNone, 0
		n, err := link.PlanPulses(honest, cfg.Epsilon, 1.10)
		if err != nil {
			return cfg, err
		}
		cfg.PulsesPerBlock = n
	}
	return cfg, nil
}

const cascadeOverlapUsage = "Bob's Cascade schedule: 0 = default (fewest disclosed parities); 1–3 = low-latency with that many overlapping passes (fewer round trips on long links, more parities)"

// cascadeSchedule maps --cascade-overlap to Bob's Cascade options.
func cascadeSchedule(overlap int) cascade.Options {
	if overlap <= 0 {
		return cascade.Options{}
	}
	return cascade.Options{LowLatency: true, Overlap: overlap}
}

// interruptible returns a context cancelled on SIGINT/SIGTERM.
func interruptible(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// qkdReport is the printed / JSON result of a session.
type qkdReport struct {
	Role       string    `json:"role"`
	DistanceKm float64   `json:"distance_km,omitempty"`
	Stats      qkd.Stats `json:"stats"`
	Outcome    string    `json:"outcome"`
	Error      string    `json:"error,omitempty"`
}

func (g *Globals) printQKD(rep qkdReport) error {
	if g.JSON {
		return g.PrintJSON(rep)
	}
	s := rep.Stats
	w := g.Out
	fmt.Fprintf(w, "QKD %s: %d block(s), %d pulses, outcome: %s\n", rep.Role, s.Blocks, s.Pulses, rep.Outcome)
	fmt.Fprintf(w, "  detected            %d\n", s.Detected)
	fmt.Fprintf(w, "  sifted              %d (signal %d)\n", s.Sifted, s.SiftedSignal)
	if s.ReconciledBits > 0 {
		fmt.Fprintf(w, "  QBER                %.3f%% (sampled %.3f%% on %d disclosed bits)\n", 100*s.QBER, 100*s.SampledQBER, s.SampledBits)
	} else {
		fmt.Fprintf(w, "  QBER                sampled %.3f%% on %d disclosed bits (nothing reconciled)\n", 100*s.SampledQBER, s.SampledBits)
	}
	fmt.Fprintf(w, "  finite-key bounds   s_X,0 ≥ %.4g, s_X,1 ≥ %.4g, φ_X ≤ %.4g (Lim et al. 2014)\n", s.SX0Lower, s.SX1Lower, s.PhiUpper)
	if s.EpsSec > 0 {
		fmt.Fprintf(w, "  security            ε_sec %.3g, ε_cor %.3g (summed over blocks)\n", s.EpsSec, s.EpsCor)
	}
	fmt.Fprintf(w, "  reconciled bits     %d in %d frames (%d frames discarded by verification)\n", s.ReconciledBits, s.Frames, s.ResidualFrames)
	fmt.Fprintf(w, "  disclosed bits      %d (Cascade parities + verification tags), %d round trips\n", s.DisclosedBits, s.RoundTrips)
	fmt.Fprintf(w, "  efficiency f        %.4f\n", s.F)
	fmt.Fprintf(w, "  final bits          %d (%d keys)\n", s.FinalBits, s.DeliveredKeys)
	fmt.Fprintf(w, "  secret fraction     %.4f of reconciled bits\n", s.SecretFraction)
	fmt.Fprintf(w, "  secret key rate     %.4g bit/pulse, %.4g bit/s\n", s.KeyRatePerPulse, s.KeyRateBps)
	if rep.Error != "" {
		fmt.Fprintf(w, "  error               %s\n", rep.Error)
	}
	return nil
}

func outcome(st qkd.Stats, err error) (string, error) {
	switch {
	case err == nil && st.Aborted:
		return "some blocks aborted: " + st.AbortReason, nil
	case err == nil:
		return "key established", nil
	case errors.Is(err, qkd.ErrAborted):
		// Printed, and still an error: scripts see a non-zero exit status.
		return "aborted (possible eavesdropping): " + st.AbortReason, err
	case errors.Is(err, context.Canceled):
		return "interrupted", nil
	}
	return "failed", err
}

// reportQKD prints the report of a session run as role (st and err as the
// run returned them) and returns the session's error, or the printing's.
func (g *Globals) reportQKD(role string, distanceKm float64, st qkd.Stats, err error) error {
	out, err := outcome(st, err)
	rep := qkdReport{Role: role, DistanceKm: distanceKm, Stats: st, Outcome: out}
	if err != nil {
		rep.Error = err.Error()
	}
	if perr := g.printQKD(rep); perr != nil {
		return perr
	}
	return err
}

func (g *Globals) qkdProgress(cfg *link.Config) func() {
	total := int64(cfg.Blocks) * cfg.PulsesPerBlock
	rep := g.Progress.Start("qkd link", total, "pulses")
	cfg.OnBlock = func(b qkd.Stats) { rep.Add(b.Pulses) }
	return rep.Done
}

func qkdLinkCommand(g *Globals) *cobra.Command {
	var f qkdFlags
	cmd := &cobra.Command{
		Use:   "link",
		Short: "Run Alice and Bob in one process over an in-memory channel and print the session statistics",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			cfg.Log = g.Log
			ctx, cancel := interruptible(cmd.Context())
			defer cancel()
			done := g.qkdProgress(&cfg)
			st, err := link.Run(ctx, cfg, nil, nil)
			done()
			return g.reportQKD("link", f.distance, st, err)
		},
	}
	f.register(cmd)
	return cmd
}

type tlsFlags struct{ cert, key, ca, server string }

func (t *tlsFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&t.cert, "cert", "", "PEM certificate of this end (issued by the platform CA)")
	cmd.Flags().StringVar(&t.key, "key", "", "PEM private key of this end")
	cmd.Flags().StringVar(&t.ca, "ca", "", "PEM certificate of the CA that issued the peer's certificate")
}

func (t *tlsFlags) config(server bool) (*tls.Config, error) {
	if t.cert == "" || t.key == "" || t.ca == "" {
		return nil, Usagef("--cert, --key and --ca are required: the classical channel is authenticated with mutual TLS")
	}
	pair, err := tls.LoadX509KeyPair(t.cert, t.key)
	if err != nil {
		return nil, fmt.Errorf("loading %s / %s: %w", t.cert, t.key, err)
	}
	_, pool, err := loadRoot(t.ca)
	if err != nil {
		return nil, fmt.Errorf("reading CA: %w", err)
	}
	if server {
		return pki.TLSServerConfig(pool, pair), nil
	}
	return pki.TLSClientConfig(pool, t.server, pair), nil
}

func qkdAliceCommand(g *Globals) *cobra.Command {
	var f qkdFlags
	var t tlsFlags
	var addr string
	cmd := &cobra.Command{
		Use:   "alice",
		Short: "Run Alice (source and simulator) and connect to Bob over mutual TLS",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			if t.server == "" {
				t.server, _, _ = strings.Cut(addr, ":")
			}
			tc, err := t.config(false)
			if err != nil {
				return err
			}
			cfg.Log = g.Log
			ctx, cancel := interruptible(cmd.Context())
			defer cancel()
			tr, err := link.Dial(ctx, addr, tc)
			if err != nil {
				return err
			}
			defer tr.Close()
			done := g.qkdProgress(&cfg)
			st, err := link.RunAlice(ctx, tr, cfg, nil)
			done()
			return g.reportQKD("alice", f.distance, st, err)
		},
	}
	f.register(cmd)
	t.register(cmd)
	cmd.Flags().StringVar(&addr, "connect", "127.0.0.1:7400", "Bob's address")
	cmd.Flags().StringVar(&t.server, "server-name", "", "name in Bob's certificate (default: the host of --connect)")
	return cmd
}

func qkdBobCommand(g *Globals) *cobra.Command {
	var t tlsFlags
	var addr string
	var blocks, keyBytes, overlap int
	cmd := &cobra.Command{
		Use:   "bob",
		Short: "Run Bob (detectors): accept one Alice over mutual TLS and run the session",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			tc, err := t.config(true)
			if err != nil {
				return err
			}
			ctx, cancel := interruptible(cmd.Context())
			defer cancel()
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			defer ln.Close()
			g.Log.Info("qkd bob listening", "addr", ln.Addr().String())
			tr, err := link.Accept(ctx, ln, tc)
			if err != nil {
				return err
			}
			defer tr.Close()
			cfg := link.Config{Blocks: blocks, KeyBytes: keyBytes, Log: g.Log, Cascade: cascadeSchedule(overlap)}
			st, err := link.RunBob(ctx, tr, cfg, nil)
			return g.reportQKD("bob", 0, st, err)
		},
	}
	t.register(cmd)
	cmd.Flags().StringVar(&addr, "listen", "127.0.0.1:7400", "address to listen on")
	cmd.Flags().IntVar(&blocks, "blocks", 0, "blocks to run (0: until Alice disconnects)")
	cmd.Flags().IntVar(&keyBytes, "key-bytes", 32, "size of each delivered key in bytes (must match Alice)")
	cmd.Flags().IntVar(&overlap, "cascade-overlap", 0, cascadeOverlapUsage)
	return cmd
}
