package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"html"
	_ "image/gif" // decoding photographed or saved codes
	_ "image/jpeg"
	_ "image/png"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qmsp"
	"github.com/qshield/qshield/qrimg"
)

// GatewayCommand is `qshield gateway`: a quantum key gateway device.
func GatewayCommand(g *Globals) *cobra.Command {
	var server, dir string
	cmd := &cobra.Command{Use: "gateway", Short: "Run a QMSP quantum key gateway (seed 000)"}
	serverFlag(cmd.PersistentFlags(), &server, "")
	dirFlag(cmd.PersistentFlags(), &dir, KindQMSPGateway, "the gateway's directory (keys, certificate, state)")
	open := func() (*qmsp.Gateway, *qmsp.Client, error) {
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
	cmd.AddCommand(gatewayProvision(g, &server, &dir), gatewayCode(g, open), gatewayRun(g, &server, open))
	return cmd
}

func gatewayProvision(g *Globals, server, dir *string) *cobra.Command {
	var admin, gi, account, currency string
	var merchant uint32
	cmd := &cobra.Command{
		Use:   "provision",
		Short: "Generate the gateway's key, enrol it (setup steps 1-4) and store its preset key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			d := deviceDir(*dir)
			if _, err := os.Stat(d.path("state")); err == nil {
				return fmt.Errorf("%s already holds a provisioned gateway", *dir)
			}
			out, err := enrolDevice(cmd.Context(), *server, admin, d, "/v1/qmsp/admin/gateways", func(pub []byte) any {
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
			sk, err := d.storageKey(false)
			if err != nil {
				return err
			}
			if err := qmsp.ProvisionGateway(d.path("state"), sk, gi, merchant, pk); err != nil {
				return err
			}
			return g.Report(map[string]any{"gateway": gi, "dir": *dir, "merchant": merchant, "account": account},
				fmt.Sprintf("gateway %s provisioned in %s (merchant %d, account %s)", gi, *dir, merchant, account))
		},
	}
	adminFlag(cmd.Flags(), &admin, "admin-dir")
	cmd.Flags().StringVar(&gi, "gateway", "", "gateway identifier GI")
	cmd.Flags().Uint32Var(&merchant, "merchant", 1, "merchant number")
	cmd.Flags().StringVar(&account, "account", "", "the merchant's ledger account (opened if missing)")
	cmd.Flags().StringVar(&currency, "currency", "CNY", "the account's currency (ISO 4217)")
	_ = cmd.MarkFlagRequired("gateway")
	_ = cmd.MarkFlagRequired("account")
	return cmd
}

func gatewayCode(g *Globals, open func() (*qmsp.Gateway, *qmsp.Client, error)) *cobra.Command {
	var pngOut string
	cmd := &cobra.Command{
		Use:   "code",
		Short: "Print the code the gateway shows now (and write it as a PNG with --png)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			gw, _, err := open()
			if err != nil {
				return err
			}
			d, err := gw.Current(cmd.Context())
			if err != nil {
				return err
			}
			text, err := d.MarshalText()
			if err != nil {
				return err
			}
			rep := map[string]any{"gateway": gw.ID(), "code": string(text)}
			if pngOut != "" {
				png, info, err := qrimg.EncodePNG(string(text), qrimg.M, 6)
				if err != nil {
					return err
				}
				if err := os.WriteFile(pngOut, png, 0o644); err != nil {
					return err
				}
				rep["png"], rep["qr_version"] = pngOut, info.Version
			}
			return g.Report(rep, string(text))
		},
	}
	cmd.Flags().StringVar(&pngOut, "png", "", "also write the QR code to this PNG file")
	return cmd
}

func gatewayRun(g *Globals, server *string, open func() (*qmsp.Gateway, *qmsp.Client, error)) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Show the gateway's codes on a local page, moving on after each payment",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			gw, c, err := open()
			if err != nil {
				return err
			}
			used := func(ctx context.Context, ref qmsp.KeyRef) (bool, error) {
				var out struct{ Used bool }
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, *server+"/v1/qmsp/units/"+ref.String(), nil)
				if err != nil {
					return false, err
				}
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
			mux := http.NewServeMux()
			mux.Handle("GET /{file...}", &qmsp.GatewayPage{Gateway: gw, Used: used})
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
			go func() { <-cmd.Context().Done(); srv.Close() }()
			page := "http://" + ln.Addr().String() + "/"
			if err := g.Report(map[string]any{"gateway": gw.ID(), "page": page}, fmt.Sprintf("gateway %s showing codes on %s", gw.ID(), page)); err != nil {
				return err
			}
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8480", "address of the gateway's screen (a local page)")
	return cmd
}

