package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qrimg"
)

// Files in a bioqr device state directory.
const (
	bioqrUnitFile    = "unit.json"     // the secure unit (sealed key, certificate, credential)
	bioqrSealFile    = "unit-seal.key" // POS only: random key sealing the unit (unless QSHIELD_POS_KEY is set)
	bioqrPOSConfig   = "pos.json"      // POS merchant configuration and server URL
	bioqrRandCodes   = "randcodes.json"
	bioqrPhoneFile   = "phone.json" // phone: server URL
	bioqrEnvPOSKey   = "QSHIELD_POS_KEY"
	bioqrEnvPhonePIN = "QSHIELD_PHONE_PIN"
	bioqrQRScale     = 6
	bioqrMaxImage    = 16 << 20
)

type bioqrPOSConfigFile struct {
	Server   string         `json:"server"`
	ID       string         `json:"id"`
	Merchant bioqr.Merchant `json:"merchant"`
}

type bioqrPhoneConfigFile struct {
	Server string `json:"server"`
	ID     string `json:"id"`
}

// POSCommand is `qshield pos`: a point-of-sale terminal of seed 004.
//
//	qshield pos init   --server URL --admin DIR [--dir DIR] --id POS-1 --merchant-account ACCT ...
//	qshield pos charge [--dir DIR] --amount 25.50 [--out qr.png]
//	qshield pos accept [--dir DIR] --image pay.png [--finger probe.iso]
func POSCommand(g *Globals) *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "pos",
		Short: "Seed 004 POS terminal: show consumption QR codes, accept biometric payment QR codes, settle",
		Long: "A point-of-sale terminal for biometric QR payments (patent CN103985036A). Its secure unit\n" +
			"(--dir) holds its key, CA-issued certificate and compact credential; `init` certifies it\n" +
			"through a running `qshield serve`, `charge` shows a consumption QR, `accept` reads a phone's\n" +
			"payment QR and settles it with the server over mutual TLS. The unit file is sealed with\n" +
			bioqrEnvPOSKey + " (a 32-byte key or a passphrase) or, when unset, a random key kept in the state directory.",
	}
	dirFlag(cmd.PersistentFlags(), &stateDir, KindBioQRPOS, "the POS's directory (secure unit, configuration)", "state-dir")
	cmd.AddCommand(bioqrPOSInit(g, &stateDir), bioqrPOSCharge(g, &stateDir), bioqrPOSAccept(g, &stateDir))
	return cmd
}

