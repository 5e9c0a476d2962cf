package qmsp

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/qshield/qshield/money"
	"sync"
	"time"
)

// CSSClient is the gateway's view of the CSS (an HTTP client or, in-process,
// a LocalCSS).
type CSSClient interface {
	AcquireKey(ctx context.Context, req KeyRequest) (*KeyDelivery, error)
	Acknowledge(ctx context.Context, ack Ack) error
}

// LocalCSS calls a CSS in-process as gateway Peer.
type LocalCSS struct {
	CSS  *CSS
	Peer string
}

func (l LocalCSS) AcquireKey(ctx context.Context, req KeyRequest) (*KeyDelivery, error) {
	return l.CSS.AcquireKey(ctx, l.Peer, req)
}

func (l LocalCSS) Acknowledge(ctx context.Context, ack Ack) error {
	return l.CSS.Acknowledge(ctx, l.Peer, ack)
}

// GatewayState is what a gateway keeps on its flash, sealed under its device
// storage key and replaced atomically (write, fsync, rename), or, for a
// gateway the platform runs itself, in the platform's database
// ([GatewaySessions]).
type GatewayState struct {
	ID       string   `json:"id"`
	Merchant uint32   `json:"merchant"`
	Epoch    uint64   `json:"epoch"`
	PK       []byte   `json:"pk"`
	KeyID    string   `json:"key_id,omitempty"`
	Units    [][]byte `json:"units,omitempty"`
	Next     int      `json:"next"`
	// ShownExpires is the expiry given to unit Next when it was first shown.
	ShownExpires int64 `json:"shown_expires,omitempty"`
	// SaleAmount and SaleCurrency are the sale the codes carry (SetSale).
	SaleAmount   int64  `json:"sale_amount,omitempty"`
	SaleCurrency uint16 `json:"sale_currency,omitempty"`
}

// GatewayConfig configures a gateway device.
type GatewayConfig struct {
	// StatePath is the device's state file (used when Store is nil).
	StatePath string
	// Store, when set, keeps the state instead of StatePath (a gateway the
	// platform runs in its database: GatewaySessions.Store).
	Store      GatewayStore
	StorageKey []byte // 32 bytes: the device's secure storage key
	Signer     crypto.Signer
	CSS        CSSClient
	TTL        time.Duration // how long a displayed code is valid (default 60 s)
	Now        func() time.Time
}

// Gateway is the quantum key gateway GI_i: it holds the preset key, acquires
// quantum key batches from the CSS and displays one payment unit at a time.
//
// With a shared store (GatewayStore.Shared) every operation takes the
// store's lock and reloads the state first, so gateways opened on several
// nodes act as one device.
type Gateway struct {
	cfg   GatewayConfig
	id    string
	store GatewayStore
	seal  *sealer
	now   func() time.Time

	mu sync.Mutex
	st GatewayState
}

// lock takes the gateway for one operation: the in-process mutex, and with
// a shared store its lock and the current state. The release is nil on
// error.
func (g *Gateway) lock(ctx context.Context) (func(), error) {
	g.mu.Lock()
	if !g.store.Shared() {
		return g.mu.Unlock, nil
	}
	unlock, err := g.store.Lock(ctx)
	if err != nil {
		g.mu.Unlock()
		return nil, fmt.Errorf("qmsp: lock gateway %s: %w", g.id, err)
	}
	if err := g.load(ctx); err != nil {
		unlock()
		g.mu.Unlock()
		return nil, err
	}
	return func() { unlock(); g.mu.Unlock() }, nil
}

// SetSale makes the codes the gateway shows from now on carry amount (minor
// units) in currency (ISO 4217 numeric), signed with the rest; amount 0
// goes back to codes for which the payer enters the amount. A new sale
// moves to a fresh unit, so no code already on screen changes meaning.
func (g *Gateway) SetSale(amount int64, currency uint16) error {
	return g.SetSaleContext(context.Background(), amount, currency)
}

// SetSaleContext is SetSale with a context.
func (g *Gateway) SetSaleContext(ctx context.Context, amount int64, currency uint16) error {
	d := Display{Amount: amount, Currency: currency}
	if amount == 0 {
		d.Currency = 0
	}
	if err := d.CheckSale(); err != nil {
		return err
	}
	if d.Amount != 0 {
		if _, err := money.ByNumeric(d.Currency); err != nil {
			return fmt.Errorf("%w: %d", ErrCurrency, currency)
		}
	}
	unlock, err := g.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	next := g.st
	if next.ShownExpires != 0 {
		next.Next++
		next.ShownExpires = 0
	}
	next.SaleAmount, next.SaleCurrency = d.Amount, d.Currency
	if g.store.Shared() {
		// Other nodes show this gateway's codes: the sale is state.
		if err := g.save(ctx, &next, false); err != nil {
			return err
		}
	}
	g.st = next
	return nil
}

