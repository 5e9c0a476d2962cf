package cli

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
)

// The principals register, on the server host: these commands open the
// database and the CA directly (the CA key from QSHIELD_CA_KEY or the state
// directory's seal), so they work even when the admin credential is lost.
// A running platform refuses a revoked certificate on its next request
// (within pki.PrincipalCacheTTL).
//
//	qshield admin cert list [--kind K] [--name N] [--active]
//	qshield admin cert show SERIAL
//	qshield admin cert revoke SERIAL --reason TEXT
//	qshield admin cert issue --kind K --name N [--scheme S] [--scope account:X ...] --out DIR
//	qshield admin rotate

type adminCA struct {
	stateDir string
}

func (a *adminCA) flags(cmd *cobra.Command) {
	dirFlag(cmd.Flags(), &a.stateDir, "", "the server's directory, holding the CA sealing key (default: beside the SQLite file)")
}

func (a *adminCA) open(ctx context.Context, g *Globals) (*sqldb.DB, *pki.CA, string, error) {
	db, err := g.OpenDB(ctx)
	if err != nil {
		return nil, nil, "", err
	}
	dir, err := platform.StateDir(a.stateDir, db)
	if err != nil {
		db.Close()
		return nil, nil, "", err
	}
	ca, err := platform.OpenCA(ctx, db, dir)
	if err != nil {
		db.Close()
		return nil, nil, "", err
	}
	log, err := platform.OpenAudit(ctx, db)
	if err != nil {
		db.Close()
		return nil, nil, "", err
	}
	return db, ca.WithAudit(log, "cli"), dir, nil
}

// AdminCertCommand is `qshield admin cert`.
func AdminCertCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cert", Short: "The CA's principals: list, show, revoke, issue"}
	cmd.AddCommand(adminCertList(g), adminCertShow(g), adminCertRevoke(g), adminCertIssue(g))
	return cmd
}

func adminCertList(g *Globals) *cobra.Command {
	var a adminCA
	var kind, name string
	var active bool
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the principals (newest first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, ca, _, err := a.open(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer db.Close()
			k := pki.PrincipalKind(kind)
			if k != "" && !k.Valid() {
				return fmt.Errorf("unknown kind %q (one of %s)", kind, kindList())
			}
			ps, err := ca.Principals(cmd.Context(), pki.PrincipalFilter{Kind: k, Name: name, ActiveOnly: active, Limit: limit})
			if err != nil {
				return err
			}
			if g.JSON {
				if ps == nil {
					ps = []*pki.Principal{}
				}
				return g.PrintJSON(ps)
			}
			tw := tabwriter.NewWriter(g.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERIAL\tKIND\tNAME\tSCHEME\tSTATUS\tNOT AFTER")
			for _, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Serial, p.Kind, p.Name, p.Scheme, p.Status, p.NotAfter.Format("2006-01-02"))
			}
			return tw.Flush()
		},
	}
	a.flags(cmd)
	cmd.Flags().StringVar(&kind, "kind", "", "only this kind ("+kindList()+")")
	cmd.Flags().StringVar(&name, "name", "", "only this name")
	cmd.Flags().BoolVar(&active, "active", false, "only principals that are not revoked")
	cmd.Flags().IntVar(&limit, "limit", 1000, "at most this many")
	return cmd
}

func adminCertShow(g *Globals) *cobra.Command {
	var a adminCA
	cmd := &cobra.Command{
		Use:   "show SERIAL",
		Short: "Show one principal",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, ca, _, err := a.open(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer db.Close()
			p, err := ca.PrincipalBySerial(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.Report(p, principalText(p))
		},
	}
	a.flags(cmd)
	return cmd
}

func adminCertRevoke(g *Globals) *cobra.Command {
	var a adminCA
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke SERIAL --reason TEXT",
		Short: "Revoke a principal: refused on its next request, open connections included",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return errors.New("--reason is required")
			}
			db, ca, _, err := a.open(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer db.Close()
			p, err := ca.PrincipalBySerial(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			n, _ := new(big.Int).SetString(p.Serial, 16)
			if err := ca.Revoke(cmd.Context(), n, reason); err != nil {
				return err
			}
			if p, err = ca.PrincipalBySerial(cmd.Context(), p.Serial); err != nil {
				return err
			}
			return g.Report(p, "revoked: "+principalText(p))
		},
	}
	a.flags(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the register and the audit trail)")
	return cmd
}

