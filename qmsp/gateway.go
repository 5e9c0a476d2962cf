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
	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/money"
	"os"
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
// storage key and replaced atomically (write, fsync, rename).
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
}

// GatewayConfig configures a gateway device.
type GatewayConfig struct {
	StatePath  string
	StorageKey []byte // 32 bytes: the device's secure storage key
	Signer     crypto.Signer
	CSS        CSSClient
	TTL        time.Duration // how long a displayed code is valid (default 60 s)
	Now        func() time.Time
}

// Gateway is the quantum key gateway GI_i: it holds the preset key, acquires
// quantum key batches from the CSS and displays one payment unit at a time.
type Gateway struct {
	cfg  GatewayConfig
	seal *sealer
	now  func() time.Time

	mu   sync.Mutex
	st   GatewayState
	sale struct {
		amount   int64
		currency uint16
	}
}

// SetSale makes the codes the gateway shows from now on carry amount (minor
// units) in currency (ISO 4217 numeric), signed with the rest; amount 0
// goes back to codes for which the payer enters the amount. A new sale
// moves to a fresh unit, so no code already on screen changes meaning.
func (g *Gateway) SetSale(amount int64, currency uint16) error {
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
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.st.ShownExpires != 0 {
		g.st.Next++
		g.st.ShownExpires = 0
	}
	g.sale.amount, g.sale.currency = d.Amount, d.Currency
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
	return writeState(path, s, &GatewayState{ID: id, Merchant: merchant, PK: pk[:]}, true)
}

// OpenGateway loads a provisioned gateway.
func OpenGateway(cfg GatewayConfig) (*Gateway, error) {
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
	g := &Gateway{cfg: cfg, seal: s, now: nowOr(cfg.Now)}
	if err := g.load(); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *Gateway) load() error {
	b, err := os.ReadFile(g.cfg.StatePath)
	if err != nil {
		return fmt.Errorf("qmsp: gateway state: %w", err)
	}
	pt, err := g.seal.open(b, "gateway-state")
	if err != nil {
		return err
	}
	var st GatewayState
	if err := json.Unmarshal(pt, &st); err != nil {
		return fmt.Errorf("qmsp: gateway state: %w", err)
	}
	if len(st.PK) != PresetKeySize || checkGatewayID(st.ID) != nil || st.Next < 0 {
		return fmt.Errorf("qmsp: gateway state is inconsistent")
	}
	for _, u := range st.Units {
		if len(u) != UnitSize {
			return fmt.Errorf("qmsp: gateway state holds a %d-byte unit", len(u))
		}
	}
	g.st = st
	return nil
}

// writeState replaces the state file atomically (write a new file, rename).
// durable also fsyncs the file and its directory before returning: needed
// whenever the preset key changes, since a gateway that forgot its epoch
// would be out of step; not needed when only the displayed unit moves on,
// since a gateway that forgets that shows a spent unit again, which the
// platform refuses (and the page skips).
func writeState(path string, s *sealer, st *GatewayState, durable bool) error {
	pt, err := json.Marshal(st)
	if err != nil {
		return err
	}
	sealed, err := s.seal(pt, "gateway-state")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(path, sealed, 0o600, durable); err != nil {
		return fmt.Errorf("qmsp: save gateway state: %w", err)
	}
	return nil
}

// State returns a copy of the gateway's state (for inspection and tests).
func (g *Gateway) State() GatewayState {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.st
	st.PK = append([]byte(nil), g.st.PK...)
	return st
}

// ID is the gateway identifier GI_i.
func (g *Gateway) ID() string { return g.st.ID }

// Refresh acquires a new quantum key batch from the CSS (seed §3.3 steps
// 1–8): request under PK_n, unwrap under PK_n, DivQ, PK_{n+1} = QK16,
// persist, then acknowledge under PK_{n+1}.
func (g *Gateway) Refresh(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
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
	if err := writeState(g.cfg.StatePath, g.seal, &next, true); err != nil {
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
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
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
		// Kept in memory only: after a reboot a unit may be shown again with
		// a fresh expiry, which is harmless — the platform accepts each unit
		// once — and saves an fsync per code.
		g.st.ShownExpires = now.Add(g.cfg.TTL).Unix()
	}
	keyID, err := parseKeyID(g.st.KeyID)
	if err != nil {
		return nil, err
	}
	var u [UnitSize]byte
	copy(u[:], g.st.Units[g.st.Next])
	d := &Display{Gateway: g.st.ID, Merchant: g.st.Merchant, Amount: g.sale.amount, Currency: g.sale.currency,
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
func (g *Gateway) Advance() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.st.Next++
	g.st.ShownExpires = 0
	return writeState(g.cfg.StatePath, g.seal, &g.st, false)
}

// Signer is a crypto.Signer (named here so callers can assert to it).
type Signer = crypto.Signer
