package qmsp

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/lease"
	"github.com/qshield/qshield/qkd"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qshield/qshield/sqldb"
)

// Errors of the services; test with errors.Is.
var (
	ErrUnknownGateway = errors.New("qmsp: gateway not registered")
	ErrOutOfStep      = errors.New("qmsp: preset key out of step")
	ErrStale          = errors.New("qmsp: request timestamp outside the allowed window")
	ErrNoQuantumKey   = errors.New("qmsp: no quantum key available")
	ErrGatewayExists  = errors.New("qmsp: gateway already registered")
)

// KeyRequest is a gateway's request for a quantum key batch (seed §3.3 step 1),
// authenticated under the preset key of the epoch it claims to hold.
type KeyRequest struct {
	Gateway string `json:"gateway"`
	Epoch   uint64 `json:"epoch"`
	Time    int64  `json:"time"`
	Nonce   []byte `json:"nonce"`
	MAC     []byte `json:"mac"`
}

// KeyDelivery is the CSS's answer: QK(x) wrapped under the gateway's preset
// key for epoch Epoch-1, to become epoch Epoch at the gateway.
type KeyDelivery struct {
	Gateway string `json:"gateway"`
	Epoch   uint64 `json:"epoch"`
	KeyID   string `json:"key_id"`
	Wrapped []byte `json:"wrapped"`
}

// Ack confirms that the gateway moved to Epoch (MAC under the new preset key).
type Ack struct {
	Gateway string `json:"gateway"`
	Epoch   uint64 `json:"epoch"`
	Time    int64  `json:"time"`
	Nonce   []byte `json:"nonce"`
	MAC     []byte `json:"mac"`
}

// CSSConfig configures the commercial supermarket server.
type CSSConfig struct {
	DB *sqldb.DB
	// Keys is the CSS's key manager client (the CSS is the master SAE).
	Keys MasterKeys
	// SlaveSAE is the payment platform's SAE ID at the peer key manager.
	SlaveSAE string
	// BatchBytes is x, the size of the quantum key per acquisition (default
	// 1024). A gateway needs at least 80 (PK and one payment unit); sizes down
	// to 24 are accepted so that the seed's Tables 1–3 (8-, 24- and 40-byte
	// keys after the 16-byte PK) can be reproduced.
	BatchBytes int
	// Prefetch is how many batches the CSS keeps fetched from its key
	// manager ahead of demand (default 16; negative disables prefetching).
	// The batches wait in the database (sealed), shared by every node of
	// the platform: each is claimed by the one delivery that uses it, in
	// that delivery's transaction, and a node that stops leaves its
	// prefetched batches to the others.
	Prefetch int
	// StorageKey (32 bytes) seals preset keys at rest.
	StorageKey []byte
	Audit      audit.Recorder
	Log        *slog.Logger
	Now        func() time.Time
	// MaxSkew bounds a request's timestamp (default 2 minutes).
	MaxSkew time.Duration
}

// CSS is the commercial supermarket server: it registers gateways (setup
// steps 1–4), and serves their key acquisitions (steps 1–8).
type CSS struct {
	cfg       CSSConfig
	seal      *sealer
	batch     *sqldb.Batcher
	now       func() time.Time
	fillMu    sync.Mutex
	refilling atomic.Bool
	bg        sync.WaitGroup
}

type etsiKey struct {
	id  [16]byte
	key []byte
}

// NewCSS opens the CSS on cfg.DB (applying migrations).
func NewCSS(ctx context.Context, cfg CSSConfig) (*CSS, error) {
	if cfg.DB == nil || cfg.Keys == nil || cfg.SlaveSAE == "" {
		return nil, errors.New("qmsp: CSS needs a database, a key manager client and the slave SAE ID")
	}
	if cfg.BatchBytes == 0 {
		cfg.BatchBytes = MaxBatchSize
	}
	if cfg.BatchBytes < PresetKeySize+8 || cfg.BatchBytes > MaxBatchSize {
		return nil, fmt.Errorf("qmsp: batch size %d outside %d..%d", cfg.BatchBytes, PresetKeySize+8, MaxBatchSize)
	}
	if cfg.Prefetch < 0 {
		cfg.Prefetch = 0
	} else if cfg.Prefetch == 0 {
		cfg.Prefetch = 16
	}
	if cfg.MaxSkew <= 0 {
		cfg.MaxSkew = 2 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s, err := newSealer(cfg.StorageKey)
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, cfg.DB); err != nil {
		return nil, err
	}
	return &CSS{cfg: cfg, seal: s, batch: cfg.DB.NewBatcher(256), now: nowOr(cfg.Now)}, nil
}

