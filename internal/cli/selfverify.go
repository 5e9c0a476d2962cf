package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/internal/platform"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/selfverify"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
)

// svConn are the flags every self-verified client command shares.
type svConn struct {
	server string
	ca     string
}

func (c *svConn) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.server, "server", envOr("QSHIELD_SERVER", "https://127.0.0.1:8443"), "operator base URL (env QSHIELD_SERVER)")
	cmd.Flags().StringVar(&c.ca, "ca", os.Getenv("QSHIELD_CA"), "PEM file of the CA that signs the server certificates (env QSHIELD_CA; default: system roots)")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// httpClient trusts --ca (or the system roots).
func (c *svConn) httpClient() (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.ca != "" {
		pem, err := os.ReadFile(c.ca)
		if err != nil {
			return nil, fmt.Errorf("read --ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s holds no PEM certificate", c.ca)
		}
		cfg.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

func (c *svConn) operator() (*selfverify.OperatorClient, error) {
	hc, err := c.httpClient()
	if err != nil {
		return nil, err
	}
	return selfverify.NewOperatorClient(c.server, hc)
}

func (c *svConn) vendor(url string) (*selfverify.VendorClient, error) {
	hc, err := c.httpClient()
	if err != nil {
		return nil, err
	}
	return selfverify.NewVendorClient(url, hc)
}

func defaultWallet() string {
	dir := os.Getenv("XDG_DATA_HOME")
	if dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".local", "share")
		}
	}
	return filepath.Join(dir, "qshield", "phone-wallet.json")
}

func saveWallet(path string) func(*selfverify.Wallet) error {
	return func(w *selfverify.Wallet) error {
		b, err := json.MarshalIndent(w, "", "  ")
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		// Durable: the wallet records which chained keys were used, and the
		// phone saves it before sending, so no key is ever used twice.
		return fsutil.WriteFileAtomic(path, b, 0o600, true)
	}
}

func openWallet(path string, api selfverify.OperatorAPI) (*selfverify.User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read wallet (run `qshield phone shop register` first): %w", err)
	}
	w, err := selfverify.ParseWallet(b)
	if err != nil {
		return nil, fmt.Errorf("wallet %s: %w", path, err)
	}
	return selfverify.OpenUser(w, api, selfverify.WithSave(saveWallet(path)))
}

