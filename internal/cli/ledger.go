package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/internal/client"
	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/money"
)

// LedgerCommand is `qshield ledger`: the operator's view of the ledger over
// the platform API (admin certificate): accounts, transfers and history.
// Amounts are typed and shown in major units of the account's currency; the
// API carries integer minor units.
func LedgerCommand(g *Globals) *cobra.Command {
	var server, admin string
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Operate the ledger through the platform API: accounts, transfers, history",
		Long: "Talks to `qshield serve` at --server with the operator's credentials (--admin, the\n" +
			"server's --dir). Amounts are in major units of the currency (12.34 CNY, 100 JPY, 1.250 KWD).",
	}
	serverFlag(cmd.PersistentFlags(), &server, "")
	adminFlag(cmd.PersistentFlags(), &admin)
	with := func(run func(ctx context.Context, c *client.Client, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			c, err := adminClient(server, admin)
			if err != nil {
				return err
			}
			defer c.Close()
			return run(cmd.Context(), c, args)
		}
	}
	accounts := &cobra.Command{Use: "accounts", Short: "List, open and show accounts"}
	accounts.AddCommand(ledgerAccountsList(g, with), ledgerAccountsCreate(g, with), ledgerAccountsShow(g, with))
	cmd.AddCommand(accounts, ledgerTransfer(g, with), ledgerHistory(g, with))
	return cmd
}

type withClient func(run func(ctx context.Context, c *client.Client, args []string) error) func(*cobra.Command, []string) error

// accountJSON is an account as the ledger commands print it with --json:
// the API's fields plus the balances in major units.
type accountJSON struct {
	ledger.Account
	BalanceText   string `json:"balance_text"`
	AvailableText string `json:"available_text"`
}

func accountOut(a ledger.Account) accountJSON {
	return accountJSON{Account: a, BalanceText: money.Format(a.Balance, a.Currency), AvailableText: money.Format(a.Available(), a.Currency)}
}

func ledgerAccountsList(g *Globals, with withClient) *cobra.Command {
	var limit int
	var cursor string
	var all bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List accounts in ID order, one page (--all: every page)",
		Args:  cobra.NoArgs,
		RunE: with(func(ctx context.Context, c *client.Client, _ []string) error {
			if limit < 0 || limit > server.MaxAccountPage {
				return Usagef("--limit must be from 1 to %d", server.MaxAccountPage)
			}
			var list []accountJSON
			next := cursor
			for {
				p, err := c.Accounts(ctx, next, limit)
				if err != nil {
					return err
				}
				for _, a := range p.Accounts {
					list = append(list, accountOut(a))
				}
				next = p.NextCursor
				if !all || next == "" {
					break
				}
			}
			if g.JSON {
				if list == nil {
					list = []accountJSON{}
				}
				return g.PrintJSON(map[string]any{"accounts": list, "next_cursor": next})
			}
			tw := tabwriter.NewWriter(g.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tOWNER\tKIND\tBALANCE\tAVAILABLE")
			for _, a := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.ID, a.Owner, a.Kind, a.BalanceText, a.AvailableText)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(g.Err, "more accounts follow: --cursor %s (or --all)\n", next)
			}
			return nil
		}),
	}
	cmd.Flags().IntVar(&limit, "limit", 0, fmt.Sprintf("accounts per page (default %d, at most %d)", server.DefaultAccountPage, server.MaxAccountPage))
	cmd.Flags().StringVar(&cursor, "cursor", "", "continue after the page that printed this cursor")
	cmd.Flags().BoolVar(&all, "all", false, "follow the cursors and list every account")
	return cmd
}

func ledgerAccountsCreate(g *Globals, with withClient) *cobra.Command {
	var req server.AccountRequest
	var kind string
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Open an account (balance 0)",
		Args:  cobra.NoArgs,
		RunE: with(func(ctx context.Context, c *client.Client, _ []string) error {
			cur, err := money.Lookup(req.Currency)
			if err != nil {
				return Usage(&Error{Code: "unknown_currency", Err: fmt.Errorf("--currency: %w", err)})
			}
			req.Currency, req.Kind = cur.Code, ledger.Kind(kind)
			a, err := c.CreateAccount(ctx, req)
			if err != nil {
				return err
			}
			return g.Report(accountOut(a), fmt.Sprintf("opened %s (%s, owner %s, %s)", a.ID, a.Kind, a.Owner, a.Currency))
		}),
	}
	cmd.Flags().StringVar(&req.ID, "id", "", "account ID (1-64 of A-Z a-z 0-9 . _ : -; default: generated)")
	cmd.Flags().StringVar(&req.Owner, "owner", "", "owner")
	cmd.Flags().StringVar(&kind, "kind", string(ledger.KindUser), "user, merchant, escrow or system")
	cmd.Flags().StringVar(&req.Currency, "currency", "CNY", "ISO 4217 currency")
	cmd.Flags().BoolVar(&req.AllowNegative, "allow-negative", false, "let the balance go below zero (system and issuing accounts)")
	_ = cmd.MarkFlagRequired("owner")
	return cmd
}

