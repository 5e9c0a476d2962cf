package cli

import (
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/internal/platform"
)

// ServeCommand is `qshield serve`: the platform's HTTPS API and every scheme service.
func ServeCommand(g *Globals) *cobra.Command {
	var listen, stateDir, publicURL, results, configPath string
	var insecure bool
	var hostsFlag []string
	var qkdCfg platform.QKDConfig
	var auditCfg platform.AuditConfig
	var trust platform.TrustConfig
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the qshield platform server (HTTPS with mutual TLS from the platform CA)",
		Long: "Run the platform: ledger API, audit trail, CA and the scheme services, on --db.\n" +
			"The first start creates the platform CA. Its directory (--dir) receives ca.pem and the\n" +
			"operator's client certificate (admin.pem, admin-key.pem): other commands' --admin.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			// Node settings: flags > environment > --config file > defaults (internal/config).
			rc, err := resolveNode(cmd, configPath)
			if err != nil {
				return err
			}
			if err := rc.Validate(); err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			if !g.Verbose {
				if g.Log, err = rc.Logger(g.Err); err != nil {
					return err
				}
			}
			listen, insecure = rc.Listen, rc.InsecureHTTP
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", listen, err)
			}
			defer ln.Close()
			if publicURL == "" {
				publicURL = platform.LocalURL(ln.Addr(), insecure)
			}
			pcfg := platformConfig(rc)
			pcfg.Hosts, pcfg.Log, pcfg.QKD, pcfg.PublicURL, pcfg.ResultsDir = hostsFlag, g.Log, qkdCfg, publicURL, results
			pcfg.Audit.Witnesses = auditCfg.Witnesses
			pcfg.Trust = trust
			p, err := platform.Open(ctx, pcfg)
			if err != nil {
				return err
			}
			defer p.Close()
			url := p.URL(ln.Addr())
			if p.QMSP != nil {
				g.Log.Info("QMSP gateway page", "url", url+"/qmsp/gateways/"+platform.BuiltinGateway+"/")
			}
			if g.JSON {
				_ = g.PrintJSON(map[string]string{"url": url, "state_dir": p.StateDir, "db": p.DB.Dialect.String(), "kme_a": p.KME.AURL, "kme_b": p.KME.BURL})
			} else {
				fmt.Fprintf(g.Out, "qshield serving on %s (database: %s, state: %s)\n", url, p.DB.Dialect, p.StateDir)
				fmt.Fprintf(g.Out, "key managers: %s (%s), %s (%s)\n", p.KME.AURL, platform.KMEPlatform, p.KME.BURL, platform.KMESupermarket)
			}
			g.Log.Info("serving", "url", url)
			return p.Serve(ctx, ln)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8443", "address to listen on")
	dirFlag(cmd.Flags(), &stateDir, "", "the server's directory: ca.pem, the operator's credentials (admin.pem, admin-key.pem; what clients' --admin names) and the CA sealing key (default: beside the SQLite file)", "state-dir")
	cmd.Flags().BoolVar(&insecure, "insecure-http", false, "serve plain HTTP (only behind a TLS-terminating proxy): authenticated routes need --trusted-proxy and --client-cert-header, else only public pages are served")
	trustFlags(cmd, &trust)
	cmd.Flags().BoolVar(&qkdCfg.Off, "no-qkd", false, "do not run the simulated QKD link (the key managers serve what their pools hold)")
	cmd.Flags().Float64Var(&qkdCfg.DistanceKm, "qkd-distance", 25, "fibre length of the simulated QKD link in km")
	cmd.Flags().Float64Var(&qkdCfg.Speedup, "qkd-speedup", 1, "run the simulated 40 MHz source this many times faster than real time (0: as fast as the CPU allows)")
	cmd.Flags().BoolVar(&qkdCfg.PerNodeLink, "qkd-per-node", false, "several nodes on one PostgreSQL database: every node runs its own QKD link (default: one link, run by the node holding the qkd-link lease; the other nodes' key managers serve its deposits)")
	cmd.Flags().Float64Var(&qkdCfg.EveFraction, "qkd-eve", 0, "fraction of pulses an eavesdropper intercepts and resends (the link aborts when it is detected)")
	cmd.Flags().StringVar(&qkdCfg.ListenA, "kme-a", "127.0.0.1:8441", "address of site A's key manager (KME_PLATFORM: SAEs pps, charger-1)")
	cmd.Flags().StringSliceVar(&auditCfg.Witnesses, "audit-witness", nil, "STATE=VKEY: show in the console the checkpoint an audit witness last cosigned (its --state file, readable here) and its public key file (repeatable)")
	cmd.Flags().StringVar(&qkdCfg.ListenB, "kme-b", "127.0.0.1:8442", "address of site B's key manager (KME_SUPERMARKET: SAEs css, qssc)")
	cmd.Flags().StringSliceVar(&hostsFlag, "host", nil, "extra DNS names or IP addresses for the server certificate")
	cmd.Flags().StringVar(&publicURL, "public-url", "", "the origin people use to reach this server, e.g. https://pay.example.com (console passkeys are bound to its host; default https://localhost:PORT)")
	cmd.Flags().StringVar(&results, "results", "", "directory of experiment results (NAME.md, NAME.png) the console shows")
	nodeFlags(cmd, &configPath) // pool, timeouts, load shedding, logging, --config
	return cmd
}
