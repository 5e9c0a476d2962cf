package platform

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/lease"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/paypage"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qmsp"
)

// QMSP is seed 000 inside the platform: the supermarket server (CSS), the
// payment platform server (PPS) and the gateways whose pages serve shows.
type QMSP struct {
	CSS *qmsp.CSS
	PPS *qmsp.PPS

	p        *Platform
	sessions *qmsp.GatewaySessions
	mu       sync.Mutex
	// gateways caches the handles of the gateways this platform runs (their
	// state is in the database: every node opens the same gateways).
	gateways map[string]*qmsp.Gateway
	// afterEnrol, when set (tests), runs between a gateway's registration
	// and the write of its session: an error there is a crash in between.
	afterEnrol func() error
}

// BuiltinGateway is the gateway `serve` runs and shows at /qmsp/gateways/GW-0001/.
const BuiltinGateway = "GW-0001"

// BuiltinMerchant is its merchant number and ledger account.
const (
	BuiltinMerchant        = 1
	BuiltinMerchantAccount = "qmsp-supermarket-1"
	BuiltinMerchantName    = "qshield Supermarket"
)

func (p *Platform) startQMSP(ctx context.Context) error {
	cssTLS, err := p.KME.ClientTLS(ctx, SAECSS)
	if err != nil {
		return err
	}
	ppsTLS, err := p.KME.ClientTLS(ctx, SAEPPS)
	if err != nil {
		return err
	}
	q := &QMSP{p: p, gateways: map[string]*qmsp.Gateway{}}
	q.CSS, err = qmsp.NewCSS(ctx, qmsp.CSSConfig{DB: p.DB, Keys: etsi014.New(p.KME.BURL, cssTLS), SlaveSAE: SAEPPS,
		StorageKey: p.Secret("qmsp-css"), Audit: p.Audit, Log: p.Config.Log})
	if err != nil {
		return fmt.Errorf("platform: qmsp CSS: %w", err)
	}
	p.closers = append(p.closers, q.CSS.Close)
	q.PPS, err = qmsp.NewPPS(ctx, qmsp.PPSConfig{DB: p.DB, Keys: etsi014.New(p.KME.AURL, ppsTLS), MasterSAE: SAECSS,
		Ledger: p.Ledger, StorageKey: p.Secret("qmsp-pps"), Audit: p.Audit, Log: p.Config.Log})
	if err != nil {
		return fmt.Errorf("platform: qmsp PPS: %w", err)
	}
	p.closers = append(p.closers, q.PPS.Close)
	if q.sessions, err = qmsp.NewGatewaySessions(ctx, p.DB); err != nil {
		return fmt.Errorf("platform: qmsp gateway sessions: %w", err)
	}
	p.QMSP = q
	// The CSS and PPS know gateways and phones by their certificates'
	// names; the router has authenticated each certificate as a principal of
	// the right kind first (a name belongs to one kind).
	css, pps := q.CSS.Handler(), q.PPS.Handler()
	p.Router.Handle("POST /v1/qmsp/css/keys", authz.Allow(pki.PrincipalGateway), css)
	p.Router.Handle("POST /v1/qmsp/css/ack", authz.Allow(pki.PrincipalGateway), css)
	// A browser wallet pays with a request signed by its registered key.
	p.Router.Handle("POST /v1/qmsp/pay", authz.Allow(pki.PrincipalPhone).OrSigned(), pps)
	p.Router.Handle("GET /qmsp/gateways/{gi}/{file...}", authz.Public("a gateway's screen: the signed QR codes it shows to payers"), http.HandlerFunc(q.servePage))
	p.Router.Handle("POST /v1/qmsp/gateways/{gi}/sale", authz.Allow(pki.PrincipalAdmin, pki.PrincipalOperator), http.HandlerFunc(q.setSale))
	q.adminRoutes()
	return nil
}

