// Package lab holds the test and demo harnesses that start a whole scheme
// on loopback: the keycharge lab (StartKeycharge: QKMP and QSSC over mutual
// TLS with a KME pair) and the bioqr rig (NewBioqr: settlement server, POS
// and phone certified by one CA on one ledger; LoadTemplates for their
// fingerprints), used by the libraries' tests, the CLI tests, the demo
// (internal/scenario, internal/demo) and the experiments. Harnesses live
// here, not in the library packages, so that a library carries no test
// scaffolding.
package lab

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/keycharge"
	"github.com/qshield/qshield/keycharge/device"
	"github.com/qshield/qshield/kme"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/progress"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/sqldb"
)

// KeychargeConfig configures a Keycharge lab: a complete, self-contained seed 001 set-up on
// loopback (the demo, the experiment and the tests all use it, so they
// exercise the real HTTPS and ETSI 014 paths).
type KeychargeConfig struct {
	DB    *sqldb.DB
	CA    *pki.CA     // ECDSA P-256 (TLS)
	Audit audit.Trail // records every change in its transaction; read back for the admin audit view
	// KeyBits is the KMEs' unit, their max_key_size and the charger's key
	// size (default 65536 bits = 8 KiB).
	KeyBits int
	// PoolUnits is each KME's capacity in units (default 8192 = 64 MiB at 8 KiB).
	PoolUnits int
	// ChargerSAE is the charger's name (client certificate CN, SAE ID);
	// default "charger-1". QSSCSAE defaults to "qssc".
	ChargerSAE, QSSCSAE string
	Progress            *progress.Factory
	Log                 *slog.Logger
}

// Keycharge is a running QKMP + QSSC (HTTPS, mutual TLS) and a KME pair.
type Keycharge struct {
	Config  KeychargeConfig
	QKMP    *keycharge.QKMP
	Pair    *kme.Pair
	URL     string
	Admin   *keycharge.Client // certificate "qshield-admin"
	Charger *keycharge.Client // certificate ChargerSAE
	Phone   *keycharge.Client // no client certificate
	KMEA    *etsi014.Client   // the charger, master SAE at site A
	QSSCKME *etsi014.Client   // the QSSC, slave SAE at site B

	AdminCert, ChargerCert tls.Certificate
	ChargerKMETLS          *tls.Config
	stop                   context.CancelFunc
	done                   chan error
}

// KeychargeServerTLS adapts the CA's mutual-TLS server configuration so that a
// client certificate is optional (the channel routes authenticate devices
// by signature; the other routes demand a certificate themselves) but
// verified against the CA, revocation included, whenever one is presented.
func KeychargeServerTLS(ctx context.Context, ca *pki.CA, cert tls.Certificate) *tls.Config {
	c := ca.ServerTLS(ctx, cert)
	verify := c.VerifyConnection
	c.ClientAuth = tls.VerifyClientCertIfGiven
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		return verify(cs)
	}
	return c
}