// PhoneShopCommand is `qshield phone shop`: the mobile user U of the
// self-verified e-commerce scheme (seed 002) — register, withdraw a token,
// pay vendors, confirm deposits, close a token.
func PhoneShopCommand(g *Globals) *cobra.Command {
	var conn svConn
	var wallet string
	cmd := &cobra.Command{
		Use:   "shop",
		Short: "Shop anonymously with self-verified keys and prepaid tokens (seed 002)",
	}
	cmd.PersistentFlags().StringVar(&wallet, "wallet", defaultWallet(), "wallet file (holds secret keys; mode 0600)")
	withUser := func(run func(ctx context.Context, u *selfverify.User) error) func(*cobra.Command, []string) error {
		return func(c *cobra.Command, _ []string) error {
			api, err := conn.operator()
			if err != nil {
				return err
			}
			u, err := openWallet(wallet, api)
			if err != nil {
				return err
			}
			return run(c.Context(), u)
		}
	}

	var id, code string
	register := &cobra.Command{
		Use:   "register",
		Short: "Register this phone's identity with the operator (ECQV) using an enrollment code",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if _, err := os.Stat(wallet); err == nil {
				return fmt.Errorf("wallet %s exists already; use another --wallet", wallet)
			}
			api, err := conn.operator()
			if err != nil {
				return err
			}
			cred, err := selfverify.Register(c.Context(), api, nil, id, selfverify.RoleUser, code)
			if err != nil {
				return err
			}
			w := selfverify.NewWallet(cred)
			if err := saveWallet(wallet)(w); err != nil {
				return err
			}
			return g.Report(map[string]any{"id": cred.ID, "curve": w.Curve, "p": fmt.Sprintf("%x", w.P), "wallet": wallet},
				fmt.Sprintf("registered %s on %s; wallet %s\n", cred.ID, w.Curve, wallet))
		},
	}
	register.Flags().StringVar(&id, "id", "", "identity to register (as enrolled by the operator)")
	register.Flags().StringVar(&code, "code", "", "one-time enrollment code from the operator")
	_ = register.MarkFlagRequired("id")
	_ = register.MarkFlagRequired("code")

	var amount int64
	var ttl time.Duration
	withdraw := &cobra.Command{
		Use:   "withdraw",
		Short: "Move W from your account into escrow and receive a signed e-balance token",
		Args:  cobra.NoArgs,
		RunE: withUser(func(ctx context.Context, u *selfverify.User) error {
			st, err := u.Withdraw(ctx, amount, ttl)
			if err != nil {
				return err
			}
			return g.Report(st.Token, fmt.Sprintf("token %s: W=%d %s, expires %s\n", st.Token.Serial, st.Token.Limit, st.Token.Currency,
				st.Token.Expires().UTC().Format(time.RFC3339)))
		}),
	}
	withdraw.Flags().Int64Var(&amount, "amount", 0, "token limit W in minor units")
	withdraw.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime (default: the operator's, 24h)")
	_ = withdraw.MarkFlagRequired("amount")

	var vendorURL, item string
	pay := &cobra.Command{
		Use:   "pay",
		Short: "Buy an item from a vendor (first payment: fresh K_UV; later: K_j = H(K_{j-1}))",
		Args:  cobra.NoArgs,
		RunE: withUser(func(ctx context.Context, u *selfverify.User) error {
			vc, err := conn.vendor(vendorURL)
			if err != nil {
				return err
			}
			rc, err := u.Pay(ctx, vc, item)
			if err != nil {
				return err
			}
			return g.Report(rc, fmt.Sprintf("paid %d for %s (payment %d of this session, %d spent at this vendor)\ngoods: %s\n",
				rc.Price, rc.Item, rc.Seq, rc.SpentAtVendor, rc.Goods))
		}),
	}
	pay.Flags().StringVar(&vendorURL, "vendor", "", "vendor base URL")
	pay.Flags().StringVar(&item, "item", "", "item ID from the vendor's catalogue")
	_ = pay.MarkFlagRequired("vendor")
	_ = pay.MarkFlagRequired("item")

	catalogCmd := &cobra.Command{
		Use:   "catalog",
		Short: "Show a vendor's identity and catalogue",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			vc, err := conn.vendor(vendorURL)
			if err != nil {
				return err
			}
			info, err := vc.Info(c.Context())
			if err != nil {
				return err
			}
			if g.JSON {
				return g.PrintJSON(info)
			}
			tw := tabwriter.NewWriter(g.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "vendor %s (%s, %s)\nITEM\tPRICE\tDESCRIPTION\n", info.ID, info.Curve, info.Currency)
			for _, it := range info.Catalog {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", it.ID, it.Price, it.Description)
			}
			return tw.Flush()
		},
	}
	catalogCmd.Flags().StringVar(&vendorURL, "vendor", "", "vendor base URL")
	_ = catalogCmd.MarkFlagRequired("vendor")

	var serial string
	var refuse bool
	confirm := &cobra.Command{
		Use:   "confirm",
		Short: "Answer the operator's deposit confirmations (agree only to payments this wallet made)",
		Args:  cobra.NoArgs,
		RunE: withUser(func(ctx context.Context, u *selfverify.User) error {
			decide := selfverify.Decision(selfverify.AgreeIfKnown)
			if refuse {
				decide = func(selfverify.ConfirmationDetails, bool) bool { return false }
			}
			var all []selfverify.ConfirmationStatus
			for _, wt := range u.Wallet().Tokens {
				if serial != "" && wt.Token.Token.Serial != serial {
					continue
				}
				cs, err := u.Confirm(ctx, wt.Token.Token.Serial, decide)
				all = append(all, cs...)
				if err != nil {
					return err
				}
			}
			var b strings.Builder
			for _, c := range all {
				fmt.Fprintf(&b, "confirmation %s (token %s): %d → %s\n", c.ID, c.Serial, c.Amount, c.State)
			}
			if len(all) == 0 {
				b.WriteString("nothing to confirm\n")
			}
			return g.Report(all, b.String())
		}),
	}
	confirm.Flags().StringVar(&serial, "serial", "", "only this token")
	confirm.Flags().BoolVar(&refuse, "refuse", false, "refuse every pending confirmation")

	closeCmd := &cobra.Command{
		Use:   "close",
		Short: "Close a token; the rest of W returns to your account once deposits are decided",
		Args:  cobra.NoArgs,
		RunE: withUser(func(ctx context.Context, u *selfverify.User) error {
			st, err := u.Close(ctx, serial)
			if err != nil {
				return err
			}
			return g.Report(st, fmt.Sprintf("token %s: %s; settled %d, refunded %d of W=%d\n", st.Serial, st.State, st.Settled, st.Refunded, st.Limit))
		}),
	}
	closeCmd.Flags().StringVar(&serial, "serial", "", "token serial")
	_ = closeCmd.MarkFlagRequired("serial")

	status := &cobra.Command{
		Use:   "status",
		Short: "Show the wallet's tokens and payments (no secrets)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			b, err := os.ReadFile(wallet)
			if err != nil {
				return err
			}
			w, err := selfverify.ParseWallet(b)
			if err != nil {
				return err
			}
			type tok struct {
				Serial  string `json:"serial"`
				W       int64  `json:"w"`
				Spent   int64  `json:"spent"`
				Expires string `json:"expires"`
				Closed  bool   `json:"closed"`
			}
			var toks []tok
			for _, t := range w.Tokens {
				var spent int64
				for _, p := range w.Payments {
					if p.Serial == t.Token.Token.Serial {
						spent += p.Price
					}
				}
				toks = append(toks, tok{t.Token.Token.Serial, t.Token.Token.Limit, spent, t.Token.Token.Expires().UTC().Format(time.RFC3339), t.Closed})
			}
			if g.JSON {
				return g.PrintJSON(map[string]any{"id": w.ID, "curve": w.Curve, "tokens": toks, "payments": w.Payments})
			}
			tw := tabwriter.NewWriter(g.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "wallet of %s (%s)\nTOKEN\tW\tSPENT\tEXPIRES\tCLOSED\n", w.ID, w.Curve)
			for _, t := range toks {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%v\n", t.Serial, t.W, t.Spent, t.Expires, t.Closed)
			}
			fmt.Fprintf(tw, "\nVENDOR\tITEM\tPRICE\tSEQ\tREF\n")
			for _, p := range w.Payments {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", p.Vendor, p.Item, p.Price, p.Seq, p.Ref)
			}
			return tw.Flush()
		},
	}

	for _, c := range []*cobra.Command{register, withdraw, pay, catalogCmd, confirm, closeCmd} {
		conn.flags(c)
	}
	cmd.AddCommand(register, withdraw, pay, catalogCmd, confirm, closeCmd, status)
	return cmd
}