// servePage shows a gateway's current code, provisioning the built-in
// gateway on first use. A gateway that cannot be reached is a page in words
// (paypage.Unavailable), never an error document.
func (q *QMSP) servePage(w http.ResponseWriter, r *http.Request) {
	gi := r.PathValue("gi")
	g, err := q.Gateway(r.Context(), gi)
	if err != nil {
		if errors.Is(err, qmsp.ErrUnknownGateway) {
			paypage.Render(w, http.StatusNotFound, paypage.Page{Title: "Unknown terminal", Heading: "Unknown payment terminal",
				Status: paypage.Status{State: paypage.Refused, Message: "This screen does not belong to a payment terminal of this platform."}})
			return
		}
		q.p.Config.Log.Warn("qmsp gateway page", "gateway", gi, "err", err)
		if r.PathValue("file") == "status" {
			w.WriteHeader(http.StatusServiceUnavailable)
			paypage.WriteStatus(w, paypage.Status{State: paypage.Offline, Message: "Payments are unavailable for a moment. This screen will try again by itself."})
			return
		}
		paypage.Unavailable(w, "Payment unavailable", "Payment terminal "+gi)
		return
	}
	name := ""
	if gi == BuiltinGateway {
		name = BuiltinMerchantName
	}
	(&qmsp.GatewayPage{Gateway: g, Used: q.PPS.UnitUsed, Merchant: name, Log: q.p.Config.Log}).ServeHTTP(w, r)
}

// SaleRequest is the body of POST /v1/qmsp/gateways/{gi}/sale: the amount
// (minor units) and ISO 4217 numeric currency the gateway's codes carry,
// signed, from now on (amount 0: the payer enters the amount).
type SaleRequest struct {
	Amount   int64  `json:"amount"`
	Currency uint16 `json:"currency"`
}

// ErrNotMerchant refuses a sale set by a principal outside the gateway's merchant.
var ErrNotMerchant = errors.New("platform: the gateway's merchant is outside this principal's scope")

// SetSaleAs sets the sale of in-process gateway gi for principal pr: an
// administrator, or an operator whose scope has the gateway's merchant
// ("merchant:N"). It returns the code the gateway shows now. The API route
// and the operator console both set sales through it.
func (q *QMSP) SetSaleAs(ctx context.Context, pr *pki.Principal, gi string, amount int64, currency uint16) (*qmsp.Display, error) {
	g, err := q.Gateway(ctx, gi)
	if err != nil {
		return nil, err
	}
	if pr == nil || (pr.Kind != pki.PrincipalAdmin && !(pr.Kind == pki.PrincipalOperator && pr.MayActFor(fmt.Sprintf("merchant:%d", g.State().Merchant)))) {
		return nil, ErrNotMerchant
	}
	if err := g.SetSaleContext(ctx, amount, currency); err != nil {
		return nil, err
	}
	return g.Current(ctx)
}

// setSale sets the sale of an in-process gateway (SetSaleAs).
func (q *QMSP) setSale(w http.ResponseWriter, r *http.Request) {
	pr := authz.PrincipalFrom(r.Context())
	var req SaleRequest
	if !httpx.DecodeOrProblem(w, r, 1<<10, &req) {
		return
	}
	d, err := q.SetSaleAs(r.Context(), pr, r.PathValue("gi"), req.Amount, req.Currency)
	switch {
	case errors.Is(err, qmsp.ErrUnknownGateway):
		httpx.WriteProblem(w, r, http.StatusNotFound, "unknown_gateway", err.Error())
		return
	case errors.Is(err, ErrNotMerchant):
		httpx.WriteProblem(w, r, http.StatusForbidden, "not_owner", "the gateway's merchant is outside this operator's scope")
		return
	case errors.Is(err, qmsp.ErrCurrency) || errors.Is(err, qmsp.ErrFormat):
		httpx.WriteProblem(w, r, http.StatusBadRequest, "invalid", err.Error())
		return
	case err != nil:
		httpx.WriteProblem(w, r, http.StatusServiceUnavailable, "gateway_unavailable", err.Error())
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"shows": d.Describe()})
}

