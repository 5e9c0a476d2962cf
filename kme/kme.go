package kme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/sqldb"
)

// Sentinel errors.
var (
	ErrConfig     = errors.New("kme: invalid configuration")
	ErrMasterKey  = errors.New("kme: wrong or invalid pool master key")
	ErrCorrupt    = errors.New("kme: stored key material failed authentication")
	ErrBadDeposit = errors.New("kme: invalid key deposit")
)

// Defaults of Config.
const (
	DefaultKeySizeBits      = 256
	DefaultMaxKeyCount      = 100000
	DefaultMaxKeyPerRequest = 128
	DefaultMaxKeySize       = 1024
	DefaultMinKeySize       = 64
	DefaultSyncGrace        = 5 * time.Second
	DefaultReconcileEvery   = time.Minute
)

// Principals maps a verified client certificate to its principal (pki.CA).
type Principals interface {
	Authenticate(ctx context.Context, cert *x509.Certificate) (*pki.Principal, error)
}

// Config configures one KME.
type Config struct {
	// KMEID names this KME (source_KME_ID); the CommonName of its client
	// certificate towards the peer KME.
	KMEID string
	// PeerKMEID names the KME at the other end of the QKD link
	// (target_KME_ID); only a client certificate with this CommonName may
	// use the KME-to-KME endpoints. Empty: no peer (a single-site KME whose
	// SAEs are all local).
	PeerKMEID string
	// SAEs are the IDs (client certificate CommonNames) of the SAEs attached
	// to this KME.
	SAEs []string
	// PeerSAEs are the SAEs attached to the peer KME. Empty means any SAE
	// that is not local is assumed to be at the peer, which has the last word.
	PeerSAEs []string
	// KeySizeBits is the default key size (key_size), a multiple of 8, and
	// the unit of stored_key_count and max_key_count. Default 256.
	KeySizeBits int
	// SegmentBits is how the pool stores key material: each deposited QKD
	// key is cut into segments of this many bits (the last one shorter),
	// and a request of any size carves its keys from them (carve.go).
	// Large segments make large keys cheap (a 64-kbit key from 64-kbit
	// segments is one row at each KME) and cost a small key the rewrite of
	// its segment's remainder. A multiple of 8; default KeySizeBits.
	SegmentBits int
	// MaxKeyCount bounds stored_key_count: the pool holds at most
	// MaxKeyCount × KeySizeBits bits. Deposits beyond it are dropped.
	// Default 100000.
	MaxKeyCount int
	// MaxKeyPerRequest bounds number in a request (default 128).
	MaxKeyPerRequest int
	// MaxKeySize and MinKeySize bound size in bits (defaults 1024 and 64).
	MaxKeySize, MinKeySize int
	// PeerURL is the peer KME's base URL ("https://host:port"); PeerTLS
	// its client configuration (this KME's client certificate, the CA).
	PeerURL string
	PeerTLS *tls.Config
	// MasterKey (32 bytes) encrypts the pool at rest.
	MasterKey []byte
	// Identify returns the caller's ID from its verified TLS state. Default:
	// pki.PeerIdentity's CommonName.
	Identify func(*tls.ConnectionState) (string, error)
	// Principals, when set, authenticates every request's client
	// certificate to a principal of the platform CA's register (revocation
	// included, per request) and decides by its kind, never its name: the
	// KME-to-KME endpoints need a kme-peer principal named PeerKMEID, the
	// ETSI 014 endpoints an sae or charger principal. pki.CA implements it.
	Principals Principals
	// AnyRole accepts client certificates without qshield's role extension
	// (certificates from an external CA). By default an SAE must present a
	// certificate of role application and the peer KME one of role client,
	// so that neither can pose as the other even with a chosen CommonName.
	AnyRole bool
	// SyncGrace is how old a unit must be before the KME that takes units
	// from the newest end may use it, and before reconciliation may judge it
	// missing at the peer (the two sides deposit the same block at slightly
	// different times). Default 5s; negative means 0.
	SyncGrace time.Duration
	// ReconcileEvery is the period of the pool reconciliation with the peer
	// while Serve runs (default one minute; negative disables it).
	ReconcileEvery time.Duration
	// RedeliverWithin, when positive, keeps a key delivered to its slave
	// SAE (dec_keys) for this long, sealed like any unit, and answers a
	// repeated dec_keys for it by the same SAE pair with the same key; Serve
	// deletes such keys once the time has passed ([KME.SweepDelivered]).
	// It closes a crash window of the slave: the QMSP PPS stores a fetched
	// key in its own transaction, and a PPS that died between the delivery
	// and that commit lost the key. Zero: a delivered key is deleted in the
	// delivery's transaction, as ETSI GS QKD 014 describes.
	RedeliverWithin time.Duration
	// Duty, when set, runs each of Serve's background duties: "kme-sync/"
	// + KMEID (prune and reconcile the pool with the peer, every
	// ReconcileEvery) and "kme-sweep/" + KMEID (SweepDelivered). It must
	// call work and return when ctx ends; the platform runs work under a
	// lease so that with several nodes on one database one node at a time
	// does each duty (both write idempotently: a deletion of the same rows
	// by a paused former holder changes nothing, so they need no fencing
	// token). Nil: this process runs them.
	Duty func(ctx context.Context, name string, work func(context.Context))
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.KeySizeBits == 0 {
		c.KeySizeBits = DefaultKeySizeBits
	}
	if c.SegmentBits == 0 {
		c.SegmentBits = c.KeySizeBits
	}
	if c.MaxKeyCount == 0 {
		c.MaxKeyCount = DefaultMaxKeyCount
	}
	if c.MaxKeyPerRequest == 0 {
		c.MaxKeyPerRequest = DefaultMaxKeyPerRequest
	}
	if c.MaxKeySize == 0 {
		c.MaxKeySize = DefaultMaxKeySize
	}
	if c.MinKeySize == 0 {
		c.MinKeySize = DefaultMinKeySize
	}
	if c.SyncGrace == 0 {
		c.SyncGrace = DefaultSyncGrace
	} else if c.SyncGrace < 0 {
		c.SyncGrace = 0
	}
	if c.ReconcileEvery == 0 {
		c.ReconcileEvery = DefaultReconcileEvery
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Identify == nil {
		c.Identify = func(cs *tls.ConnectionState) (string, error) {
			cn, _, err := pki.PeerIdentity(cs)
			return cn, err
		}
	}
	switch {
	case !validID(c.KMEID):
		return fmt.Errorf("%w: KME ID %q (1-128 printable characters)", ErrConfig, c.KMEID)
	case c.PeerKMEID != "" && !validID(c.PeerKMEID):
		return fmt.Errorf("%w: peer KME ID %q", ErrConfig, c.PeerKMEID)
	case c.PeerKMEID == c.KMEID:
		return fmt.Errorf("%w: the peer KME ID equals this KME's ID", ErrConfig)
	case c.PeerKMEID != "" && (c.PeerURL == "" || c.PeerTLS == nil):
		return fmt.Errorf("%w: a peer KME needs PeerURL and PeerTLS", ErrConfig)
	case c.KeySizeBits <= 0 || c.KeySizeBits%8 != 0:
		return fmt.Errorf("%w: key size %d bits is not a positive multiple of 8", ErrConfig, c.KeySizeBits)
	case c.SegmentBits <= 0 || c.SegmentBits%8 != 0 || c.SegmentBits > 1<<24:
		return fmt.Errorf("%w: segment size %d bits is not a positive multiple of 8 up to 2^24", ErrConfig, c.SegmentBits)
	case c.MinKeySize <= 0 || c.MinKeySize%8 != 0 || c.MaxKeySize%8 != 0 || c.MinKeySize > c.MaxKeySize:
		return fmt.Errorf("%w: key size limits %d..%d bits", ErrConfig, c.MinKeySize, c.MaxKeySize)
	case c.KeySizeBits < c.MinKeySize || c.KeySizeBits > c.MaxKeySize:
		return fmt.Errorf("%w: key size %d outside %d..%d", ErrConfig, c.KeySizeBits, c.MinKeySize, c.MaxKeySize)
	case c.MaxKeyPerRequest <= 0 || c.MaxKeyPerRequest > 10000:
		return fmt.Errorf("%w: max keys per request %d", ErrConfig, c.MaxKeyPerRequest)
	case c.MaxKeyCount <= 0:
		return fmt.Errorf("%w: max key count %d", ErrConfig, c.MaxKeyCount)
	case len(c.SAEs) == 0:
		return fmt.Errorf("%w: no SAE attached", ErrConfig)
	}
	seen := map[string]bool{c.KMEID: true, c.PeerKMEID: true}
	for _, s := range append(slices.Clone(c.SAEs), c.PeerSAEs...) {
		if !validID(s) {
			return fmt.Errorf("%w: SAE ID %q", ErrConfig, s)
		}
		if seen[s] {
			return fmt.Errorf("%w: ID %q used twice (SAE and KME IDs must be distinct)", ErrConfig, s)
		}
		seen[s] = true
	}
	return nil
}

// validID accepts 1–128 printable ASCII characters without '/' (an SAE ID
// travels in the URL path).
func validID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e || s[i] == '/' {
			return false
		}
	}
	return true
}

