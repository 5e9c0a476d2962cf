package cli

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qrimg"
	"github.com/qshield/qshield/selfverify"
	"github.com/qshield/qshield/sqldb"
)

// VendorCommand is `qshield vendor`: the vendor V of the self-verified
// e-commerce scheme (seed 002). Its state (key, sessions, payments) lives in
// the database chosen with --db.
func VendorCommand(g *Globals) *cobra.Command {
	v := &vendorEnv{g: g}
	cmd := &cobra.Command{
		Use:   "vendor",
		Short: "Run a vendor of the self-verified e-commerce scheme (seed 002)",
	}
	cmd.PersistentFlags().StringVar(&v.id, "id", "", "vendor identity")
	_ = cmd.MarkPersistentFlagRequired("id")
	cmd.AddCommand(vendorRegister(g, v), vendorServe(g, v), vendorDeposit(g, v), vendorPayments(g, v), vendorCode(g))
	return cmd
}

// vendorEnv is what the vendor commands share.
type vendorEnv struct {
	g        *Globals
	conn     svConn
	id       string
	currency string // the vendor's, once open has read its credentials
}

// open opens the vendor in --db; catalogOf (nil for commands that sell
// nothing) builds the catalogue in the vendor's currency.
func (v *vendorEnv) open(ctx context.Context, catalogOf func(currency string) ([]selfverify.Item, error)) (*selfverify.Vendor, *sqldb.DB, error) {
	db, err := v.g.OpenDB(ctx)
	if err != nil {
		return nil, nil, err
	}
	cred, err := selfverify.LoadVendorCredentials(ctx, db, v.id)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	v.currency = cred.Currency
	var catalog []selfverify.Item
	if catalogOf != nil {
		if catalog, err = catalogOf(cred.Currency); err != nil {
			db.Close()
			return nil, nil, err
		}
	}
	api, err := v.conn.operator()
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	vd, err := selfverify.NewVendor(ctx, db, cred, selfverify.VendorConfig{Operator: api, Catalog: catalog, Log: v.g.Log})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return vd, db, nil
}

// vendorRegister registers the vendor's identity (ECQV) and stores its key in --db.
func vendorRegister(g *Globals, v *vendorEnv) *cobra.Command {
	var code string
	register := &cobra.Command{
		Use:   "register",
		Short: "Register the vendor's identity with the operator (ECQV) and store its key in --db",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			api, err := v.conn.operator()
			if err != nil {
				return err
			}
			db, err := g.OpenDB(ctx)
			if err != nil {
				return err
			}
			defer db.Close()
			if _, err := selfverify.LoadVendorCredentials(ctx, db, v.id); err == nil {
				return fmt.Errorf("vendor %s is already registered in this database", v.id)
			}
			cred, err := selfverify.Register(ctx, api, nil, v.id, selfverify.RoleVendor, code)
			if err != nil {
				return err
			}
			if err := selfverify.SaveVendorCredentials(ctx, db, cred); err != nil {
				return err
			}
			return g.Report(map[string]any{"id": v.id, "curve": cred.Curve().Name(), "p": fmt.Sprintf("%x", cred.P.Bytes())},
				fmt.Sprintf("registered vendor %s on %s\n", v.id, cred.Curve().Name()))
		},
	}
	register.Flags().StringVar(&code, "code", "", "one-time enrollment code from the operator")
	_ = register.MarkFlagRequired("code")
	v.conn.flags(register)
	return register
}

// vendorCode prints (and renders) the payment code a vendor's till shows for
// one item: the phone (the CLI user or the browser wallet) scans it, fetches
// the vendor's identity and price from the vendor's API at that address and
// pays there.
func vendorCode(g *Globals) *cobra.Command {
	var base, item, pngOut string
	cmd := &cobra.Command{
		Use:   "code",
		Short: "Print the payment code (and QR) a till shows for one item",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			text, err := selfverify.VendorCode{URL: base, Item: item}.MarshalText()
			if err != nil {
				return Usagef("%v", err)
			}
			rep := map[string]any{"code": string(text)}
			if pngOut != "" {
				png, info, err := qrimg.EncodePNG(string(text), qrimg.M, 6)
				if err != nil {
					return err
				}
				if err := fsutil.WriteFileAtomic(pngOut, png, 0o644, false); err != nil {
					return err
				}
				rep["png"], rep["qr_version"] = pngOut, info.Version
			}
			return g.Report(rep, string(text))
		},
	}
	cmd.Flags().StringVar(&base, "origin", "", "the vendor API's public origin, https://host[:port] (what `vendor serve` listens on, as phones reach it)")
	cmd.Flags().StringVar(&item, "item", "", "catalogue item id")
	cmd.Flags().StringVar(&pngOut, "png", "", "also write the QR code to this PNG file")
	_ = cmd.MarkFlagRequired("origin")
	_ = cmd.MarkFlagRequired("item")
	return cmd
}