func bioqrPOSInit(g *Globals, stateDir *string) *cobra.Command {
	var server, admin, id, account string
	m := bioqr.Merchant{}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the POS secure unit and have the platform CA certify it (steps a–d)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			m.Account = account
			op, err := bioqrOperatorTLS(admin, server)
			if err != nil {
				return err
			}
			enc, err := bioqrPOSSealKey(*stateDir, true)
			if err != nil {
				return err
			}
			u, err := bioqr.NewSecureUnit(filepath.Join(*stateDir, bioqrUnitFile), bioqr.KindPOS, pki.ECDSAP256, enc)
			if err != nil {
				return err
			}
			req, err := bioqr.NewCertRequest(u, id, "qshield pos", nil, map[string]string{bioqr.AttrMerchantAccount: account})
			if err != nil {
				return err
			}
			cl := bioqr.NewClient(server, op.Config)
			defer cl.Close()
			c, err := cl.RegisterPOS(ctx, req)
			if err != nil {
				return fmt.Errorf("pos init: certify: %w", err)
			}
			if err := c.Install(u, op.rootCert); err != nil {
				return err
			}
			cfg := bioqrPOSConfigFile{Server: server, ID: id, Merchant: m}
			if err := bioqrWriteJSON(filepath.Join(*stateDir, bioqrPOSConfig), cfg); err != nil {
				return err
			}
			cred := u.Credential()
			return g.Report(map[string]any{"pos": id, "serial": cred.Serial.Text(16), "merchant_account": account, "state_dir": *stateDir},
				fmt.Sprintf("POS %s certified (serial %s), payments go to %s", id, cred.Serial.Text(16), account))
		},
	}
	f := cmd.Flags()
	serverFlag(f, &server, "")
	adminFlag(f, &admin, "operator-dir")
	f.StringVar(&id, "id", "", "POS identifier (device serial)")
	f.StringVar(&account, "merchant-account", "", "ledger account credited by this POS")
	f.StringVar(&m.Name, "name", "Corner Shop", "merchant name (≤ 25 characters)")
	f.StringVar(&m.City, "city", "Hangzhou", "merchant city (≤ 15 characters)")
	f.StringVar(&m.Country, "country", "CN", "ISO 3166-1 alpha-2 country code")
	f.StringVar(&m.MCC, "mcc", "5411", "ISO 18245 merchant category code")
	f.StringVar(&m.Currency, "currency", "CNY", "ISO 4217 currency")
	for _, n := range []string{"admin", "id", "merchant-account"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

func bioqrPOSCharge(g *Globals, stateDir *string) *cobra.Command {
	var amount, out string
	var publish bool
	cmd := &cobra.Command{
		Use:   "charge",
		Short: "Show a consumption QR for an amount (steps 2–3): PNG file and the server's POS page",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			p, cfg, cl, err := bioqrOpenPOS(*stateDir)
			if err != nil {
				return err
			}
			defer cl.Close()
			amt, err := parseAmount(amount, cfg.Merchant.Currency)
			if err != nil {
				return err
			}
			c, err := p.NewConsumption(ctx, amt.Minor)
			if err != nil {
				return err
			}
			png, info, err := qrimg.EncodePNG(c.Payload, qrimg.M, bioqrQRScale)
			if err != nil {
				return err
			}
			if out == "" {
				out = filepath.Join(*stateDir, "consumption.png")
			}
			if err := os.WriteFile(out, png, 0o644); err != nil {
				return fmt.Errorf("pos charge: %w", err)
			}
			page := ""
			if publish {
				if err := cl.Display(ctx, bioqr.DisplayRequest{Payload: c.Payload}); err != nil {
					return fmt.Errorf("pos charge: publish to the POS page: %w", err)
				}
				page = strings.TrimRight(cfg.Server, "/") + "/bioqr/pos/" + url.PathEscape(cfg.ID)
			}
			return g.Report(map[string]any{"png": out, "payload": c.Payload, "rand_code": hex.EncodeToString(c.RandCode[:]),
				"expires": c.Expires, "qr_version": info.Version, "page": page},
				fmt.Sprintf("consumption QR for %s written to %s (QR version %d, valid until %s)%s", amt, out, info.Version,
					c.Expires.Local().Format("15:04:05"), map[bool]string{true: "; page " + page, false: ""}[page != ""]))
		},
	}
	cmd.Flags().StringVar(&amount, "amount", "", "amount in major units of the merchant's currency, e.g. 25.50 (CNY) or 100 (JPY)")
	cmd.Flags().StringVar(&out, "out", "", "PNG output (default DIR/consumption.png)")
	cmd.Flags().BoolVar(&publish, "publish", true, "show the QR on the server's POS page (/bioqr/pos/ID)")
	_ = cmd.MarkFlagRequired("amount")
	return cmd
}

func bioqrPOSAccept(g *Globals, stateDir *string) *cobra.Command {
	var image, finger string
	cmd := &cobra.Command{
		Use:   "accept",
		Short: "Read a payment QR image, check it and settle it over mutual TLS (steps 9–15)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			p, _, cl, err := bioqrOpenPOS(*stateDir)
			if err != nil {
				return err
			}
			defer cl.Close()
			if finger != "" {
				p.Sensor = bioqr.FileSensor{Path: finger}
			}
			text, err := bioqrReadQR(image)
			if err != nil {
				return err
			}
			res, err := p.Accept(ctx, text)
			msg := ""
			if err != nil {
				msg = "payment refused: " + bioqr.ErrorCode(err)
			} else {
				msg = "paid " + money.Format(res.Amount, res.Currency)
			}
			_ = cl.Display(ctx, bioqr.DisplayRequest{Message: msg})
			if err != nil {
				return fmt.Errorf("pos accept: %w", err)
			}
			return g.Report(res, fmt.Sprintf("paid: %s → %s, %s, transfer %s (fingerprint from %s, score %.1f)%s",
				res.Account, res.MerchantAccount, money.Format(res.Amount, res.Currency), res.TransferID, res.ProbeSource, res.Score,
				map[bool]string{true: " [replayed result]", false: ""}[res.Replayed]))
		},
	}
	cmd.Flags().StringVar(&image, "image", "", "payment QR image (PNG, JPEG or GIF)")
	cmd.Flags().StringVar(&finger, "finger", "", "ISO/IEC 19794-2 file: the POS sensor's capture, used when the phone sent no fingerprint")
	_ = cmd.MarkFlagRequired("image")
	return cmd
}

