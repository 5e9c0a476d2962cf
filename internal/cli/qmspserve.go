package cli

import (
	"context"
	"fmt"
	"net"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qmsp"
	"github.com/qshield/qshield/sqldb"
)

// qmspServeFlags are the settings of `qshield qmsp serve`.
type qmspServeFlags struct {
	role, kmeURL, sae, peerSAE, listen, dir string
}

// QMSPCommand is `qshield qmsp`: the QMSP servers run as their own processes
// (by default `qshield serve` runs both).
func QMSPCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{Use: "qmsp", Short: "QMSP servers (seed 000) as separate processes"}
	var f qmspServeFlags
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Run the supermarket server (--role css) or the payment platform server (--role pps) on its own",
		Long: "Run one QMSP server as a separate process on the platform database (--db) and the\n" +
			"server's directory (--dir). It is an ETSI GS QKD 014 application (SAE) of the key manager\n" +
			"at --kme and serves HTTPS with mutual TLS from the platform CA.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runQMSPServe(cmd.Context(), g, &f) },
	}
	fs := serve.Flags()
	fs.StringVar(&f.role, "role", "", "css (commercial supermarket server) or pps (payment platform server)")
	fs.StringVar(&f.kmeURL, "kme", "", "this site's ETSI 014 key manager, e.g. https://127.0.0.1:8442")
	fs.StringVar(&f.sae, "sae", "", "this server's SAE ID at the key manager (default: the role)")
	fs.StringVar(&f.peerSAE, "peer-sae", "", "the other server's SAE ID (default: pps for the CSS, css for the PPS)")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8450", "address to listen on")
	dirFlag(fs, &f.dir, "", "the server's directory (CA sealing key, platform.key)", "state-dir")
	cmd.AddCommand(serve)
	return cmd
}

// qmspSite is what either QMSP server needs from the platform.
type qmspSite struct {
	db      *sqldb.DB
	audit   *audit.Log
	keys    *etsi014.Client
	storage []byte
	srv     *server.Server
}

// runQMSPServe checks the flags, opens the site, mounts the role's API and serves.
func runQMSPServe(ctx context.Context, g *Globals, f *qmspServeFlags) error {
	if f.role != "css" && f.role != "pps" {
		return Usagef("--role must be css or pps")
	}
	if f.kmeURL == "" {
		return Usagef("--kme is required (the URL of this site's key manager)")
	}
	if _, err := url.Parse(f.kmeURL); err != nil {
		return Usage(fmt.Errorf("--kme: %w", err))
	}
	if f.sae == "" {
		f.sae = f.role
	}
	if f.peerSAE == "" {
		f.peerSAE = map[string]string{"css": "pps", "pps": "css"}[f.role]
	}
	db, err := g.OpenDB(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	site, err := openQMSPSite(ctx, g, db, f)
	if err != nil {
		return err
	}
	switch f.role {
	case "css":
		css, err := qmsp.NewCSS(ctx, qmsp.CSSConfig{DB: db, Keys: site.keys, SlaveSAE: f.peerSAE, StorageKey: site.storage, Audit: site.audit, Log: g.Log})
		if err != nil {
			return err
		}
		defer css.Close()
		site.srv.Mount("/v1/qmsp/css/", css.Handler())
	case "pps":
		led, err := ledger.Open(ctx, db)
		if err != nil {
			return err
		}
		defer led.Close()
		pps, err := qmsp.NewPPS(ctx, qmsp.PPSConfig{DB: db, Keys: site.keys, MasterSAE: f.peerSAE, Ledger: led, StorageKey: site.storage, Audit: site.audit, Log: g.Log})
		if err != nil {
			return err
		}
		defer pps.Close()
		site.srv.Handle("POST /v1/qmsp/pay", pps.Handler())
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	if err := g.Report(map[string]any{"role": f.role, "url": "https://" + ln.Addr().String(), "sae": f.sae, "kme": f.kmeURL},
		fmt.Sprintf("qmsp %s serving on https://%s (SAE %s at %s)", f.role, ln.Addr(), f.sae, f.kmeURL)); err != nil {
		return err
	}
	return site.srv.Run(ctx, ln)
}

// openQMSPSite opens the platform CA and audit trail in db, and issues the
// server's SAE and TLS certificates.
func openQMSPSite(ctx context.Context, g *Globals, db *sqldb.DB, f *qmspServeFlags) (*qmspSite, error) {
	dir, err := platform.StateDir(f.dir, db)
	if err != nil {
		return nil, err
	}
	ca, err := platform.OpenCA(ctx, db, dir)
	if err != nil {
		return nil, err
	}
	al, err := platform.OpenAudit(ctx, db)
	if err != nil {
		return nil, err
	}
	saeCert, err := ca.IssueTLS(ctx, pki.RoleApplication, f.sae, nil, nil)
	if err != nil {
		return nil, err
	}
	host, err := serverName(f.kmeURL)
	if err != nil {
		return nil, err
	}
	storage, err := platform.SecretIn(dir, "qmsp-"+f.role)
	if err != nil {
		return nil, err
	}
	srvCert, err := ca.IssueTLS(ctx, pki.RoleServer, "qmsp-"+f.role, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return nil, err
	}
	s, err := server.New(server.Config{TLS: ca.ServerTLSOptionalClient(ctx, srvCert), Log: g.Log})
	if err != nil {
		return nil, err
	}
	return &qmspSite{db: db, audit: al, keys: etsi014.New(f.kmeURL, ca.ClientTLS(ctx, saeCert, host)), storage: storage, srv: s}, nil
}