// ProvisionGateway writes a new gateway's initial state (setup step 3 on the
// device: the preset key PK at epoch 0).
func ProvisionGateway(path string, storageKey []byte, id string, merchant uint32, pk [PresetKeySize]byte) error {
	if err := checkGatewayID(id); err != nil {
		return err
	}
	s, err := newSealer(storageKey)
	if err != nil {
		return err
	}
	sealed, err := sealState(s, &GatewayState{ID: id, Merchant: merchant, PK: pk[:]})
	if err != nil {
		return err
	}
	return fileStore{path}.Save(context.Background(), sealed, true)
}

// OpenGateway loads a provisioned gateway.
func OpenGateway(cfg GatewayConfig) (*Gateway, error) {
	return OpenGatewayContext(context.Background(), cfg)
}

// OpenGatewayContext is OpenGateway with a context (a store in a database).
func OpenGatewayContext(ctx context.Context, cfg GatewayConfig) (*Gateway, error) {
	if cfg.TTL <= 0 {
		cfg.TTL = 60 * time.Second
	}
	if _, ok := cfg.Signer.Public().(*ecdsa.PublicKey); !ok {
		return nil, errors.New("qmsp: gateway signer must be an ECDSA key")
	}
	s, err := newSealer(cfg.StorageKey)
	if err != nil {
		return nil, err
	}
	store := cfg.Store
	if store == nil {
		store = fileStore{cfg.StatePath}
	}
	g := &Gateway{cfg: cfg, store: store, seal: s, now: nowOr(cfg.Now)}
	if err := g.load(ctx); err != nil {
		return nil, err
	}
	g.id = g.st.ID
	return g, nil
}

func (g *Gateway) load(ctx context.Context) error {
	b, err := g.store.Load(ctx)
	if err != nil {
		return err
	}
	st, err := openState(g.seal, b)
	if err != nil {
		return err
	}
	if g.st.ID != "" && st.ID != g.st.ID {
		return fmt.Errorf("qmsp: gateway state of %s holds %s", g.st.ID, st.ID)
	}
	g.st = *st
	return nil
}

func sealState(s *sealer, st *GatewayState) ([]byte, error) {
	pt, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	return s.seal(pt, "gateway-state")
}

func openState(s *sealer, sealed []byte) (*GatewayState, error) {
	pt, err := s.open(sealed, "gateway-state")
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	var st GatewayState
	if err := json.Unmarshal(pt, &st); err != nil {
		return nil, fmt.Errorf("qmsp: gateway state: %w", err)
	}
	if len(st.PK) != PresetKeySize || checkGatewayID(st.ID) != nil || st.Next < 0 {
		return nil, fmt.Errorf("qmsp: gateway state is inconsistent")
	}
	for _, u := range st.Units {
		if len(u) != UnitSize {
			return nil, fmt.Errorf("qmsp: gateway state holds a %d-byte unit", len(u))
		}
	}
	return &st, nil
}

// save replaces the stored state. durable: needed whenever the preset key
// changes, since a gateway that forgot its epoch would be out of step; not
// needed when only the displayed unit moves on, since a gateway that
// forgets that shows a spent unit again, which the platform refuses (and
// the page skips).
func (g *Gateway) save(ctx context.Context, st *GatewayState, durable bool) error {
	sealed, err := sealState(g.seal, st)
	if err != nil {
		return err
	}
	return g.store.Save(ctx, sealed, durable)
}

// State returns a copy of the gateway's state (for inspection and tests;
// with a shared store, as this process last saw it).
func (g *Gateway) State() GatewayState {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.st
	st.PK = append([]byte(nil), g.st.PK...)
	return st
}

// ID is the gateway identifier GI_i.
func (g *Gateway) ID() string { return g.id }

// Refresh acquires a new quantum key batch from the CSS (seed §3.3 steps
// 1–8): request under PK_n, unwrap under PK_n, DivQ, PK_{n+1} = QK16,
// persist, then acknowledge under PK_{n+1}.
func (g *Gateway) Refresh(ctx context.Context) error {
	unlock, err := g.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	return g.refreshLocked(ctx)
}