// Close waits for a background refill to store what it fetched, then stops
// the CSS's committer.
func (c *CSS) Close() error {
	c.bg.Wait()
	return c.batch.Close()
}

// RegisterGateway records gateway gi of merchant (setup steps 1, 2 and 4) and
// returns its preset key PK, itself 16 bytes of quantum key (step 3), to be
// provisioned into the device out of band.
func (c *CSS) RegisterGateway(ctx context.Context, gi string, merchant uint32) ([PresetKeySize]byte, error) {
	var pk [PresetKeySize]byte
	if err := checkGatewayID(gi); err != nil {
		return pk, err
	}
	keys, err := c.cfg.Keys.EncKeys(ctx, c.cfg.SlaveSAE, 1, PresetKeySize*8)
	if err != nil {
		return pk, fmt.Errorf("%w: preset key for %s: %w", ErrNoQuantumKey, gi, err)
	}
	if len(keys) != 1 || len(keys[0].Key) != PresetKeySize {
		return pk, fmt.Errorf("%w: key manager returned %d keys", ErrNoQuantumKey, len(keys))
	}
	copy(pk[:], keys[0].Key)
	sealedPK, err := c.seal.seal(pk[:], "css-pk/"+gi+"/0")
	if err != nil {
		return pk, err
	}
	err = c.batch.Do(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, c.cfg.DB.Rebind(`INSERT INTO qmsp_css_gateways (gi, merchant, status, epoch, pk, updated_at) VALUES (?, ?, 'active', 0, ?, ?)`),
			gi, int64(merchant), sealedPK, c.now().UnixNano())
		return err
	})
	if sqldb.IsUniqueViolation(err) {
		return pk, fmt.Errorf("%w: %s", ErrGatewayExists, gi)
	}
	if err != nil {
		return pk, fmt.Errorf("qmsp: register gateway %s: %w", gi, err)
	}
	audited(ctx, c.cfg.Audit, "css", "qmsp.gateway.register", "success", gi, map[string]string{"merchant": strconv.FormatUint(uint64(merchant), 10)})
	return pk, nil
}

// errNoBuffered: no prefetched batch of the CSS's size is waiting.
var errNoBuffered = errors.New("qmsp: no prefetched quantum key batch")

// claim takes the oldest prefetched batch in tx (the delivery's
// transaction: if it rolls back, the batch stays for another) and reports
// how many remain. Concurrent claims on PostgreSQL skip each other's rows.
// A row that does not open (tampered, or sealed under another key) is
// deleted with the claim and the next one taken, so it cannot block every
// delivery.
func (c *CSS) claim(ctx context.Context, tx *sql.Tx) (etsiKey, int, error) {
	skip := ""
	if c.cfg.DB.Dialect == sqldb.Postgres {
		skip = " FOR UPDATE SKIP LOCKED"
	}
	q := c.cfg.DB.Rebind(`DELETE FROM qmsp_css_prefetch WHERE key_id = (SELECT key_id FROM qmsp_css_prefetch WHERE bytes = ? ORDER BY fetched_at, key_id LIMIT 1` + skip + `) RETURNING key_id, material`)
	for {
		var id string
		var sealed []byte
		err := tx.QueryRowContext(ctx, q, c.cfg.BatchBytes).Scan(&id, &sealed)
		if errors.Is(err, sql.ErrNoRows) {
			return etsiKey{}, 0, errNoBuffered
		}
		if err != nil {
			return etsiKey{}, 0, err
		}
		kid, err := parseKeyID(id)
		var key []byte
		if err == nil {
			key, err = c.seal.open(sealed, "css-prefetch/"+id)
		}
		if err == nil && len(key) != c.cfg.BatchBytes {
			err = fmt.Errorf("qmsp: prefetched batch %s has %d bytes", id, len(key))
		}
		if err != nil {
			c.cfg.Log.Error("qmsp: prefetched batch unusable: discarded", "key", id, "err", err)
			continue
		}
		left := 0
		if c.cfg.Prefetch > 0 {
			if err := tx.QueryRowContext(ctx, c.cfg.DB.Rebind(`SELECT COUNT(*) FROM qmsp_css_prefetch WHERE bytes = ?`), c.cfg.BatchBytes).Scan(&left); err != nil {
				return etsiKey{}, 0, err
			}
		}
		return etsiKey{id: kid, key: key}, left, nil
	}
}