// vendorServe serves the vendor API.
func vendorServe(g *Globals, v *vendorEnv) *cobra.Command {
	var listen, certFile, keyFile, catalogFile string
	var items []string
	var insecure bool
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Serve the vendor API (/v1/vendor/) over HTTPS",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			vd, db, err := v.open(ctx, func(currency string) ([]selfverify.Item, error) { return loadCatalog(catalogFile, items, currency) })
			if err != nil {
				return err
			}
			defer db.Close()
			defer vd.Close()
			srv := &http.Server{Handler: vd.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 15 * time.Second,
				WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			errc := make(chan error, 1)
			switch {
			case certFile != "" && keyFile != "":
				srv.TLSConfig = pki.TLSServerConfig(nil)
				go func() { errc <- srv.ServeTLS(ln, certFile, keyFile) }()
				fmt.Fprintf(g.Err, "vendor %s serving https://%s%s\n", v.id, ln.Addr(), selfverify.VendorPrefix)
			case insecure:
				go func() { errc <- srv.Serve(ln) }()
				fmt.Fprintf(g.Err, "vendor %s serving plain http://%s%s (insecure)\n", v.id, ln.Addr(), selfverify.VendorPrefix)
			default:
				ln.Close()
				return Usagef("give --tls-cert and --tls-key, or --insecure-http for a local test")
			}
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		},
	}
	serve.Flags().StringVar(&listen, "listen", "127.0.0.1:8444", "listen address")
	serve.Flags().StringVar(&certFile, "tls-cert", "", "TLS certificate (PEM)")
	serve.Flags().StringVar(&keyFile, "tls-key", "", "TLS private key (PEM)")
	serve.Flags().BoolVar(&insecure, "insecure-http", false, "serve plain HTTP (local tests only)")
	serve.Flags().StringVar(&catalogFile, "catalog", "", "JSON file: [{\"id\":…,\"description\":…,\"price\":…}], prices in minor units as in the API")
	serve.Flags().StringArrayVar(&items, "item", nil, "catalogue item id:price[:description], price in major units of the vendor's currency, e.g. tea:12.50 (repeatable)")
	v.conn.flags(serve)
	return serve
}

// vendorDeposit deposits the collected payments.
func vendorDeposit(g *Globals, v *vendorEnv) *cobra.Command {
	deposit := &cobra.Command{
		Use:   "deposit",
		Short: "Deposit every collected payment (signed with the vendor key); the users confirm",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			vd, db, err := v.open(c.Context(), nil)
			if err != nil {
				return err
			}
			defer db.Close()
			defer vd.Close()
			dep, err := vd.Deposit(c.Context())
			if err != nil {
				return err
			}
			if dep == nil {
				return g.Report(map[string]any{"deposit": nil}, "nothing to deposit\n")
			}
			var b strings.Builder
			fmt.Fprintf(&b, "deposit %s\n", dep.ID)
			for _, cs := range dep.Confirmations {
				fmt.Fprintf(&b, "  token %s: %s %s (user must answer by %s)\n", cs.Serial, money.Format(cs.Amount, v.currency), cs.State, time.UnixMilli(cs.Deadline).UTC().Format(time.RFC3339))
			}
			return g.Report(dep, b.String())
		},
	}
	v.conn.flags(deposit)
	return deposit
}

// vendorPayments lists the vendor's payments.
func vendorPayments(g *Globals, v *vendorEnv) *cobra.Command {
	var depID string
	statusCmd := &cobra.Command{
		Use:   "payments",
		Short: "List the vendor's payments, refreshing the state of deposits awaiting confirmation",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			vd, db, err := v.open(c.Context(), nil)
			if err != nil {
				return err
			}
			defer db.Close()
			defer vd.Close()
			if depID != "" {
				if _, err := vd.RefreshDeposit(c.Context(), depID); err != nil {
					return err
				}
			} else if err := vd.RefreshDeposits(c.Context()); err != nil {
				return err
			}
			ps, err := vd.Payments(c.Context(), 1000)
			if err != nil {
				return err
			}
			if g.JSON {
				return g.PrintJSON(ps)
			}
			tw := tabwriter.NewWriter(g.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REF\tTOKEN\tSEQ\tITEM\tPRICE\tDEPOSIT\tSTATE")
			for _, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", p.Ref, p.Serial, p.Seq, p.Item, money.Format(p.Price, v.currency), p.DepositID, p.DepositState)
			}
			return tw.Flush()
		},
	}
	statusCmd.Flags().StringVar(&depID, "deposit", "", "deposit ID to refresh")
	v.conn.flags(statusCmd)
	return statusCmd
}
