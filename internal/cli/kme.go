package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/kme"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qkd/link"
	"github.com/qshield/qshield/sqldb"
)

// Environment variables read by the kme commands.
const (
	// EnvKMEMasterKey holds the pool master key: 32 bytes in hex or base64.
	EnvKMEMasterKey = "QSHIELD_KME_MASTER_KEY"
)

// KMECommand is `qshield kme`: run ETSI GS QKD 014 key managers and talk to them.
//
//	qshield kme serve      one KME (one site), optionally fed by a QKD link to the peer's process
//	qshield kme pair       both sites' KMEs and the simulated link between them, in one process
//	qshield kme keys …     an ETSI 014 client: status, enc, dec
//	qshield kme issue-cert write an SAE client certificate from the platform CA
func KMECommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kme",
		Short: "ETSI GS QKD 014 key managers (KME) and client",
		Long: "Key managers hold each site's quantum key pool (in the database, encrypted at rest) and deliver\n" +
			"keys to applications (SAEs) over ETSI GS QKD 014 with mutual TLS; the SAE ID is the client\n" +
			"certificate's common name. Certificates come from the platform CA in --db.\n\n" +
			"Pool master key: " + EnvKMEMasterKey + " (32 bytes, hex or base64), or --master-key-file,\n" +
			"or by default kme-master.key in the state directory (created on first use, mode 0600).\n" +
			"Production should supply the key from a secret store or KMS, not a file beside the database.",
	}
	cmd.AddCommand(kmeServeCommand(g), kmePairCommand(g), kmeKeysCommand(g), kmeIssueCertCommand(g))
	return cmd
}

// kmeCommon holds what serve and pair share: the state directory and the master key.
type kmeCommon struct {
	stateDir, masterKeyFile string
	hosts                   []string
}

func (c *kmeCommon) flags(cmd *cobra.Command) {
	dirFlag(cmd.Flags(), &c.stateDir, "", "the server's directory: ca-seal.key and kme-master.key (default: beside the SQLite file, or ~/.config/qshield)", "state-dir")
	cmd.Flags().StringVar(&c.masterKeyFile, "master-key-file", "", "file holding the pool master key (32 bytes, hex or base64); overrides the default file, not "+EnvKMEMasterKey)
	cmd.Flags().StringSliceVar(&c.hosts, "host", []string{"127.0.0.1"}, "names or IPs the KME is reached at (server certificate); the first is used in URLs")
}

// open opens the database, the platform CA and the pool master key.
func (c *kmeCommon) open(ctx context.Context, g *Globals) (*sqldb.DB, *pki.CA, []byte, error) {
	db, err := g.OpenDB(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	dir, err := platform.StateDir(c.stateDir, db)
	if err != nil {
		db.Close()
		return nil, nil, nil, err
	}
	ca, err := platform.OpenCA(ctx, db, dir)
	if err != nil {
		db.Close()
		return nil, nil, nil, err
	}
	mk, err := KMEMasterKey(dir, c.masterKeyFile)
	if err != nil {
		db.Close()
		return nil, nil, nil, err
	}
	return db, ca, mk, nil
}

// openPlatformCA opens (or creates) the platform CA with the same sealing key
// `qshield serve` uses: QSHIELD_CA_KEY, ca-seal.key in the state directory,
// or a key derived from the platform master key.

// KMEMasterKey returns the pool master key: the environment variable, the
// named file, or kme-master.key in dir's secret directory (created on first
// use; platform.SecretDir: never beside the database).
func KMEMasterKey(dir, file string) ([]byte, error) {
	if v := os.Getenv(EnvKMEMasterKey); v != "" {
		k, err := fsutil.DecodeKey32(v)
		if err != nil {
			return nil, fmt.Errorf("kme: %s: %w", EnvKMEMasterKey, err)
		}
		return k, nil
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("kme: master key file: %w", err)
		}
		return fsutil.DecodeKey32(string(b))
	}
	sd, err := platform.SecretDir(dir)
	if err != nil {
		return nil, err
	}
	return fsutil.LoadOrCreateKey(filepath.Join(sd, "kme-master.key"))
}

