// Package platform wires qshield's server together: the database, the
// platform CA, the audit trail, the ledger and the HTTPS server with every
// scheme's handlers. `qshield serve` and `qshield demo` both use it, so the
// demo exercises exactly what a deployment runs.
//
// Key material on disk. The CA's private key is stored in the database sealed
// with a key from QSHIELD_CA_KEY (a 32-byte key in hex/base64, or a passphrase
// run through argon2id). When the variable is unset, the key is derived from
// the platform master key (QSHIELD_PLATFORM_KEY, or a random platform.key
// created once in the secret directory, mode 0600) — or read from ca-seal.key
// where an older installation created one — so that a stolen database alone
// does not reveal the CA key. Nodes of one platform get the same
// QSHIELD_PLATFORM_KEY from a secret store; everything else they share is in
// the database.
// Key files (platform.key, an older ca-seal.key, the stand-alone key
// manager's kme-master.key) live in QSHIELD_SECRET_DIR when it is set, else
// in DefaultSecretDir(state directory) — "<dir>-secrets", beside the data
// directory, never in it. Files of an older layout found in the state
// directory are moved there when first opened; two different copies are an
// error (ErrSecretsDiffer). Open warns when QSHIELD_SECRET_DIR puts them
// beside the SQLite database they seal.
//
// The state directory also receives the files a client needs to talk to the
// server: ca.pem (the root to trust) and the admin credential admin.pem /
// admin-key.pem (mode 0600), created once — not on every start — and
// replaced only by `qshield admin rotate`. Its key is always sealed: under
// QSHIELD_ADMIN_PASSPHRASE when that is set, else under a random
// admin-seal.key (AdminSealKeyFile) in the secret directory, so that a copy
// of the data directory carries no usable admin key. A plain key of an
// older layout is sealed in place when first read.
//
// Authorization: every route is registered on one authz.Router with its
// policy (trust.go); see SECURITY.md.
package platform

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/qshield/qshield/watermark"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/consent"
	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/internal/console"
	"github.com/qshield/qshield/internal/metrics"
	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/internal/wallet"
	"github.com/qshield/qshield/keycharge"
	"github.com/qshield/qshield/kme"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/selfverify"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/watermark/service"
)

// CAName is the name of the platform CA in the pki tables.
const CAName = "platform"

// Config configures a platform.
type Config struct {
	// DB is the database DSN ("" = the default SQLite file).
	DB string
	// StateDir holds ca.pem and the admin client certificate (its sealing
	// keys are in its secret directory, see DefaultSecretDir);
	// "" means the directory of the SQLite file, or ~/.config/qshield for PostgreSQL.
	StateDir string
	// InsecureHTTP serves plain HTTP (only for use behind a TLS proxy).
	InsecureHTTP bool
	// Hosts are extra DNS names or IPs for the server certificate
	// (localhost and 127.0.0.1 are always included).
	Hosts []string
	Log   *slog.Logger
	// QKD configures the simulated link feeding the key managers.
	QKD QKDConfig
	// Audit configures the audit log's signed checkpoints.
	Audit AuditConfig
	// Trust configures authorization: trusted proxies, rate limits,
	// post-quantum enforcement (see TrustConfig).
	Trust TrustConfig
	// MaxConnAge closes kept-alive connections older than this after their
	// next response (0: DefaultMaxConnAge; negative: no limit).
	MaxConnAge time.Duration

	// DBOptions size the database pool and set its timeouts (zero: sqldb's defaults).
	DBOptions sqldb.Options
	// HTTP limits of the node (zero: the server package's defaults).
	MaxInFlight, MaxQueue, MaxConns int
	QueueTimeout, RequestTimeout    time.Duration
	// PublicURL is the origin people use to reach the platform, e.g.
	// "https://pay.example.com" (default DefaultPublicURL); the console's
	// passkeys are bound to its host name.
	PublicURL string
	// WatermarkWindow is how far a watermark share's time slot may lie from
	// the server's clock (zero: watermark.DefaultWindow, ±2 s). Widen it only
	// where payer and scanner are slow programs run one after the other
	// (the CLI's scripts under the race detector).
	WatermarkWindow watermark.Window
	// WatermarkChallengesOff turns scanner challenges off (node setting
	// watermark_challenges=false). They are on by default: the watermark
	// service gets a challenge master key derived from the platform key
	// (Secret("watermark-challenge")), scanners (the CLI's, and the browser
	// scanner page, which shows its challenge beside the camera view) fetch
	// theirs at GET /v1/watermark/challenge-key, and a claim pays only with
	// stamps bound to the submitting scanner's challenge, which the phone
	// (the CLI with --challenge, the browser wallet's front camera) reads.
	// Off, codes pay by the time binding alone: a close video relayed live
	// to another scanner pays too. The platform's screen page
	// (/watermark/screen/) reads the challenge with the phone's front camera
	// and posts it to its server (watermark/service, screen.go).
	WatermarkChallengesOff bool
	// ResultsDir holds experiment results the console shows ("" = none).
	ResultsDir string
}