// VendorCommand is `qshield vendor`: the vendor V of the self-verified
// e-commerce scheme (seed 002). Its state (key, sessions, payments) lives in
// the database chosen with --db.
func VendorCommand(g *Globals) *cobra.Command {
	var conn svConn
	var id string
	cmd := &cobra.Command{
		Use:   "vendor",
		Short: "Run a vendor of the self-verified e-commerce scheme (seed 002)",
	}
	cmd.PersistentFlags().StringVar(&id, "id", "", "vendor identity")
	_ = cmd.MarkPersistentFlagRequired("id")

	openVendor := func(ctx context.Context, catalog []selfverify.Item) (*selfverify.Vendor, *sqldb.DB, error) {
		db, err := g.OpenDB(ctx)
		if err != nil {
			return nil, nil, err
		}
		cred, err := selfverify.LoadVendorCredentials(ctx, db, id)
		if err != nil {
			db.Close()
			return nil, nil, err
		}
		api, err := conn.operator()
		if err != nil {
			db.Close()
			return nil, nil, err
		}
		v, err := selfverify.NewVendor(ctx, db, cred, selfverify.VendorConfig{Operator: api, Catalog: catalog, Log: g.Log})
		if err != nil {
			db.Close()
			return nil, nil, err
		}
		return v, db, nil
	}

	var code string
	register := &cobra.Command{
		Use:   "register",
		Short: "Register the vendor's identity with the operator (ECQV) and store its key in --db",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			api, err := conn.operator()
			if err != nil {
				return err
			}
			db, err := g.OpenDB(ctx)
			if err != nil {
				return err
			}
			defer db.Close()
			if _, err := selfverify.LoadVendorCredentials(ctx, db, id); err == nil {
				return fmt.Errorf("vendor %s is already registered in this database", id)
			}
			cred, err := selfverify.Register(ctx, api, nil, id, selfverify.RoleVendor, code)
			if err != nil {
				return err
			}
			if err := selfverify.SaveVendorCredentials(ctx, db, cred); err != nil {
				return err
			}
			return g.Report(map[string]any{"id": id, "curve": cred.Curve().Name(), "p": fmt.Sprintf("%x", cred.P.Bytes())},
				fmt.Sprintf("registered vendor %s on %s\n", id, cred.Curve().Name()))
		},
	}
	register.Flags().StringVar(&code, "code", "", "one-time enrollment code from the operator")
	_ = register.MarkFlagRequired("code")

	var listen, certFile, keyFile, catalogFile string
	var items []string
	var insecure bool
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Serve the vendor API (/v1/vendor/) over HTTPS",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			catalog, err := loadCatalog(catalogFile, items)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			v, db, err := openVendor(ctx, catalog)
			if err != nil {
				return err
			}
			defer db.Close()
			defer v.Close()
			srv := &http.Server{Handler: v.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 15 * time.Second,
				WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			errc := make(chan error, 1)
			switch {
			case certFile != "" && keyFile != "":
				srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
				go func() { errc <- srv.ServeTLS(ln, certFile, keyFile) }()
				fmt.Fprintf(g.Err, "vendor %s serving https://%s%s\n", id, ln.Addr(), selfverify.VendorPrefix)
			case insecure:
				go func() { errc <- srv.Serve(ln) }()
				fmt.Fprintf(g.Err, "vendor %s serving plain http://%s%s (insecure)\n", id, ln.Addr(), selfverify.VendorPrefix)
			default:
				ln.Close()
				return errors.New("give --tls-cert and --tls-key, or --insecure-http for a local test")
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
	serve.Flags().StringVar(&catalogFile, "catalog", "", "JSON file: [{\"id\":…,\"description\":…,\"price\":…}]")
	serve.Flags().StringArrayVar(&items, "item", nil, "catalogue item id:price[:description] (repeatable)")

	deposit := &cobra.Command{
		Use:   "deposit",
		Short: "Deposit every collected payment (signed with the vendor key); the users confirm",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			v, db, err := openVendor(c.Context(), nil)
			if err != nil {
				return err
			}
			defer db.Close()
			defer v.Close()
			dep, err := v.Deposit(c.Context())
			if err != nil {
				return err
			}
			if dep == nil {
				return g.Report(map[string]any{"deposit": nil}, "nothing to deposit\n")
			}
			var b strings.Builder
			fmt.Fprintf(&b, "deposit %s\n", dep.ID)
			for _, cs := range dep.Confirmations {
				fmt.Fprintf(&b, "  token %s: %d %s (user must answer by %s)\n", cs.Serial, cs.Amount, cs.State, time.UnixMilli(cs.Deadline).UTC().Format(time.RFC3339))
			}
			return g.Report(dep, b.String())
		},
	}

	var depID string
	statusCmd := &cobra.Command{
		Use:   "payments",
		Short: "List the vendor's payments, refreshing the state of deposits awaiting confirmation",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			v, db, err := openVendor(c.Context(), nil)
			if err != nil {
				return err
			}
			defer db.Close()
			defer v.Close()
			if depID != "" {
				if _, err := v.RefreshDeposit(c.Context(), depID); err != nil {
					return err
				}
			} else if err := v.RefreshDeposits(c.Context()); err != nil {
				return err
			}
			ps, err := v.Payments(c.Context(), 1000)
			if err != nil {
				return err
			}
			if g.JSON {
				return g.PrintJSON(ps)
			}
			tw := tabwriter.NewWriter(g.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REF\tTOKEN\tSEQ\tITEM\tPRICE\tDEPOSIT\tSTATE")
			for _, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\n", p.Ref, p.Serial, p.Seq, p.Item, p.Price, p.DepositID, p.DepositState)
			}
			return tw.Flush()
		},
	}
	statusCmd.Flags().StringVar(&depID, "deposit", "", "deposit ID to refresh")

	for _, c := range []*cobra.Command{register, serve, deposit, statusCmd} {
		conn.flags(c)
	}
	cmd.AddCommand(register, serve, deposit, statusCmd)
	return cmd
}

