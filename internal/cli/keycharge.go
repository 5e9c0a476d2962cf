package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/qshield/qshield/keycharge"
	"github.com/qshield/qshield/keycharge/channel"
	"github.com/qshield/qshield/keycharge/device"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/sqldb"
)

// Environment variables of the keycharge commands.
const (
	EnvPlatformURL = "QSHIELD_URL"
	EnvDevicePIN   = "QSHIELD_DEVICE_PIN"
	EnvDevicePUK   = "QSHIELD_DEVICE_PUK"
)

// kcPlatformFlags are the connection flags of the keycharge clients.
type kcPlatformFlags struct {
	url, stateDir, ca, cert, key string
}

func (f *kcPlatformFlags) register(cmd *cobra.Command, certHelp string) {
	def := os.Getenv(EnvPlatformURL)
	if def == "" {
		def = "https://127.0.0.1:8443"
	}
	cmd.PersistentFlags().StringVar(&f.url, "url", def, "platform URL (env "+EnvPlatformURL+")")
	cmd.PersistentFlags().StringVar(&f.stateDir, "state-dir", "", "platform state directory holding ca.pem, admin.pem, admin-key.pem (default: beside the SQLite file)")
	cmd.PersistentFlags().StringVar(&f.ca, "ca", "", "CA certificate (default STATE_DIR/ca.pem)")
	cmd.PersistentFlags().StringVar(&f.cert, "cert", "", certHelp)
	cmd.PersistentFlags().StringVar(&f.key, "key", "", "client private key (default STATE_DIR/admin-key.pem)")
}

func (f *kcPlatformFlags) dir(g *Globals) (string, error) {
	if f.stateDir != "" {
		return f.stateDir, nil
	}
	if sqldb.IsPostgres(g.DB) {
		base, err := os.UserConfigDir()
		if err != nil {
			return "", err
		}
		return filepath.Join(base, "qshield"), nil
	}
	p := g.DB
	if p == "" {
		var err error
		if p, err = sqldb.DefaultPath(); err != nil {
			return "", err
		}
	}
	return filepath.Dir(p), nil
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
	caPEM, err := os.ReadFile(pick(f.ca, "ca.pem"))
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no certificate in the CA file")
	}
	u, err := url.Parse(serverURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("bad URL %q", serverURL)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: u.Hostname()}
	if withCert {
		c, err := tls.LoadX509KeyPair(pick(f.cert, "admin.pem"), pick(f.key, "admin-key.pem"))
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}