func ledgerAccountsShow(g *Globals, with withClient) *cobra.Command {
	return &cobra.Command{
		Use:   "show ACCOUNT",
		Short: "Show an account with its balances",
		Args:  cobra.ExactArgs(1),
		RunE: with(func(ctx context.Context, c *client.Client, args []string) error {
			a, err := c.Account(ctx, args[0])
			if err != nil {
				return err
			}
			o := accountOut(a)
			return g.Report(o, fmt.Sprintf("%s  owner %s  kind %s  balance %s  available %s  pending in %s  out %s",
				a.ID, a.Owner, a.Kind, o.BalanceText, o.AvailableText, money.Format(a.PendingCredit, a.Currency), money.Format(a.PendingDebit, a.Currency)))
		}),
	}
}

// transferJSON is a transfer as printed with --json.
type transferJSON struct {
	ledger.Transfer
	AmountText string `json:"amount_text"`
	Replayed   bool   `json:"replayed"`
}

func ledgerTransfer(g *Globals, with withClient) *cobra.Command {
	var from, to, amount, currency, memo, key string
	var pending bool
	cmd := &cobra.Command{
		Use:   "transfer",
		Short: "Move money between two accounts (idempotent: --key retries safely)",
		Args:  cobra.NoArgs,
		RunE: with(func(ctx context.Context, c *client.Client, _ []string) error {
			if currency == "" {
				// The source account's currency: both accounts must hold it.
				a, err := c.Account(ctx, from)
				if err != nil {
					return err
				}
				currency = a.Currency
			}
			amt, err := parseAmount(amount, currency)
			if err != nil {
				return err
			}
			if key == "" {
				b := make([]byte, 12)
				_, _ = rand.Read(b)
				key = "cli-" + hex.EncodeToString(b)
			}
			t, replayed, err := c.Transfer(ctx, key, server.TransferRequest{From: from, To: to, Amount: amt.Minor, Currency: amt.Currency.Code, Memo: memo, Pending: pending})
			if err != nil {
				return fmt.Errorf("transfer (idempotency key %s; retry with --key %s): %w", key, key, err)
			}
			text := fmt.Sprintf("transfer %s: %s %s → %s, %s (key %s)", t.ID, money.Format(t.Amount, t.Currency), t.From, t.To, t.State, key)
			if replayed {
				text += " [replayed: the first result for this key]"
			}
			return g.Report(transferJSON{Transfer: t, AmountText: money.Format(t.Amount, t.Currency), Replayed: replayed}, text)
		}),
	}
	cmd.Flags().StringVar(&from, "from", "", "account debited")
	cmd.Flags().StringVar(&to, "to", "", "account credited")
	cmd.Flags().StringVar(&amount, "amount", "", "amount in major units, e.g. 12.34 (CNY) or 100 (JPY)")
	cmd.Flags().StringVar(&currency, "currency", "", "ISO 4217 currency (default: the --from account's)")
	cmd.Flags().StringVar(&memo, "memo", "", "memo recorded with the transfer")
	cmd.Flags().StringVar(&key, "key", "", "idempotency key (default: a fresh random one, printed)")
	cmd.Flags().BoolVar(&pending, "pending", false, "reserve the amount (two-phase) instead of posting it")
	for _, n := range []string{"from", "to", "amount"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

func ledgerHistory(g *Globals, with withClient) *cobra.Command {
	var limit int
	var cursor string
	cmd := &cobra.Command{
		Use:   "history ACCOUNT",
		Short: "An account's transfers, newest first, one page",
		Args:  cobra.ExactArgs(1),
		RunE: with(func(ctx context.Context, c *client.Client, args []string) error {
			if limit < 0 || limit > 500 {
				return Usagef("--limit must be from 1 to 500")
			}
			p, err := c.History(ctx, args[0], cursor, limit)
			if err != nil {
				return err
			}
			if g.JSON {
				out := make([]transferJSON, len(p.Transfers))
				for i, t := range p.Transfers {
					out[i] = transferJSON{Transfer: t, AmountText: money.Format(t.Amount, t.Currency)}
				}
				return g.PrintJSON(map[string]any{"transfers": out, "next_cursor": p.NextCursor})
			}
			tw := tabwriter.NewWriter(g.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tID\tFROM\tTO\tAMOUNT\tSTATE\tMEMO")
			for _, t := range p.Transfers {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.CreatedAt.Local().Format(time.DateTime), t.ID, t.From, t.To,
					money.Format(t.Amount, t.Currency), t.State, strings.ReplaceAll(t.Memo, "\t", " "))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if p.NextCursor != "" {
				fmt.Fprintf(g.Err, "older transfers follow: --cursor %s\n", p.NextCursor)
			}
			return nil
		}),
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "transfers per page (default 50, at most 500)")
	cmd.Flags().StringVar(&cursor, "cursor", "", "continue after the page that printed this cursor")
	return cmd
}