// group is one delivered key (an ETSI key_ID) reserved for a slave SAE.
type group struct {
	id       string
	master   string
	slave    string
	sizeBits int
	units    []*unit
	busy     bool // being delivered right now
	// delivered is when the slave SAE first fetched the key (unix
	// nanoseconds; 0: not yet), with RedeliverWithin set.
	delivered int64
	fromPeer  bool // reserved by the peer KME (it may release it)
}

// KME is one key management entity: the key pool of one site and its ETSI
// GS QKD 014 API. It is safe for concurrent use.
type KME struct {
	cfg       Config
	db        *sqldb.DB
	w         *writer
	ownWriter bool
	seal      *sealer
	log       *slog.Logger
	peer      *peerClient
	low       bool // takes units from the oldest end of the pool
	local     map[string]bool
	remote    map[string]bool

	depositMu sync.Mutex

	pruneMu   sync.Mutex // one Prune at a time
	lastPrune time.Time  // under pruneMu

	adoptMu     sync.Mutex // one adoptDeposits at a time
	lastAdopted int64      // highest seq read from the database (under adoptMu)

	mu       sync.Mutex
	pool     *pool
	inflight map[string]*unit // taken from the pool, not yet committed
	groups   map[string]*group
	// reservedUnits maps each unit of a reserved group to its group.
	reservedUnits map[string]*group

	link   atomic.Pointer[LinkState]
	closed atomic.Bool // with a shared writer: refuse new work after Close
	// counters
	deposited, dropped, deliveredMaster, deliveredSlave atomic.Int64
}

