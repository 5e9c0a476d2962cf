package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // decoding photographed codes
	_ "image/png"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/internal/client"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qmsp"
	"github.com/qshield/qshield/qrimg"
)

// deviceDir is a device's credentials on disk: storage.key (the device's
// storage key, 0600), key.pem (its private key sealed under it), cert.pem and
// ca.pem.
type deviceDir string

func (d deviceDir) path(name string) string { return filepath.Join(string(d), name) }

func (d deviceDir) storageKey(create bool) ([]byte, error) {
	if create {
		if err := os.MkdirAll(string(d), 0o700); err != nil {
			return nil, err
		}
		return fsutil.LoadOrCreateKey(d.path("storage.key"))
	}
	b, err := os.ReadFile(d.path("storage.key"))
	if err != nil {
		return nil, fmt.Errorf("device directory %s: %w", d, err)
	}
	k, err := fsutil.DecodeKey32(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.path("storage.key"), err)
	}
	return k, nil
}

// newKey generates the device key pair and stores it sealed.
func (d deviceDir) newKey() (*ecdsa.PrivateKey, error) {
	sk, err := d.storageKey(true)
	if err != nil {
		return nil, err
	}
	enc, err := pki.RawKey(sk)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	pemKey, err := pki.SealPrivateKeyPEM(key, enc)
	if err != nil {
		return nil, err
	}
	return key, fsutil.WriteFileAtomic(d.path("key.pem"), pemKey, 0o600, true)
}

func (d deviceDir) saveCerts(certDER, caDER []byte) error {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return fmt.Errorf("server sent a bad certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("server sent a bad CA certificate: %w", err)
	}
	if err := fsutil.WriteFileAtomic(d.path("cert.pem"), pki.EncodeCertPEM(cert), 0o644, true); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(d.path("ca.pem"), pki.EncodeCertPEM(ca), 0o644, true)
}

// load returns the device's key and a TLS configuration presenting its certificate.
func (d deviceDir) load() (*ecdsa.PrivateKey, *tls.Config, error) {
	sk, err := d.storageKey(false)
	if err != nil {
		return nil, nil, err
	}
	enc, err := pki.RawKey(sk)
	if err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile(d.path("key.pem"))
	if err != nil {
		return nil, nil, err
	}
	k, err := pki.ParsePrivateKeyPEM(b, enc)
	if err != nil {
		return nil, nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, errors.New("device key is not ECDSA P-256")
	}
	cb, err := os.ReadFile(d.path("cert.pem"))
	if err != nil {
		return nil, nil, err
	}
	cert, err := pki.ParseCertPEM(cb)
	if err != nil {
		return nil, nil, err
	}
	cab, err := os.ReadFile(d.path("ca.pem"))
	if err != nil {
		return nil, nil, err
	}
	ca, err := pki.ParseCertPEM(cab)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return key, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "localhost",
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}}, nil
}

// enrolDevice generates the device's key pair in d, has the server's admin API
// at path certify it (body builds the request around the PKIX public key),
// and stores the certificate and the CA root in d.
func enrolDevice(ctx context.Context, server, adminDir string, d deviceDir, path string, body func(pub []byte) any) (*platform.DeviceEnrolled, error) {
	key, err := d.newKey()
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	ac, err := adminClient(server, adminDir)
	if err != nil {
		return nil, err
	}
	defer ac.Close()
	var out platform.DeviceEnrolled
	if _, err := ac.Do(ctx, http.MethodPost, path, nil, body(pub), &out); err != nil {
		return nil, err
	}
	return &out, d.saveCerts(out.Certificate, out.CA)
}

// adminClient talks to the server with the admin certificate from a state directory.
func adminClient(server, stateDir string) (*client.Client, error) {
	if stateDir == "" {
		return nil, errors.New("--admin-dir is required (the server's state directory with admin.pem)")
	}
	tc, err := platform.LoadClientTLS(stateDir)
	if err != nil {
		return nil, err
	}
	return client.New(server, tc), nil
}