// Tills lists the gateways the platform runs (the built-in one after its
// first page view, on whichever node), with what each shows now (each asked
// for at most two seconds: a gateway waiting for quantum key is shown as
// such).
func (q *QMSP) Tills(ctx context.Context) []Till {
	ids, err := q.sessions.List(ctx)
	if err != nil {
		q.p.Config.Log.Warn("qmsp: list gateways", "err", err)
	}
	out := make([]Till, 0, len(ids))
	for _, gi := range ids {
		g, err := q.Gateway(ctx, gi)
		if err != nil {
			q.p.Config.Log.Warn("qmsp: open gateway", "gateway", gi, "err", err)
			continue
		}
		st := g.State()
		t := Till{Gateway: st.ID, Merchant: st.Merchant}
		if st.ID == BuiltinGateway {
			t.MerchantName = BuiltinMerchantName
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if d, err := g.Current(cctx); err == nil {
			t.Amount, t.Currency = d.Amount, d.Currency
			t.Ready = true
		}
		cancel()
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Gateway < out[j].Gateway })
	return out
}

// Till is an in-process gateway as the console lists it.
type Till struct {
	Gateway      string
	Merchant     uint32
	MerchantName string
	// Amount (minor units) and Currency (ISO 4217 numeric) of the sale its
	// codes carry; 0: the payer enters the amount.
	Amount   int64
	Currency uint16
	Ready    bool // the gateway answered (it has quantum key)
}

// Gateway returns gateway gi as the platform runs it; the built-in one is
// registered and provisioned on first use (its preset key is quantum key,
// so this waits for the link's first keys). The gateways the platform runs
// keep their state in the database (qmsp.GatewaySessions): a gateway
// provisioned through one node is the same gateway on every node — the code
// one node shows is the code every node shows, and its payment status reads
// the same everywhere.
func (q *QMSP) Gateway(ctx context.Context, gi string) (*qmsp.Gateway, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if g, ok := q.gateways[gi]; ok {
		return g, nil
	}
	g, err := q.openSession(ctx, gi)
	if errors.Is(err, qmsp.ErrUnknownGateway) && gi == BuiltinGateway {
		g, err = q.provisionSession(ctx, gi, BuiltinMerchant, BuiltinMerchantAccount, "CNY")
	}
	if errors.Is(err, qmsp.ErrUnknownGateway) {
		return nil, fmt.Errorf("%w: %s is not run by this server", qmsp.ErrUnknownGateway, gi)
	}
	if err != nil {
		return nil, err
	}
	q.gateways[gi] = g
	return g, nil
}

// openSession opens gateway gi from the database (qmsp.ErrUnknownGateway if
// it has no session there).
func (q *QMSP) openSession(ctx context.Context, gi string) (*qmsp.Gateway, error) {
	s, err := q.sessions.Session(ctx, gi)
	if err != nil {
		return nil, err
	}
	storage := q.p.Secret("gateway-storage/" + gi)
	keyEnc, err := pki.RawKey(storage)
	if err != nil {
		return nil, err
	}
	k, err := pki.ParsePrivateKeyPEM(s.DeviceKey, keyEnc)
	if err != nil {
		return nil, fmt.Errorf("platform: gateway %s key: %w", gi, err)
	}
	signer, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("platform: gateway %s key is not ECDSA", gi)
	}
	return qmsp.OpenGatewayContext(ctx, qmsp.GatewayConfig{Store: q.sessions.Store(gi), StorageKey: storage, Signer: signer,
		CSS: qmsp.LocalCSS{CSS: q.CSS, Peer: gi}})
}

