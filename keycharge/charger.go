package keycharge

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/qshield/qshield/keycharge/device"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/progress"
)

// KeySource delivers quantum keys to the charger as the master SAE —
// etsi014.Client's EncKeys.
type KeySource interface {
	EncKeys(ctx context.Context, slaveSAE string, number, sizeBits int) ([]etsi014.KeyMaterial, error)
}

// ChargerConfig configures a Charger (QKC).
type ChargerConfig struct {
	Platform *Client   // the QKMP
	KME      KeySource // this site's KME (ETSI 014)
	// MasterSAE is this charger's SAE ID at its KME (sent to the QKMP so the
	// QSSC can fetch the keys); SlaveSAE is the QSSC's SAE ID (default "qssc").
	MasterSAE, SlaveSAE string
	// KeyBits is the size of each ETSI key (default 65536 = 8 KiB; must be
	// allowed by the KME's max_key_size). Batch keys per enc_keys call
	// (default 128), Parallel calls in flight (default 4).
	KeyBits, Batch, Parallel int
	Progress                 *progress.Factory
	Log                      *slog.Logger
	// Fault, when set, is called at the named points of a charge; an error
	// stops the charge right there, as a crash would (tests).
	Fault func(point string) error
}

// Fault points, in charge order.
const (
	FaultAfterBegin    = "after-begin"
	FaultAfterAuth     = "after-auth"
	FaultMidWrite      = "mid-write"
	FaultBeforeStage   = "before-stage"
	FaultAfterStage    = "after-stage"
	FaultAfterCommit   = "after-commit" // platform committed, device not yet
	FaultAfterDevice   = "after-device-commit"
	maxChargeKeysBytes = 64 << 20
)

// FaultPoints lists the fault points in order.
var FaultPoints = []string{FaultAfterBegin, FaultAfterAuth, FaultMidWrite, FaultBeforeStage, FaultAfterStage, FaultAfterCommit, FaultAfterDevice}

// Charger is the quantum key charger. It is safe for concurrent use, but a
// device should be charged by one charger at a time.
type Charger struct {
	cfg ChargerConfig

	mu         sync.Mutex
	pool       []etsi014.KeyMaterial // local key pool (prefetched, announced)
	poolBytes  int64
	prefetchMu sync.Mutex
	poolReset  bool
	tuneOnce   sync.Once
}

// statusSource is a KeySource that can report the KME's limits
// (etsi014.Client).
type statusSource interface {
	Status(ctx context.Context, slaveSAE string) (*etsi014.Status, error)
}

// tune reads the KME's limits once (when the key source can report them)
// and fits the key size and batch to them: a KME with a small
// max_key_size still works, only with more keys per charge.
func (c *Charger) tune(ctx context.Context) {
	c.tuneOnce.Do(func() {
		ss, ok := c.cfg.KME.(statusSource)
		if !ok {
			return
		}
		st, err := ss.Status(ctx, c.cfg.SlaveSAE)
		if err != nil {
			c.cfg.Log.Warn("KME status (keeping the configured key size)", "err", err)
			return
		}
		if st.MaxKeySize > 0 && c.cfg.KeyBits > st.MaxKeySize {
			c.cfg.Log.Info("key size reduced to the KME's max_key_size", "from", c.cfg.KeyBits, "to", st.MaxKeySize)
			c.cfg.KeyBits = st.MaxKeySize - st.MaxKeySize%8
		}
		if st.MaxKeyPerRequest > 0 && c.cfg.Batch > st.MaxKeyPerRequest {
			c.cfg.Batch = st.MaxKeyPerRequest
		}
	})
}