// New opens (migrating if needed) the key pool of cfg.KMEID in db and
// returns its KME. Close releases it.
func New(ctx context.Context, db *sqldb.DB, cfg Config) (*KME, error) {
	return newKME(ctx, db, cfg, nil)
}

// newKME is New with an optional shared writer (Pair shares one between its
// two KMEs, so that on SQLite they do not fight over the write lock and
// their updates share commits).
func newKME(ctx context.Context, db *sqldb.DB, cfg Config, w *writer) (*KME, error) {
	cfg.SAEs = slices.Clone(cfg.SAEs)
	cfg.PeerSAEs = slices.Clone(cfg.PeerSAEs)
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s, err := newSealer(cfg.MasterKey)
	if err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx, component, migrations); err != nil {
		return nil, fmt.Errorf("kme: %w", err)
	}
	if err := checkMasterKey(ctx, db, cfg.KMEID, s); err != nil {
		if errors.Is(err, ErrMasterKey) {
			return nil, err
		}
		return nil, fmt.Errorf("kme: check master key: %w", err)
	}
	if n, err := reseal(ctx, db, cfg.KMEID, s); err != nil {
		return nil, err
	} else if n > 0 {
		cfg.Logger.Info("kme: resealed key units in the current at-rest format", "kme", cfg.KMEID, "units", n)
	}
	if n, err := fillBits(ctx, db, cfg.KMEID, s); err != nil {
		return nil, err
	} else if n > 0 {
		cfg.Logger.Info("kme: recorded the length of key units written before carving", "kme", cfg.KMEID, "units", n)
	}
	cfg.MasterKey = nil // only the derived keys in the sealer are kept
	k := &KME{
		cfg: cfg, db: db, seal: s, log: cfg.Logger.With("kme", cfg.KMEID),
		low:           cfg.PeerKMEID == "" || cfg.KMEID < cfg.PeerKMEID,
		local:         make(map[string]bool),
		remote:        make(map[string]bool),
		pool:          newPool(),
		inflight:      make(map[string]*unit),
		groups:        make(map[string]*group),
		reservedUnits: make(map[string]*group),
	}
	for _, s := range cfg.SAEs {
		k.local[s] = true
	}
	for _, s := range cfg.PeerSAEs {
		k.remote[s] = true
	}
	if cfg.PeerKMEID != "" {
		k.peer = newPeerClient(cfg.PeerURL, cfg.PeerTLS)
	}
	k.link.Store(&LinkState{State: LinkUnknown, Since: time.Now().UTC()})
	if err := k.load(ctx); err != nil {
		return nil, err
	}
	if w == nil {
		w = newWriter(db)
		k.ownWriter = true
	}
	k.w = w
	return k, nil
}