func splitHosts(hosts []string) (dns []string, ips []net.IP) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if h != "" {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

func kmeServeCommand(g *Globals) *cobra.Command {
	var c kmeCommon
	var listen, kmeID, peerID, peerURL, qkdListen, qkdConnect string
	var saes, peerSAEs []string
	var maxKeys int
	var km float64
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run one site's key manager (ETSI GS QKD 014 over mutual TLS)",
		Long: "Run one KME. Its pool is filled by a QKD link to the peer site's process: one side runs\n" +
			"with --qkd-listen (Bob), the other with --qkd-connect (Alice), both over mutual TLS from the\n" +
			"platform CA. Without either flag the pool only holds what is already in the database.\n\n" +
			"Example (two sites, one database):\n" +
			"  qshield kme serve --kme-id KME_A --sae SAE_A --peer-kme-id KME_B --peer-url https://127.0.0.1:8442 --listen 127.0.0.1:8441 --qkd-listen 127.0.0.1:9441\n" +
			"  qshield kme serve --kme-id KME_B --sae SAE_B --peer-kme-id KME_A --peer-url https://127.0.0.1:8441 --listen 127.0.0.1:8442 --qkd-connect 127.0.0.1:9441",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if qkdListen != "" && qkdConnect != "" {
				return errors.New("use --qkd-listen or --qkd-connect, not both")
			}
			db, ca, mk, err := c.open(ctx, g)
			if err != nil {
				return err
			}
			defer db.Close()
			dns, ips := splitHosts(c.hosts)
			srvCert, err := ca.IssueTLS(ctx, pki.RoleServer, kmeID, dns, ips)
			if err != nil {
				return fmt.Errorf("kme: server certificate: %w", err)
			}
			cliCert, err := ca.IssueTLSFor(ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: kmeID, Kind: pki.PrincipalKMEPeer, Scheme: "kme"})
			if err != nil {
				return fmt.Errorf("kme: client certificate: %w", err)
			}
			// Callers are principals of the CA's register, decided by kind.
			cfg := kme.Config{KMEID: kmeID, PeerKMEID: peerID, SAEs: saes, PeerSAEs: peerSAEs, MaxKeyCount: maxKeys, MasterKey: mk, Logger: g.Log, Principals: ca}
			if peerID != "" {
				if peerURL == "" {
					return errors.New("--peer-url is required with --peer-kme-id")
				}
				host := peerHost(peerURL)
				cfg.PeerURL, cfg.PeerTLS = peerURL, pki.PostQuantumOnly(ca.ClientTLS(ctx, cliCert, host))
			}
			k, err := kme.New(ctx, db, cfg)
			if err != nil {
				return err
			}
			defer k.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", listen, err)
			}
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			url := "https://" + net.JoinHostPort(c.hosts[0], port)
			if qkdListen != "" || qkdConnect != "" {
				lcfg := link.DefaultConfig(km)
				lcfg.ContinueOnAbort = true
				lcfg.OnBlock = func(st qkd.Stats) { reportBlock(k.SetLink, st) }
				sink := kmeWaitingSink(k)
				go func() {
					err := runStandaloneLink(ctx, ca, srvCert, cliCert, qkdListen, qkdConnect, lcfg, sink, k)
					switch {
					case ctx.Err() != nil:
					case errors.Is(err, qkd.ErrAborted):
						k.SetLink(kme.LinkAborted, err)
					default:
						k.SetLink(kme.LinkDown, err)
					}
					if err != nil && ctx.Err() == nil {
						g.Log.Error("QKD link stopped", "err", err)
					}
				}()
			}
			if g.JSON {
				_ = g.PrintJSON(map[string]any{"kme_id": kmeID, "url": url, "saes": saes, "peer_kme_id": peerID})
			} else {
				fmt.Fprintf(g.Out, "KME %s serving ETSI GS QKD 014 on %s%s (SAEs: %s)\n", kmeID, url, etsi014.APIPrefix, strings.Join(saes, ", "))
			}
			return k.Serve(ctx, ln, ca.ServerTLS(ctx, srvCert))
		},
	}
	c.flags(cmd)
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8441", "address to serve ETSI 014 on")
	cmd.Flags().StringVar(&kmeID, "kme-id", "", "this KME's ID (required)")
	cmd.Flags().StringVar(&peerID, "peer-kme-id", "", "the peer site's KME ID")
	cmd.Flags().StringVar(&peerURL, "peer-url", "", "the peer KME's base URL, e.g. https://127.0.0.1:8442")
	cmd.Flags().StringSliceVar(&saes, "sae", nil, "SAE IDs attached to this KME (required)")
	cmd.Flags().StringSliceVar(&peerSAEs, "peer-sae", nil, "SAE IDs attached to the peer KME (default: any other SAE, the peer decides)")
	cmd.Flags().IntVar(&maxKeys, "max-keys", kme.DefaultMaxKeyCount, "max_key_count: pool capacity in 256-bit keys")
	cmd.Flags().StringVar(&qkdListen, "qkd-listen", "", "run the QKD link as Bob, accepting Alice (the peer process) on this address")
	cmd.Flags().StringVar(&qkdConnect, "qkd-connect", "", "run the QKD link as Alice, connecting to Bob (the peer process) at this address")
	cmd.Flags().Float64Var(&km, "km", 25, "fibre length of the simulated link (km)")
	_ = cmd.MarkFlagRequired("kme-id")
	_ = cmd.MarkFlagRequired("sae")
	return cmd
}

