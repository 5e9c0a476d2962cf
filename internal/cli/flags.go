package cli

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
)

// The command vocabulary (docs/CLI.md): one flag name and at most one
// environment variable per concept.
const (
	// EnvServer is the platform's URL for every client command (--server).
	EnvServer = "QSHIELD_SERVER"
	// EnvAdmin is the operator's credential directory (--admin).
	EnvAdmin = "QSHIELD_ADMIN"
	// EnvDB is the database (--db).
	EnvDB = "QSHIELD_DB"
	// DefaultServer is --server when neither the flag nor EnvServer is set.
	DefaultServer = "https://localhost:8443"
)

// Device kinds, each with its own default --dir so that two kinds of
// device can never share a directory by default (a QMSP phone and a
// watermark phone once both defaulted to ./phone, and enrolling one
// overwrote the other's key).
const (
	KindQMSPPhone        = "qmsp-phone"
	KindQMSPGateway      = "qmsp-gateway"
	KindWatermarkPhone   = "watermark-phone"
	KindWatermarkScanner = "watermark-scanner"
	KindBioQRPOS         = "bioqr-pos"
	KindBioQRPhone       = "bioqr-phone"
)

// DefaultDir is the default --dir of a device kind: ./KIND.
func DefaultDir(kind string) string { return "." + string(filepath.Separator) + kind }

// serverFlag registers --server (env QSHIELD_SERVER) on fs, with --url as a
// deprecated alias.
func serverFlag(fs *pflag.FlagSet, p *string, what string) {
	def := os.Getenv(EnvServer)
	if def == "" {
		def = DefaultServer
	}
	if what == "" {
		what = "the qshield server's URL"
	}
	fs.StringVar(p, "server", def, what+" (env "+EnvServer+")")
	alias(fs, p, "url", "server", def)
}

// dirFlag registers --dir with the kind's default directory; oldNames are
// deprecated aliases (--state-dir, --device, …).
func dirFlag(fs *pflag.FlagSet, p *string, kind, what string, oldNames ...string) {
	def := ""
	if kind != "" {
		def = DefaultDir(kind)
	}
	fs.StringVar(p, "dir", def, what)
	for _, o := range oldNames {
		alias(fs, p, o, "dir", def)
	}
}

// adminFlag registers --admin (env QSHIELD_ADMIN): the operator's
// credential directory, with the old names as deprecated aliases. When
// neither is given, the root command fills in the directory `qshield serve`
// uses with the same --db (defaultAdmin).
func adminFlag(fs *pflag.FlagSet, p *string, oldNames ...string) {
	fs.StringVar(p, "admin", os.Getenv(EnvAdmin), "the operator's credentials: a directory holding ca.pem, admin.pem and admin-key.pem, as qshield serve writes into its --dir (env "+EnvAdmin+"; default: the server's directory for --db)")
	for _, o := range oldNames {
		alias(fs, p, o, "admin", os.Getenv(EnvAdmin))
	}
}

// ServerDir is the directory `qshield serve` keeps its state in when it
// is given no --dir: beside the SQLite database of dsn (the default one when
// dsn is empty), or the user's configuration directory for PostgreSQL.
func ServerDir(dsn string) (string, error) {
	if sqldb.IsPostgres(dsn) {
		base, err := os.UserConfigDir()
		if err != nil {
			return "", err
		}
		return filepath.Join(base, "qshield"), nil
	}
	if dsn == "" {
		var err error
		if dsn, err = sqldb.DefaultPath(); err != nil {
			return "", err
		}
	}
	return filepath.Dir(dsn), nil
}

// defaultAdmin gives an unset --admin of cmd its default: the server's
// directory for the same --db, so that on one machine `qshield serve` and
// the operator's commands need no flags.
func defaultAdmin(g *Globals, cmd *cobra.Command) error {
	f := cmd.Flags().Lookup("admin")
	if f == nil || f.Value.String() != "" {
		return nil
	}
	dir, err := ServerDir(g.DB)
	if err != nil {
		return nil // left empty: the command says --admin is required
	}
	return f.Value.Set(dir)
}

// deprecatedFor annotates a hidden alias with the flag that replaced it.
const deprecatedFor = "qshield-deprecated-for"

// alias registers a hidden, deprecated flag old writing into the same
// variable as the flag now. Using it prints a warning on stderr
// (warnDeprecated; pflag's own deprecation notice would reach stdout
// through cobra and spoil --json output).
func alias(fs *pflag.FlagSet, p *string, old, now, def string) {
	fs.StringVar(p, old, def, "deprecated: use --"+now)
	_ = fs.MarkHidden(old)
	_ = fs.SetAnnotation(old, deprecatedFor, []string{now})
}

// warnDeprecated tells on stderr which deprecated flags cmd was given.
func warnDeprecated(g *Globals, cmd *cobra.Command) {
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if now, ok := f.Annotations[deprecatedFor]; ok && len(now) == 1 {
			fmt.Fprintf(g.Err, "qshield: --%s is deprecated, use --%s\n", f.Name, now[0])
		}
	})
}

// adminTLS loads the operator's credentials from dir (ca.pem, admin.pem,
// admin-key.pem) as a TLS 1.3 client configuration for server.
func adminTLS(dir, server string) (*tls.Config, *x509.Certificate, error) {
	if dir == "" {
		return nil, nil, Usagef("--admin is required (the server's --dir, holding ca.pem, admin.pem and admin-key.pem; env %s)", EnvAdmin)
	}
	root, pool, err := loadRoot(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, nil, fmt.Errorf("--admin %s: %w", dir, err)
	}
	cert, err := platform.LoadAdmin(dir) // the key is sealed: QSHIELD_ADMIN_PASSPHRASE or admin-seal.key
	if err != nil {
		return nil, nil, fmt.Errorf("--admin %s: admin certificate: %w", dir, err)
	}
	host, err := serverName(server)
	if err != nil {
		return nil, nil, err
	}
	return pki.TLSClientConfig(pool, host, cert), root, nil
}

// loadRoot reads a PEM CA certificate file into a pool.
func loadRoot(path string) (*x509.Certificate, *x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	root, err := pki.ParseCertPEM(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return root, pool, nil
}

// serverName is the host name a --server URL's certificate must carry.
func serverName(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || u.Hostname() == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", Usagef("--server %q: want a URL such as %s", server, DefaultServer)
	}
	return u.Hostname(), nil
}

// parseAmount reads --amount (major units, e.g. 12.34) in the currency
// named by --currency: an amount to pay or charge, so greater than zero.
// Its errors name the flags and are usage errors (exit status 2).
func parseAmount(amount, currency string) (money.Amount, error) {
	a, err := money.ParsePositive(amount, currency)
	if err != nil {
		return money.Amount{}, Usage(&Error{Code: ErrorCode(err), Err: fmt.Errorf("--amount %q --currency %s: %w", amount, currency, err)})
	}
	return a, nil
}