// provisionSession performs the setup algorithm for a gateway the platform
// runs, once across nodes (under a lock named for the gateway): a device
// key and certificate, registration at the CSS and the PPS, and the
// session in the database. A gateway provisioned by an older version in
// the state directory is imported with its state.
//
// The device key is stored (sealed, in platform_state_files) before the
// gateway is registered anywhere, so that a run that dies after the CSS
// registered the gateway and before its session was written is resumed by
// the next one with the same key and the CSS's unused preset key
// (qmsp.CSS.UnusedPresetKey) instead of failing for ever with
// gateway_exists.
func (q *QMSP) provisionSession(ctx context.Context, gi string, merchant uint32, account, currency string) (*qmsp.Gateway, error) {
	unlock, err := lease.Lock(ctx, q.p.DB, "qmsp-gateway-provision/"+gi)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if g, err := q.openSession(ctx, gi); !errors.Is(err, qmsp.ErrUnknownGateway) {
		return g, err // another node provisioned it meanwhile
	}
	storage := q.p.Secret("gateway-storage/" + gi)
	keyEnc, err := pki.RawKey(storage)
	if err != nil {
		return nil, err
	}
	if q.p.StateDir != "" {
		if imported, err := q.importGatewayFiles(ctx, gi, merchant, storage, keyEnc); err != nil {
			return nil, err
		} else if imported {
			return q.openSession(ctx, gi)
		}
	}
	key, pemKey, resumed, err := q.provisioningKey(ctx, gi, keyEnc)
	if err != nil {
		return nil, err
	}
	if resumed {
		q.p.Config.Log.Warn("qmsp: resuming a gateway provisioning that stopped before its session was stored", "gateway", gi)
	}
	cert, pk, err := q.enrolGateway(ctx, gi, merchant, account, currency, key.Public(), resumed)
	if err != nil {
		return nil, err
	}
	if q.afterEnrol != nil {
		if err := q.afterEnrol(); err != nil {
			return nil, err
		}
	}
	if _, err := q.sessions.Create(ctx, qmsp.GatewaySession{ID: gi, Merchant: merchant, DeviceKey: pemKey, Certificate: cert.Raw}, storage, pk); err != nil {
		return nil, err
	}
	if _, err := q.p.DB.ExecContext(ctx, q.p.DB.Rebind(`DELETE FROM platform_state_files WHERE name = ?`), provisioningName(gi)); err != nil {
		q.p.Config.Log.Warn("qmsp: provisioning record not removed", "gateway", gi, "err", err)
	}
	return q.openSession(ctx, gi)
}

// provisioningName is the platform_state_files row holding the device key
// of gateway gi while it is being provisioned.
func provisioningName(gi string) string { return "qmsp-gateway-provisioning/" + gi }

// provisioningKey returns the device key of gateway gi's provisioning: the
// one a previous, unfinished run stored (resumed true), or a new one,
// stored sealed under keyEnc before anything is registered.
func (q *QMSP) provisioningKey(ctx context.Context, gi string, keyEnc pki.KeyEncryptor) (*ecdsa.PrivateKey, []byte, bool, error) {
	if err := q.p.DB.Migrate(ctx, "platform_state", stateMigrations); err != nil {
		return nil, nil, false, fmt.Errorf("platform: %w", err)
	}
	pemKey, err := q.p.stateFile(ctx, provisioningName(gi))
	resumed := err == nil
	switch {
	case resumed:
	case errors.Is(err, sql.ErrNoRows):
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, false, err
		}
		if pemKey, err = pki.SealPrivateKeyPEM(key, keyEnc); err != nil {
			return nil, nil, false, err
		}
		if _, err := q.p.DB.ExecContext(ctx, q.p.DB.Rebind(`INSERT INTO platform_state_files (name, data, updated_at) VALUES (?, ?, ?)`),
			provisioningName(gi), pemKey, time.Now().UnixNano()); err != nil {
			return nil, nil, false, fmt.Errorf("platform: store gateway %s provisioning: %w", gi, err)
		}
		return key, pemKey, false, nil
	default:
		return nil, nil, false, err
	}
	k, err := pki.ParsePrivateKeyPEM(pemKey, keyEnc)
	if err != nil {
		return nil, nil, false, fmt.Errorf("platform: gateway %s provisioning key: %w", gi, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, false, fmt.Errorf("platform: gateway %s provisioning key is not ECDSA", gi)
	}
	return key, pemKey, true, nil
}