// load rebuilds the in-memory index from the database.
func (k *KME) load(ctx context.Context) error {
	rows, err := k.db.QueryContext(ctx, k.db.Rebind(`SELECT key_id, seq, state, group_id, part, size_bits, master_sae, slave_sae, created_at, reserved_at, COALESCE(bits, 0)
		FROM kme_keys WHERE kme_id = ? ORDER BY seq`), k.cfg.KMEID)
	if err != nil {
		return fmt.Errorf("kme: load key pool: %w", err)
	}
	defer rows.Close()
	type partUnit struct {
		part int
		u    *unit
	}
	parts := map[string][]partUnit{}
	for rows.Next() {
		var (
			id, gid, master, slave sql.NullString
			seq, created           int64
			state                  int
			part, size, reservedAt sql.NullInt64
			bits                   int
		)
		if err := rows.Scan(&id, &seq, &state, &gid, &part, &size, &master, &slave, &created, &reservedAt, &bits); err != nil {
			return fmt.Errorf("kme: load key pool: %w", err)
		}
		u := &unit{id: id.String, seq: seq, created: created, bits: bits}
		k.lastAdopted = max(k.lastAdopted, seq)
		switch state {
		case stateAvailable:
			if u.bits > 0 { // 0: failed authentication (fillBits)
				k.pool.insert(u)
			}
		case stateReserved, stateDelivered:
			g := k.groups[gid.String]
			if g == nil {
				g = &group{id: gid.String, master: master.String, slave: slave.String, sizeBits: int(size.Int64), fromPeer: !k.local[master.String]}
				if state == stateDelivered {
					g.delivered = max(reservedAt.Int64, 1)
				}
				k.groups[g.id] = g
			}
			parts[g.id] = append(parts[g.id], partUnit{int(part.Int64), u})
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("kme: load key pool: %w", err)
	}
	for gid, ps := range parts {
		slices.SortFunc(ps, func(a, b partUnit) int { return a.part - b.part })
		g := k.groups[gid]
		for _, p := range ps {
			g.units = append(g.units, p.u)
		}
		k.addGroup(g)
	}
	return nil
}

// Close stops the KME's database writer. Requests still running fail.
func (k *KME) Close() error {
	if k.ownWriter {
		k.w.close()
	} else {
		k.closed.Store(true)
	}
	if k.peer != nil {
		k.peer.c.CloseIdleConnections()
	}
	return nil
}

// ID returns the KME ID.
func (k *KME) ID() string { return k.cfg.KMEID }

// Config returns the effective configuration (defaults filled in), without
// the master key.
func (k *KME) Config() Config {
	c := k.cfg
	c.MasterKey = nil
	return c
}

// Stored returns stored_key_count: how many keys of KeySizeBits the
// available key material makes.
func (k *KME) Stored() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.stored()
}

func (k *KME) stored() int { return int(k.pool.bits / int64(k.cfg.KeySizeBits)) }