// GatewayCommand is `qshield gateway`: a quantum key gateway device.
func GatewayCommand(g *Globals) *cobra.Command {
	var server, dir, adminDir string
	cmd := &cobra.Command{Use: "gateway", Short: "Run a QMSP quantum key gateway (seed 000)"}
	cmd.PersistentFlags().StringVar(&server, "server", "https://localhost:8443", "qshield server URL")
	cmd.PersistentFlags().StringVar(&dir, "dir", "./gateway", "the gateway's directory (keys, certificate, state)")

	var gi, account, currency string
	var merchant uint32
	provision := &cobra.Command{
		Use:   "provision",
		Short: "Generate the gateway's key, enrol it (setup steps 1-4) and store its preset key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			d := deviceDir(dir)
			if _, err := os.Stat(d.path("state")); err == nil {
				return fmt.Errorf("%s already holds a provisioned gateway", dir)
			}
			out, err := enrolDevice(cmd.Context(), server, adminDir, d, "/v1/qmsp/admin/gateways", func(pub []byte) any {
				return platform.GatewayEnrolment{Gateway: gi, Merchant: merchant, Account: account, Currency: currency, PublicKey: pub}
			})
			if err != nil {
				return fmt.Errorf("enrol gateway: %w", err)
			}
			var pk [qmsp.PresetKeySize]byte
			if len(out.PresetKey) != len(pk) {
				return errors.New("server sent a preset key of the wrong size")
			}
			copy(pk[:], out.PresetKey)
			sk, _ := d.storageKey(false)
			if err := qmsp.ProvisionGateway(d.path("state"), sk, gi, merchant, pk); err != nil {
				return err
			}
			fmt.Fprintf(g.Out, "gateway %s provisioned in %s (merchant %d, account %s)\n", gi, dir, merchant, account)
			return nil
		},
	}
	provision.Flags().StringVar(&adminDir, "admin-dir", "", "the server's state directory (holds admin.pem and admin-key.pem)")
	provision.Flags().StringVar(&gi, "gateway", "", "gateway identifier GI")
	provision.Flags().Uint32Var(&merchant, "merchant", 1, "merchant number")
	provision.Flags().StringVar(&account, "account", "", "the merchant's ledger account (opened if missing)")
	provision.Flags().StringVar(&currency, "currency", "CNY", "the account's currency")
	_ = provision.MarkFlagRequired("gateway")
	_ = provision.MarkFlagRequired("account")

	open := func(ctx context.Context) (*qmsp.Gateway, *qmsp.Client, error) {
		d := deviceDir(dir)
		key, tc, err := d.load()
		if err != nil {
			return nil, nil, err
		}
		sk, _ := d.storageKey(false)
		c := qmsp.NewClient(server, tc)
		gw, err := qmsp.OpenGateway(qmsp.GatewayConfig{StatePath: d.path("state"), StorageKey: sk, Signer: key, CSS: c})
		return gw, c, err
	}
	var pngOut string
	code := &cobra.Command{
		Use:   "code",
		Short: "Print the code the gateway shows now (and write it as a PNG with --png)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			gw, _, err := open(cmd.Context())
			if err != nil {
				return err
			}
			d, err := gw.Current(cmd.Context())
			if err != nil {
				return err
			}
			text, _ := d.MarshalText()
			if pngOut != "" {
				png, info, err := qrimg.EncodePNG(string(text), qrimg.M, 6)
				if err != nil {
					return err
				}
				if err := os.WriteFile(pngOut, png, 0o644); err != nil {
					return err
				}
				fmt.Fprintf(g.Err, "wrote %s (QR version %d)\n", pngOut, info.Version)
			}
			fmt.Fprintln(g.Out, string(text))
			return nil
		},
	}
	code.Flags().StringVar(&pngOut, "png", "", "also write the QR code to this PNG file")

	var listen string
	run := &cobra.Command{
		Use:   "run",
		Short: "Show the gateway's codes on a local page, moving on after each payment",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			gw, c, err := open(cmd.Context())
			if err != nil {
				return err
			}
			used := func(ctx context.Context, ref qmsp.KeyRef) (bool, error) {
				var out struct{ Used bool }
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, server+"/v1/qmsp/units/"+ref.String(), nil)
				resp, err := c.HTTP.Do(req)
				if err != nil {
					return false, err
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
					return false, fmt.Errorf("unit status: %s", b)
				}
				err = jsonDecode(resp.Body, &out)
				return out.Used, err
			}
			page := &qmsp.GatewayPage{Gateway: gw, Used: used}
			mux := http.NewServeMux()
			mux.Handle("GET /{file...}", page)
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
			go func() { <-cmd.Context().Done(); srv.Close() }()
			fmt.Fprintf(g.Out, "gateway %s showing codes on http://%s/\n", gw.ID(), ln.Addr())
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	run.Flags().StringVar(&listen, "listen", "127.0.0.1:8480", "address of the gateway's screen (a local page)")
	cmd.AddCommand(provision, code, run)
	return cmd
}

