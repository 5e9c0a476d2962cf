package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/internal/client"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/scan"
	"github.com/qshield/qshield/watermark/service"
)

// errNotSubmitted tells the scan command that no server was configured.
var errNotSubmitted = errors.New("not submitted")

// WatermarkScanCommand is `qshield scan`: with --server and a scanner's
// --dir it submits the recovered token to the platform, which verifies it
// and charges --amount to the payer; without, it prints the token.
func WatermarkScanCommand(g *Globals) *cobra.Command {
	var server, dir, amount, currency string
	sub := scan.SubmitterFunc(func(ctx context.Context, r scan.Result) error {
		if server == "" {
			return errNotSubmitted
		}
		amt, err := parseAmount(amount, currency)
		if err != nil {
			return err
		}
		_, tc, err := deviceDir(dir).load()
		if err != nil {
			return err
		}
		c := client.New(server, tc)
		defer c.Close()
		key := make([]byte, 12)
		rand.Read(key)
		_, err = c.Do(ctx, http.MethodPost, "/v1/watermark/pay", map[string]string{"Idempotency-Key": "scan-" + hex.EncodeToString(key)},
			service.PayRequest{Handle: r.Handle, Token: r.Token, Stamps: r.Stamps, Amount: amt.Minor, Currency: amt.Currency.Code}, nil)
		return err
	})
	cmd := ScanCommandWith(g, sub)
	cmd.Flags().StringVar(&server, "server", "", "submit the recovered token to this qshield server (verify and pay)")
	dirFlag(cmd.Flags(), &dir, KindWatermarkScanner, "the scanner's directory (key and certificate from: qshield watermark enrol --role scanner)")
	cmd.Flags().StringVar(&amount, "amount", "1", "amount to charge in major units of --currency, e.g. 12.34 (CNY) or 100 (JPY)")
	cmd.Flags().StringVar(&currency, "currency", "CNY", "ISO 4217 currency")
	return cmd
}

// WatermarkCommand is `qshield watermark`: enrol phones and scanners, and
// fetch a payer's code (seed 003).
func WatermarkCommand(g *Globals) *cobra.Command {
	var server, dir string
	cmd := &cobra.Command{Use: "watermark", Short: "Watermarked dynamic payment codes (seed 003): enrol devices, fetch a payer's looping code"}
	serverFlag(cmd.PersistentFlags(), &server, "")
	dirFlag(cmd.PersistentFlags(), &dir, "", "the device's directory (default "+DefaultDir(KindWatermarkPhone)+" or "+DefaultDir(KindWatermarkScanner)+")")
	var adminDir, name, role, account, consentCode string
	enrol := &cobra.Command{
		Use:     "enrol",
		Aliases: []string{"enroll"},
		Short:   "Generate a phone's or scanner's key and have it certified and bound to a ledger account",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if role == "phone" && consentCode == "" {
				return Usagef("a phone spends from its account: give the account holder's --enrolment-code (qshield admin enrolment-code --account %s)", account)
			}
			if dir == "" {
				dir = DefaultDir("watermark-" + role)
			}
			if _, err := enrolDevice(cmd.Context(), server, adminDir, deviceDir(dir), "/v1/watermark/admin/devices", func(pub []byte) any {
				return platform.WatermarkEnrolment{Name: name, Role: role, Account: account, EnrolmentCode: consentCode, PublicKey: pub}
			}); err != nil {
				return fmt.Errorf("enrol %s: %w", role, err)
			}
			fmt.Fprintf(g.Out, "%s %s enrolled for account %s in %s\n", role, name, account, dir)
			return nil
		},
	}
	adminFlag(enrol.Flags(), &adminDir, "admin-dir")
	enrol.Flags().StringVar(&name, "name", "", "the device's name (its certificate's common name)")
	enrol.Flags().StringVar(&role, "role", "phone", "phone (pays: codes charge its account) or scanner (is paid into its account)")
	enrol.Flags().StringVar(&account, "account", "", "the ledger account")
	enrol.Flags().StringVar(&consentCode, "enrolment-code", "", "for a phone: the account holder's consent, a code from `qshield admin enrolment-code --account ID`")
	_ = enrol.MarkFlagRequired("name")
	_ = enrol.MarkFlagRequired("account")

	var out, limit, limitCurrency string
	code := &cobra.Command{
		Use:   "code",
		Short: "Get a fresh payment code, good for at most --limit, and write its current frames (PNG, and a GIF of the next seconds)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				dir = DefaultDir(KindWatermarkPhone)
			}
			_, tc, err := deviceDir(dir).load()
			if err != nil {
				return err
			}
			lim, err := parseAmount(limit, limitCurrency)
			if err != nil {
				return fmt.Errorf("--limit: %w", err)
			}
			c := client.New(server, tc)
			defer c.Close()
			var resp service.CodeResponse
			sent := time.Now()
			if _, err := c.Do(cmd.Context(), http.MethodPost, "/v1/watermark/codes", nil, service.CodeRequest{Limit: lim.Minor}, &resp); err != nil {
				return err
			}
			// The slot clock runs on the server's time: local clock plus the
			// offset the response implies (half the round trip assumed).
			offset := resp.ServerTime.Sub(sent.Add(time.Since(sent) / 2))
			now := time.Now().Add(offset)
			loop, err := watermark.NewLoop(resp.Token, resp.SlotKey, watermark.DefaultParams(), nil)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			files, err := loop.WritePNGs(out, watermark.SlotAt(now))
			if err != nil {
				return err
			}
			f, err := os.Create(filepath.Join(out, "loop.gif"))
			if err != nil {
				return err
			}
			if err := loop.WriteGIF(f, now, 5*time.Second); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			fmt.Fprintf(g.Out, "code %s for at most %s, valid until %s: %d frames stamped for the current second in %s (loop.gif: the next 5 s; stamps older than a few seconds are refused), screen %s%s\n",
				resp.Handle, limit, resp.ExpiresAt.Format("15:04:05"), len(files), out, server, resp.Screen)
			return nil
		},
	}
	code.Flags().StringVar(&out, "out", "./code", "directory for the frames")
	code.Flags().StringVar(&limit, "limit", "", "the most this code may pay, in major units of --currency, e.g. 50.00 (required)")
	code.Flags().StringVar(&limitCurrency, "currency", "CNY", "ISO 4217 currency of the payer's account (for --limit)")
	_ = code.MarkFlagRequired("limit")
	cmd.AddCommand(enrol, code)
	return cmd
}