// StoredBits returns the available key material in bits.
func (k *KME) StoredBits() int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pool.bits
}

// Room returns how many more keys of KeySizeBits the pool accepts.
func (k *KME) Room() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return int(k.roomBits() / int64(k.cfg.KeySizeBits))
}

// roomBits is how much more key material the pool accepts (k.mu held).
func (k *KME) roomBits() int64 {
	used := k.pool.bits
	for _, u := range k.inflight {
		used += int64(u.bits)
	}
	r := int64(k.cfg.MaxKeyCount)*int64(k.cfg.KeySizeBits) - used
	if r < 0 {
		return 0
	}
	return r
}

// Deposit files keys delivered by the QKD link into the pool; it is a
// qkd.Sink. Each key is cut into units of SegmentBits (the last one
// shorter), named as the package doc says, so both KMEs file the same
// material under the same IDs. Units beyond the pool's capacity
// (MaxKeyCount keys of KeySizeBits) are dropped (counted, logged at debug
// level): the pool never grows beyond its limit. A malformed key ID fails the whole call and stores nothing; a unit
// already known is skipped.
func (k *KME) Deposit(ctx context.Context, keys []qkd.Key) error {
	_, err := k.DepositN(ctx, keys)
	return err
}

// DepositN is Deposit returning the number of units stored.
func (k *KME) DepositN(ctx context.Context, keys []qkd.Key) (int, error) {
	ub := k.cfg.SegmentBits / 8
	type row struct {
		u   *unit
		enc []byte
	}
	var units []row
	now := time.Now().UnixNano()
	for _, key := range keys {
		id, ok := parseUUID(key.ID)
		if !ok {
			return 0, fmt.Errorf("%w: key ID %q is not a UUID", ErrBadDeposit, key.ID)
		}
		n := (len(key.Bytes) + ub - 1) / ub
		for i := 0; i < n; i++ {
			uid := unitID(id, i, n)
			b := key.Bytes[i*ub : min((i+1)*ub, len(key.Bytes))]
			enc, err := k.seal.seal(k.cfg.KMEID, uid, b)
			if err != nil {
				return 0, err
			}
			units = append(units, row{u: &unit{id: uid, created: now, bits: 8 * len(b)}, enc: enc})
		}
	}
	k.depositMu.Lock()
	defer k.depositMu.Unlock()
	k.mu.Lock()
	room := k.roomBits()
	kept := units[:0]
	seen := map[string]bool{}
	for _, r := range units {
		if k.pool.has(r.u.id) || k.inflight[r.u.id] != nil || k.unitReserved(r.u.id) || seen[r.u.id] {
			continue
		}
		if int64(r.u.bits) > room {
			break
		}
		room -= int64(r.u.bits)
		seen[r.u.id] = true
		kept = append(kept, r)
	}
	k.mu.Unlock()
	if d := len(units) - len(kept); d > 0 {
		k.dropped.Add(int64(d))
		k.log.Debug("pool full or duplicate units: dropped", "units", d)
	}
	if len(kept) == 0 {
		return 0, nil
	}
	const chunk = 100
	err := k.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		// Sequence numbers come from the database, under a lock per KME,
		// so that several processes depositing into one pool never pick
		// the same one (an in-memory counter did: duplicate kme_keys_pkey).
		base, err := nextSeq(ctx, k.db, tx, k.cfg.KMEID)
		if err != nil {
			return err
		}
		for i := range kept {
			kept[i].u.seq = base + int64(i)
		}
		for i := 0; i < len(kept); i += chunk {
			part := kept[i:min(i+chunk, len(kept))]
			q := `INSERT INTO kme_keys (kme_id, key_id, seq, key_enc, state, created_at, bits) VALUES ` +
				repeatJoin("(?, ?, ?, ?, 0, ?, ?)", len(part))
			args := make([]any, 0, 6*len(part))
			for _, r := range part {
				args = append(args, k.cfg.KMEID, r.u.id, r.u.seq, r.enc, r.u.created, r.u.bits)
			}
			if _, err := k.w.exec(ctx, tx, k.db.Rebind(q), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("kme: deposit %d units: %w", len(kept), err)
	}
	k.mu.Lock()
	for _, r := range kept {
		k.pool.insert(r.u)
	}
	k.mu.Unlock()
	k.deposited.Add(int64(len(kept)))
	return len(kept), nil
}

// unitReserved reports whether a unit belongs to a reserved group (k.mu held).
func (k *KME) unitReserved(id string) bool { return k.reservedUnits[id] != nil }

// reservedCount is the number of keys waiting for their slave SAE (k.mu
// held); delivered keys kept for redelivery do not count.
func (k *KME) reservedCount() int {
	n := 0
	for _, g := range k.groups {
		if g.delivered == 0 {
			n++
		}
	}
	return n
}

// addGroup and dropGroup keep groups and reservedUnits together (k.mu held).
func (k *KME) addGroup(g *group) {
	k.groups[g.id] = g
	for _, u := range g.units {
		k.reservedUnits[u.id] = g
	}
}

func (k *KME) dropGroup(g *group) {
	delete(k.groups, g.id)
	for _, u := range g.units {
		delete(k.reservedUnits, u.id)
	}
}

func repeatJoin(s string, n int) string {
	b := make([]byte, 0, n*(len(s)+2))
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, s...)
	}
	return string(b)
}