// PhoneBioQRCommand is `qshield phone bioqr`: the phone of seed 004. The
// lead mounts it under `qshield phone`.
//
//	qshield phone bioqr enrol --server URL --admin DIR [--dir DIR] --id PHONE-1 --finger owner.iso --account alice --enrolment-code CODE
//	qshield phone bioqr pay   [--dir DIR] --image consumption.png --account alice [--finger probe.iso] [--out pay.png]
func PhoneBioQRCommand(g *Globals) *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "bioqr",
		Short: "Seed 004 phone: enrol with a fingerprint, pay a consumption QR with a payment QR",
		Long: "The phone of biometric QR payments (patent CN103985036A). Its secure unit (--dir) holds\n" +
			"its key, sealed with the PIN or passphrase in " + bioqrEnvPhonePIN + " (at least 8 characters), its\n" +
			"certificate and credential, and its payment accounts.",
	}
	dirFlag(cmd.PersistentFlags(), &stateDir, KindBioQRPhone, "the phone's directory (secure unit, configuration)", "state-dir")
	cmd.AddCommand(bioqrPhoneEnrol(g, &stateDir), bioqrPhonePay(g, &stateDir))
	return cmd
}

func bioqrPhoneEnrol(g *Globals, stateDir *string) *cobra.Command {
	var server, admin, id, finger string
	var accounts, codes []string
	cmd := &cobra.Command{
		Use:     "enrol",
		Aliases: []string{"enroll"},
		Short:   "Create the phone's secure unit, seal the owner's fingerprint to the settlement server and get certified (steps A–F)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			enc, err := bioqrPhonePIN()
			if err != nil {
				return err
			}
			op, err := bioqrOperatorTLS(admin, server)
			if err != nil {
				return err
			}
			tmpl, err := bioqr.FileSensor{Path: finger}.Capture(ctx)
			if err != nil {
				return err
			}
			cl := bioqr.NewClient(server, op.Config)
			defer cl.Close()
			raw, err := cl.SettlementCredential(ctx)
			if err != nil {
				return fmt.Errorf("phone enrol: settlement credential: %w", err)
			}
			stc, err := bioqr.ParseCredential(raw)
			if err != nil {
				return err
			}
			if err := stc.Verify(op.rootCert, bioqr.KindSettlement, bioqrNow()); err != nil {
				return fmt.Errorf("phone enrol: settlement credential: %w", err)
			}
			u, err := bioqr.NewSecureUnit(filepath.Join(*stateDir, bioqrUnitFile), bioqr.KindPhone, pki.ECDSAP256, enc)
			if err != nil {
				return err
			}
			er, err := bioqr.NewEnrolRequest(u, stc, id, "qshield phone", tmpl, accounts)
			clear(tmpl)
			if err != nil {
				return err
			}
			er.Consent = codes
			c, err := cl.Enrol(ctx, er)
			if err != nil {
				return fmt.Errorf("phone enrol: %w", err)
			}
			if err := c.Install(u, op.rootCert); err != nil {
				return err
			}
			ph := &bioqr.Phone{Unit: u}
			if err := ph.SetAccounts(accounts); err != nil {
				return err
			}
			if err := bioqrWriteJSON(filepath.Join(*stateDir, bioqrPhoneFile), bioqrPhoneConfigFile{Server: server, ID: id}); err != nil {
				return err
			}
			return g.Report(map[string]any{"phone": id, "serial": u.Credential().Serial.Text(16), "accounts": accounts},
				fmt.Sprintf("phone %s enrolled (serial %s) for %s; the fingerprint is kept sealed at the settlement server", id, u.Credential().Serial.Text(16), strings.Join(accounts, ", ")))
		},
	}
	f := cmd.Flags()
	serverFlag(f, &server, "")
	adminFlag(f, &admin, "operator-dir")
	f.StringVar(&id, "id", "", "phone identifier (device serial)")
	f.StringVar(&finger, "finger", "", "owner's fingerprint, an ISO/IEC 19794-2 file")
	f.StringSliceVar(&accounts, "account", nil, "ledger account(s) this phone may pay from")
	f.StringSliceVar(&codes, "enrolment-code", nil, "the account holders' consent: one code per --account, in the same order (qshield admin enrolment-code --account ID)")
	for _, n := range []string{"admin", "id", "finger", "account", "enrolment-code"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

func bioqrPhonePay(g *Globals, stateDir *string) *cobra.Command {
	var image, account, finger, out string
	cmd := &cobra.Command{
		Use:   "pay",
		Short: "Scan a consumption QR image, verify the POS and write the payment QR PNG (steps 4–7)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			enc, err := bioqrPhonePIN()
			if err != nil {
				return err
			}
			u, err := bioqr.OpenSecureUnit(filepath.Join(*stateDir, bioqrUnitFile), enc)
			if err != nil {
				return err
			}
			var cfg bioqrPhoneConfigFile
			if err := bioqrReadJSON(filepath.Join(*stateDir, bioqrPhoneFile), &cfg); err != nil {
				return err
			}
			tc, err := bioqrDeviceTLS(u, cfg.Server)
			if err != nil {
				return err
			}
			cl := bioqr.NewClient(cfg.Server, tc)
			defer cl.Close()
			ph := &bioqr.Phone{Unit: u, Revocation: cl}
			text, err := bioqrReadQR(image)
			if err != nil {
				return err
			}
			c, err := ph.ReadConsumption(ctx, text)
			if err != nil {
				return fmt.Errorf("phone pay: %w", err)
			}
			if account == "" {
				accts, err := ph.Accounts()
				if err != nil {
					return err
				}
				account = accts[0]
			}
			var probe []byte
			if finger != "" {
				if probe, err = (bioqr.FileSensor{Path: finger}).Capture(ctx); err != nil {
					return err
				}
			}
			qr, err := ph.Pay(ctx, c, account, probe)
			if err != nil {
				return err
			}
			png, info, err := qrimg.EncodePNG(qr, qrimg.M, bioqrQRScale)
			if err != nil {
				return err
			}
			if out == "" {
				out = filepath.Join(*stateDir, "payment.png")
			}
			if err := os.WriteFile(out, png, 0o644); err != nil {
				return fmt.Errorf("phone pay: %w", err)
			}
			cur, err := money.Lookup(c.Currency)
			if err != nil {
				return err
			}
			return g.Report(map[string]any{"png": out, "merchant": c.Name, "amount": c.Amount, "currency": cur.Code, "account": account,
				"qr_version": info.Version, "characters": len(qr), "fingerprint_in_qr": probe != nil},
				fmt.Sprintf("pay %s to %s (%s) from %s: payment QR written to %s (version %d)%s", money.Amount{Minor: c.Amount, Currency: cur}, c.Name,
					c.City, account, out, info.Version, map[bool]string{true: ", fingerprint included", false: ", put your finger on the POS sensor"}[probe != nil]))
		},
	}
	f := cmd.Flags()
	f.StringVar(&image, "image", "", "consumption QR image (PNG, JPEG or GIF)")
	f.StringVar(&account, "account", "", "paying account (default: the first enrolled)")
	f.StringVar(&finger, "finger", "", "ISO/IEC 19794-2 file from the phone's own sensor (optional)")
	f.StringVar(&out, "out", "", "PNG output (default DIR/payment.png)")
	_ = cmd.MarkFlagRequired("image")
	return cmd
}