// PhoneQMSPCommand is `qshield phone qmsp`: enrol a phone and pay at a gateway.
func PhoneQMSPCommand(g *Globals) *cobra.Command {
	var server, dir string
	cmd := &cobra.Command{Use: "qmsp", Short: "Pay at a QMSP quantum key gateway (seed 000)"}
	serverFlag(cmd.PersistentFlags(), &server, "")
	dirFlag(cmd.PersistentFlags(), &dir, KindQMSPPhone, "the phone's directory (key and certificate)")
	cmd.AddCommand(phoneQMSPEnrol(g, &server, &dir), phoneQMSPPay(g, &server, &dir))
	return cmd
}

func phoneQMSPEnrol(g *Globals, server, dir *string) *cobra.Command {
	var admin, phone, account, code string
	var payer uint64
	cmd := &cobra.Command{
		Use:     "enrol",
		Aliases: []string{"enroll"},
		Short:   "Generate the phone's key and have it certified and bound to a payer number",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := enrolDevice(cmd.Context(), *server, admin, deviceDir(*dir), "/v1/qmsp/admin/phones", func(pub []byte) any {
				return platform.PhoneEnrolment{Phone: phone, Payer: payer, Account: account, EnrolmentCode: code, PublicKey: pub}
			}); err != nil {
				return fmt.Errorf("enrol phone: %w", err)
			}
			return g.Report(map[string]any{"phone": phone, "payer": payer, "account": account, "dir": *dir},
				fmt.Sprintf("phone %s enrolled as payer %d (account %s) in %s", phone, payer, account, *dir))
		},
	}
	adminFlag(cmd.Flags(), &admin, "admin-dir")
	cmd.Flags().StringVar(&phone, "phone", "", "the phone's name (its certificate's common name)")
	cmd.Flags().Uint64Var(&payer, "payer", 0, "payer number")
	cmd.Flags().StringVar(&account, "account", "", "the ledger account it pays from")
	cmd.Flags().StringVar(&code, "enrolment-code", "", "the account holder's consent: a code from `qshield admin enrolment-code --account ID`")
	_ = cmd.MarkFlagRequired("phone")
	_ = cmd.MarkFlagRequired("enrolment-code")
	_ = cmd.MarkFlagRequired("payer")
	_ = cmd.MarkFlagRequired("account")
	return cmd
}

func phoneQMSPPay(g *Globals, server, dir *string) *cobra.Command {
	var qr, codeText, amount, currency string
	var payer uint64
	cmd := &cobra.Command{
		Use:   "pay",
		Short: "Scan a gateway's code and pay: --qr takes a PNG/JPEG/GIF file, the URL of its image, or the gateway page's URL; --code its text",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			amt, err := parseAmount(amount, currency)
			if err != nil {
				return err
			}
			if (qr == "") == (codeText == "") {
				return Usagef("give the gateway's code with --qr FILE|URL or --code TEXT (one of them)")
			}
			d := deviceDir(*dir)
			_, tc, err := d.load()
			if err != nil {
				return err
			}
			text := codeText
			if qr != "" {
				roots, err := d.roots()
				if err != nil {
					return err
				}
				if text, err = readQR(cmd.Context(), qr, roots); err != nil {
					return err
				}
			}
			ph := &qmsp.Phone{Payer: payer, Platform: qmsp.NewClient(*server, tc)}
			r, err := ph.Pay(cmd.Context(), text, amt.Minor, amt.Currency.Numeric)
			if err != nil {
				return err
			}
			paid := amt
			paid.Minor = r.Amount
			return g.Report(r, fmt.Sprintf("paid %s to merchant %d (transfer %s, key %s)", paid, r.Merchant, r.TransferID, r.KeyRef))
		},
	}
	cmd.Flags().StringVar(&qr, "qr", "", "the gateway's QR: a PNG, JPEG or GIF file, an http(s) URL of its image (the server's …/qr.png), or the gateway page's URL")
	cmd.Flags().StringVar(&codeText, "code", "", "the code's text (QMSP1:…)")
	cmd.Flags().StringVar(&amount, "amount", "", "amount in major units of --currency, e.g. 12.34 (CNY) or 100 (JPY)")
	cmd.Flags().StringVar(&currency, "currency", "CNY", "ISO 4217 currency")
	cmd.Flags().Uint64Var(&payer, "payer", 0, "this phone's payer number")
	_ = cmd.MarkFlagRequired("amount")
	_ = cmd.MarkFlagRequired("payer")
	return cmd
}