func loadCatalog(file string, items []string) ([]selfverify.Item, error) {
	var cat []selfverify.Item
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cat); err != nil {
			return nil, fmt.Errorf("catalogue %s: %w", file, err)
		}
	}
	for _, s := range items {
		parts := strings.SplitN(s, ":", 3)
		if len(parts) < 2 {
			return nil, fmt.Errorf("--item %q: want id:price[:description]", s)
		}
		price, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("--item %q: price: %w", s, err)
		}
		it := selfverify.Item{ID: parts[0], Price: price}
		if len(parts) == 3 {
			it.Description = parts[2]
		}
		cat = append(cat, it)
	}
	if len(cat) == 0 {
		return nil, errors.New("the vendor needs a catalogue: --item id:price[:description] or --catalog file.json")
	}
	return cat, nil
}

// SelfVerifyEnrollCommand is the operator's enrollment step (suggested as
// `qshield selfverify enroll`): it binds an identity and role to a ledger
// account in --db and prints the one-time code the phone or vendor registers
// with. It works on the database directly, as the server's administrator.
func SelfVerifyEnrollCommand(g *Globals) *cobra.Command {
	var id, role, account, curveName, svStateDir string
	cmd := &cobra.Command{
		Use:   "enroll",
		Short: "Enrol a user or vendor for self-verified registration and print its one-time code",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			db, err := g.OpenDB(ctx)
			if err != nil {
				return err
			}
			defer db.Close()
			led, err := ledger.Open(ctx, db, ledger.WithSweepInterval(0))
			if err != nil {
				return err
			}
			defer led.Close()
			curve, err := ecqv.CurveByName(curveName)
			if err != nil {
				return err
			}
			dir, err := platform.StateDir(svStateDir, db)
			if err != nil {
				return err
			}
			seal, err := platform.OperatorKeySealer(dir)
			if err != nil {
				return err
			}
			key, err := selfverify.LoadOrCreateOperatorKey(ctx, db, curve, seal)
			if err != nil {
				return err
			}
			op, err := selfverify.NewOperator(ctx, db, selfverify.OperatorConfig{Key: key, Ledger: led, Log: g.Log})
			if err != nil {
				return err
			}
			defer op.Close()
			code, err := op.Enroll(ctx, id, role, account)
			if err != nil {
				return err
			}
			return g.Report(map[string]string{"id": id, "role": role, "account": account, "code": code},
				fmt.Sprintf("enrolled %s (%s, account %s); one-time code: %s\n", id, role, account, code))
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "identity")
	cmd.Flags().StringVar(&role, "role", selfverify.RoleUser, "user or vendor")
	cmd.Flags().StringVar(&account, "account", "", "ledger account the identity's money moves through")
	cmd.Flags().StringVar(&curveName, "curve", "P-256", "operator curve when the key is created: P-256 or SM2")
	cmd.Flags().StringVar(&svStateDir, "state-dir", "", "the platform state directory (its platform.key opens the operator key; default: beside the SQLite file)")
	_ = cmd.MarkFlagRequired("id")
	_ = cmd.MarkFlagRequired("account")
	return cmd
}
