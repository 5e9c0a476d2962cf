package cli

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/selfverify"
	"github.com/qshield/qshield/selfverify/ecqv"
)

// svConn are the flags every self-verified client command shares.
type svConn struct {
	server string
	ca     string
}

// EnvCA names the CA certificate file the self-verified clients trust (--ca).
const EnvCA = "QSHIELD_CA"

func (c *svConn) flags(cmd *cobra.Command) {
	serverFlag(cmd.Flags(), &c.server, "the operator's URL")
	cmd.Flags().StringVar(&c.ca, "ca", os.Getenv(EnvCA), "PEM file of the CA that signs the server certificates (env "+EnvCA+"; default: system roots)")
}

// httpClient trusts --ca (or the system roots), at TLS 1.3.
func (c *svConn) httpClient() (*http.Client, error) {
	var pool *x509.CertPool
	if c.ca != "" {
		pem, err := os.ReadFile(c.ca)
		if err != nil {
			return nil, fmt.Errorf("read --ca: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s holds no PEM certificate", c.ca)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = pki.TLSClientConfig(pool, "")
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

func (c *svConn) operator() (*selfverify.OperatorClient, error) {
	hc, err := c.httpClient()
	if err != nil {
		return nil, err
	}
	return selfverify.NewOperatorClient(c.server, hc)
}

func (c *svConn) vendor(url string) (*selfverify.VendorClient, error) {
	hc, err := c.httpClient()
	if err != nil {
		return nil, err
	}
	return selfverify.NewVendorClient(url, hc)
}

func defaultWallet() string {
	dir := os.Getenv("XDG_DATA_HOME")
	if dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".local", "share")
		}
	}
	return filepath.Join(dir, "qshield", "phone-wallet.json")
}

func saveWallet(path string) func(*selfverify.Wallet) error {
	return func(w *selfverify.Wallet) error {
		b, err := json.MarshalIndent(w, "", "  ")
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		// Durable: the wallet records which chained keys were used, and the
		// phone saves it before sending, so no key is ever used twice.
		return fsutil.WriteFileAtomic(path, b, 0o600, true)
	}
}

func openWallet(path string, api selfverify.OperatorAPI) (*selfverify.User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read wallet (run `qshield phone shop register` first): %w", err)
	}
	w, err := selfverify.ParseWallet(b)
	if err != nil {
		return nil, fmt.Errorf("wallet %s: %w", path, err)
	}
	return selfverify.OpenUser(w, api, selfverify.WithSave(saveWallet(path)))
}

// loadCatalog reads the vendor's catalogue: --catalog (prices in minor
// units, the API's form) and --item id:price[:description] (price in major
// units of currency).
func loadCatalog(file string, items []string, currency string) ([]selfverify.Item, error) {
	var cat []selfverify.Item
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cat); err != nil {
			return nil, fmt.Errorf("catalogue %s: %w", file, err)
		}
	}
	for _, s := range items {
		parts := strings.SplitN(s, ":", 3)
		if len(parts) < 2 {
			return nil, Usagef("--item %q: want id:price[:description]", s)
		}
		price, err := money.ParsePositive(parts[1], currency)
		if err != nil {
			return nil, Usage(&Error{Code: ErrorCode(err), Err: fmt.Errorf("--item %q: price: %w", s, err)})
		}
		it := selfverify.Item{ID: parts[0], Price: price.Minor}
		if len(parts) == 3 {
			it.Description = parts[2]
		}
		cat = append(cat, it)
	}
	if len(cat) == 0 {
		return nil, Usagef("the vendor needs a catalogue: --item id:price[:description] or --catalog file.json")
	}
	return cat, nil
}

// SelfVerifyEnrollCommand is the operator's enrolment step (`qshield
// selfverify enrol`, alias enroll): it binds an identity and role to a ledger
// account in --db and prints the one-time code the phone or vendor registers
// with. It works on the database directly, as the server's administrator.
func SelfVerifyEnrollCommand(g *Globals) *cobra.Command {
	var id, role, account, curveName, svStateDir string
	cmd := &cobra.Command{
		Use:     "enrol",
		Aliases: []string{"enroll"},
		Short:   "Enrol a user or vendor for self-verified registration and print its one-time code",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			db, err := g.OpenDB(ctx)
			if err != nil {
				return err
			}
			defer db.Close()
			led, err := ledger.Open(ctx, db, ledger.WithSweepInterval(0))
			if err != nil {
				return err
			}
			defer led.Close()
			curve, err := ecqv.CurveByName(curveName)
			if err != nil {
				return err
			}
			dir, err := platform.StateDir(svStateDir, db)
			if err != nil {
				return err
			}
			seal, err := platform.OperatorKeySealer(dir)
			if err != nil {
				return err
			}
			key, err := selfverify.LoadOrCreateOperatorKey(ctx, db, curve, seal)
			if err != nil {
				return err
			}
			op, err := selfverify.NewOperator(ctx, db, selfverify.OperatorConfig{Key: key, Ledger: led, Log: g.Log})
			if err != nil {
				return err
			}
			defer op.Close()
			code, err := op.Enroll(ctx, id, role, account)
			if err != nil {
				return err
			}
			return g.Report(map[string]string{"id": id, "role": role, "account": account, "code": code},
				fmt.Sprintf("enrolled %s (%s, account %s); one-time code: %s\n", id, role, account, code))
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "identity")
	cmd.Flags().StringVar(&role, "role", selfverify.RoleUser, "user or vendor")
	cmd.Flags().StringVar(&account, "account", "", "ledger account the identity's money moves through")
	cmd.Flags().StringVar(&curveName, "curve", "P-256", "operator curve when the key is created: P-256 or SM2")
	dirFlag(cmd.Flags(), &svStateDir, "", "the server's directory (its platform.key opens the operator key; default: beside the SQLite file)", "state-dir")
	_ = cmd.MarkFlagRequired("id")
	_ = cmd.MarkFlagRequired("account")
	return cmd
}