// NewCharger checks cfg and returns a charger.
func NewCharger(cfg ChargerConfig) (*Charger, error) {
	if cfg.Platform == nil || cfg.KME == nil || cfg.MasterSAE == "" {
		return nil, fmt.Errorf("%w: a charger needs Platform, KME and MasterSAE", ErrInvalid)
	}
	if cfg.SlaveSAE == "" {
		cfg.SlaveSAE = "qssc"
	}
	if cfg.KeyBits <= 0 {
		cfg.KeyBits = 65536
	}
	if cfg.KeyBits%8 != 0 || cfg.KeyBits/8 > device.MaxKeyLen {
		return nil, fmt.Errorf("%w: key size %d bits", ErrInvalid, cfg.KeyBits)
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 128
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Charger{cfg: cfg}, nil
}

func (c *Charger) fault(p string) error {
	if c.cfg.Fault == nil {
		return nil
	}
	if err := c.cfg.Fault(p); err != nil {
		return &faultError{point: p, err: err}
	}
	return nil
}

// faultError is an injected crash: nothing is cleaned up after it.
type faultError struct {
	point string
	err   error
}

func (e *faultError) Error() string { return "keycharge: fault at " + e.point + ": " + e.err.Error() }
func (e *faultError) Unwrap() error { return e.err }

// OpenDevice opens the device in dir with pin; a wrong PIN (or a locked
// device) is reported to the platform, which keeps its own count.
func (c *Charger) OpenDevice(ctx context.Context, dir string, pin []byte, opts device.Options) (*device.Device, error) {
	d, err := device.Open(dir, pin, opts)
	if errors.Is(err, device.ErrWrongPIN) || errors.Is(err, device.ErrLocked) {
		if info, perr := device.Peek(dir); perr == nil {
			if _, rerr := c.cfg.Platform.ReportPINFailure(ctx, info.Serial); rerr != nil {
				c.cfg.Log.Warn("report wrong PIN to the platform", "serial", info.Serial, "err", rerr)
			}
		}
	}
	return d, err
}

// Recovery outcomes.
const (
	RecoverNone      = "none"
	RecoverCommitted = "committed"
	RecoverDiscarded = "discarded"
)

// Recover settles a charge the device holds staged from an interrupted
// run: committed on the platform → committed on the device; otherwise
// aborted on the platform and discarded on the device.
func (c *Charger) Recover(ctx context.Context, dev *device.Device) (string, error) {
	p := dev.Pending()
	if p == nil {
		return RecoverNone, nil
	}
	for attempt := 0; attempt < 3; attempt++ {
		st, err := c.cfg.Platform.ChargeStatus(ctx, p.ID)
		if errors.Is(err, ErrNotFound) {
			return RecoverDiscarded, dev.DiscardCharge(p.ID)
		}
		if err != nil {
			return "", fmt.Errorf("keycharge: recover charge %s: %w", p.ID, err)
		}
		switch st.State {
		case ChargeCommitted:
			if err := dev.CommitCharge(p.ID, st.Hash); err != nil {
				return "", fmt.Errorf("keycharge: recover charge %s: %w", p.ID, err)
			}
			return RecoverCommitted, nil
		case ChargeAborted:
			return RecoverDiscarded, dev.DiscardCharge(p.ID)
		default:
			_, err := c.cfg.Platform.AbortCharge(ctx, p.ID, "recovered after an interrupted charge")
			if errors.Is(err, ErrChargeState) {
				continue // committed or aborted meanwhile: look again
			}
			if err != nil {
				return "", fmt.Errorf("keycharge: recover charge %s: %w", p.ID, err)
			}
			return RecoverDiscarded, dev.DiscardCharge(p.ID)
		}
	}
	return "", fmt.Errorf("keycharge: recover charge %s: state keeps changing", p.ID)
}

// ChargeResult describes a finished charge.
type ChargeResult struct {
	ChargeID  string        `json:"charge_id"`
	Serial    string        `json:"serial"`
	Keys      int           `json:"keys"`
	Bytes     int64         `json:"bytes"`
	Hash      []byte        `json:"hash"`
	Recovered string        `json:"recovered,omitempty"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	Remaining int64         `json:"remaining"` // device's unused key after the charge
	// FetchWrite is the time spent fetching keys (ETSI 014) and writing them
	// into the device; Commit the platform's dec_keys, consistency check and store.
	FetchWrite time.Duration `json:"fetch_write_ns"`
	Commit     time.Duration `json:"commit_ns"`
}

type batch struct {
	keys []etsi014.KeyMaterial
	err  error
}

// Charge charges volume bytes of quantum key into dev (opened with its
// PIN): recovery of an earlier interrupted charge, authentication with the
// platform, key delivery over ETSI 014 with a progress bar, staging on the
// device, the platform's consistency check and commit, then the device's
// commit.
func (c *Charger) Charge(ctx context.Context, dev *device.Device, volume int64) (*ChargeResult, error) {
	start := time.Now()
	if volume < 1 || volume > maxChargeKeysBytes {
		return nil, fmt.Errorf("%w: volume %d bytes", ErrInvalid, volume)
	}
	rec, err := c.Recover(ctx, dev)
	if err != nil {
		return nil, err
	}
	cert := dev.Certificate()
	if cert == nil {
		return nil, device.ErrNoCertificate
	}
	info := dev.Info()
	begin, err := c.cfg.Platform.BeginCharge(ctx, BeginRequest{Serial: info.Serial, Volume: volume, Certificate: cert.Raw, AbortOpen: true})
	if err != nil {
		return nil, err
	}
	id := begin.ChargeID
	if err := c.fault(FaultAfterBegin); err != nil {
		return nil, err
	}
	sig, err := dev.Signer().Sign(rand.Reader, ChallengeDigest(id, info.Serial, volume, begin.Challenge), crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("keycharge: device signature: %w", err)
	}
	if err := c.cfg.Platform.AuthenticateCharge(ctx, id, sig); err != nil {
		return nil, err
	}
	if err := c.fault(FaultAfterAuth); err != nil {
		return nil, err
	}
	w, err := dev.BeginCharge(id)
	if err != nil {
		return nil, err
	}
	staged := false
	defer func() {
		if !staged {
			w.Abort()
		}
	}()
	tFill := time.Now()
	ids, total, err := c.fill(ctx, w, volume)
	fillDur := time.Since(tFill)
	if err != nil {
		var fe *faultError
		if errors.As(err, &fe) {
			staged = true // a crash leaves the temporary file behind (swept on the next Open)
			return nil, err
		}
		c.abandon(ctx, id, err)
		return nil, err
	}
	if err := c.fault(FaultBeforeStage); err != nil {
		return nil, err
	}
	hash, err := w.Stage()
	if err != nil {
		c.abandon(ctx, id, err)
		return nil, err
	}
	staged = true
	if err := c.fault(FaultAfterStage); err != nil {
		return nil, err
	}
	tCommit := time.Now()
	st, err := c.cfg.Platform.CommitCharge(ctx, id, CommitRequest{MasterSAE: c.cfg.MasterSAE, KeyIDs: ids, Hash: hash})
	commitDur := time.Since(tCommit)
	if err != nil {
		if errors.Is(err, ErrHashMismatch) || errors.Is(err, ErrChargeState) || errors.Is(err, ErrDeviceState) {
			// The platform refused for good: the device drops the keys.
			if derr := dev.DiscardCharge(id); derr != nil {
				c.cfg.Log.Error("discard refused charge", "charge", id, "err", derr)
			}
		}
		// Otherwise (network, KME) the charge stays pending on both sides
		// and the next plug-in recovers it.
		return nil, err
	}
	if !bytes.Equal(st.Hash, hash) {
		return nil, fmt.Errorf("%w: platform recorded a different hash", ErrHashMismatch)
	}
	if err := c.fault(FaultAfterCommit); err != nil {
		return nil, err
	}
	if err := dev.CommitCharge(id, st.Hash); err != nil {
		return nil, err
	}
	if err := c.fault(FaultAfterDevice); err != nil {
		return nil, err
	}
	return &ChargeResult{ChargeID: id, Serial: info.Serial, Keys: len(ids), Bytes: total, Hash: hash, Recovered: rec, Elapsed: time.Since(start), Remaining: dev.Remaining(),
		FetchWrite: fillDur, Commit: commitDur}, nil
}

// abandon aborts a charge on the platform after a local failure before staging.
func (c *Charger) abandon(ctx context.Context, id string, cause error) {
	if _, err := c.cfg.Platform.AbortCharge(context.WithoutCancel(ctx), id, "charger: "+truncate(cause.Error(), 400)); err != nil {
		c.cfg.Log.Warn("abort charge", "charge", id, "err", err)
	}
}

// fill writes volume bytes of keys, in order, into w: from the local pool
// first, then fetched from the KME in parallel batches.
func (c *Charger) fill(ctx context.Context, w *device.ChargeWriter, volume int64) ([]string, int64, error) {
	c.tune(ctx)
	keyBytes := int64(c.cfg.KeyBits / 8)
	n := int((volume + keyBytes - 1) / keyBytes)
	bar := c.cfg.Progress.Start("charging", int64(n)*keyBytes, "B")
	defer bar.Done()
	ids := make([]string, 0, n)
	var total int64
	add := func(k etsi014.KeyMaterial) error {
		if err := w.Add(k.ID, k.Key); err != nil {
			return err
		}
		ids = append(ids, k.ID)
		total += int64(len(k.Key))
		bar.Add(int64(len(k.Key)))
		clear(k.Key)
		if len(ids) == n/2+1 {
			return c.fault(FaultMidWrite)
		}
		return nil
	}
	for _, k := range c.takePool(n) {
		if err := add(k); err != nil {
			return nil, 0, err
		}
	}
	if err := c.stream(ctx, n-len(ids), add); err != nil {
		return nil, 0, err
	}
	return ids, total, nil
}

// stream fetches n keys from the KME (parallel batches) and passes them, in
// order, to fn.
func (c *Charger) stream(ctx context.Context, n int, fn func(etsi014.KeyMaterial) error) error {
	if n <= 0 {
		return nil
	}
	nb := (n + c.cfg.Batch - 1) / c.cfg.Batch
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]chan batch, nb)
	for i := range results {
		results[i] = make(chan batch, 1)
	}
	sem := make(chan struct{}, c.cfg.Parallel)
	go func() {
		for i := 0; i < nb; i++ {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			cnt := min(c.cfg.Batch, n-i*c.cfg.Batch)
			go func(i, cnt int) {
				ks, err := retryKME(ctx, func() ([]etsi014.KeyMaterial, error) {
					return c.cfg.KME.EncKeys(ctx, c.cfg.SlaveSAE, cnt, c.cfg.KeyBits)
				})
				if err == nil && len(ks) != cnt {
					err = fmt.Errorf("KME returned %d keys for %d", len(ks), cnt)
				}
				if err != nil {
					err = fmt.Errorf("%w: enc_keys: %v", ErrKME, err)
				}
				results[i] <- batch{ks, err}
			}(i, cnt)
		}
	}()
	for i := 0; i < nb; i++ {
		var b batch
		select {
		case b = <-results[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
		<-sem
		if b.err != nil {
			return b.err
		}
		for _, k := range b.keys {
			if err := fn(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// takePool removes up to n keys from the local pool.
func (c *Charger) takePool(n int) []etsi014.KeyMaterial {
	c.mu.Lock()
	defer c.mu.Unlock()
	n = min(n, len(c.pool))
	out := c.pool[:n:n]
	c.pool = c.pool[n:]
	for _, k := range out {
		c.poolBytes -= int64(len(k.Key))
	}
	return out
}

// Pooled is the local pool's size in bytes.
func (c *Charger) Pooled() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.poolBytes
}

// Prefetch tops the local key pool up to target bytes: keys are fetched
// from the KME and announced to the platform, which fetches and pools its
// copies; only keys the platform confirmed enter the local pool. The first
// call resets the platform's pool of this charger (keys a previous run
// announced are lost with its memory).
func (c *Charger) Prefetch(ctx context.Context, target int64) (int64, error) {
	c.prefetchMu.Lock()
	defer c.prefetchMu.Unlock()
	if !c.poolReset {
		if _, err := c.cfg.Platform.ResetPool(ctx); err != nil {
			return 0, err
		}
		c.poolReset = true
	}
	c.tune(ctx)
	keyBytes := int64(c.cfg.KeyBits / 8)
	need := target - c.Pooled()
	if need <= 0 {
		return c.Pooled(), nil
	}
	n := int((need + keyBytes - 1) / keyBytes)
	bar := c.cfg.Progress.Start("prefetching", int64(n)*keyBytes, "B")
	defer bar.Done()
	var pending []etsi014.KeyMaterial
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		ids := make([]string, len(pending))
		for i, k := range pending {
			ids[i] = k.ID
		}
		if _, err := c.cfg.Platform.PoolKeys(ctx, PoolRequest{MasterSAE: c.cfg.MasterSAE, KeyIDs: ids}); err != nil {
			for _, k := range pending {
				clear(k.Key)
			}
			pending = nil
			return err
		}
		c.mu.Lock()
		for _, k := range pending {
			c.pool = append(c.pool, k)
			c.poolBytes += int64(len(k.Key))
		}
		c.mu.Unlock()
		pending = nil
		return nil
	}
	chunk := min(MaxPoolBatch, c.cfg.Batch*c.cfg.Parallel*2)
	err := c.stream(ctx, n, func(k etsi014.KeyMaterial) error {
		pending = append(pending, k)
		bar.Add(int64(len(k.Key)))
		if len(pending) >= chunk {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return c.Pooled(), err
}

// PINSource returns the PIN for the device in dir (a terminal prompt, a
// flag, an environment variable).
type PINSource func(dir string, info device.Info) ([]byte, error)

// WatchConfig configures plug-in monitoring.
type WatchConfig struct {
	Dir      string        // devices appear as subdirectories holding a store
	Every    time.Duration // polling period (default 500 ms)
	Volume   int64         // bytes to charge per plug-in
	PIN      PINSource
	Options  device.Options
	Once     bool // handle the devices present now, then return
	OnResult func(dir string, res *ChargeResult, err error)
}

// Watch polls cfg.Dir for plugged devices and charges each once per
// plug-in (a device must disappear and reappear to be charged again).
func (c *Charger) Watch(ctx context.Context, cfg WatchConfig) error {
	if cfg.Every <= 0 {
		cfg.Every = 500 * time.Millisecond
	}
	if cfg.PIN == nil || cfg.Volume <= 0 {
		return fmt.Errorf("%w: watch needs a PIN source and a volume", ErrInvalid)
	}
	seen := map[string]bool{}
	t := time.NewTicker(cfg.Every)
	defer t.Stop()
	for {
		present, err := plugged(cfg.Dir)
		if err != nil {
			return err
		}
		for d := range seen {
			if !present[d] {
				delete(seen, d) // unplugged
			}
		}
		names := make([]string, 0, len(present))
		for d := range present {
			names = append(names, d)
		}
		sort.Strings(names)
		for _, d := range names {
			if seen[d] {
				continue
			}
			seen[d] = true
			res, err := c.handle(ctx, d, cfg)
			if cfg.OnResult != nil {
				cfg.OnResult(d, res, err)
			}
		}
		if cfg.Once {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *Charger) handle(ctx context.Context, dir string, cfg WatchConfig) (*ChargeResult, error) {
	info, err := device.Peek(dir)
	if err != nil {
		return nil, err
	}
	pin, err := cfg.PIN(dir, info)
	if err != nil {
		return nil, err
	}
	dev, err := c.OpenDevice(ctx, dir, pin, cfg.Options)
	clear(pin)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	return c.Charge(ctx, dev, cfg.Volume)
}

// plugged returns the subdirectories of dir (and dir itself) holding a store.
func plugged(dir string) (map[string]bool, error) {
	out := map[string]bool{}
	if _, err := os.Stat(filepath.Join(dir, device.StoreFile)); err == nil {
		out[dir] = true
		return out, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("keycharge: watch %s: %w", dir, err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(p, device.StoreFile)); err == nil {
			out[p] = true
		}
	}
	return out, nil
}

// retryKME retries a KME call that failed with 503 (the KME asks to retry,
// e.g. while its pool and its peer's are brought back in step) a few times
// with backoff.
func retryKME(ctx context.Context, call func() ([]etsi014.KeyMaterial, error)) ([]etsi014.KeyMaterial, error) {
	wait := 20 * time.Millisecond
	for attempt := 0; ; attempt++ {
		ks, err := call()
		if err == nil || !errors.Is(err, etsi014.ErrUnavailable) || attempt >= 7 {
			return ks, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 800*time.Millisecond)
	}
}