// DefaultMaxConnAge bounds how long one client connection is kept alive.
const DefaultMaxConnAge = 10 * time.Minute

// Platform is an opened platform, ready to serve.
type Platform struct {
	Config   Config
	DB       *sqldb.DB
	CA       *pki.CA
	Audit    *audit.Log
	Ledger   *ledger.Ledger
	Server   *server.Server
	StateDir string
	// ServerTLS is the server's TLS configuration (nil with InsecureHTTP).
	ServerTLS *tls.Config
	// AdminCert is a client certificate for the platform API.
	AdminCert tls.Certificate
	// KME is the pair of key managers (site A: platform, site B: supermarket).
	KME *kme.Pair
	// Consent is the account holders' enrolment codes, which every scheme
	// that binds a payer device to an account requires.
	Consent *consent.Store
	// QMSP is seed 000's services.
	QMSP *QMSP
	// BioQR is seed 004's settlement server.
	BioQR *bioqr.Settlement
	// SelfVerify is seed 002's network operator.
	SelfVerify *selfverify.Operator
	// Watermark is seed 003's token service.
	Watermark *service.Service
	// KeyCharge is seed 001's key management platform and service centre.
	KeyCharge *keycharge.QKMP
	// Publisher signs and publishes the audit log's checkpoints.
	Publisher *audit.Publisher
	auditVKey string // the checkpoint verifier key (signed-note), for the console
	// Router registers every route with its authorization policy.
	Router *authz.Router
	// Wallet is the payers' browser wallet (/wallet/) and its signed requests.
	Wallet *wallet.Service

	// Metrics is the node's Prometheus registry, served at /metrics.
	Metrics *metrics.Metrics
	// Console is the operator console (nil with InsecureHTTP).
	Console *console.Console
	// LinkMonitor samples the QKD link for the console (nil without a link).
	LinkMonitor *console.LinkMonitor

	master    []byte
	classical atomic.Int64

	closers []func() error
	// node names this process in the leases of its duties (see duty).
	node string
}

