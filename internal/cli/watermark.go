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
			service.PayRequest{Handle: r.Handle, Token: r.Token, Amount: amt.Minor, Currency: amt.Currency.Code}, nil)
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
	var adminDir, name, role, account string
	enrol := &cobra.Command{
		Use:     "enrol",
		Aliases: []string{"enroll"},
		Short:   "Generate a phone's or scanner's key and have it certified and bound to a ledger account",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				dir = DefaultDir("watermark-" + role)
			}
			if _, err := enrolDevice(cmd.Context(), server, adminDir, deviceDir(dir), "/v1/watermark/admin/devices", func(pub []byte) any {
				return platform.WatermarkEnrolment{Name: name, Role: role, Account: account, PublicKey: pub}
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
	_ = enrol.MarkFlagRequired("name")
	_ = enrol.MarkFlagRequired("account")

	var out string
	code := &cobra.Command{
		Use:   "code",
		Short: "Get a fresh payment code for the phone and write its looping frames (PNG and GIF)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				dir = DefaultDir(KindWatermarkPhone)
			}
			_, tc, err := deviceDir(dir).load()
			if err != nil {
				return err
			}
			c := client.New(server, tc)
			defer c.Close()
			var resp service.CodeResponse
			if _, err := c.Do(cmd.Context(), http.MethodPost, "/v1/watermark/codes", nil, nil, &resp); err != nil {
				return err
			}
			loop, err := watermark.NewLoop(resp.Token, watermark.DefaultParams(), nil)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			files, err := loop.WritePNGs(out)
			if err != nil {
				return err
			}
			f, err := os.Create(filepath.Join(out, "loop.gif"))
			if err != nil {
				return err
			}
			if err := loop.WriteGIF(f); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			fmt.Fprintf(g.Out, "code %s valid until %s: %d frames in %s (loop.gif), screen %s%s\n",
				resp.Handle, resp.ExpiresAt.Format("15:04:05"), len(files), out, server, resp.Screen)
			return nil
		},
	}
	code.Flags().StringVar(&out, "out", "./code", "directory for the frames")
	cmd.AddCommand(enrol, code)
	return cmd
}