func peerHost(u string) string {
	h := strings.TrimPrefix(strings.TrimPrefix(u, "https://"), "http://")
	if i := strings.IndexByte(h, '/'); i >= 0 {
		h = h[:i]
	}
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return h
}

// reportBlock turns a finished link block into a KME link state.
func reportBlock(set func(string, error), st qkd.Stats) {
	if st.Aborted {
		set(kme.LinkAborted, fmt.Errorf("%w: %s", qkd.ErrAborted, st.AbortReason))
		return
	}
	set(kme.LinkUp, nil)
}

// kmeWaitingSink deposits into k, waiting while its pool is full.
func kmeWaitingSink(k *kme.KME) qkd.Sink {
	return func(ctx context.Context, keys []qkd.Key) error {
		for k.Room() == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
		return k.Deposit(ctx, keys)
	}
}

func runStandaloneLink(ctx context.Context, ca *pki.CA, srv, cli tls.Certificate, listenAddr, connectAddr string, cfg link.Config, sink qkd.Sink, k *kme.KME) error {
	if listenAddr != "" {
		ln, err := net.Listen("tcp", listenAddr)
		if err != nil {
			return fmt.Errorf("qkd link: listen on %s: %w", listenAddr, err)
		}
		defer ln.Close()
		k.SetLink(kme.LinkDown, errors.New("waiting for the peer's QKD link connection"))
		return link.Serve(ctx, ln, ca.ServerTLS(ctx, srv), func(ctx context.Context, tr link.Transport) error {
			k.SetLink(kme.LinkUp, nil)
			_, err := link.RunBob(ctx, tr, cfg, sink)
			return err
		}, func(err error) {
			if errors.Is(err, qkd.ErrAborted) {
				k.SetLink(kme.LinkAborted, err)
			} else {
				k.SetLink(kme.LinkDown, err)
			}
		})
	}
	for {
		tr, err := link.Dial(ctx, connectAddr, ca.ClientTLS(ctx, cli, peerHost(connectAddr)))
		if err != nil {
			k.SetLink(kme.LinkDown, err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(2 * time.Second):
				continue
			}
		}
		k.SetLink(kme.LinkUp, nil)
		_, err = link.RunAlice(ctx, tr, cfg, sink)
		tr.Close()
		return err
	}
}

// PairOptions configures StartKMEPair.
type PairOptions struct {
	ListenA, ListenB string   // default 127.0.0.1:8441 and 127.0.0.1:8442
	SAEsA, SAEsB     []string // default SAE_A and SAE_B
	Host             string   // default 127.0.0.1
	Km               float64  // simulated fibre length (default 25)
	MaxKeys          int
	NoLink           bool // do not start the simulated link
}