// Link states reported in status_extension.
const (
	LinkUnknown = "unknown" // no link attached (keys deposited by hand or by another process)
	LinkUp      = "up"
	LinkAborted = "aborted" // the link detected an eavesdropper or too much noise
	LinkDown    = "down"    // the link stopped or failed
)

// LinkState is the QKD link health as the KME reports it.
type LinkState struct {
	State string    `json:"state"`
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since"`
}

// SetLink records the health of the QKD link that feeds this KME.
func (k *KME) SetLink(state string, err error) {
	ls := &LinkState{State: state, Since: time.Now().UTC()}
	if err != nil {
		ls.Error = err.Error()
	}
	if old := k.link.Load(); old != nil && old.State == ls.State && old.Error == ls.Error {
		return
	}
	k.link.Store(ls)
}

// Link returns the recorded link health.
func (k *KME) Link() LinkState { return *k.link.Load() }

// Counters are running totals since New.
type Counters struct {
	DepositedUnits  int64 `json:"deposited_units"` // segments deposited
	DroppedUnits    int64 `json:"dropped_units"`
	DeliveredMaster int64 `json:"delivered_to_master"`
	DeliveredSlave  int64 `json:"delivered_to_slave"`
	// StoredUnits is stored_key_count: the available key material in keys
	// of KeySizeBits (compare with MaxKeyCount).
	StoredUnits int `json:"stored_units"`
	// StoredBits is the available key material in bits; StoredSegments
	// the number of units (rows) it is kept in.
	StoredBits     int64 `json:"stored_bits"`
	StoredSegments int   `json:"stored_segments"`
	ReservedKeys   int   `json:"reserved_keys"`
}

// Counters returns the running totals.
func (k *KME) Counters() Counters {
	k.mu.Lock()
	stored, bits, segs, reserved := k.stored(), k.pool.bits, k.pool.len(), k.reservedCount()
	k.mu.Unlock()
	return Counters{
		DepositedUnits: k.deposited.Load(), DroppedUnits: k.dropped.Load(),
		DeliveredMaster: k.deliveredMaster.Load(), DeliveredSlave: k.deliveredSlave.Load(),
		StoredUnits: stored, StoredBits: bits, StoredSegments: segs, ReservedKeys: reserved,
	}
}

// AvailableIDs returns the IDs of the available units, oldest first (for
// tests and diagnostics).
func (k *KME) AvailableIDs() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pool.snapshot(1<<63 - 1)
}

// ReservedKeyIDs returns the key IDs reserved for a slave SAE, sorted.
func (k *KME) ReservedKeyIDs() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	ids := make([]string, 0, len(k.groups))
	for id, g := range k.groups {
		if g.delivered == 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// do runs fn through the database writer.
func (k *KME) do(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if k.closed.Load() {
		return errClosed
	}
	return k.w.do(ctx, fn)
}