// StartKeycharge starts the lab; Close stops it.
func StartKeycharge(ctx context.Context, cfg KeychargeConfig) (_ *Keycharge, err error) {
	if cfg.DB == nil || cfg.CA == nil || cfg.Audit == nil {
		return nil, fmt.Errorf("%w: lab needs DB, CA and Audit", keycharge.ErrInvalid)
	}
	if cfg.KeyBits <= 0 {
		cfg.KeyBits = 65536
	}
	if cfg.PoolUnits <= 0 {
		cfg.PoolUnits = 8192
	}
	if cfg.ChargerSAE == "" {
		cfg.ChargerSAE = "charger-1"
	}
	if cfg.QSSCSAE == "" {
		cfg.QSSCSAE = "qssc"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	l := &Keycharge{Config: cfg, done: make(chan error, 1)}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	master := make([]byte, 32)
	suffix := make([]byte, 4)
	rand.Read(master)
	rand.Read(suffix)
	sfx := hex.EncodeToString(suffix)
	l.Pair, err = kme.StartPair(ctx, cfg.DB, kme.PairConfig{CA: cfg.CA,
		A:         kme.SiteConfig{KMEID: "KME_QKC_" + sfx, SAEs: []string{cfg.ChargerSAE}},
		B:         kme.SiteConfig{KMEID: "KME_QSSC_" + sfx, SAEs: []string{cfg.QSSCSAE}},
		MasterKey: master, KeySizeBits: cfg.KeyBits, MaxKeySize: cfg.KeyBits, MinKeySize: 64,
		MaxKeyCount: cfg.PoolUnits, MaxKeyPerRequest: 128, SyncGrace: -1, ReconcileEvery: -1, Logger: cfg.Log})
	if err != nil {
		return nil, fmt.Errorf("keycharge: lab KMEs: %w", err)
	}
	if l.ChargerKMETLS, err = l.Pair.ClientTLSAs(ctx, cfg.ChargerSAE, pki.PrincipalCharger); err != nil {
		return nil, err
	}
	qsscTLS, err := l.Pair.ClientTLS(ctx, cfg.QSSCSAE)
	if err != nil {
		return nil, err
	}
	l.KMEA = etsi014.New(l.Pair.AURL, l.ChargerKMETLS)
	l.QSSCKME = etsi014.New(l.Pair.BURL, qsscTLS)
	qkmpKey := make([]byte, 32)
	rand.Read(qkmpKey)
	l.QKMP, err = keycharge.Open(ctx, keycharge.Config{DB: cfg.DB, CA: cfg.CA, Audit: cfg.Audit, MasterKey: qkmpKey, QSSC: l.QSSCKME, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	srvCert, err := cfg.CA.IssueTLS(ctx, pki.RoleServer, "qkmp", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	if l.AdminCert, err = cfg.CA.IssueTLSFor(ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: "qshield-admin", Kind: pki.PrincipalAdmin}); err != nil {
		return nil, err
	}
	if l.ChargerCert, err = cfg.CA.IssueTLSFor(ctx, pki.IssueRequest{Role: pki.RoleApplication, CommonName: cfg.ChargerSAE, Kind: pki.PrincipalCharger, Scheme: "keycharge"}); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(keycharge.Prefix, l.QKMP.Handler())
	srv := &http.Server{Handler: mux, TLSConfig: KeychargeServerTLS(ctx, cfg.CA, srvCert), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 5 * time.Minute, WriteTimeout: 5 * time.Minute, ErrorLog: slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l.URL = "https://" + ln.Addr().String()
	l.stop = func() { _ = srv.Close() }
	go func() {
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			l.done <- err
			return
		}
		l.done <- nil
	}()
	l.Admin = keycharge.NewClient(l.URL, cfg.CA.ClientTLS(ctx, l.AdminCert, "127.0.0.1"))
	l.Charger = keycharge.NewClient(l.URL, cfg.CA.ClientTLS(ctx, l.ChargerCert, "127.0.0.1"))
	l.Phone = keycharge.NewClient(l.URL, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: cfg.CA.RootPool(), ServerName: "127.0.0.1"})
	return l, nil
}

// Close stops the server and the KMEs.
func (l *Keycharge) Close() {
	if l.stop != nil {
		l.stop()
		<-l.done
	}
	for _, c := range []*keycharge.Client{l.Admin, l.Charger, l.Phone} {
		if c != nil {
			c.Close()
		}
	}
	if l.Pair != nil {
		l.Pair.Close()
	}
}

// Fill deposits n bytes of fresh random key (standing in for the QKD link's
// output) into both KMEs.
func (l *Keycharge) Fill(ctx context.Context, n int64) error {
	ub := int64(l.Config.KeyBits / 8)
	for n > 0 {
		count := min((n+ub-1)/ub, 256)
		if err := l.Pair.Deposit(ctx, qkd.RandomKeys(int(count), int(ub))); err != nil {
			return err
		}
		n -= count * ub
	}
	return nil
}

// NewCharger returns a charger of this lab (fault: the test hook, may be nil).
func (l *Keycharge) NewCharger(fault func(string) error) (*keycharge.Charger, error) {
	return keycharge.NewCharger(keycharge.ChargerConfig{Platform: l.Charger, KME: l.KMEA, MasterSAE: l.Config.ChargerSAE, SlaveSAE: l.Config.QSSCSAE,
		KeyBits: l.Config.KeyBits, Progress: l.Config.Progress, Log: l.Config.Log, Fault: fault})
}

// Provision takes a new device through its lifecycle up to active: it is
// manufactured in dir (key pair generated inside), registered, initialised
// (certificate issued for the device's own key, with proof of possession),
// distributed to admin, bound to user and activated. The device is returned
// open.
func Provision(ctx context.Context, admin *keycharge.Client, dir string, info device.Info, pin, puk []byte, opts device.Options, adminName, user string) (*device.Device, error) {
	if err := device.Manufacture(dir, info, pin, puk, opts); err != nil {
		return nil, err
	}
	if _, err := admin.Register(ctx, keycharge.RegisterRequest{Serial: info.Serial, Model: info.Model, Kind: info.Kind}); err != nil {
		return nil, err
	}
	dev, err := device.Open(dir, pin, opts)
	if err != nil {
		return nil, err
	}
	if err := keycharge.Initialise(ctx, admin, dev); err != nil {
		dev.Close()
		return nil, err
	}
	for _, tr := range []keycharge.TransitionRequest{{Action: keycharge.ActDistribute, Administrator: adminName}, {Action: keycharge.ActBind, User: user}, {Action: keycharge.ActActivate}} {
		if _, err := admin.Transition(ctx, info.Serial, tr); err != nil {
			dev.Close()
			return nil, err
		}
	}
	return dev, nil
}

// CopyStore copies a key storage device's directory (from) to to, file by
// file at mode 0600: the clone an attacker makes of a device's storage, for
// the attacks that replay a copied store.
func CopyStore(from, to string) error {
	if err := os.MkdirAll(to, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
