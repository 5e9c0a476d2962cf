package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/selfverify"
)

// PhoneShopCommand is `qshield phone shop`: the mobile user U of the
// self-verified e-commerce scheme (seed 002) — register, withdraw a token,
// pay vendors, confirm deposits, close a token.
func PhoneShopCommand(g *Globals) *cobra.Command {
	s := &shopEnv{}
	cmd := &cobra.Command{
		Use:   "shop",
		Short: "Shop anonymously with self-verified keys and prepaid tokens (seed 002)",
	}
	cmd.PersistentFlags().StringVar(&s.wallet, "wallet", defaultWallet(), "wallet file (holds secret keys; mode 0600)")
	cmd.AddCommand(shopRegister(g, s), shopWithdraw(g, s), shopPay(g, s), shopCatalog(g, s), shopConfirm(g, s), shopClose(g, s), shopStatus(g, s))
	return cmd
}

// shopEnv is what the phone shop commands share: the connection to the
// operator and the wallet file.
type shopEnv struct {
	conn   svConn
	wallet string
}

// client registers the connection flags (--server, --ca) on c.
func (s *shopEnv) client(c *cobra.Command) *cobra.Command {
	s.conn.flags(c)
	return c
}

// withUser opens the wallet as a user of the operator for run.
func (s *shopEnv) withUser(run func(ctx context.Context, u *selfverify.User) error) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, _ []string) error {
		api, err := s.conn.operator()
		if err != nil {
			return err
		}
		u, err := openWallet(s.wallet, api)
		if err != nil {
			return err
		}
		return run(c.Context(), u)
	}
}

// shopRegister registers the phone's identity (ECQV) with an enrolment code.
func shopRegister(g *Globals, s *shopEnv) *cobra.Command {
	var id, code string
	register := &cobra.Command{
		Use:   "register",
		Short: "Register this phone's identity with the operator (ECQV) using an enrollment code",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if _, err := os.Stat(s.wallet); err == nil {
				return fmt.Errorf("wallet %s exists already; use another --wallet", s.wallet)
			}
			api, err := s.conn.operator()
			if err != nil {
				return err
			}
			cred, err := selfverify.Register(c.Context(), api, nil, id, selfverify.RoleUser, code)
			if err != nil {
				return err
			}
			w := selfverify.NewWallet(cred)
			if err := saveWallet(s.wallet)(w); err != nil {
				return err
			}
			return g.Report(map[string]any{"id": cred.ID, "curve": w.Curve, "p": fmt.Sprintf("%x", w.P), "wallet": s.wallet},
				fmt.Sprintf("registered %s on %s; wallet %s\n", cred.ID, w.Curve, s.wallet))
		},
	}
	register.Flags().StringVar(&id, "id", "", "identity to register (as enrolled by the operator)")
	register.Flags().StringVar(&code, "code", "", "one-time enrollment code from the operator")
	_ = register.MarkFlagRequired("id")
	_ = register.MarkFlagRequired("code")
	return s.client(register)
}