// --- helpers ---

type bioqrOperator struct {
	*tls.Config
	rootCert *x509.Certificate
}

// bioqrOperatorTLS loads the operator's credentials (--admin).
func bioqrOperatorTLS(dir, server string) (*bioqrOperator, error) {
	if _, err := bioqrServerName(server); err != nil {
		return nil, err
	}
	tc, root, err := adminTLS(dir, server)
	if err != nil {
		return nil, err
	}
	return &bioqrOperator{Config: tc, rootCert: root}, nil
}

// bioqrDeviceTLS is a mutual-TLS client configuration presenting the unit's
// certificate and trusting only the unit's CA root.
func bioqrDeviceTLS(u *bioqr.SecureUnit, server string) (*tls.Config, error) {
	cert, err := u.TLSCertificate()
	if err != nil {
		return nil, err
	}
	host, err := bioqrServerName(server)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(u.Root())
	return pki.TLSClientConfig(pool, host, cert), nil
}

func bioqrServerName(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return "", Usagef("--server %q: want an https:// URL", server)
	}
	return u.Hostname(), nil
}

// bioqrPOSSealKey returns the key sealing the POS unit: QSHIELD_POS_KEY, or a
// random key in the state directory (created when create is set).
func bioqrPOSSealKey(dir string, create bool) (pki.KeyEncryptor, error) {
	if os.Getenv(bioqrEnvPOSKey) != "" {
		return pki.EnvKey(bioqrEnvPOSKey)
	}
	path := filepath.Join(dir, bioqrSealFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		k := make([]byte, 32)
		if _, err := bioqrRandRead(k); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("pos: create %s: %w", path, err)
		}
		_, werr := f.WriteString(hex.EncodeToString(k) + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, werr
		}
		return pki.RawKey(k)
	}
	if err != nil {
		return nil, fmt.Errorf("pos: unit key: %w", err)
	}
	return pki.KeyFromString(strings.TrimSpace(string(b)))
}