// StartKMEPair opens both sites' KMEs (KME_A, KME_B) on db with certificates
// from ca, and, unless opts.NoLink, runs the simulated QKD link between them
// in the background so that both pools fill continuously. `qshield serve`
// and `qshield kme pair` use it. stop shuts everything down.
func StartKMEPair(ctx context.Context, g *Globals, db *sqldb.DB, ca *pki.CA, masterKey []byte, opts PairOptions) (p *kme.Pair, stop func(), err error) {
	if opts.ListenA == "" {
		opts.ListenA = "127.0.0.1:8441"
	}
	if opts.ListenB == "" {
		opts.ListenB = "127.0.0.1:8442"
	}
	if len(opts.SAEsA) == 0 {
		opts.SAEsA = []string{"SAE_A"}
	}
	if len(opts.SAEsB) == 0 {
		opts.SAEsB = []string{"SAE_B"}
	}
	if opts.Km == 0 {
		opts.Km = 25
	}
	ctx, cancel := context.WithCancel(ctx)
	p, err = kme.StartPair(ctx, db, kme.PairConfig{
		CA: ca, MasterKey: masterKey, Host: opts.Host, MaxKeyCount: opts.MaxKeys, Logger: g.Log,
		A: kme.SiteConfig{KMEID: "KME_A", SAEs: opts.SAEsA, Listen: opts.ListenA},
		B: kme.SiteConfig{KMEID: "KME_B", SAEs: opts.SAEsB, Listen: opts.ListenB},
	})
	if err != nil {
		cancel()
		return nil, nil, err
	}
	done := make(chan struct{})
	if opts.NoLink {
		close(done)
	} else {
		lcfg := link.DefaultConfig(opts.Km)
		lcfg.ContinueOnAbort = true
		lcfg.OnBlock = func(st qkd.Stats) { reportBlock(p.SetLink, st) }
		go func() {
			defer close(done)
			err := p.RunLink(ctx, func(ctx context.Context, a, b qkd.Sink) error {
				_, err := link.Run(ctx, lcfg, a, b)
				return err
			})
			if err != nil {
				g.Log.Error("QKD link stopped", "err", err)
			}
		}()
	}
	return p, func() {
		cancel()
		<-done
		p.Close()
	}, nil
}

func kmePairCommand(g *Globals) *cobra.Command {
	var c kmeCommon
	var o PairOptions
	cmd := &cobra.Command{
		Use:   "pair",
		Short: "Run both sites' key managers and the simulated QKD link between them",
		Long: "Run KME_A and KME_B (each on its own mutual-TLS listener) on --db, fed continuously by the\n" +
			"simulated decoy-state BB84 link. Get SAE certificates with `qshield kme issue-cert`.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			db, ca, mk, err := c.open(ctx, g)
			if err != nil {
				return err
			}
			defer db.Close()
			o.Host = c.hosts[0]
			p, stop, err := StartKMEPair(ctx, g, db, ca, mk, o)
			if err != nil {
				return err
			}
			defer stop()
			if g.JSON {
				_ = g.PrintJSON(map[string]any{"KME_A": p.AURL, "KME_B": p.BURL, "SAEs_A": o.SAEsA, "SAEs_B": o.SAEsB})
			} else {
				fmt.Fprintf(g.Out, "KME_A on %s (SAEs %s), KME_B on %s (SAEs %s)\n", p.AURL, strings.Join(o.SAEsA, ","), p.BURL, strings.Join(o.SAEsB, ","))
			}
			select {
			case <-ctx.Done():
				return nil
			case err := <-p.Err():
				return err
			}
		},
	}
	c.flags(cmd)
	cmd.Flags().StringVar(&o.ListenA, "listen-a", "127.0.0.1:8441", "KME_A's address")
	cmd.Flags().StringVar(&o.ListenB, "listen-b", "127.0.0.1:8442", "KME_B's address")
	cmd.Flags().StringSliceVar(&o.SAEsA, "sae-a", []string{"SAE_A"}, "SAEs attached to KME_A")
	cmd.Flags().StringSliceVar(&o.SAEsB, "sae-b", []string{"SAE_B"}, "SAEs attached to KME_B")
	cmd.Flags().Float64Var(&o.Km, "km", 25, "fibre length of the simulated link (km)")
	cmd.Flags().IntVar(&o.MaxKeys, "max-keys", kme.DefaultMaxKeyCount, "max_key_count of each KME")
	cmd.Flags().BoolVar(&o.NoLink, "no-link", false, "do not run the simulated link")
	return cmd
}

func kmeIssueCertCommand(g *Globals) *cobra.Command {
	var c kmeCommon
	var out, kind string
	cmd := &cobra.Command{
		Use:   "issue-cert SAE_ID",
		Short: "Issue an SAE client certificate from the platform CA (writes SAE_ID.pem, SAE_ID-key.pem, ca.pem)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			db, ca, _, err := c.open(ctx, g)
			if err != nil {
				return err
			}
			defer db.Close()
			cert, err := ca.IssueTLSFor(ctx, pki.IssueRequest{Role: pki.RoleApplication, CommonName: args[0], Kind: pki.PrincipalKind(kind), Scheme: "kme"})
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
			if err != nil {
				return err
			}
			base := filepath.Join(out, safeFileName(args[0]))
			files := map[string][]byte{
				base + ".pem":                pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
				base + "-key.pem":            pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
				filepath.Join(out, "ca.pem"): pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate().Raw}),
			}
			for path, data := range files {
				if err := os.WriteFile(path, data, 0o600); err != nil {
					return err
				}
			}
			if g.JSON {
				return g.PrintJSON(map[string]string{"cert": base + ".pem", "key": base + "-key.pem", "ca": filepath.Join(out, "ca.pem")})
			}
			fmt.Fprintf(g.Out, "wrote %s.pem, %s-key.pem and %s\n", base, base, filepath.Join(out, "ca.pem"))
			return nil
		},
	}
	c.flags(cmd)
	cmd.Flags().StringVar(&out, "out", ".", "output directory")
	cmd.Flags().StringVar(&kind, "kind", "sae", "principal kind: sae, or charger for a key charger (which is also its site's SAE)")
	return cmd
}