func adminCertIssue(g *Globals) *cobra.Command {
	var a adminCA
	var kind, name, scheme, out string
	var scope []string
	cmd := &cobra.Command{
		Use:   "issue --kind K --name N --out DIR",
		Short: "Issue a client certificate for a new principal (operator, auditor, charger…); writes N.pem, N-key.pem, ca.pem",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k := pki.PrincipalKind(kind)
			if !slices.Contains(pki.IssuableKinds(), k) {
				return fmt.Errorf("--kind must be one of %s", kindList())
			}
			if name == "" {
				return errors.New("--name is required")
			}
			db, ca, _, err := a.open(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer db.Close()
			// The same operation as the console's certificate page.
			iss, err := ca.IssuePrincipal(cmd.Context(), pki.PrincipalRequest{Kind: k, Name: name, Scheme: scheme, Scope: scope})
			if err != nil {
				return err
			}
			cert, err := pki.TLSCertificate(iss)
			if err != nil {
				return err
			}
			keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			base := filepath.Join(out, safeFileName(name))
			for path, data := range map[string][]byte{
				base + ".pem":                pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
				base + "-key.pem":            pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
				filepath.Join(out, "ca.pem"): pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate().Raw}),
			} {
				if err := os.WriteFile(path, data, 0o600); err != nil {
					return err
				}
			}
			serial := cert.Leaf.SerialNumber.Text(16)
			return g.Report(map[string]string{"serial": serial, "kind": kind, "cert": base + ".pem", "key": base + "-key.pem"},
				fmt.Sprintf("issued %s %q (serial %s): %s.pem, %s-key.pem", kind, name, serial, base, base))
		},
	}
	a.flags(cmd)
	cmd.Flags().StringVar(&kind, "kind", "", "principal kind ("+kindList()+")")
	cmd.Flags().StringVar(&name, "name", "", "display name (belongs to this kind for good)")
	cmd.Flags().StringVar(&scheme, "scheme", "", "scheme (qmsp, bioqr, keycharge, selfverify, watermark, kme)")
	cmd.Flags().StringSliceVar(&scope, "scope", nil, "what it may act for: account:ID, device:SERIAL, merchant:N, * (repeatable)")
	cmd.Flags().StringVar(&out, "out", ".", "output directory")
	return cmd
}

// AdminRotateCommand is `qshield admin rotate`: revoke the admin
// credential and write a new one into the state directory.
func AdminRotateCommand(g *Globals) *cobra.Command {
	var a adminCA
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Revoke the admin credential and write a new admin.pem / admin-key.pem (key sealed under " + platform.EnvAdminPassphrase + " when set, else under admin-seal.key in the secret directory)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, ca, dir, err := a.open(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer db.Close()
			cert, err := platform.RotateAdmin(cmd.Context(), ca, dir)
			if err != nil {
				return err
			}
			serial := cert.Leaf.SerialNumber.Text(16)
			return g.Report(map[string]string{"serial": serial, "state_dir": dir},
				fmt.Sprintf("new admin credential %s in %s; the previous one is revoked", serial, dir))
		},
	}
	a.flags(cmd)
	return cmd
}

func kindList() string {
	var ks []string
	for _, k := range pki.IssuableKinds() {
		ks = append(ks, string(k))
	}
	return strings.Join(ks, ", ")
}

func principalText(p *pki.Principal) string {
	var b strings.Builder
	fmt.Fprintf(&b, "serial   %s\nkind     %s\nname     %s\n", p.Serial, p.Kind, p.Name)
	if p.Scheme != "" {
		fmt.Fprintf(&b, "scheme   %s\n", p.Scheme)
	}
	if p.DeviceSerial != "" {
		fmt.Fprintf(&b, "device   %s\n", p.DeviceSerial)
	}
	if len(p.Scope) > 0 {
		fmt.Fprintf(&b, "scope    %s\n", strings.Join(p.Scope, ", "))
	}
	fmt.Fprintf(&b, "key      sha256:%s\nstatus   %s", p.KeyHash, p.Status)
	if p.Status == pki.StatusRevoked {
		fmt.Fprintf(&b, " (%s, %s)", p.RevokedAt.Format("2006-01-02 15:04:05Z07:00"), p.Reason)
	}
	fmt.Fprintf(&b, "\nvalid    %s .. %s\n", p.NotBefore.Format("2006-01-02"), p.NotAfter.Format("2006-01-02"))
	return b.String()
}

// trustFlags adds serve's authorization flags.
func trustFlags(cmd *cobra.Command, t *platform.TrustConfig) {
	cmd.Flags().StringSliceVar(&t.TrustedProxies, "trusted-proxy", nil, "with --insecure-http: address or CIDR of a TLS-terminating proxy allowed to pass the verified client certificate (repeatable)")
	cmd.Flags().StringVar(&t.ClientCertHeader, "client-cert-header", "", "header carrying the proxy's verified client certificate (URL-escaped PEM, e.g. nginx $ssl_client_escaped_cert)")
	cmd.Flags().BoolVar(&t.RequirePQ, "require-pq", false, "refuse TLS handshakes that do not negotiate the post-quantum X25519MLKEM768")
	cmd.Flags().Float64Var(&t.RatePerPrincipal, "rate-principal", 0, fmt.Sprintf("requests per second per principal (default %d; negative: unlimited)", platform.DefaultRatePerPrincipal))
	cmd.Flags().Float64Var(&t.RatePerSource, "rate-source", 0, fmt.Sprintf("unauthenticated requests per second per source address (default %d; negative: unlimited)", platform.DefaultRatePerSource))
}