// importGatewayFiles moves a gateway that an older version ran from files
// in the state directory into the database, with its epoch and units, and
// renames its state file (*.imported) so that nothing runs it from there
// again. It reports false when there are no such files.
func (q *QMSP) importGatewayFiles(ctx context.Context, gi string, merchant uint32, storage []byte, keyEnc pki.KeyEncryptor) (bool, error) {
	dir := q.p.StateDir
	certPath := filepath.Join(dir, "gateway-"+gi+".pem")
	statePath := filepath.Join(dir, "gateway-"+gi+".state")
	keyPath := filepath.Join(dir, "gateway-"+gi+"-key.pem")
	state, err := os.ReadFile(statePath)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	k, err := pki.LoadPrivateKeyFile(keyPath, keyEnc)
	if err != nil {
		return false, fmt.Errorf("platform: import gateway %s: %w", gi, err)
	}
	pemKey, err := pki.SealPrivateKeyPEM(k, keyEnc)
	if err != nil {
		return false, err
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return false, fmt.Errorf("platform: import gateway %s: %w", gi, err)
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return false, fmt.Errorf("platform: import gateway %s: %w", gi, err)
	}
	if _, err := q.sessions.Import(ctx, qmsp.GatewaySession{ID: gi, Merchant: merchant, DeviceKey: pemKey, Certificate: cert.Raw}, storage, state); err != nil {
		return false, err
	}
	if err := os.Rename(statePath, statePath+".imported"); err != nil {
		q.p.Config.Log.Warn("qmsp: imported gateway state file not renamed", "gateway", gi, "err", err)
	}
	q.p.Config.Log.Info("qmsp: gateway moved from the state directory into the database", "gateway", gi)
	return true, nil
}

// GatewayOptions say where a gateway keeps its files and how it reaches the CSS.
type GatewayOptions struct {
	Dir string
	// ServerURL, when set, makes the device call the CSS over HTTPS with its
	// device certificate; otherwise it calls it in-process.
	ServerURL string
	// TTL is how long a displayed code is valid (default 60 s).
	TTL time.Duration
}