// refillSoon tops the prefetched batches up in the background when fewer
// than half of them remain, so that no visit waits for the key manager
// while batches are still waiting.
func (c *CSS) refillSoon(ctx context.Context, left int) {
	if left >= (c.cfg.Prefetch+1)/2 || !c.refilling.CompareAndSwap(false, true) {
		return
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		defer c.refilling.Store(false)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := c.refill(rctx, false); err != nil {
			c.cfg.Log.Warn("qmsp: CSS prefetch", "err", err)
		}
	}()
}

// Prefetched reports how many quantum key batches of the CSS's size wait in
// the database.
func (c *CSS) Prefetched(ctx context.Context) (int, error) {
	var n int
	err := c.cfg.DB.QueryRowContext(ctx, c.cfg.DB.Rebind(`SELECT COUNT(*) FROM qmsp_css_prefetch WHERE bytes = ?`), c.cfg.BatchBytes).Scan(&n)
	return n, err
}

// refill fetches batches from the key manager until Prefetch+1 wait in the
// database (at least one), and stores them. One process at a time refills
// (a lock shared by the nodes, package lease), re-counting under the lock,
// so nodes never fetch more than the buffer holds. What the key manager
// handed out is stored even when ctx ends meanwhile.
//
// With keep, the request that refills keeps one of the batches for itself,
// returned and not stored (one is fetched for it even when the buffer is
// full): without it, concurrent requests could take every batch it stored
// before its own claim, again and again, and a request failed while
// batches were flowing (seen under load: "prefetched batches taken by
// other requests"). The caller gives the batch back (putBack) when it does
// not use it.
func (c *CSS) refill(ctx context.Context, keep bool) (*etsiKey, error) {
	c.fillMu.Lock()
	defer c.fillMu.Unlock()
	unlock, err := lease.Lock(ctx, c.cfg.DB, "qmsp-css-prefetch")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoQuantumKey, err)
	}
	defer unlock()
	have, err := c.Prefetched(ctx)
	if err != nil {
		return nil, fmt.Errorf("qmsp: count prefetched batches: %w", err)
	}
	n := max(min(c.cfg.Prefetch+1-have, 128), 0)
	if keep && n == 0 {
		n = 1 // its own, when others filled the buffer meanwhile
	}
	if n == 0 {
		return nil, nil
	}
	keys, err := c.cfg.Keys.EncKeys(ctx, c.cfg.SlaveSAE, n, c.cfg.BatchBytes*8)
	if err != nil && n > 1 && have == 0 {
		// The pool may hold less than a full prefetch: take one batch.
		keys, err = c.cfg.Keys.EncKeys(ctx, c.cfg.SlaveSAE, 1, c.cfg.BatchBytes*8)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoQuantumKey, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: key manager returned no key", ErrNoQuantumKey)
	}
	var mine *etsiKey
	rows := make([]prefetchRow, 0, len(keys))
	for _, k := range keys {
		kid, err := parseKeyID(k.ID)
		if err != nil || len(k.Key) != c.cfg.BatchBytes {
			c.cfg.Log.Error("qmsp: key manager returned an unusable batch: dropped", "key", k.ID, "bytes", len(k.Key))
			continue
		}
		if keep && mine == nil {
			mine = &etsiKey{id: kid, key: k.Key}
			continue
		}
		sealed, err := c.seal.seal(k.Key, "css-prefetch/"+k.ID)
		clear(k.Key)
		if err != nil {
			return nil, err
		}
		rows = append(rows, prefetchRow{k.ID, sealed})
	}
	if mine == nil && len(rows) == 0 {
		return nil, fmt.Errorf("%w: key manager returned no usable batch", ErrNoQuantumKey)
	}
	return mine, c.storePrefetched(ctx, rows)
}

type prefetchRow struct {
	id     string
	sealed []byte
}

