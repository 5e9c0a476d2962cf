package cli

import (
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/keycharge"
	"github.com/qshield/qshield/keycharge/channel"
	"github.com/qshield/qshield/keycharge/device"
	"github.com/qshield/qshield/pki"
)

// Environment variables of the keycharge commands (the device's secrets).
const (
	EnvDevicePIN = "QSHIELD_DEVICE_PIN"
	EnvDevicePUK = "QSHIELD_DEVICE_PUK"
)

// kcPlatformFlags are the connection flags of the keycharge clients:
// --server, the operator's --admin directory, and --ca/--cert/--key to
// override single files of it (a charger presents its own certificate).
type kcPlatformFlags struct {
	server, admin, ca, cert, key string
}

func (f *kcPlatformFlags) register(cmd *cobra.Command, certHelp string) {
	fs := cmd.PersistentFlags()
	serverFlag(fs, &f.server, "")
	adminFlag(fs, &f.admin, "state-dir")
	fs.StringVar(&f.ca, "ca", "", "CA certificate (default ADMIN/ca.pem)")
	fs.StringVar(&f.cert, "cert", "", certHelp)
	fs.StringVar(&f.key, "key", "", "client private key (default ADMIN/admin-key.pem)")
}

// dir is --admin (its default, the server's directory, is filled in by
// the root command: see defaultAdmin).
func (f *kcPlatformFlags) dir(g *Globals) (string, error) {
	if f.admin != "" {
		return f.admin, nil
	}
	return ServerDir(g.DB)
}

// tlsConfig builds a TLS 1.3 client configuration trusting the platform CA;
// withCert adds the client certificate.
func (f *kcPlatformFlags) tlsConfig(g *Globals, serverURL string, withCert bool) (*tls.Config, error) {
	dir, err := f.dir(g)
	if err != nil {
		return nil, err
	}
	pick := func(v, name string) string {
		if v != "" {
			return v
		}
		return filepath.Join(dir, name)
	}
	_, roots, err := loadRoot(pick(f.ca, "ca.pem"))
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	host, err := serverName(serverURL)
	if err != nil {
		return nil, err
	}
	tc := pki.TLSClientConfig(roots, host)
	if withCert {
		// The admin key is sealed (QSHIELD_ADMIN_PASSPHRASE or admin-seal.key).
		c, err := platform.LoadKeyPair(pick(f.cert, "admin.pem"), pick(f.key, "admin-key.pem"))
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}

func (f *kcPlatformFlags) client(g *Globals, withCert bool) (*keycharge.Client, error) {
	tc, err := f.tlsConfig(g, f.server, withCert)
	if err != nil {
		return nil, err
	}
	return keycharge.NewClient(f.server, tc), nil
}

// secret returns a PIN or PUK: the flag, the environment variable, or a
// terminal prompt (never echoed).
func kcSecret(g *Globals, flag, env, prompt string) ([]byte, error) {
	if flag != "" {
		return []byte(flag), nil
	}
	if v := os.Getenv(env); v != "" {
		return []byte(v), nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, fmt.Errorf("%s: no terminal to prompt on; use the flag or %s", prompt, env)
	}
	fmt.Fprintf(g.Err, "%s: ", prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(g.Err)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", prompt, err)
	}
	return b, nil
}

// parseSize parses "9MB", "512KiB", "1048576" (MB and MiB both mean 2^20).
func kcParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"MIB", 1 << 20}, {"KIB", 1 << 10}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suf) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suf)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("bad size %q (e.g. 9MB, 512KiB)", s)
	}
	return n * mult, nil
}

func kcDeviceLine(d *keycharge.Device) string {
	return fmt.Sprintf("%s  state=%s  cert=%s  admin=%s  user=%s  key=%d/%d bytes left  pin_failures=%d",
		d.Serial, d.State, kcOrDash(d.CertSerial), kcOrDash(d.Administrator), kcOrDash(d.User), d.Remaining, d.KeyBytes, d.PINFailures)
}

func kcOrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// PhoneChannelCommand is `channel` (to be added under `qshield phone`):
// opens a quantum secure channel with the QSSC from a charged device and
// sends messages (arguments, or lines from stdin), printing the replies.
func PhoneChannelCommand(g *Globals) *cobra.Command {
	var pf kcPlatformFlags
	var dir, pinFlag, algS string
	var perSession int
	cmd := &cobra.Command{
		Use:   "channel --dir DIR [MESSAGE…]",
		Short: "Quantum secure channel with the QSSC from a charged key storage device (AES-256-GCM or SM4-GCM)",
		Long: "Each session uses a fresh 64-byte segment of the device's charged quantum key (key ID in the clear),\n" +
			"marked used on the device before it is sent and at the QSSC when accepted. Messages come from the\n" +
			"arguments or, without arguments, from stdin (one per line).",
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			alg, err := channel.ParseAlg(algS)
			if err != nil {
				return err
			}
			base, err := pf.tlsConfig(g, pf.server, false)
			if err != nil {
				return err
			}
			pin, err := kcSecret(g, pinFlag, EnvDevicePIN, "device PIN")
			if err != nil {
				return err
			}
			d, err := device.Open(dir, pin, device.Options{})
			if err != nil {
				return err
			}
			defer d.Close()
			// Mutual TLS with the device certificate, signed inside the device.
			tc, err := keycharge.DeviceTLS(base, d)
			if err != nil {
				return err
			}
			plat := keycharge.NewClient(pf.server, tc)
			defer plat.Close()
			ph := &keycharge.Phone{Device: d, Platform: plat, Alg: alg}
			msgs := args
			if len(msgs) == 0 {
				b, err := kcReadStdin()
				if err != nil {
					return err
				}
				for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
					if l != "" {
						msgs = append(msgs, l)
					}
				}
			}
			var s *keycharge.PhoneSession
			for i, m := range msgs {
				if s == nil || (perSession > 0 && i%perSession == 0) {
					t0 := time.Now()
					if s, err = ph.Open(ctx); err != nil {
						return err
					}
					if !g.JSON {
						fmt.Fprintf(g.Out, "session open (%s, key %s @%d, %v): %d bytes of key left at the QSSC, %d on the device\n",
							s.Alg(), s.KeyID, s.Offset, time.Since(t0).Round(time.Microsecond), s.Remaining, s.DeviceRemaining)
					}
				}
				reply, err := s.Send(ctx, []byte(m))
				if err != nil {
					return err
				}
				if g.JSON {
					_ = g.PrintJSON(map[string]any{"sent": m, "reply": string(reply), "key_id": s.KeyID, "offset": s.Offset, "remaining": s.Remaining})
				} else {
					fmt.Fprintf(g.Out, "> %s\n< %s\n", m, reply)
				}
			}
			return nil
		},
	}
	pf.register(cmd, "unused (TLS presents the device certificate; the channel is authenticated by the device key)")
	dirFlag(cmd.Flags(), &dir, "", "the key storage device's directory (its mount point; required)", "device")
	_ = cmd.MarkFlagRequired("dir")
	cmd.Flags().StringVar(&pinFlag, "pin", "", "device PIN (else "+EnvDevicePIN+" or a prompt)")
	cmd.Flags().StringVar(&algS, "alg", string(channel.AES256GCM), "cipher: aes-256-gcm or sm4-gcm (the national secret algorithm)")
	cmd.Flags().IntVar(&perSession, "per-session", 0, "open a new session every N messages (0: one session)")
	return cmd
}

func kcReadStdin() ([]byte, error) {
	const max = 1 << 20
	b, err := io.ReadAll(io.LimitReader(os.Stdin, max+1))
	if err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	if len(b) > max {
		return nil, fmt.Errorf("stdin larger than %d bytes", max)
	}
	return b, nil
}
