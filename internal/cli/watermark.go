package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/internal/client"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/qrimg"
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
	// With a server that has scanner challenges on, the scanner fetches
	// its challenge key, shows its current challenge and waits for shares
	// bound to it (scan.Session.RequireBound); without, it scans as before.
	prepare := func(ctx context.Context, sess *scan.Session) (string, error) {
		if server == "" {
			return "", nil
		}
		ch, on, err := fetchChallenge(ctx, server, dir)
		if err != nil || !on {
			return "", err
		}
		sess.RequireBound = true
		return ch.String(), nil
	}
	cmd := scanCommand(g, sub, prepare)
	cmd.Flags().StringVar(&server, "server", "", "submit the recovered token to this qshield server (verify and pay)")
	dirFlag(cmd.Flags(), &dir, KindWatermarkScanner, "the scanner's directory (key and certificate from: qshield watermark enrol --role scanner)")
	cmd.Flags().StringVar(&amount, "amount", "1", "amount to charge in major units of --currency, e.g. 12.34 (CNY) or 100 (JPY)")
	cmd.Flags().StringVar(&currency, "currency", "CNY", "ISO 4217 currency")
	return cmd
}

// fetchChallenge fetches the scanner's challenge key (the scanner in dir)
// and returns its challenge for the server's current slot; on is false when
// the server has scanner challenges off.
func fetchChallenge(ctx context.Context, server, dir string) (ch watermark.Challenge, on bool, err error) {
	if dir == "" {
		dir = DefaultDir(KindWatermarkScanner)
	}
	_, tc, err := deviceDir(dir).load()
	if err != nil {
		return ch, false, err
	}
	c := client.New(server, tc)
	defer c.Close()
	var resp service.ChallengeKeyResponse
	sent := time.Now()
	if _, err := c.Do(ctx, http.MethodGet, "/v1/watermark/challenge-key", nil, nil, &resp); err != nil {
		if client.ProblemCode(err) == "challenges_off" {
			return ch, false, nil
		}
		return ch, false, fmt.Errorf("fetching the scanner's challenge key: %w", err)
	}
	// The scanner's slot clock runs on the server's time.
	now := resp.ServerTime.Add(time.Since(sent) / 2)
	return watermark.ChallengeAt(resp.Key, watermark.SlotAt(now)), true, nil
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
			return g.Report(map[string]any{"role": role, "name": name, "account": account, "dir": dir},
				fmt.Sprintf("%s %s enrolled for account %s in %s", role, name, account, dir))
		},
	}
	adminFlag(enrol.Flags(), &adminDir, "admin-dir")
	enrol.Flags().StringVar(&name, "name", "", "the device's name (its certificate's common name)")
	enrol.Flags().StringVar(&role, "role", "phone", "phone (pays: codes charge its account) or scanner (is paid into its account)")
	enrol.Flags().StringVar(&account, "account", "", "the ledger account")
	enrol.Flags().StringVar(&consentCode, "enrolment-code", "", "for a phone: the account holder's consent, a code from `qshield admin enrolment-code --account ID`")
	_ = enrol.MarkFlagRequired("name")
	_ = enrol.MarkFlagRequired("account")

	var challengeOut string
	challenge := &cobra.Command{
		Use:   "challenge",
		Short: "Show the scanner's current challenge (scanner challenges on): the text, and a QR code with --out, for the payer's phone to read",
		Long: `challenge fetches the scanner's challenge key (its certificate, --dir) and
prints the challenge it shows during the current second. The payer's phone reads
it (qshield watermark code --challenge TEXT) and binds its frames to this
scanner, so that a video of the phone's screen relayed to another scanner is
refused. A challenge changes every second; with the server's window of ±2 s,
run the code and the scan at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				dir = DefaultDir(KindWatermarkScanner)
			}
			ch, on, err := fetchChallenge(cmd.Context(), server, dir)
			if err != nil {
				return err
			}
			if !on {
				return errors.New("the server has scanner challenges off (node setting watermark_challenges): codes need no challenge")
			}
			text := ch.String()
			if challengeOut != "" {
				png, _, err := qrimg.EncodePNG(text, qrimg.M, 8)
				if err != nil {
					return fmt.Errorf("encoding the challenge QR code: %w", err)
				}
				if err := os.WriteFile(challengeOut, png, 0o644); err != nil {
					return fmt.Errorf("writing the challenge QR code: %w", err)
				}
			}
			return g.Report(map[string]any{"challenge": text, "slot": ch.Slot, "qr": challengeOut}, text)
		},
	}
	challenge.Flags().StringVar(&challengeOut, "out", "", "also write the challenge as a QR code PNG to this file (what the scanner's display shows)")

	var out, limit, limitCurrency, challengeText string
	code := &cobra.Command{
		Use:   "code",
		Short: "Get a fresh payment code, good for at most --limit, and write its current frames (PNG, and a GIF of the next seconds)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				dir = DefaultDir(KindWatermarkPhone)
			}
			var bound *watermark.Challenge
			if challengeText != "" {
				ch, err := watermark.ParseChallenge(challengeText)
				if err != nil {
					return Usagef("--challenge: %v (the text qshield watermark challenge printed, QSC1:...)", err)
				}
				bound = &ch
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
			if bound != nil {
				// The phone read a scanner's challenge: every frame is
				// bound to it (its slot is the challenge's). No GIF: the
				// challenge covers one second.
				files, err := writeBoundFrames(loop, *bound, out)
				if err != nil {
					return err
				}
				return g.Report(map[string]any{"handle": resp.Handle, "limit": lim.Minor, "currency": lim.Currency.Code, "expires_at": resp.ExpiresAt,
					"frames": files, "challenge": challengeText},
					fmt.Sprintf("code %s for at most %s, valid until %s: %d frames bound to scanner challenge %s in %s (only that scanner accepts them, within a few seconds)",
						resp.Handle, lim, resp.ExpiresAt.Format("15:04:05"), len(files), challengeText, out))
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
			return g.Report(map[string]any{"handle": resp.Handle, "limit": lim.Minor, "currency": lim.Currency.Code, "expires_at": resp.ExpiresAt,
				"frames": files, "gif": filepath.Join(out, "loop.gif"), "screen": server + resp.Screen},
				fmt.Sprintf("code %s for at most %s, valid until %s: %d frames stamped for the current second in %s (loop.gif: the next 5 s; stamps older than a few seconds are refused), screen %s%s",
					resp.Handle, lim, resp.ExpiresAt.Format("15:04:05"), len(files), out, server, resp.Screen))
		},
	}
	code.Flags().StringVar(&out, "out", "./code", "directory for the frames")
	code.Flags().StringVar(&challengeText, "challenge", "", "the challenge the scanner shows (QSC1:..., from qshield watermark challenge): bind the frames to that scanner (required when the server has scanner challenges on)")
	code.Flags().StringVar(&limit, "limit", "", "the most this code may pay, in major units of --currency, e.g. 50.00 (required)")
	code.Flags().StringVar(&limitCurrency, "currency", "CNY", "ISO 4217 currency of the payer's account (for --limit)")
	_ = code.MarkFlagRequired("limit")
	cmd.AddCommand(enrol, challenge, code)
	return cmd
}

// writeBoundFrames writes the loop's n frames bound to challenge c as
// dir/frame-01.png ... (as Loop.WritePNGs does for unbound frames).
func writeBoundFrames(loop *watermark.Loop, c watermark.Challenge, dir string) ([]string, error) {
	var paths []string
	for k := range loop.Params.Shares {
		var buf bytes.Buffer
		if err := png.Encode(&buf, loop.FrameBound(k, c)); err != nil {
			return nil, fmt.Errorf("encoding frame %d: %w", k+1, err)
		}
		path := filepath.Join(dir, fmt.Sprintf("frame-%02d.png", k+1))
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			return nil, fmt.Errorf("writing %s: %w", path, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}