// Open opens the database, the CA, the audit trail and the ledger and builds
// the server with all routes; it does not listen yet (see Serve).
func Open(ctx context.Context, cfg Config) (_ *Platform, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	p := &Platform{Config: cfg, node: nodeName()}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	p.DB, err = sqldb.OpenWith(ctx, cfg.DB, cfg.DBOptions)
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, p.DB.Close)
	p.StateDir, err = StateDir(cfg.StateDir, p.DB)
	if err != nil {
		return nil, err
	}
	p.master, err = loadMaster(p.StateDir)
	if err != nil {
		return nil, err
	}
	p.warnSecretsBesideData()
	p.Audit, err = OpenAudit(ctx, p.DB)
	if err != nil {
		return nil, fmt.Errorf("platform: audit trail: %w", err)
	}
	p.CA, err = OpenCA(ctx, p.DB, p.StateDir)
	if err != nil {
		return nil, err
	}
	p.CA = p.CA.WithAudit(p.Audit, "platform")
	tc, err := newTLSCache(ctx, p)
	if err != nil {
		return nil, err
	}
	p.CA = p.CA.WithTLSCache(tc)
	lopts := []ledger.Option{ledger.WithAudit(p.Audit)}
	if p.DB.Dialect == sqldb.Postgres {
		// The expiry of pending transfers runs as a duty, on one node at a
		// time (startLedgerExpiry).
		lopts = append(lopts, ledger.WithSweepInterval(0))
	}
	p.Ledger, err = ledger.Open(ctx, p.DB, lopts...)
	if err != nil {
		return nil, fmt.Errorf("platform: ledger: %w", err)
	}
	p.closers = append(p.closers, p.Ledger.Close)

	maxAge := cfg.MaxConnAge
	if maxAge == 0 {
		maxAge = DefaultMaxConnAge
	}
	p.Metrics = metrics.New()
	p.Metrics.AddDB(p.DB.DB)
	p.Metrics.AddLedger(p.DB.DB)
	if p.DB.Dialect == sqldb.Postgres {
		p.startLedgerExpiry(ctx)
	}
	idem, err := httpx.OpenSQLStore(ctx, p.DB, 0)
	if err != nil {
		return nil, fmt.Errorf("platform: %w", err)
	}
	p.closers = append(p.closers, idem.Close)
	scfg := server.Config{
		InsecureHTTP: cfg.InsecureHTTP, Log: cfg.Log, Metrics: p.Metrics,
		MaxInFlight: cfg.MaxInFlight, MaxQueue: cfg.MaxQueue, MaxConns: cfg.MaxConns,
		QueueTimeout: cfg.QueueTimeout, RequestTimeout: cfg.RequestTimeout,
		MaxConnAge: max(maxAge, 0), Principal: requestPrincipal,
	}
	if !cfg.InsecureHTTP {
		dns, ips := hosts(cfg.Hosts)
		cert, err := p.CA.ServiceTLS(ctx, "platform-server", pki.IssueRequest{Role: pki.RoleServer, CommonName: "qshield-platform", DNSNames: dns, IPAddresses: ips})
		if err != nil {
			return nil, fmt.Errorf("platform: server certificate: %w", err)
		}
		// Pages for people (QR displays) are fetched without client
		// certificates; API routes demand one themselves.
		p.ServerTLS = p.countHandshakes(p.CA.ServerTLSOptionalClient(ctx, cert))
		scfg.TLS = p.ServerTLS
	}
	if err := p.adminCredential(ctx); err != nil {
		return nil, err
	}
	if err := p.writeClientFiles(); err != nil {
		return nil, err
	}
	p.Server, err = server.New(scfg)
	if err != nil {
		return nil, err
	}
	p.Server.AddCheck(server.Check{Name: "database", Func: p.DB.PingContext})
	p.Server.AddCheck(server.Check{Name: "migrations", Func: p.DB.CheckMigrations})
	api := &server.LedgerAPI{Ledger: p.Ledger, Idempotency: &httpx.Idempotency{Store: idem}}
	if err := p.openWallet(ctx); err != nil {
		return nil, err
	}
	if err := p.newRouter(ctx); err != nil {
		return nil, err
	}
	p.Router.Register(api.Routes()...)
	p.certRoutes()
	if err := p.startAudit(ctx); err != nil {
		return nil, err
	}
	if err := p.startQuantum(ctx, cfg.QKD); err != nil {
		return nil, err
	}
	if err := p.startConsent(ctx); err != nil {
		return nil, err
	}
	if err := p.startQMSP(ctx); err != nil {
		return nil, err
	}
	if err := p.startBioQR(ctx); err != nil {
		return nil, err
	}
	if err := p.startSelfVerify(ctx); err != nil {
		return nil, err
	}
	if err := p.startWatermark(ctx); err != nil {
		return nil, err
	}
	if err := p.startKeyCharge(ctx); err != nil {
		return nil, err
	}
	if err := p.startConsole(ctx); err != nil {
		return nil, err
	}
	p.startWallet()
	return p, nil
}

// AdminName is the common name (a display name) of the platform's
// administrative client certificate; the admin is recognised by its
// principal kind, never by this name.
const AdminName = "qshield-admin"

// ClientTLS returns a TLS configuration for a client of this platform
// presenting cert (use p.AdminCert for the administrative API).
func (p *Platform) ClientTLS(ctx context.Context, cert tls.Certificate) *tls.Config {
	if p.ServerTLS == nil {
		return nil
	}
	return p.CA.ClientTLS(ctx, cert, "localhost")
}

// Serve listens on ln until ctx is cancelled.
func (p *Platform) Serve(ctx context.Context, ln net.Listener) error {
	return p.Server.Run(ctx, ln)
}

// URL is the base URL for a listener address.
func (p *Platform) URL(addr net.Addr) string { return LocalURL(addr, p.ServerTLS == nil) }

// LocalURL is the base URL of a listener on this machine: https (http when
// insecure) and "localhost" for a loopback or unspecified address.
func LocalURL(addr net.Addr, insecure bool) string {
	scheme := "https"
	if insecure {
		scheme = "http"
	}
	host := addr.String()
	if ta, ok := addr.(*net.TCPAddr); ok && (ta.IP.IsLoopback() || ta.IP.IsUnspecified()) {
		host = fmt.Sprintf("localhost:%d", ta.Port)
	}
	return scheme + "://" + host
}