// maxQRImage bounds an image or page read for --qr.
const maxQRImage = 16 << 20

// readQR returns the text of the QR code named by src: an image file, the
// URL of an image, a gateway page (HTML: its <img> is fetched, as a camera
// would see it) or a URL answering the code as text/plain. HTTPS servers
// are trusted when their certificate chains to roots (the platform CA).
func readQR(ctx context.Context, src string, roots *x509.CertPool) (string, error) {
	u, err := url.Parse(src)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		f, err := os.Open(src)
		if err != nil {
			return "", fmt.Errorf("--qr: %w", err)
		}
		defer f.Close()
		return decodeQRImage(f, src)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: pki.TLSClientConfig(roots, "")}}
	defer hc.CloseIdleConnections()
	for range 2 { // the page, then its image
		body, ctype, final, err := fetch(ctx, hc, src)
		if err != nil {
			return "", err
		}
		switch ctype {
		case "text/html":
			if src, err = pageImage(body, final); err != nil {
				return "", fmt.Errorf("--qr %s: %w", src, err)
			}
			continue
		case "text/plain":
			return strings.TrimSpace(string(body)), nil
		default:
			return decodeQRImage(strings.NewReader(string(body)), src)
		}
	}
	return "", fmt.Errorf("--qr %s: the page's image is another page", src)
}

var imgSrc = regexp.MustCompile(`(?is)<img[^>]*\ssrc\s*=\s*["']([^"']+)["']`)

// pageImage returns the absolute URL of the first image of an HTML page
// fetched from base (a gateway page shows its code as its one <img>).
func pageImage(page []byte, base *url.URL) (string, error) {
	img := imgSrc.FindSubmatch(page)
	if img == nil {
		return "", errors.New("a web page without an image")
	}
	ref, err := base.Parse(html.UnescapeString(string(img[1])))
	if err != nil {
		return "", fmt.Errorf("image link %q: %w", img[1], err)
	}
	if ref.Scheme != "http" && ref.Scheme != "https" {
		return "", fmt.Errorf("image link %q is not an http(s) URL", img[1])
	}
	return ref.String(), nil
}

// fetch GETs src and returns the body, its media type and the final URL
// (after redirects, to resolve relative links against).
func fetch(ctx context.Context, hc *http.Client, src string) ([]byte, string, *url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, "", nil, fmt.Errorf("--qr: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, "", nil, fmt.Errorf("--qr: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxQRImage+1))
	if err != nil {
		return nil, "", nil, fmt.Errorf("--qr %s: %w", src, err)
	}
	if len(body) > maxQRImage {
		return nil, "", nil, fmt.Errorf("--qr %s: larger than %d bytes", src, maxQRImage)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", nil, fmt.Errorf("--qr %s: %s: %s", src, resp.Status, strings.TrimSpace(string(body[:min(len(body), 200)])))
	}
	ctype, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		ctype, _, _ = mime.ParseMediaType(http.DetectContentType(body))
	}
	return body, ctype, resp.Request.URL, nil
}

func decodeQRImage(r io.Reader, name string) (string, error) {
	// qrimg checks the image's size from its header before decoding the
	// pixels (a decompression bomb is refused, not decoded).
	text, err := qrimg.DecodePNG(r, maxQRImage)
	if err != nil {
		return "", fmt.Errorf("--qr %s: %w", name, err)
	}
	return text, nil
}