// shopWithdraw moves W into escrow for a signed e-balance token.
func shopWithdraw(g *Globals, s *shopEnv) *cobra.Command {
	var amount string
	var ttl time.Duration
	withdraw := &cobra.Command{
		Use:   "withdraw",
		Short: "Move W from your account into escrow and receive a signed e-balance token",
		Args:  cobra.NoArgs,
		RunE: s.withUser(func(ctx context.Context, u *selfverify.User) error {
			amt, err := parseAmount(amount, u.Wallet().Currency)
			if err != nil {
				return err
			}
			st, err := u.Withdraw(ctx, amt.Minor, ttl)
			if err != nil {
				return err
			}
			return g.Report(st.Token, fmt.Sprintf("token %s: W=%s, expires %s\n", st.Token.Serial, money.Format(st.Token.Limit, st.Token.Currency),
				st.Token.Expires().UTC().Format(time.RFC3339)))
		}),
	}
	withdraw.Flags().StringVar(&amount, "amount", "", "token limit W in major units of your account's currency, e.g. 100.00")
	withdraw.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime (default: the operator's, 24h)")
	_ = withdraw.MarkFlagRequired("amount")
	return s.client(withdraw)
}

// shopPay buys an item from a vendor.
func shopPay(g *Globals, s *shopEnv) *cobra.Command {
	var vendorURL, item string
	pay := &cobra.Command{
		Use:   "pay",
		Short: "Buy an item from a vendor (first payment: fresh K_UV; later: K_j = H(K_{j-1}))",
		Args:  cobra.NoArgs,
		RunE: s.withUser(func(ctx context.Context, u *selfverify.User) error {
			vc, err := s.conn.vendor(vendorURL)
			if err != nil {
				return err
			}
			rc, err := u.Pay(ctx, vc, item)
			if err != nil {
				return err
			}
			cur := u.Wallet().Currency
			return g.Report(rc, fmt.Sprintf("paid %s for %s (payment %d of this session, %s spent at this vendor)\ngoods: %s\n",
				money.Format(rc.Price, cur), rc.Item, rc.Seq, money.Format(rc.SpentAtVendor, cur), rc.Goods))
		}),
	}
	pay.Flags().StringVar(&vendorURL, "vendor", "", "vendor base URL")
	pay.Flags().StringVar(&item, "item", "", "item ID from the vendor's catalogue")
	_ = pay.MarkFlagRequired("vendor")
	_ = pay.MarkFlagRequired("item")
	return s.client(pay)
}

// shopCatalog shows a vendor's identity and catalogue.
func shopCatalog(g *Globals, s *shopEnv) *cobra.Command {
	var vendorURL string
	catalogCmd := &cobra.Command{
		Use:   "catalog",
		Short: "Show a vendor's identity and catalogue",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			vc, err := s.conn.vendor(vendorURL)
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
				fmt.Fprintf(tw, "%s\t%s\t%s\n", it.ID, money.Format(it.Price, info.Currency), it.Description)
			}
			return tw.Flush()
		},
	}
	catalogCmd.Flags().StringVar(&vendorURL, "vendor", "", "vendor base URL")
	_ = catalogCmd.MarkFlagRequired("vendor")
	return s.client(catalogCmd)
}

// shopConfirm answers the operator's deposit confirmations.
func shopConfirm(g *Globals, s *shopEnv) *cobra.Command {
	var serial string
	var refuse bool
	confirm := &cobra.Command{
		Use:   "confirm",
		Short: "Answer the operator's deposit confirmations (agree only to payments this wallet made)",
		Args:  cobra.NoArgs,
		RunE: s.withUser(func(ctx context.Context, u *selfverify.User) error {
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
				fmt.Fprintf(&b, "confirmation %s (token %s): %s → %s\n", c.ID, c.Serial, money.Format(c.Amount, u.Wallet().Currency), c.State)
			}
			if len(all) == 0 {
				b.WriteString("nothing to confirm\n")
			}
			return g.Report(all, b.String())
		}),
	}
	confirm.Flags().StringVar(&serial, "serial", "", "only this token")
	confirm.Flags().BoolVar(&refuse, "refuse", false, "refuse every pending confirmation")
	return s.client(confirm)
}

// shopClose closes a token.
func shopClose(g *Globals, s *shopEnv) *cobra.Command {
	var serial string
	closeCmd := &cobra.Command{
		Use:   "close",
		Short: "Close a token; the rest of W returns to your account once deposits are decided",
		Args:  cobra.NoArgs,
		RunE: s.withUser(func(ctx context.Context, u *selfverify.User) error {
			st, err := u.Close(ctx, serial)
			if err != nil {
				return err
			}
			cur := u.Wallet().Currency
			return g.Report(st, fmt.Sprintf("token %s: %s; settled %s, refunded %s of W=%s\n", st.Serial, st.State,
				money.Format(st.Settled, cur), money.Format(st.Refunded, cur), money.Format(st.Limit, cur)))
		}),
	}
	closeCmd.Flags().StringVar(&serial, "serial", "", "token serial")
	_ = closeCmd.MarkFlagRequired("serial")
	return s.client(closeCmd)
}

// shopStatus shows the wallet without its secrets.
func shopStatus(g *Globals, s *shopEnv) *cobra.Command {
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the wallet's tokens and payments (no secrets)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			b, err := os.ReadFile(s.wallet)
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
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", t.Serial, money.Format(t.W, w.Currency), money.Format(t.Spent, w.Currency), t.Expires, t.Closed)
			}
			fmt.Fprintf(tw, "\nVENDOR\tITEM\tPRICE\tSEQ\tREF\n")
			for _, p := range w.Payments {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", p.Vendor, p.Item, money.Format(p.Price, w.Currency), p.Seq, p.Ref)
			}
			return tw.Flush()
		},
	}
	return status
}
