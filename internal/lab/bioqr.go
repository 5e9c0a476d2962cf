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
	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/fingerprint"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
)

// Templates are the fingerprint records a demo or test uses: the owner's
// enrolled template, a genuine probe (another impression of the same finger)
// and an impostor probe (another finger).
type Templates struct {
	Owner, Genuine, Impostor []byte
	Source                   string
}

// FVCDir is where LoadTemplates looks under an FVC2002 directory (the one
// QSHIELD_FINGERPRINT_DATA names, holding DB1_B..DB4_B).
const FVCDir = "DB1_B"

// LoadTemplates reads real FVC2002 records from dataDir (the shared data
// directory: owner finger 101 impression 1, the first of impressions 2–8 the
// matcher accepts, and finger 102 impression 1 as the impostor), or makes
// deterministic synthetic ones when dataDir is "" or holds no records.
func LoadTemplates(dataDir string, m bioqr.Matcher) (Templates, error) {
	if m == nil {
		m = bioqr.NewFingerprintMatcher()
	}
	if dataDir != "" {
		// A directory that was named must hold the data: a typo fails
		// loudly instead of quietly falling back to synthetic prints.
		dir := filepath.Join(dataDir, FVCDir)
		if _, err := os.Stat(filepath.Join(dir, "101_1.iso")); err != nil {
			return Templates{}, fmt.Errorf("lab: %s holds no FVC2002 DB1_B templates: %w", dataDir, err)
		}
		return loadFVC(dir, m)
	}
	return syntheticTemplates(m)
}

func loadFVC(dir string, m bioqr.Matcher) (Templates, error) {
	read := func(f, i int) ([]byte, error) {
		return bioqr.FileSensor{Path: filepath.Join(dir, fmt.Sprintf("%d_%d.iso", f, i))}.Capture(context.Background())
	}
	owner, err := read(101, 1)
	if err != nil {
		return Templates{}, err
	}
	imp, err := read(102, 1)
	if err != nil {
		return Templates{}, err
	}
	for i := 2; i <= 8; i++ {
		g, err := read(101, i)
		if err != nil {
			return Templates{}, err
		}
		if ok, _, err := m.Match(owner, g); err == nil && ok {
			return Templates{Owner: owner, Genuine: g, Impostor: imp, Source: fmt.Sprintf("FVC2002 DB1_B: owner 101_1, probe 101_%d, impostor 102_1", i)}, nil
		}
	}
	return Templates{}, errors.New("lab: the matcher accepts no impression of finger 101 against 101_1")
}

func syntheticTemplates(m bioqr.Matcher) (Templates, error) {
	marshal := func(t *fingerprint.Template) []byte { b, _ := t.MarshalISO(); return b }
	const seed = 20140509 // the patent's filing date
	owner := marshal(fingerprint.Synthetic(seed, 1, 1))
	imp := marshal(fingerprint.Synthetic(seed, 2, 1))
	for i := 2; i <= 8; i++ {
		g := marshal(fingerprint.Synthetic(seed, 1, i))
		if ok, _, err := m.Match(owner, g); err == nil && ok {
			return Templates{Owner: owner, Genuine: g, Impostor: imp, Source: fmt.Sprintf("synthetic: finger 1 impressions 1 and %d, impostor finger 2", i)}, nil
		}
	}
	return Templates{}, errors.New("lab: the matcher accepts no synthetic genuine impression")
}

// BioqrConfig configures NewBioqr.
type BioqrConfig struct {
	DB        *sqldb.DB
	CA        *pki.CA
	Ledger    *ledger.Ledger
	Audit     audit.Recorder
	Matcher   bioqr.Matcher
	Templates Templates
	Log       *slog.Logger
	Now       func() time.Time
	// Funds is the payer's opening balance in minor units (default 1000.00).
	Funds int64
	// Algorithm of the device keys: pki.ECDSAP256 (default; HPKE) or pki.SM2
	// (SM2 encryption with SM4-GCM; needs an SM2 CA, and no mutual TLS).
	Algorithm pki.Algorithm
}

// Bioqr is a complete in-process installation: a settlement server, one
// certified POS and one enrolled phone, with ledger accounts — what the
// demo, the experiment and the tests run the 15 steps on. All three roles
// follow the certification steps (A–F, a–d) through the same code a
// deployment uses.
type Bioqr struct {
	Settlement *bioqr.Settlement
	Phone      *bioqr.Phone
	POS        *bioqr.POS
	Payer      string // the phone owner's account
	Merchant   string // the POS's merchant account
	Bank       string
	Templates  Templates
	cfg        BioqrConfig
}

func randSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewBioqr creates accounts, the settlement server, a POS and a phone.
func NewBioqr(ctx context.Context, cfg BioqrConfig) (*Bioqr, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Funds == 0 {
		cfg.Funds = 1000_00
	}
	if cfg.Matcher == nil {
		cfg.Matcher = bioqr.NewFingerprintMatcher()
	}
	sfx := randSuffix()
	r := &Bioqr{Payer: "bioqr-alice-" + sfx, Merchant: "bioqr-shop-" + sfx, Bank: "bioqr-bank-" + sfx, Templates: cfg.Templates, cfg: cfg}
	for _, a := range []ledger.NewAccount{
		{ID: r.Bank, Owner: "qshield bank", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true},
		{ID: r.Payer, Owner: "alice", Kind: ledger.KindUser, Currency: "CNY"},
		{ID: r.Merchant, Owner: "corner shop", Kind: ledger.KindMerchant, Currency: "CNY"},
	} {
		if _, err := cfg.Ledger.CreateAccount(ctx, a); err != nil {
			return nil, fmt.Errorf("lab: bioqr account %s: %w", a.ID, err)
		}
	}
	if _, err := cfg.Ledger.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "bioqr-fund-" + sfx, From: r.Bank, To: r.Payer, Amount: cfg.Funds, Currency: "CNY", Memo: "top-up"}); err != nil {
		return nil, fmt.Errorf("lab: bioqr funding: %w", err)
	}
	su, err := bioqr.NewSecureUnit("", bioqr.KindSettlement, cfg.Algorithm, nil)
	if err != nil {
		return nil, err
	}
	st, err := bioqr.NewSettlement(ctx, bioqr.SettlementConfig{DB: cfg.DB, CA: cfg.CA, Ledger: cfg.Ledger, Audit: cfg.Audit, Unit: su,
		Matcher: cfg.Matcher, Log: cfg.Log, Now: cfg.Now, Subject: "settlement-" + sfx})
	if err != nil {
		return nil, err
	}
	r.Settlement = st
	if r.POS, err = r.NewPOS(ctx, "POS-"+sfx, r.Merchant); err != nil {
		return nil, err
	}
	if r.Phone, err = r.NewPhone(ctx, "PHONE-"+sfx, cfg.Templates.Owner, []string{r.Payer}); err != nil {
		return nil, err
	}
	return r, nil
}

// NewPOS certifies a new POS for merchantAccount (steps a–d) with an
// in-process settler.
func (r *Bioqr) NewPOS(ctx context.Context, id, merchantAccount string) (*bioqr.POS, error) {
	u, err := bioqr.NewSecureUnit("", bioqr.KindPOS, r.cfg.Algorithm, nil)
	if err != nil {
		return nil, err
	}
	req, err := bioqr.NewCertRequest(u, id, "qshield demo POS", nil, map[string]string{bioqr.AttrMerchantAccount: merchantAccount})
	if err != nil {
		return nil, err
	}
	c, err := r.Settlement.RegisterPOS(ctx, "rig", req)
	if err != nil {
		return nil, err
	}
	if err := c.Install(u, r.Settlement.Root()); err != nil {
		return nil, err
	}
	p := &bioqr.POS{Unit: u, Store: bioqr.NewMemoryRandStore(), Now: r.cfg.Now,
		Merchant: bioqr.Merchant{Name: "Corner Shop", City: "Hangzhou", Country: "CN", MCC: "5411", Account: merchantAccount, Currency: "CNY"},
		Settler:  r.Settlement.InProcess(u.Certificate())}
	if err := p.SetSettlementCredential(r.Settlement.Credential()); err != nil {
		return nil, err
	}
	return p, nil
}

// NewPhone enrols a new phone with owner template and accounts (steps A–F).
func (r *Bioqr) NewPhone(ctx context.Context, id string, owner []byte, accounts []string) (*bioqr.Phone, error) {
	u, err := bioqr.NewSecureUnit("", bioqr.KindPhone, r.cfg.Algorithm, nil)
	if err != nil {
		return nil, err
	}
	stc, err := bioqr.ParseCredential(r.Settlement.Credential())
	if err != nil {
		return nil, err
	}
	er, err := bioqr.NewEnrolRequest(u, stc, id, "qshield demo phone", owner, accounts)
	if err != nil {
		return nil, err
	}
	// The account holder's consent: one enrolment code per account.
	for _, a := range accounts {
		code, err := r.Settlement.IssueEnrolmentCode(ctx, "rig", a)
		if err != nil {
			return nil, err
		}
		er.Consent = append(er.Consent, code.Code)
	}
	c, err := r.Settlement.Enrol(ctx, "rig", er)
	if err != nil {
		return nil, err
	}
	if err := c.Install(u, r.Settlement.Root()); err != nil {
		return nil, err
	}
	ph := &bioqr.Phone{Unit: u, Revocation: bioqr.CARevocation{CA: r.cfg.CA}, Certificates: bioqr.CARevocation{CA: r.cfg.CA}, Now: r.cfg.Now}
	if err := ph.SetAccounts(accounts); err != nil {
		return nil, err
	}
	return ph, nil
}

// StartTLS serves the settlement API on a loopback port over mutual TLS
// and switches the rig's POS (settlement) and phone (revocation status, POS certificates) to
// HTTP clients presenting their device certificates. stop shuts it down.
func (r *Bioqr) StartTLS(ctx context.Context) (url string, stop func(), err error) {
	ca := r.cfg.CA
	srvCert, err := ca.IssueTLS(ctx, pki.RoleServer, "bioqr-settlement", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	mux := http.NewServeMux()
	mux.Handle("/v1/bioqr/", r.Settlement.Handler())
	mux.Handle("/bioqr/", r.Settlement.PageHandler())
	hs := &http.Server{Handler: mux, TLSConfig: ca.ServerTLS(sctx, srvCert), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug)}
	go func() { _ = hs.Serve(tls.NewListener(ln, hs.TLSConfig)) }()
	url = "https://localhost:" + fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	posTLS, err := r.POS.Unit.TLSCertificate()
	if err != nil {
		cancel()
		hs.Close()
		return "", nil, err
	}
	phoneTLS, err := r.Phone.Unit.TLSCertificate()
	if err != nil {
		cancel()
		hs.Close()
		return "", nil, err
	}
	posClient := bioqr.NewClient(url, ca.ClientTLS(sctx, posTLS, "localhost"))
	phoneClient := bioqr.NewClient(url, ca.ClientTLS(sctx, phoneTLS, "localhost"))
	r.POS.Settler = posClient
	r.Phone.Revocation, r.Phone.Certificates = phoneClient, phoneClient
	return url, func() {
		posClient.Close()
		phoneClient.Close()
		_ = hs.Close()
		cancel()
	}, nil
}