func safeFileName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == 0 || r == '.' && len(s) < 3 {
			return '_'
		}
		return r
	}, s)
}

func kmeKeysCommand(g *Globals) *cobra.Command {
	var kmeURL, certFile, keyFile, caFile string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "ETSI GS QKD 014 client: status, enc, dec",
		Long: "Talk to a KME as an SAE, with the client certificate --cert/--key (see `qshield kme issue-cert`)\n" +
			"and the CA --ca. Keys are printed base64-encoded (JSON with --json).",
	}
	// call runs fn with a client of the KME and a context of --timeout.
	call := func(cmd *cobra.Command, fn func(ctx context.Context, c *etsi014.Client) error) error {
		if kmeURL == "" || certFile == "" || keyFile == "" || caFile == "" {
			return Usagef("--kme, --cert, --key and --ca are required")
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		_, pool, err := loadRoot(caFile)
		if err != nil {
			return err
		}
		host, err := serverName(kmeURL)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
		defer cancel()
		return fn(ctx, etsi014.New(kmeURL, pki.TLSClientConfig(pool, host, cert)))
	}
	printKeys := func(keys []etsi014.KeyMaterial) error {
		if g.JSON {
			kc := etsi014.KeyContainer{Keys: make([]etsi014.Key, len(keys))}
			for i, k := range keys {
				kc.Keys[i] = etsi014.Key{KeyID: k.ID, Key: base64.StdEncoding.EncodeToString(k.Key)}
			}
			return g.PrintJSON(kc)
		}
		for _, k := range keys {
			fmt.Fprintf(g.Out, "%s %s\n", k.ID, base64.StdEncoding.EncodeToString(k.Key))
		}
		return nil
	}
	status := &cobra.Command{
		Use: "status SLAVE_SAE_ID", Short: "Get status", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(cmd, func(ctx context.Context, c *etsi014.Client) error {
				st, err := c.Status(ctx, args[0])
				if err != nil {
					return err
				}
				return g.PrintJSON(st)
			})
		},
	}
	var number, size int
	enc := &cobra.Command{
		Use: "enc SLAVE_SAE_ID", Short: "Get key (enc_keys): new keys shared with SLAVE_SAE_ID", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(cmd, func(ctx context.Context, c *etsi014.Client) error {
				keys, err := c.EncKeys(ctx, args[0], number, size)
				if err != nil {
					return err
				}
				return printKeys(keys)
			})
		},
	}
	enc.Flags().IntVarP(&number, "number", "n", 0, "number of keys (default: the KME's, 1)")
	enc.Flags().IntVar(&size, "size", 0, "key size in bits (default: the KME's key_size)")
	dec := &cobra.Command{
		Use: "dec MASTER_SAE_ID KEY_ID...", Short: "Get key with key IDs (dec_keys)", Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(cmd, func(ctx context.Context, c *etsi014.Client) error {
				keys, err := c.DecKeys(ctx, args[0], args[1:]...)
				if err != nil {
					return err
				}
				return printKeys(keys)
			})
		},
	}
	cmd.PersistentFlags().StringVar(&kmeURL, "kme", "https://127.0.0.1:8441", "the KME's base URL")
	alias(cmd.PersistentFlags(), &kmeURL, "url", "kme", "https://127.0.0.1:8441")
	cmd.PersistentFlags().StringVar(&certFile, "cert", "", "SAE client certificate (PEM)")
	cmd.PersistentFlags().StringVar(&keyFile, "key", "", "SAE private key (PEM)")
	cmd.PersistentFlags().StringVar(&caFile, "ca", "", "CA certificate that signed the KME's certificate (PEM)")
	cmd.PersistentFlags().DurationVar(&timeout, "timeout", 30*time.Second, "request timeout")
	cmd.AddCommand(status, enc, dec)
	return cmd
}