func (g *Gateway) refreshLocked(ctx context.Context) error {
	var pk [PresetKeySize]byte
	copy(pk[:], g.st.PK)
	now := g.now().Unix()
	nonce := newNonce()
	req := KeyRequest{Gateway: g.st.ID, Epoch: g.st.Epoch, Time: now, Nonce: nonce, MAC: requestMAC(&pk, "keyreq", g.st.ID, g.st.Epoch, now, nonce)}
	d, err := g.cfg.CSS.AcquireKey(ctx, req)
	if err != nil {
		return fmt.Errorf("qmsp: gateway %s key acquisition: %w", g.st.ID, err)
	}
	if d.Gateway != g.st.ID || d.Epoch != g.st.Epoch+1 {
		return fmt.Errorf("%w: delivery for %s epoch %d, gateway at epoch %d", ErrOutOfStep, d.Gateway, d.Epoch, g.st.Epoch)
	}
	keyID, err := parseKeyID(d.KeyID)
	if err != nil {
		return err
	}
	qk, err := Unwrap(&pk, g.st.ID, d.Epoch, keyID, d.Wrapped)
	if err != nil {
		return err
	}
	batch, err := DivQ(qk)
	clear(qk)
	if err != nil {
		return err
	}
	next := g.st
	next.Epoch = d.Epoch
	next.PK = batch.NextPK[:]
	next.KeyID = d.KeyID
	next.Units = make([][]byte, len(batch.Units))
	for i := range batch.Units {
		next.Units[i] = batch.Units[i][:]
	}
	next.Next = 0
	next.ShownExpires = 0
	// The CSS has moved to a pending epoch: the new state must be kept even
	// if the caller gives up now, or the gateway would be out of step.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := g.save(sctx, &next, true); err != nil {
		return err
	}
	g.st = next
	// Best effort: a lost acknowledgement is recovered by the next request.
	now = g.now().Unix()
	nonce = newNonce()
	_ = g.cfg.CSS.Acknowledge(ctx, Ack{Gateway: g.st.ID, Epoch: g.st.Epoch, Time: now, Nonce: nonce, MAC: requestMAC(&batch.NextPK, "ack", g.st.ID, g.st.Epoch, now, nonce)})
	return nil
}

// Current returns the code to display (payment steps 1–3): the current unit,
// or the next one when it expired, or a fresh batch when all are spent.
func (g *Gateway) Current(ctx context.Context) (*Display, error) {
	unlock, err := g.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	now := g.now()
	shown := g.st.ShownExpires
	if g.st.ShownExpires != 0 && !now.Before(time.Unix(g.st.ShownExpires, 0)) {
		g.st.Next++ // expired: never shown again
		g.st.ShownExpires = 0
	}
	if g.st.Next >= len(g.st.Units) {
		if err := g.refreshLocked(ctx); err != nil {
			return nil, err
		}
	}
	if g.st.ShownExpires == 0 {
		// A device keeps this in memory only: after a reboot a unit may be
		// shown again with a fresh expiry, which is harmless — the platform
		// accepts each unit once — and saves an fsync per code. A gateway
		// shown by several nodes stores it, so that each node shows the
		// same code with the same expiry.
		g.st.ShownExpires = now.Add(g.cfg.TTL).Unix()
	}
	if g.store.Shared() && g.st.ShownExpires != shown {
		if err := g.save(ctx, &g.st, false); err != nil {
			return nil, err
		}
	}
	keyID, err := parseKeyID(g.st.KeyID)
	if err != nil {
		return nil, err
	}
	var u [UnitSize]byte
	copy(u[:], g.st.Units[g.st.Next])
	d := &Display{Gateway: g.st.ID, Merchant: g.st.Merchant, Amount: g.st.SaleAmount, Currency: g.st.SaleCurrency,
		Ref: KeyRef{KeyID: keyID, Unit: uint16(g.st.Next)}, Expires: time.Unix(g.st.ShownExpires, 0).UTC()}
	d.Pad, d.MACKey = UnitKeys(&u)
	digest := sha256.Sum256(d.SignedBytes())
	d.Sig, err = g.cfg.Signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("qmsp: gateway sign: %w", err)
	}
	return d, nil
}

// Advance moves past the displayed unit (after a payment used it).
func (g *Gateway) Advance() error { return g.AdvanceContext(context.Background()) }

// AdvanceContext is Advance with a context.
func (g *Gateway) AdvanceContext(ctx context.Context) error {
	unlock, err := g.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	next := g.st
	next.Next++
	next.ShownExpires = 0
	if err := g.save(ctx, &next, false); err != nil {
		return err
	}
	g.st = next
	return nil
}

// AdvancePast moves past unit ref if it is the one displayed (a payment
// used it); a gateway shown by several nodes may already have moved on
// through another node, and must then not skip an unspent unit.
func (g *Gateway) AdvancePast(ctx context.Context, ref KeyRef) error {
	unlock, err := g.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	keyID, err := parseKeyID(g.st.KeyID)
	if err != nil || keyID != ref.KeyID || g.st.Next != int(ref.Unit) {
		return nil
	}
	next := g.st
	next.Next++
	next.ShownExpires = 0
	if err := g.save(ctx, &next, false); err != nil {
		return err
	}
	g.st = next
	return nil
}

// Signer is a crypto.Signer (named here so callers can assert to it).
type Signer = crypto.Signer
