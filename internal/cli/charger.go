package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/keycharge"
	"github.com/qshield/qshield/keycharge/device"
	"github.com/qshield/qshield/kme/etsi014"
)

// chargerFlags are the charger's settings.
type chargerFlags struct {
	pf                                                                kcPlatformFlags
	watch, kmeURL, kmeCert, kmeKey, sae, slave, volume, pin, prefetch string
	every                                                             time.Duration
	once                                                              bool
	keyBits                                                           int
}

// ChargerCommand is `qshield charger`: the quantum key charger. It watches
// a directory for plugged devices, asks for each device's PIN, charges the
// requested volume with a progress bar and prints the result. With --once
// it charges the devices present and exits 1 if any charge failed.
func ChargerCommand(g *Globals) *cobra.Command {
	var f chargerFlags
	cmd := &cobra.Command{
		Use:   "charger --watch DIR --kme URL --cert charger-1.pem --key charger-1-key.pem",
		Short: "Quantum key charger (QKC): charge plugged key storage devices from the site's KME",
		Long: "Watches DIR (each subdirectory holding a device store is a plugged device; polling).\n" +
			"For each plug-in: PIN (flag, " + EnvDevicePIN + " or a prompt; wrong PINs are reported to the platform),\n" +
			"challenge-response with the platform, keys over ETSI GS QKD 014 from --kme as master SAE,\n" +
			"written into the device with a progress bar, consistency check, then the platform records the charge.\n" +
			"The client certificate (from `qshield kme issue-cert charger-1`) serves both the platform and the KME.\n" +
			"With --once the exit status is 1 when any charge failed.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return runCharger(c.Context(), g, &f) },
	}
	f.pf.register(cmd, "charger client certificate (role client or application, CN charger-…)")
	fs := cmd.Flags()
	fs.StringVar(&f.watch, "watch", "", "directory where devices appear (required)")
	_ = cmd.MarkFlagRequired("watch")
	fs.StringVar(&f.kmeURL, "kme", "https://127.0.0.1:8441", "the site's KME (ETSI GS QKD 014)")
	alias(fs, &f.kmeURL, "kme-url", "kme", "https://127.0.0.1:8441")
	fs.StringVar(&f.kmeCert, "kme-cert", "", "SAE client certificate for the KME (default --cert)")
	fs.StringVar(&f.kmeKey, "kme-key", "", "SAE client key for the KME (default --key)")
	fs.StringVar(&f.sae, "sae", "", "this charger's SAE ID (default: the certificate's CN)")
	fs.StringVar(&f.slave, "slave-sae", "qssc", "the QSSC's SAE ID at the peer KME")
	fs.StringVar(&f.volume, "volume", "1MB", "volume to charge per plug-in (1MB-9MB as in the seed; larger allowed)")
	fs.StringVar(&f.prefetch, "prefetch", "0", "keep a local key pool of this size (prefetched from the KME, announced to the platform)")
	fs.StringVar(&f.pin, "pin", "", "device PIN for scripts (else "+EnvDevicePIN+" or a prompt)")
	fs.DurationVar(&f.every, "every", 500*time.Millisecond, "polling period")
	fs.BoolVar(&f.once, "once", false, "charge the devices present now, then exit (status 1 if a charge failed)")
	fs.IntVar(&f.keyBits, "key-bits", 65536, "ETSI key size in bits (at most the KME's max_key_size)")
	return cmd
}

// runCharger runs the charger in three phases: sizes, connections (the
// platform and the KME, each over mutual TLS), then the watch loop.
func runCharger(ctx context.Context, g *Globals, f *chargerFlags) error {
	volume, err := kcParseSize(f.volume)
	if err != nil {
		return Usage(fmt.Errorf("--volume: %w", err))
	}
	var prefetch int64
	if f.prefetch != "0" && f.prefetch != "" {
		if prefetch, err = kcParseSize(f.prefetch); err != nil {
			return Usage(fmt.Errorf("--prefetch: %w", err))
		}
	}
	plat, err := f.pf.client(g, true)
	if err != nil {
		return err
	}
	defer plat.Close()
	kme, sae, err := chargerKME(g, f)
	if err != nil {
		return err
	}
	ch, err := keycharge.NewCharger(keycharge.ChargerConfig{Platform: plat, KME: kme, MasterSAE: sae, SlaveSAE: f.slave,
		KeyBits: f.keyBits, Progress: g.Progress, Log: g.Log})
	if err != nil {
		return err
	}
	if prefetch > 0 {
		if _, err := ch.Prefetch(ctx, prefetch); err != nil {
			return fmt.Errorf("prefetch: %w", err)
		}
	}
	if !f.once {
		fmt.Fprintf(g.Err, "charger %s watching %s (Ctrl-C to stop)\n", sae, f.watch)
	}
	return chargerWatch(ctx, g, f, ch, volume, prefetch)
}

// chargerKME is the ETSI 014 client of the site's KME, presenting the
// charger's certificate, and the charger's SAE ID.
func chargerKME(g *Globals, f *chargerFlags) (*etsi014.Client, string, error) {
	ktc, err := f.pf.tlsConfig(g, f.kmeURL, false)
	if err != nil {
		return nil, "", err
	}
	kc, kk := f.kmeCert, f.kmeKey
	if kc == "" {
		kc, kk = f.pf.cert, f.pf.key
	}
	if kc == "" || kk == "" {
		return nil, "", Usagef("the charger needs its certificate: --cert and --key (or --kme-cert/--kme-key)")
	}
	cert, err := tls.LoadX509KeyPair(kc, kk)
	if err != nil {
		return nil, "", fmt.Errorf("load KME client certificate: %w", err)
	}
	ktc.Certificates = []tls.Certificate{cert}
	sae := f.sae
	if sae == "" {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, "", err
		}
		sae = leaf.Subject.CommonName
	}
	return etsi014.New(f.kmeURL, ktc), sae, nil
}

// chargerWatch charges every plugged device and reports each result; with
// --once a failed charge is the command's failure, so that a script sees it
// in the exit status and not only in the output.
func chargerWatch(ctx context.Context, g *Globals, f *chargerFlags, ch *keycharge.Charger, volume, prefetch int64) error {
	var charged, failed int
	err := ch.Watch(ctx, keycharge.WatchConfig{Dir: f.watch, Every: f.every, Volume: volume, Once: f.once,
		PIN: func(dir string, info device.Info) ([]byte, error) {
			return kcSecret(g, f.pin, EnvDevicePIN, "PIN of device "+info.Serial)
		},
		OnResult: func(dir string, res *keycharge.ChargeResult, err error) {
			if err != nil {
				failed++
				if g.JSON {
					_ = g.PrintJSON(map[string]string{"device": dir, "error": err.Error(), "code": ErrorCode(err)})
				} else {
					fmt.Fprintf(g.Out, "%s: charge refused or failed: %v\n", dir, err)
				}
				return
			}
			charged++
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
	if err != nil {
		return err
	}
	if failed > 0 {
		return &Error{Code: "charge_failed", Err: fmt.Errorf("%d of %d charges failed", failed, failed+charged)}
	}
	return nil
}