// ProvisionGateway performs the setup algorithm for gateway gi in one place:
// a device key and certificate from the CA, registration at the CSS (preset
// key from the key manager) and at the PPS (merchant account, certificate),
// and the device's initial state in o.Dir. An already provisioned gateway is
// reopened.
func (q *QMSP) ProvisionGateway(ctx context.Context, gi string, merchant uint32, account, currency string, o GatewayOptions) (*qmsp.Gateway, error) {
	dir := o.Dir
	certPath := filepath.Join(dir, "gateway-"+gi+".pem")
	statePath := filepath.Join(dir, "gateway-"+gi+".state")
	keyPath := filepath.Join(dir, "gateway-"+gi+"-key.pem")
	storage := q.p.Secret("gateway-storage/" + gi)
	open := func(signer *ecdsa.PrivateKey) (*qmsp.Gateway, error) {
		var css qmsp.CSSClient = qmsp.LocalCSS{CSS: q.CSS, Peer: gi}
		if o.ServerURL != "" {
			certPEM, err := os.ReadFile(certPath)
			if err != nil {
				return nil, err
			}
			cert, err := pki.ParseCertPEM(certPEM)
			if err != nil {
				return nil, err
			}
			tc := q.p.CA.ClientTLS(ctx, tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: signer, Leaf: cert}, "localhost")
			css = qmsp.NewClient(o.ServerURL, tc)
		}
		return qmsp.OpenGateway(qmsp.GatewayConfig{StatePath: statePath, StorageKey: storage, Signer: signer, CSS: css, TTL: o.TTL})
	}
	keyEnc, err := pki.RawKey(storage)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(keyPath); err == nil {
		k, err := pki.LoadPrivateKeyFile(keyPath, keyEnc) // reseals a legacy (QSK1) key file
		if err != nil {
			return nil, fmt.Errorf("platform: gateway key: %w", err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, errors.New("platform: gateway key is not ECDSA")
		}
		return open(ek)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cert, pk, err := q.EnrolGateway(ctx, gi, merchant, account, currency, key.Public())
	if err != nil {
		return nil, err
	}
	iss := &pki.Issued{Cert: cert}
	if err := qmsp.ProvisionGateway(statePath, storage, gi, merchant, pk); err != nil {
		return nil, err
	}
	pemKey, err := pki.SealPrivateKeyPEM(key, keyEnc)
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(keyPath, pemKey, 0o600, true); err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(certPath, pki.EncodeCertPEM(iss.Cert), 0o644, true); err != nil {
		return nil, err
	}
	return open(key)
}

// EnrolGateway runs the setup algorithm for a gateway whose key pair was
// generated on the device: it opens the merchant's ledger account if needed,
// certifies pub, registers the gateway at the CSS — receiving its preset key,
// 16 bytes of quantum key — and at the PPS.
func (q *QMSP) EnrolGateway(ctx context.Context, gi string, merchant uint32, account, currency string, pub crypto.PublicKey) (*x509.Certificate, [qmsp.PresetKeySize]byte, error) {
	return q.enrolGateway(ctx, gi, merchant, account, currency, pub, false)
}

// enrolGateway is EnrolGateway; resume (the platform's own provisioning,
// run again with the device key it stored) takes the CSS's unused preset
// key of a gateway already registered there.
func (q *QMSP) enrolGateway(ctx context.Context, gi string, merchant uint32, account, currency string, pub crypto.PublicKey, resume bool) (*x509.Certificate, [qmsp.PresetKeySize]byte, error) {
	var pk [qmsp.PresetKeySize]byte
	if _, err := q.p.Ledger.EnsureAccount(ctx, ledger.NewAccount{ID: account, Owner: "merchant " + fmt.Sprint(merchant), Kind: ledger.KindMerchant, Currency: currency}); err != nil {
		return nil, pk, err
	}
	var cert *x509.Certificate
	if resume { // the certificate the interrupted run had issued, if any
		var err error
		c, pr, err := q.p.CA.ActiveCertFor(ctx, pki.PrincipalGateway, gi, pub)
		if err != nil {
			return nil, pk, err
		}
		if c != nil && (!pr.MayActFor("account:"+account) || !pr.MayActFor(fmt.Sprintf("merchant:%d", merchant))) {
			return nil, pk, fmt.Errorf("%w: %s's certificate is for another account or merchant than this provisioning's", qmsp.ErrGatewayExists, gi)
		}
		cert = c
	}
	if cert == nil {
		iss, err := q.p.CA.Issue(ctx, pki.IssueRequest{Role: pki.RoleDevice, CommonName: gi, PublicKey: pub,
			Device: &pki.DeviceInfo{Serial: gi, Kind: pki.KindGateway, Model: "qshield quantum key gateway"},
			Kind:   pki.PrincipalGateway, Scheme: "qmsp", Scope: []string{"account:" + account, fmt.Sprintf("merchant:%d", merchant)}})
		if err != nil {
			return nil, pk, err
		}
		cert = iss.Cert
	}
	var err error
	for attempt := 0; ; attempt++ {
		pk, err = q.CSS.RegisterGateway(ctx, gi, merchant)
		if resume && errors.Is(err, qmsp.ErrGatewayExists) {
			pk, err = q.CSS.UnusedPresetKey(ctx, gi, merchant)
		}
		if err == nil || !errors.Is(err, qmsp.ErrNoQuantumKey) || attempt >= 50 {
			break
		}
		select { // the link has not delivered its first keys yet
		case <-ctx.Done():
			return nil, pk, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, pk, err
	}
	if err := q.PPS.RegisterGateway(ctx, gi, merchant, account, cert); err != nil {
		return nil, pk, err
	}
	return cert, pk, nil
}

// IssuePhone issues a phone's client certificate and binds payer number
// payer (spending from account) to it at the PPS, with the account
// holder's enrolment code.
func (q *QMSP) IssuePhone(ctx context.Context, phone string, payer uint64, account, code string) (*pki.Issued, error) {
	return q.EnrolPhone(ctx, phone, payer, account, code, nil)
}

// EnrolPhone certifies a phone (pub nil: the CA generates the key pair) and
// binds payer number payer, spending from account, to it. code is the
// account holder's enrolment code (consent): without a valid one nothing is
// issued or bound. A payer number bound to another account or phone is
// refused (qmsp.ErrPayerExists) before anything is issued; when another node
// bound it in between, the certificate just issued is revoked.
func (q *QMSP) EnrolPhone(ctx context.Context, phone string, payer uint64, account, code string, pub crypto.PublicKey) (*pki.Issued, error) {
	var iss *pki.Issued
	err := q.p.bindPayerDevice(ctx, "qmsp", phone, account, code, func() error {
		if a, ph, err := q.PPS.PayerBinding(ctx, payer); err == nil && (a != account || ph != phone) {
			return fmt.Errorf("%w: payer %d", qmsp.ErrPayerExists, payer)
		} else if err != nil && !errors.Is(err, qmsp.ErrUnknownPayer) {
			return err
		}
		var err error
		iss, err = q.p.CA.Issue(ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: phone, PublicKey: pub,
			Device: &pki.DeviceInfo{Serial: phone, Kind: pki.KindPhone}, Kind: pki.PrincipalPhone, Scheme: "qmsp", Scope: []string{"account:" + account}})
		if err != nil {
			return err
		}
		if err := q.PPS.RegisterPayer(ctx, payer, account, phone); err != nil {
			q.p.revokeUnbound(ctx, iss)
			return err
		}
		return nil
	})
	return iss, err
}

// GatewayEnrolment is the body of POST /v1/qmsp/admin/gateways.
type GatewayEnrolment struct {
	Gateway   string `json:"gateway"`
	Merchant  uint32 `json:"merchant"`
	Account   string `json:"account"`
	Currency  string `json:"currency"`
	PublicKey []byte `json:"public_key"` // PKIX DER, generated on the device
}

// DeviceEnrolled is its answer: the device certificate and the preset key.
type DeviceEnrolled struct {
	Certificate []byte `json:"certificate"` // DER
	PresetKey   []byte `json:"preset_key"`
	CA          []byte `json:"ca"` // DER of the platform root
}

// PhoneEnrolment is the body of POST /v1/qmsp/admin/phones.
type PhoneEnrolment struct {
	Phone   string `json:"phone"`
	Payer   uint64 `json:"payer"`
	Account string `json:"account"`
	// EnrolmentCode is the account holder's consent (POST /v1/enrolment-codes).
	EnrolmentCode string `json:"enrolment_code"`
	PublicKey     []byte `json:"public_key"`
}

func (q *QMSP) adminRoutes() {
	admin := authz.Allow(pki.PrincipalAdmin)
	q.p.Router.Handle("POST /v1/qmsp/admin/gateways", admin, enrolHandler(q.p, "qmsp gateway", func(ctx context.Context, req *GatewayEnrolment, pub any) (DeviceEnrolled, error) {
		if req.Currency == "" {
			req.Currency = "CNY"
		}
		cert, pk, err := q.EnrolGateway(ctx, req.Gateway, req.Merchant, req.Account, req.Currency, pub)
		if err != nil {
			return DeviceEnrolled{}, err
		}
		return DeviceEnrolled{Certificate: cert.Raw, PresetKey: pk[:]}, nil
	}))
	q.p.Router.Handle("POST /v1/qmsp/admin/phones", admin, enrolHandler(q.p, "qmsp phone", func(ctx context.Context, req *PhoneEnrolment, pub any) (DeviceEnrolled, error) {
		iss, err := q.EnrolPhone(ctx, req.Phone, req.Payer, req.Account, req.EnrolmentCode, pub)
		if err != nil {
			return DeviceEnrolled{}, err
		}
		return DeviceEnrolled{Certificate: iss.Cert.Raw}, nil
	}))
	// A gateway asks whether its displayed unit was spent (to move on).
	q.p.Router.Handle("GET /v1/qmsp/units/{key}/{unit}", authz.Allow(pki.PrincipalGateway, pki.PrincipalAdmin), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := qkd.ParseKeyID(r.PathValue("key"))
		unit, uerr := strconv.ParseUint(r.PathValue("unit"), 10, 16)
		if err != nil || uerr != nil {
			httpx.WriteProblem(w, r, http.StatusBadRequest, "malformed", "want /v1/qmsp/units/{uuid}/{unit}")
			return
		}
		used, err := q.PPS.UnitUsed(r.Context(), qmsp.KeyRef{KeyID: id, Unit: uint16(unit)})
		if err != nil {
			httpx.WriteProblem(w, r, http.StatusInternalServerError, "internal", "internal error")
			return
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]bool{"used": used})
	}))
}
