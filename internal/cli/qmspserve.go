package cli

import (
	"fmt"
	"net"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qmsp"
)

// QMSPCommand is `qshield qmsp`: the QMSP servers run as their own processes
// (by default `qshield serve` runs both).
func QMSPCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{Use: "qmsp", Short: "QMSP servers (seed 000) as separate processes"}
	var role, kmeURL, sae, peerSAE, listen, stateDir string
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Run the supermarket server (--role css) or the payment platform server (--role pps) on its own",
		Long: "Run one QMSP server as a separate process on the platform database (--db) and state\n" +
			"directory. It is an ETSI GS QKD 014 application (SAE) of the key manager at --kme and\n" +
			"serves HTTPS with mutual TLS from the platform CA.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if role != "css" && role != "pps" {
				return Usagef("--role must be css or pps")
			}
			if kmeURL == "" {
				return Usagef("--kme is required (the URL of this site's key manager)")
			}
			u, err := url.Parse(kmeURL)
			if err != nil {
				return fmt.Errorf("--kme: %w", err)
			}
			db, err := g.OpenDB(ctx)
			if err != nil {
				return err
			}
			defer db.Close()
			dir, err := platform.StateDir(stateDir, db)
			if err != nil {
				return err
			}
			ca, err := platform.OpenCA(ctx, db, dir)
			if err != nil {
				return err
			}
			al, err := platform.OpenAudit(ctx, db)
			if err != nil {
				return err
			}
			if sae == "" {
				sae = role
			}
			saeCert, err := ca.IssueTLS(ctx, pki.RoleApplication, sae, nil, nil)
			if err != nil {
				return err
			}
			keys := etsi014.New(kmeURL, ca.ClientTLS(ctx, saeCert, u.Hostname()))
			storage, err := platform.SecretIn(dir, "qmsp-"+role)
			if err != nil {
				return err
			}
			srvCert, err := ca.IssueTLS(ctx, pki.RoleServer, "qmsp-"+role, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
			if err != nil {
				return err
			}
			s, err := server.New(server.Config{TLS: ca.ServerTLSOptionalClient(ctx, srvCert), Log: g.Log})
			if err != nil {
				return err
			}
			switch role {
			case "css":
				if peerSAE == "" {
					peerSAE = "pps"
				}
				css, err := qmsp.NewCSS(ctx, qmsp.CSSConfig{DB: db, Keys: keys, SlaveSAE: peerSAE, StorageKey: storage, Audit: al, Log: g.Log})
				if err != nil {
					return err
				}
				defer css.Close()
				s.Mount("/v1/qmsp/css/", css.Handler())
			case "pps":
				if peerSAE == "" {
					peerSAE = "css"
				}
				led, err := ledger.Open(ctx, db)
				if err != nil {
					return err
				}
				defer led.Close()
				pps, err := qmsp.NewPPS(ctx, qmsp.PPSConfig{DB: db, Keys: keys, MasterSAE: peerSAE, Ledger: led, StorageKey: storage, Audit: al, Log: g.Log})
				if err != nil {
					return err
				}
				defer pps.Close()
				s.Handle("POST /v1/qmsp/pay", pps.Handler())
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			if err := g.Report(map[string]any{"role": role, "url": "https://" + ln.Addr().String(), "sae": sae, "kme": kmeURL},
				fmt.Sprintf("qmsp %s serving on https://%s (SAE %s at %s)", role, ln.Addr(), sae, kmeURL)); err != nil {
				return err
			}
			return s.Run(ctx, ln)
		},
	}
	serve.Flags().StringVar(&role, "role", "", "css (commercial supermarket server) or pps (payment platform server)")
	serve.Flags().StringVar(&kmeURL, "kme", "", "this site's ETSI 014 key manager, e.g. https://127.0.0.1:8442")
	serve.Flags().StringVar(&sae, "sae", "", "this server's SAE ID at the key manager (default: the role)")
	serve.Flags().StringVar(&peerSAE, "peer-sae", "", "the other server's SAE ID (default: pps for the CSS, css for the PPS)")
	serve.Flags().StringVar(&listen, "listen", "127.0.0.1:8450", "address to listen on")
	dirFlag(serve.Flags(), &stateDir, "", "the server's directory (CA sealing key, platform.key)", "state-dir")
	cmd.AddCommand(serve)
	return cmd
}