func bioqrPhonePIN() (pki.KeyEncryptor, error) {
	pin := os.Getenv(bioqrEnvPhonePIN)
	if len(pin) < pki.MinPassphraseLen {
		return nil, fmt.Errorf("set %s to the phone's PIN or passphrase (at least %d characters)", bioqrEnvPhonePIN, pki.MinPassphraseLen)
	}
	return pki.PassphraseKey([]byte(pin)), nil
}

func bioqrOpenPOS(dir string) (*bioqr.POS, *bioqrPOSConfigFile, *bioqr.Client, error) {
	enc, err := bioqrPOSSealKey(dir, false)
	if err != nil {
		return nil, nil, nil, err
	}
	u, err := bioqr.OpenSecureUnit(filepath.Join(dir, bioqrUnitFile), enc)
	if err != nil {
		return nil, nil, nil, err
	}
	var cfg bioqrPOSConfigFile
	if err := bioqrReadJSON(filepath.Join(dir, bioqrPOSConfig), &cfg); err != nil {
		return nil, nil, nil, err
	}
	tc, err := bioqrDeviceTLS(u, cfg.Server)
	if err != nil {
		return nil, nil, nil, err
	}
	cl := bioqr.NewClient(cfg.Server, tc)
	p := &bioqr.POS{Unit: u, Merchant: cfg.Merchant, Store: bioqr.FileRandStore{Path: filepath.Join(dir, bioqrRandCodes)}, Settler: cl}
	raw, err := cl.SettlementCredential(context.Background())
	if err != nil {
		cl.Close()
		return nil, nil, nil, fmt.Errorf("pos: settlement credential: %w", err)
	}
	if err := p.SetSettlementCredential(raw); err != nil {
		cl.Close()
		return nil, nil, nil, err
	}
	return p, &cfg, cl, nil
}

func bioqrReadQR(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return qrimg.DecodePNG(f, bioqrMaxImage)
}

func bioqrWriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, b, 0o600, true)
}

func bioqrReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w (run init/enrol first?)", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func bioqrNow() time.Time { return time.Now() }

func bioqrRandRead(b []byte) (int, error) { return rand.Read(b) }