func (f *kcPlatformFlags) client(g *Globals, withCert bool) (*keycharge.Client, error) {
	tc, err := f.tlsConfig(g, f.url, withCert)
	if err != nil {
		return nil, err
	}
	return keycharge.NewClient(f.url, tc), nil
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

// AdminCommand is `qshield admin`, with `qshield admin device …`: the QKMP's
// device lifecycle (manufacture, init, distribute, bind, activate, freeze,
// report-lost, unfreeze, cancel, unlock-pin), inspection (show, list, keys),
// the audit statistics, and the local PUK unlock of a device.
func AdminCommand(g *Globals) *cobra.Command {
	var pf kcPlatformFlags
	admin := &cobra.Command{Use: "admin", Short: "Administer the platform (key storage devices)"}
	pf.register(admin, "administrator client certificate (default STATE_DIR/admin.pem)")
	dev := &cobra.Command{Use: "device", Short: "Quantum key storage devices (QKMSD): lifecycle on the QKMP"}
	admin.AddCommand(dev, AdminCertCommand(g), AdminRotateCommand(g))
	withClient := func(run func(ctx context.Context, c *keycharge.Client, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			c, err := pf.client(g, true)
			if err != nil {
				return err
			}
			defer c.Close()
			return run(cmd.Context(), c, args)
		}
	}
	var pinFlag, pukFlag, dir, serial, model, kind string
	manufacture := &cobra.Command{
		Use:   "manufacture",
		Short: "Create a device store in --dir (key pair generated inside, PIN and PUK set) and register it",
		Args:  cobra.NoArgs,
		RunE: withClient(func(ctx context.Context, c *keycharge.Client, _ []string) error {
			pin, err := kcSecret(g, pinFlag, EnvDevicePIN, "new device PIN")
			if err != nil {
				return err
			}
			puk, err := kcSecret(g, pukFlag, EnvDevicePUK, "administrator unlock code (PUK)")
			if err != nil {
				return err
			}
			info := device.Info{Serial: serial, Model: model, Kind: kind}
			if err := device.Manufacture(dir, info, pin, puk, device.Options{}); err != nil {
				return err
			}
			d, err := c.Register(ctx, keycharge.RegisterRequest{Serial: serial, Model: model, Kind: kind})
			if err != nil {
				return fmt.Errorf("device created in %s but not registered: %w", dir, err)
			}
			return g.Report(d, "manufactured: "+kcDeviceLine(d))
		}),
	}
	manufacture.Flags().StringVar(&dir, "dir", "", "device directory (the device's mount point)")
	manufacture.Flags().StringVar(&serial, "serial", "", "device serial number")
	manufacture.Flags().StringVar(&model, "model", "QK-UKEY", "device model")
	manufacture.Flags().StringVar(&kind, "kind", "ukey", "device kind (ukey, tf, sd)")
	manufacture.Flags().StringVar(&pinFlag, "pin", "", "PIN (else "+EnvDevicePIN+" or a prompt)")
	manufacture.Flags().StringVar(&pukFlag, "puk", "", "PUK (else "+EnvDevicePUK+" or a prompt)")
	_ = manufacture.MarkFlagRequired("dir")
	_ = manufacture.MarkFlagRequired("serial")

	var initDir, initPIN string
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Initialise the device in --dir: the platform CA certifies the device's own key",
		Args:  cobra.NoArgs,
		RunE: withClient(func(ctx context.Context, c *keycharge.Client, _ []string) error {
			pin, err := kcSecret(g, initPIN, EnvDevicePIN, "device PIN")
			if err != nil {
				return err
			}
			d, err := device.Open(initDir, pin, device.Options{})
			if err != nil {
				return err
			}
			defer d.Close()
			if err := keycharge.Initialise(ctx, c, d); err != nil {
				return err
			}
			got, err := c.Device(ctx, d.Info().Serial)
			if err != nil {
				return err
			}
			return g.Report(got, "initialised: "+kcDeviceLine(got))
		}),
	}
	initCmd.Flags().StringVar(&initDir, "dir", "", "device directory")
	initCmd.Flags().StringVar(&initPIN, "pin", "", "PIN (else "+EnvDevicePIN+" or a prompt)")
	_ = initCmd.MarkFlagRequired("dir")

	transition := func(use, short string, action keycharge.Action, flags func(*cobra.Command, *keycharge.TransitionRequest)) *cobra.Command {
		var req keycharge.TransitionRequest
		cmd := &cobra.Command{
			Use:   use + " SERIAL",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: withClient(func(ctx context.Context, c *keycharge.Client, args []string) error {
				req.Action = action
				res, err := c.Transition(ctx, args[0], req)
				if err != nil {
					return err
				}
				return g.Report(res.Device, string(action)+": "+kcDeviceLine(res.Device))
			}),
		}
		cmd.Flags().StringVar(&req.Reason, "reason", "", "reason recorded in the audit trail")
		if flags != nil {
			flags(cmd, &req)
		}
		return cmd
	}
	dev.AddCommand(manufacture, initCmd,
		transition("distribute", "Distribute an initialised device to a user administrator", keycharge.ActDistribute, func(c *cobra.Command, r *keycharge.TransitionRequest) {
			c.Flags().StringVar(&r.Administrator, "to", "", "user administrator")
			_ = c.MarkFlagRequired("to")
		}),
		transition("bind", "Bind a distributed device to a user identity (registration)", keycharge.ActBind, func(c *cobra.Command, r *keycharge.TransitionRequest) {
			c.Flags().StringVar(&r.User, "user", "", "user identity")
			_ = c.MarkFlagRequired("user")
		}),
		transition("activate", "Activate a bound device", keycharge.ActActivate, nil),
		transition("freeze", "Freeze an active device (its keys too)", keycharge.ActFreeze, nil),
		transition("report-lost", "Report a device lost (its keys are frozen)", keycharge.ActReportLost, nil),
		transition("unfreeze", "Cancel the loss / unfreeze: the device and its keys are active again", keycharge.ActUnfreeze, nil),
		transition("cancel", "Cancel a device for good: its keys on the platform are destroyed, its certificate revoked", keycharge.ActCancel, nil),
		transition("unlock-pin", "Reset the platform's count of wrong PINs reported by chargers", keycharge.ActUnlockPIN, nil),
		&cobra.Command{
			Use: "show SERIAL", Short: "Show a device with its key volume", Args: cobra.ExactArgs(1),
			RunE: withClient(func(ctx context.Context, c *keycharge.Client, args []string) error {
				d, err := c.Device(ctx, args[0])
				if err != nil {
					return err
				}
				return g.Report(d, kcDeviceLine(d))
			}),
		},
		&cobra.Command{
			Use: "list", Short: "List devices", Args: cobra.NoArgs,
			RunE: withClient(func(ctx context.Context, c *keycharge.Client, _ []string) error {
				ds, err := c.Devices(ctx)
				if err != nil {
					return err
				}
				if g.JSON {
					return g.PrintJSON(ds)
				}
				for _, d := range ds {
					fmt.Fprintln(g.Out, kcDeviceLine(d))
				}
				return nil
			}),
		},
	)
	var keysLimit int
	keysCmd := &cobra.Command{
		Use: "keys SERIAL", Short: "List a device's keys on the platform with their life (extraction … destruction)", Args: cobra.ExactArgs(1),
		RunE: withClient(func(ctx context.Context, c *keycharge.Client, args []string) error {
			ks, err := c.Keys(ctx, args[0], keysLimit)
			if err != nil {
				return err
			}
			if g.JSON {
				return g.PrintJSON(ks)
			}
			for _, k := range ks {
				fmt.Fprintf(g.Out, "%s  charge=%s #%d  %d/%d used  %s  distributed %s\n", k.KeyID, k.Charge, k.Seq, k.Used, k.Length, k.State, k.Distributed.Format(time.RFC3339))
			}
			return nil
		}),
	}
	keysCmd.Flags().IntVar(&keysLimit, "limit", 100, "at most this many keys")
	var by string
	stats := &cobra.Command{
		Use: "stats", Short: "Audit statistics of the key charging platform (per event, device, day)", Args: cobra.NoArgs,
		RunE: withClient(func(ctx context.Context, c *keycharge.Client, _ []string) error {
			cs, err := c.AuditStats(ctx, by)
			if err != nil {
				return err
			}
			if g.JSON {
				return g.PrintJSON(cs)
			}
			for _, x := range cs {
				fmt.Fprintf(g.Out, "%-60s %d\n", strings.Join(x.Keys, "  "), x.N)
			}
			return nil
		}),
	}
	stats.Flags().StringVar(&by, "by", "event", "grouping: event, resource (device), day, actor, outcome (comma-separated)")
	var unlockDir, unlockPUK, unlockPIN string
	unlock := &cobra.Command{
		Use: "unlock", Short: "Release a PIN-locked device with the PUK and set a new PIN (local, on the device)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			puk, err := kcSecret(g, unlockPUK, EnvDevicePUK, "PUK")
			if err != nil {
				return err
			}
			pin, err := kcSecret(g, unlockPIN, EnvDevicePIN, "new PIN")
			if err != nil {
				return err
			}
			if err := device.Unlock(unlockDir, puk, pin, device.Options{}); err != nil {
				return err
			}
			return g.Report(map[string]string{"unlocked": unlockDir}, "device unlocked; new PIN set")
		},
	}
	unlock.Flags().StringVar(&unlockDir, "dir", "", "device directory")
	unlock.Flags().StringVar(&unlockPUK, "puk", "", "PUK (else "+EnvDevicePUK+" or a prompt)")
	unlock.Flags().StringVar(&unlockPIN, "new-pin", "", "new PIN (else "+EnvDevicePIN+" or a prompt)")
	_ = unlock.MarkFlagRequired("dir")
	dev.AddCommand(keysCmd, stats, unlock)
	return admin
}