// Close releases everything Open acquired, in reverse order.
func (p *Platform) Close() error {
	var errs []error
	for i := len(p.closers) - 1; i >= 0; i-- {
		if err := p.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	p.closers = nil
	return errors.Join(errs...)
}

// StateDir resolves the state directory: dir, or the directory of the SQLite
// file, or ~/.config/qshield for PostgreSQL; it is created (mode 0700).
func StateDir(dir string, db *sqldb.DB) (string, error) {
	if dir == "" {
		if db.Path != "" {
			dir = filepath.Dir(db.Path)
		} else {
			base, err := os.UserConfigDir()
			if err != nil {
				return "", fmt.Errorf("platform: no state directory: %w", err)
			}
			dir = filepath.Join(base, "qshield")
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("platform: create state directory: %w", err)
	}
	return dir, nil
}

// OpenCA opens (or creates) the platform CA in db, its key sealed under
// QSHIELD_CA_KEY or dir/ca-seal.key.
func OpenCA(ctx context.Context, db *sqldb.DB, dir string) (*pki.CA, error) {
	keyEnc, err := caSealKey(dir)
	if err != nil {
		return nil, err
	}
	ca, err := pki.OpenOrCreateCA(ctx, db, CAName, pki.Options{}, keyEnc)
	if err != nil {
		return nil, fmt.Errorf("platform: certification authority: %w", err)
	}
	return ca, nil
}

// caSealKey returns the key sealing the CA private key, first found of:
// QSHIELD_CA_KEY; dir/ca-seal.key when it exists (installations made before
// the CA key was derived); a key derived (HKDF) from the platform master
// key (QSHIELD_PLATFORM_KEY, or dir/platform.key). With the last, nodes
// given the same QSHIELD_PLATFORM_KEY share the CA without another secret.
func caSealKey(dir string) (pki.KeyEncryptor, error) {
	if os.Getenv("QSHIELD_CA_KEY") != "" {
		return pki.EnvKey("QSHIELD_CA_KEY")
	}
	sd, err := secretDir(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(sd, "ca-seal.key")
	b, err := os.ReadFile(path)
	if err == nil { // a key, or a passphrase an operator put there
		return pki.KeyFromString(strings.TrimSpace(string(b)))
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("platform: read %s: %w", path, err)
	}
	k, err := SecretIn(dir, "ca-seal")
	if err != nil {
		return nil, err
	}
	return pki.RawKey(k)
}

func hosts(extra []string) (dns []string, ips []net.IP) {
	dns = []string{"localhost"}
	ips = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	for _, h := range extra {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if h != "" {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

func (p *Platform) writeClientFiles() error {
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.CA.Certificate().Raw})
	return fsutil.WriteFileAtomic(filepath.Join(p.StateDir, "ca.pem"), caPEM, 0o644, true)
}

// LoadClientTLS builds a client TLS config from a state directory's ca.pem,
// admin.pem and admin-key.pem (what `qshield serve` writes).
func LoadClientTLS(dir string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, fmt.Errorf("platform: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("platform: %s/ca.pem holds no certificate", dir)
	}
	cert, err := loadAdminFiles(dir)
	if err != nil {
		return nil, fmt.Errorf("platform: admin certificate: %w", err)
	}
	return pki.TLSClientConfig(pool, "localhost", cert), nil
}

// EnvAuditKey names the environment variable holding the audit trail's HMAC
// key (hex or base64, ≥ 32 bytes). Every process writing to the trail must
// use the same key.
const EnvAuditKey = "QSHIELD_AUDIT_KEY"

// OpenAudit opens the audit trail, keyed with QSHIELD_AUDIT_KEY when it is set.
func OpenAudit(ctx context.Context, db *sqldb.DB) (*audit.Log, error) {
	v := strings.TrimSpace(os.Getenv(EnvAuditKey))
	if v == "" {
		return audit.Open(ctx, db)
	}
	key, err := hex.DecodeString(v)
	if err != nil {
		if key, err = base64.StdEncoding.DecodeString(v); err != nil {
			return nil, fmt.Errorf("platform: %s is neither hex nor base64", EnvAuditKey)
		}
	}
	return audit.OpenWithOptions(ctx, db, audit.Options{Key: key})
}