// parseAmount turns "12.34" into 1234 minor units (two decimals).
func parseAmount(s string) (int64, error) {
	whole, frac, _ := strings.Cut(strings.TrimSpace(s), ".")
	if len(frac) > 2 {
		return 0, fmt.Errorf("amount %q has more than two decimals", s)
	}
	for len(frac) < 2 {
		frac += "0"
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w < 0 {
		return 0, fmt.Errorf("amount %q is not a positive decimal number", s)
	}
	f, err := strconv.ParseInt(frac, 10, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("amount %q is not a positive decimal number", s)
	}
	if w > (1<<47)/100 {
		return 0, fmt.Errorf("amount %q is too large", s)
	}
	return w*100 + f, nil
}

// PhoneQMSPCommand is `qshield phone qmsp`: enrol a phone and pay at a gateway.
func PhoneQMSPCommand(g *Globals) *cobra.Command {
	var server, dir string
	cmd := &cobra.Command{Use: "qmsp", Short: "Pay at a QMSP quantum key gateway (seed 000)"}
	cmd.PersistentFlags().StringVar(&server, "server", "https://localhost:8443", "qshield server URL")
	cmd.PersistentFlags().StringVar(&dir, "dir", "./phone", "the phone's directory (key and certificate)")
	var adminDir, phone, account string
	var payer uint64
	enrol := &cobra.Command{
		Use:   "enrol",
		Short: "Generate the phone's key and have it certified and bound to a payer number",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := enrolDevice(cmd.Context(), server, adminDir, deviceDir(dir), "/v1/qmsp/admin/phones", func(pub []byte) any {
				return platform.PhoneEnrolment{Phone: phone, Payer: payer, Account: account, PublicKey: pub}
			}); err != nil {
				return fmt.Errorf("enrol phone: %w", err)
			}
			fmt.Fprintf(g.Out, "phone %s enrolled as payer %d (account %s) in %s\n", phone, payer, account, dir)
			return nil
		},
	}
	enrol.Flags().StringVar(&adminDir, "admin-dir", "", "the server's state directory (holds admin.pem and admin-key.pem)")
	enrol.Flags().StringVar(&phone, "phone", "", "the phone's name (its certificate's common name)")
	enrol.Flags().Uint64Var(&payer, "payer", 0, "payer number")
	enrol.Flags().StringVar(&account, "account", "", "the ledger account it pays from")
	_ = enrol.MarkFlagRequired("phone")
	_ = enrol.MarkFlagRequired("payer")
	_ = enrol.MarkFlagRequired("account")

	var qrFile, codeText, amount, currency string
	pay := &cobra.Command{
		Use:   "pay",
		Short: "Scan a gateway's code (an image, its text, or the gateway page's URL) and pay",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			minor, err := parseAmount(amount)
			if err != nil {
				return err
			}
			cur, ok := qmsp.CurrencyCode(currency)
			if !ok {
				return fmt.Errorf("unsupported currency %q", currency)
			}
			text := codeText
			switch {
			case qrFile != "" && strings.HasPrefix(qrFile, "http"):
				resp, err := http.Get(qrFile)
				if err != nil {
					return err
				}
				img, _, err := image.Decode(io.LimitReader(resp.Body, 8<<20))
				resp.Body.Close()
				if err != nil {
					return fmt.Errorf("read %s: %w", qrFile, err)
				}
				if text, err = qrimg.Decode(img); err != nil {
					return err
				}
			case qrFile != "":
				f, err := os.Open(qrFile)
				if err != nil {
					return err
				}
				img, _, err := image.Decode(f)
				f.Close()
				if err != nil {
					return fmt.Errorf("read %s: %w", qrFile, err)
				}
				if text, err = qrimg.Decode(img); err != nil {
					return err
				}
			case text == "":
				return errors.New("give the code with --qr FILE|URL or --code TEXT")
			}
			_, tc, err := deviceDir(dir).load()
			if err != nil {
				return err
			}
			ph := &qmsp.Phone{Payer: payer, Platform: qmsp.NewClient(server, tc)}
			r, err := ph.Pay(cmd.Context(), text, minor, cur)
			if err != nil {
				return err
			}
			if g.JSON {
				return g.PrintJSON(r)
			}
			fmt.Fprintf(g.Out, "paid %d.%02d %s to merchant %d (transfer %s, key %s)\n", r.Amount/100, r.Amount%100, r.Currency, r.Merchant, r.TransferID, r.KeyRef)
			return nil
		},
	}
	pay.Flags().StringVar(&qrFile, "qr", "", "the gateway's QR: a PNG/JPEG file or an http(s) URL of its image")
	pay.Flags().StringVar(&codeText, "code", "", "the code's text (QMSP1:…)")
	pay.Flags().StringVar(&amount, "amount", "", "amount, e.g. 12.34")
	pay.Flags().StringVar(&currency, "currency", "CNY", "ISO 4217 currency")
	pay.Flags().Uint64Var(&payer, "payer", 0, "this phone's payer number")
	_ = pay.MarkFlagRequired("amount")
	_ = pay.MarkFlagRequired("payer")
	cmd.AddCommand(enrol, pay)
	return cmd
}