// ChargerCommand is `qshield charger`: the quantum key charger. It watches
// a directory for plugged devices, asks for each device's PIN, charges the
// requested volume with a progress bar and prints the result.
func ChargerCommand(g *Globals) *cobra.Command {
	var pf kcPlatformFlags
	var kmeURL, kmeCert, kmeKey, sae, slave, volumeS, pinFlag, prefetchS string
	var every time.Duration
	var once bool
	var keyBits int
	cmd := &cobra.Command{
		Use:   "charger --watch DIR --kme-url URL --cert charger-1.pem --key charger-1-key.pem",
		Short: "Quantum key charger (QKC): charge plugged key storage devices from the site's KME",
		Long: "Watches DIR (each subdirectory holding a device store is a plugged device; polling).\n" +
			"For each plug-in: PIN (flag, " + EnvDevicePIN + " or a prompt; wrong PINs are reported to the platform),\n" +
			"challenge-response with the platform, keys over ETSI GS QKD 014 from --kme-url as master SAE,\n" +
			"written into the device with a progress bar, consistency check, then the platform records the charge.\n" +
			"The client certificate (from `qshield kme issue-cert --kind charger charger-1`) serves both the platform and the KME.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			watch, _ := c.Flags().GetString("watch")
			volume, err := kcParseSize(volumeS)
			if err != nil {
				return err
			}
			var prefetch int64
			if prefetchS != "0" && prefetchS != "" {
				if prefetch, err = kcParseSize(prefetchS); err != nil {
					return err
				}
			}
			plat, err := pf.client(g, true)
			if err != nil {
				return err
			}
			defer plat.Close()
			ktc, err := pf.tlsConfig(g, kmeURL, false)
			if err != nil {
				return err
			}
			kc, kk := kmeCert, kmeKey
			if kc == "" {
				kc, kk = pf.cert, pf.key
			}
			if kc == "" || kk == "" {
				return errors.New("the charger needs its certificate: --cert and --key (or --kme-cert/--kme-key)")
			}
			cert, err := tls.LoadX509KeyPair(kc, kk)
			if err != nil {
				return fmt.Errorf("load KME client certificate: %w", err)
			}
			ktc.Certificates = []tls.Certificate{cert}
			if sae == "" {
				leaf, err := x509.ParseCertificate(cert.Certificate[0])
				if err != nil {
					return err
				}
				sae = leaf.Subject.CommonName
			}
			ch, err := keycharge.NewCharger(keycharge.ChargerConfig{Platform: plat, KME: etsi014.New(kmeURL, ktc), MasterSAE: sae, SlaveSAE: slave,
				KeyBits: keyBits, Progress: g.Progress, Log: g.Log})
			if err != nil {
				return err
			}
			if prefetch > 0 {
				if _, err := ch.Prefetch(ctx, prefetch); err != nil {
					return fmt.Errorf("prefetch: %w", err)
				}
			}
			if !once {
				fmt.Fprintf(g.Err, "charger %s watching %s (Ctrl-C to stop)\n", sae, watch)
			}
			return ch.Watch(ctx, keycharge.WatchConfig{Dir: watch, Every: every, Volume: volume, Once: once,
				PIN: func(dir string, info device.Info) ([]byte, error) {
					return kcSecret(g, pinFlag, EnvDevicePIN, "PIN of device "+info.Serial)
				},
				OnResult: func(dir string, res *keycharge.ChargeResult, err error) {
					if err != nil {
						if g.JSON {
							_ = g.PrintJSON(map[string]string{"device": dir, "error": err.Error()})
						} else {
							fmt.Fprintf(g.Out, "%s: charge refused or failed: %v\n", dir, err)
						}
						return
					}
					if g.JSON {
						_ = g.PrintJSON(res)
					} else {
						fmt.Fprintf(g.Out, "%s: charged %d bytes (%d keys) in %v (%.1f MB/s); consistency hash %x; device now holds %d bytes%s\n",
							res.Serial, res.Bytes, res.Keys, res.Elapsed.Round(time.Millisecond), float64(res.Bytes)/1e6/res.Elapsed.Seconds(), res.Hash[:8], res.Remaining,
							map[bool]string{true: " (recovered an interrupted charge: " + res.Recovered + ")", false: ""}[res.Recovered != keycharge.RecoverNone])
					}
					if prefetch > 0 {
						if _, err := ch.Prefetch(ctx, prefetch); err != nil {
							g.Log.Warn("prefetch", "err", err)
						}
					}
				}})
		},
	}
	pf.register(cmd, "charger client certificate (role client or application, CN charger-…)")
	cmd.Flags().String("watch", "", "directory where devices appear (required)")
	_ = cmd.MarkFlagRequired("watch")
	cmd.Flags().StringVar(&kmeURL, "kme-url", "https://127.0.0.1:8441", "the site's KME (ETSI GS QKD 014)")
	cmd.Flags().StringVar(&kmeCert, "kme-cert", "", "SAE client certificate for the KME (default --cert)")
	cmd.Flags().StringVar(&kmeKey, "kme-key", "", "SAE client key for the KME (default --key)")
	cmd.Flags().StringVar(&sae, "sae", "", "this charger's SAE ID (default: the certificate's CN)")
	cmd.Flags().StringVar(&slave, "slave-sae", "qssc", "the QSSC's SAE ID at the peer KME")
	cmd.Flags().StringVar(&volumeS, "volume", "1MB", "volume to charge per plug-in (1MB-9MB as in the seed; larger allowed)")
	cmd.Flags().StringVar(&prefetchS, "prefetch", "0", "keep a local key pool of this size (prefetched from the KME, announced to the platform)")
	cmd.Flags().StringVar(&pinFlag, "pin", "", "device PIN for scripts (else "+EnvDevicePIN+" or a prompt)")
	cmd.Flags().DurationVar(&every, "every", 500*time.Millisecond, "polling period")
	cmd.Flags().BoolVar(&once, "once", false, "charge the devices present now, then exit")
	cmd.Flags().IntVar(&keyBits, "key-bits", 65536, "ETSI key size in bits (at most the KME's max_key_size)")
	return cmd
}

// PhoneChannelCommand is `channel` (to be added under `qshield phone`):
// opens a quantum secure channel with the QSSC from a charged device and
// sends messages (arguments, or lines from stdin), printing the replies.
func PhoneChannelCommand(g *Globals) *cobra.Command {
	var pf kcPlatformFlags
	var dir, pinFlag, algS string
	var perSession int
	cmd := &cobra.Command{
		Use:   "channel --device DIR [MESSAGE…]",
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
			base, err := pf.tlsConfig(g, pf.url, false)
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
			plat := keycharge.NewClient(pf.url, tc)
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
	cmd.Flags().StringVar(&dir, "device", "", "device directory (required)")
	_ = cmd.MarkFlagRequired("device")
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