// storePrefetched stores batches the key manager has handed out, even if
// ctx ends meanwhile (they would be lost otherwise).
func (c *CSS) storePrefetched(ctx context.Context, rows []prefetchRow) error {
	if len(rows) == 0 {
		return nil
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	at := c.now().UnixNano()
	err := c.batch.Do(sctx, func(tx *sql.Tx) error {
		for i, r := range rows {
			if _, err := tx.ExecContext(sctx, c.cfg.DB.Rebind(`INSERT INTO qmsp_css_prefetch (key_id, bytes, material, fetched_at) VALUES (?, ?, ?, ?) ON CONFLICT (key_id) DO NOTHING`),
				r.id, c.cfg.BatchBytes, r.sealed, at+int64(i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		c.cfg.Log.Error("qmsp: prefetched quantum key batches lost: not stored", "batches", len(rows), "err", err)
		return fmt.Errorf("qmsp: store prefetched batches: %w", err)
	}
	return nil
}

// putBack stores a batch refill kept for a request that did not use it, so
// that the next request does.
func (c *CSS) putBack(ctx context.Context, k *etsiKey) error {
	id := qkd.FormatKeyID(k.id)
	sealed, err := c.seal.seal(k.key, "css-prefetch/"+id)
	if err != nil {
		c.cfg.Log.Error("qmsp: kept quantum key batch lost: not sealed", "key", id, "err", err)
		return err
	}
	return c.storePrefetched(ctx, []prefetchRow{{id, sealed}})
}

func (c *CSS) checkTime(unix int64) error {
	d := c.now().Sub(time.Unix(unix, 0))
	if d > c.cfg.MaxSkew || d < -c.cfg.MaxSkew {
		return fmt.Errorf("%w: %s off", ErrStale, d.Round(time.Second))
	}
	return nil
}

type cssGateway struct {
	merchant     int64
	status       string
	epoch        uint64
	pk           [PresetKeySize]byte
	pendingEpoch uint64
	pendingPK    *[PresetKeySize]byte
}

func (c *CSS) load(ctx context.Context, tx *sql.Tx, gi string) (*cssGateway, error) {
	q := `SELECT merchant, status, epoch, pk, pending_epoch, pending_pk FROM qmsp_css_gateways WHERE gi = ?`
	if c.cfg.DB.Dialect == sqldb.Postgres {
		q += ` FOR UPDATE`
	}
	var g cssGateway
	var epoch, pending int64
	var pk, ppk []byte
	err := tx.QueryRowContext(ctx, c.cfg.DB.Rebind(q), gi).Scan(&g.merchant, &g.status, &epoch, &pk, &pending, &ppk)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrUnknownGateway, gi)
	}
	if err != nil {
		return nil, err
	}
	if g.status != "active" {
		return nil, fmt.Errorf("%w: %s is %s", ErrUnknownGateway, gi, g.status)
	}
	g.epoch, g.pendingEpoch = uint64(epoch), uint64(pending)
	raw, err := c.seal.open(pk, "css-pk/"+gi+"/"+strconv.FormatUint(g.epoch, 10))
	if err != nil {
		return nil, err
	}
	copy(g.pk[:], raw)
	if g.pendingEpoch != 0 {
		raw, err := c.seal.open(ppk, "css-pk/"+gi+"/"+strconv.FormatUint(g.pendingEpoch, 10))
		if err != nil {
			return nil, err
		}
		var p [PresetKeySize]byte
		copy(p[:], raw)
		g.pendingPK = &p
	}
	return &g, nil
}

// AcquireKey serves a gateway's key request. peer is the gateway identity
// proven by the transport (its client certificate's common name); it must
// match the request. The preset-key ratchet is kept in step as follows:
//
//   - request at the CSS's epoch n, MAC valid under PK_n: if a delivery for
//     n+1 is pending, the gateway never got it (lost or rejected message), so
//     it is discarded — its quantum key is burned, never used — and a fresh
//     batch is wrapped under PK_n;
//   - request at n+1 while n+1 is pending, MAC valid under the pending key:
//     the gateway applied the delivery (its acknowledgement was lost), so
//     the CSS commits epoch n+1 and serves the request under PK_{n+1};
//   - anything else (older epochs, replays, a forged MAC, a reset gateway) is
//     refused with ErrOutOfStep or ErrAuth and audited: the two sides never
//     silently disagree, and a gateway that lost its state must be
//     re-provisioned.
func (c *CSS) AcquireKey(ctx context.Context, peer string, req KeyRequest) (*KeyDelivery, error) {
	if err := checkGatewayID(req.Gateway); err != nil {
		return nil, err
	}
	if peer != "" && peer != req.Gateway {
		audited(ctx, c.cfg.Audit, peer, "qmsp.key.acquire", "denied", req.Gateway, map[string]string{"reason": "certificate names another gateway"})
		return nil, fmt.Errorf("%w: certificate of %q used for gateway %q", ErrUnknownGateway, peer, req.Gateway)
	}
	if len(req.Nonce) < 12 || len(req.Nonce) > 64 || len(req.MAC) != 32 {
		return nil, fmt.Errorf("%w: nonce or MAC of wrong size", ErrFormat)
	}
	if err := c.checkTime(req.Time); err != nil {
		return nil, err
	}
	var out *KeyDelivery
	var resync string
	var left int
	var err error
	acquire := func(mine *etsiKey) error {
		return c.batch.Do(ctx, func(tx *sql.Tx) error { return c.acquireTx(ctx, tx, req, mine, &out, &resync, &left) })
	}
	err = acquire(nil)
	if errors.Is(err, errNoBuffered) {
		// Refill, keeping a batch for this request (see refill).
		var mine *etsiKey
		mine, err = c.refill(ctx, true)
		switch {
		case mine != nil: // used even if the other batches were not stored
			if err = acquire(mine); err != nil {
				_ = c.putBack(ctx, mine) // logged; the next request takes it
			}
			clear(mine.key)
		case err == nil:
			err = fmt.Errorf("%w: the key manager returned no batch", ErrNoQuantumKey)
		}
	}
	if err != nil {
		outcome := "failure"
		if errors.Is(err, ErrOutOfStep) || errors.Is(err, ErrAuth) || errors.Is(err, ErrUnknownGateway) {
			outcome = "denied"
		}
		audited(ctx, c.cfg.Audit, req.Gateway, "qmsp.key.acquire", outcome, req.Gateway, map[string]string{"reason": err.Error()})
		return nil, err
	}
	c.refillSoon(ctx, left)
	if resync != "" {
		c.cfg.Log.Info("qmsp: resynchronised gateway", "gateway", req.Gateway, "what", resync)
		audited(ctx, c.cfg.Audit, req.Gateway, "qmsp.key.resync", "success", req.Gateway, map[string]string{"what": resync})
	}
	return out, nil
}

// acquireTx is AcquireKey's transaction: check the request against the
// gateway's epochs, claim a prefetched batch (or use mine, the one the
// request's refill kept), wrap it and move the gateway to the pending
// epoch. A refused request claims nothing.
func (c *CSS) acquireTx(ctx context.Context, tx *sql.Tx, req KeyRequest, mine *etsiKey, out **KeyDelivery, resyncOut *string, left *int) error {
	resync := ""
	g, err := c.load(ctx, tx, req.Gateway)
	if err != nil {
		return err
	}
	var pk [PresetKeySize]byte
	switch {
	case req.Epoch == g.epoch && hmac.Equal(req.MAC, requestMAC(&g.pk, "keyreq", req.Gateway, req.Epoch, req.Time, req.Nonce)):
		pk = g.pk
		if g.pendingEpoch != 0 {
			resync = fmt.Sprintf("delivery for epoch %d never applied: discarded", g.pendingEpoch)
		}
	case g.pendingPK != nil && req.Epoch == g.pendingEpoch && hmac.Equal(req.MAC, requestMAC(g.pendingPK, "keyreq", req.Gateway, req.Epoch, req.Time, req.Nonce)):
		pk = *g.pendingPK
		g.epoch = g.pendingEpoch
		resync = fmt.Sprintf("acknowledgement of epoch %d lost: committed", g.epoch)
	case req.Epoch != g.epoch && req.Epoch != g.pendingEpoch:
		return fmt.Errorf("%w: gateway %s claims epoch %d, the CSS holds %d (pending %d)", ErrOutOfStep, req.Gateway, req.Epoch, g.epoch, g.pendingEpoch)
	default:
		return fmt.Errorf("%w: key request MAC of %s does not verify under the preset key of epoch %d", ErrAuth, req.Gateway, req.Epoch)
	}
	var qk etsiKey
	n := c.cfg.Prefetch // a kept batch leaves the buffer as it is
	if mine != nil {
		qk = etsiKey{id: mine.id, key: bytes.Clone(mine.key)} // the batch may run this function again
	} else if qk, n, err = c.claim(ctx, tx); err != nil {
		return err
	}
	defer clear(qk.key)
	newEpoch := g.epoch + 1
	wrapped, err := Wrap(&pk, req.Gateway, newEpoch, qk.id, qk.key)
	if err != nil {
		return err
	}
	sealedPK, err := c.seal.seal(pk[:], "css-pk/"+req.Gateway+"/"+strconv.FormatUint(g.epoch, 10))
	if err != nil {
		return err
	}
	sealedNext, err := c.seal.seal(qk.key[:PresetKeySize], "css-pk/"+req.Gateway+"/"+strconv.FormatUint(newEpoch, 10))
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, c.cfg.DB.Rebind(`UPDATE qmsp_css_gateways SET epoch = ?, pk = ?, pending_epoch = ?, pending_pk = ?, resyncs = resyncs + ?, updated_at = ? WHERE gi = ?`),
		int64(g.epoch), sealedPK,
		int64(newEpoch), sealedNext,
		boolInt(resync != ""), c.now().UnixNano(), req.Gateway)
	if err != nil {
		return err
	}
	*out = &KeyDelivery{Gateway: req.Gateway, Epoch: newEpoch, KeyID: qkd.FormatKeyID(qk.id), Wrapped: wrapped}
	*resyncOut, *left = resync, n
	return nil
}

// Acknowledge commits a gateway's move to ack.Epoch (step 5 on the CSS side:
// SPK = QK16). A duplicate acknowledgement of the current epoch is accepted.
func (c *CSS) Acknowledge(ctx context.Context, peer string, ack Ack) error {
	if err := checkGatewayID(ack.Gateway); err != nil {
		return err
	}
	if peer != "" && peer != ack.Gateway {
		return fmt.Errorf("%w: certificate of %q used for gateway %q", ErrUnknownGateway, peer, ack.Gateway)
	}
	if err := c.checkTime(ack.Time); err != nil {
		return err
	}
	return c.batch.Do(ctx, func(tx *sql.Tx) error {
		g, err := c.load(ctx, tx, ack.Gateway)
		if err != nil {
			return err
		}
		switch {
		case g.pendingPK != nil && ack.Epoch == g.pendingEpoch && hmac.Equal(ack.MAC, requestMAC(g.pendingPK, "ack", ack.Gateway, ack.Epoch, ack.Time, ack.Nonce)):
			sealedPK, err := c.seal.seal(g.pendingPK[:], "css-pk/"+ack.Gateway+"/"+strconv.FormatUint(g.pendingEpoch, 10))
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, c.cfg.DB.Rebind(`UPDATE qmsp_css_gateways SET epoch = ?, pk = ?, pending_epoch = 0, pending_pk = NULL, updated_at = ? WHERE gi = ?`),
				int64(g.pendingEpoch), sealedPK, c.now().UnixNano(), ack.Gateway)
			return err
		case ack.Epoch == g.epoch && hmac.Equal(ack.MAC, requestMAC(&g.pk, "ack", ack.Gateway, ack.Epoch, ack.Time, ack.Nonce)):
			return nil
		default:
			return fmt.Errorf("%w: acknowledgement of epoch %d from %s does not match (CSS epoch %d, pending %d)", ErrOutOfStep, ack.Epoch, ack.Gateway, g.epoch, g.pendingEpoch)
		}
	})
}

// Epoch reports the CSS's view of a gateway: its committed epoch and the
// pending one (0 when none).
func (c *CSS) Epoch(ctx context.Context, gi string) (epoch, pending uint64, err error) {
	var e, p int64
	err = c.cfg.DB.QueryRowContext(ctx, c.cfg.DB.Rebind(`SELECT epoch, pending_epoch FROM qmsp_css_gateways WHERE gi = ?`), gi).Scan(&e, &p)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, fmt.Errorf("%w: %s", ErrUnknownGateway, gi)
	}
	return uint64(e), uint64(p), err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func newNonce() []byte {
	n := make([]byte, 16)
	_, _ = rand.Read(n)
	return n
}
