package platform

import (
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/kme"
	"github.com/qshield/qshield/lease"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qkd/bb84"
	"github.com/qshield/qshield/qkd/link"
	"github.com/qshield/qshield/sqldb"
)

// The two QKD sites and the applications (SAEs) attached to each.
const (
	KMEPlatform    = "KME_PLATFORM"    // site A: the payment platform
	KMESupermarket = "KME_SUPERMARKET" // site B: the supermarket / service centre
	SAEPPS         = "pps"
	SAECharger     = "charger-1"
	SAECSS         = "css"
	SAEQSSC        = "qssc"
)

// QKDConfig configures the simulated link between the two sites.
type QKDConfig struct {
	// Off disables the link (the key managers still serve what their pools hold).
	Off bool
	// DistanceKm is the fibre length (default 25 km).
	DistanceKm float64
	// Speedup runs the 40 MHz source this many times faster than real time
	// (default 1: one block of 4·10^7 pulses per second of wall time);
	// 0 or negative means as fast as the CPU allows.
	Speedup float64
	// EveFraction intercepts and resends this fraction of pulses.
	EveFraction float64
	// ListenA and ListenB are the key managers' addresses (default: any
	// free port on 127.0.0.1).
	ListenA, ListenB string
	// PerNodeLink runs a link in every node. By default, on PostgreSQL
	// (where several nodes may share the database), the link ends run only
	// in the node holding the "qkd-link" lease, and another node takes over
	// within about 8 s when it dies; the other nodes' key managers serve
	// the link node's deposits from the shared pool. With PerNodeLink every
	// node runs its own link (their units are disjoint; sequence numbers
	// come from the database): more key material, but links that are not
	// one physical link. On SQLite (one node) the link always runs.
	PerNodeLink bool
}

// Secret returns a 32-byte key for purpose, derived (HKDF-SHA256) from the
// platform master key: QSHIELD_PLATFORM_KEY (64 hex digits), or a random key
// kept in the secret directory (platform.key, mode 0600; see secretDir).
func (p *Platform) Secret(purpose string) []byte {
	k, err := hkdf.Key(sha256.New, p.master, nil, "qshield/"+purpose, 32)
	if err != nil {
		panic(err) // only for an invalid length, which 32 is not
	}
	return k
}

// SecretIn is Platform.Secret for a process that is not the platform itself
// but shares its state directory (e.g. a CSS or PPS run on its own).
func SecretIn(dir, purpose string) ([]byte, error) {
	m, err := loadMaster(dir)
	if err != nil {
		return nil, err
	}
	return derive(m, purpose)
}

// derive is the HKDF-SHA256 derivation of Platform.Secret.
func derive(master []byte, purpose string) ([]byte, error) {
	return hkdf.Key(sha256.New, master, nil, "qshield/"+purpose, 32)
}

// existingMaster is loadMaster for a command that must not create the
// platform's master key: QSHIELD_PLATFORM_KEY, or the secret directory's
// platform.key if it exists.
func existingMaster(dir string) ([]byte, error) {
	if os.Getenv("QSHIELD_PLATFORM_KEY") != "" {
		return loadMaster(dir)
	}
	sd, err := secretDir(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(sd, "platform.key")); err != nil {
		return nil, fmt.Errorf("platform: no platform master key here (QSHIELD_PLATFORM_KEY unset, %s: %w): run where the platform's key is, or set it", filepath.Join(sd, "platform.key"), err)
	}
	return loadMaster(dir)
}

func loadMaster(dir string) ([]byte, error) {
	if v := os.Getenv("QSHIELD_PLATFORM_KEY"); v != "" {
		k, err := fsutil.DecodeKey32(v)
		if err != nil {
			return nil, fmt.Errorf("platform: QSHIELD_PLATFORM_KEY: %w", err)
		}
		return k, nil
	}
	sd, err := secretDir(dir)
	if err != nil {
		return nil, err
	}
	k, err := fsutil.LoadOrCreateKey(filepath.Join(sd, "platform.key"))
	if err != nil {
		return nil, fmt.Errorf("platform: %w", err)
	}
	return k, nil
}

// startQuantum starts both sites' key managers (ETSI GS QKD 014 over mutual
// TLS on loopback) and the simulated decoy-state BB84 link between them.
func (p *Platform) startQuantum(ctx context.Context, cfg QKDConfig) error {
	pair, err := kme.StartPair(ctx, p.DB, kme.PairConfig{
		CA: p.CA,
		// Site A keeps a key delivered to the PPS for ten minutes, so that
		// a PPS that died between the delivery and its own commit fetches
		// it again (site B's slave, the QSSC, keeps the one-time delivery
		// the charging protocol was reviewed with).
		A:         kme.SiteConfig{KMEID: KMEPlatform, SAEs: []string{SAEPPS, SAECharger}, Listen: cfg.ListenA, RedeliverWithin: 10 * time.Minute},
		B:         kme.SiteConfig{KMEID: KMESupermarket, SAEs: []string{SAECSS, SAEQSSC}, Listen: cfg.ListenB},
		MasterKey: p.Secret("kme-pool"),
		// One pool of key material serves every size ETSI 014 allows up
		// to 64 kbit: QMSP's small keys are carved from 64-kbit segments,
		// the charger's 8 KiB keys take one segment each (the link's
		// blocks are joined before they are cut, kme.JoinKeys). The pools
		// hold up to 1,000,000 keys of 256 bits (32 MB) each.
		MaxKeySize:  65536,
		SegmentBits: 65536,
		MaxKeyCount: 1_000_000,
		Logger:      p.Config.Log,
		// Pool reconciliation and the sweep of delivered keys: one node
		// at a time on PostgreSQL.
		Duty: p.duty,
	})
	if err != nil {
		return fmt.Errorf("platform: key managers: %w", err)
	}
	p.KME = pair
	p.closers = append(p.closers, pair.Close)
	p.Metrics.AddKME(pair.A)
	p.Metrics.AddKME(pair.B)
	if cfg.Off {
		return nil
	}
	// With the link on, a node whose link stopped (an eavesdropper, a
	// failure) cannot serve new quantum keys: not ready.
	p.Server.AddCheck(server.Check{Name: "qkd_link", Func: func(context.Context) error {
		for _, k := range []*kme.KME{pair.A, pair.B} {
			if ls := k.Link(); ls.State == kme.LinkAborted || ls.State == kme.LinkDown {
				return fmt.Errorf("QKD link at %s is %s since %s: %s", k.ID(), ls.State, ls.Since.Format(time.RFC3339), ls.Error)
			}
		}
		return nil
	}})
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	p.closers = append(p.closers, func() error { cancel(); wg.Wait(); return nil })
	run := func(ctx context.Context, _ int64) error {
		err := pair.RunLink(ctx, func(ctx context.Context, sinkA, sinkB qkd.Sink) error {
			return p.runLink(ctx, cfg, kme.JoinKeys(sinkA), kme.JoinKeys(sinkB))
		})
		if err != nil {
			// A stopped link (an eavesdropper, a failure) stays stopped
			// and visible (/readyz, qkd_link_state) until an operator
			// restarts the node; as the lease holder this node keeps the duty
			// so that no other node silently restarts it.
			p.Config.Log.Error("QKD link stopped", "err", err)
			<-ctx.Done()
		}
		return nil
	}
	if cfg.PerNodeLink || p.DB.Dialect != sqldb.Postgres {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(lctx, 0) }()
		return nil
	}
	// The link ends as a singleton: with several nodes on one database only
	// the holder of the "qkd-link" lease runs them, and another node takes
	// over within the lease TTL (plus a third) when it dies.
	el, err := lease.New(ctx, p.DB, "qkd-link", p.node, 0, p.Config.Log)
	if err != nil {
		return fmt.Errorf("platform: %w", err)
	}
	el.OnChange = func(held bool) { p.Metrics.SetLeader("qkd-link", held) }
	p.Metrics.SetLeader("qkd-link", false)
	wg.Add(1)
	go func() { defer wg.Done(); _ = el.Run(lctx, run) }()
	return nil
}

// nodeName names this process for leases: host, process ID and a random suffix.
func nodeName() string {
	h, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%x", h, os.Getpid(), b)
}

// runLink runs Alice (site A) and Bob (site B) as two parties over a TCP
// connection with mutual TLS from the platform CA, pacing blocks in real time.
func (p *Platform) runLink(ctx context.Context, cfg QKDConfig, sinkA, sinkB qkd.Sink) error {
	km := cfg.DistanceKm
	if km == 0 {
		km = 25
	}
	lc := link.DefaultConfig(km)
	lc.Epsilon = 1e-10
	// Blocks must be long enough for a positive finite key at this distance
	// (every key is sized by the finite-key bound): the source's 10^7-pulse
	// frames are accumulated until the planned block is complete (about
	// 5.3·10^8 pulses, 13 s of the 40 MHz source, at 25 km).
	pulses, err := link.PlanPulses(lc.Physics, lc.Epsilon, 1.10)
	if err != nil {
		return fmt.Errorf("platform: QKD link at %g km: %w", km, err)
	}
	lc.PulsesPerBlock = pulses
	if cfg.EveFraction > 0 {
		lc.Physics.Eve, lc.Physics.EveFraction = bb84.EveInterceptResend, cfg.EveFraction
	}
	lc.Log = p.Config.Log
	lc.OnBlock = func(st qkd.Stats) {
		p.Metrics.QKDBlock(st)
		if m := p.LinkMonitor; m != nil { // the console's live view
			if st.Aborted || st.AbortedBlocks > 0 {
				m.ObserveBlock(st.SampledQBER, 0)
			} else {
				m.ObserveBlock(st.QBER, st.KeyRateBps)
			}
		}
		// One line per block: delivered bits, or the abort cause (a stable
		// value, qkd.AbortCause, ready to become a metric label).
		p.Config.Log.Info("qkd block", "pulses", st.Pulses, "final_bits", st.FinalBits, "qber", st.QBER,
			"f", st.F, "round_trips", st.RoundTrips, "eps_sec", st.EpsSec, "eps_cor", st.EpsCor,
			"aborted", st.Aborted, "cause", string(st.AbortCause))
	}
	p.Config.Log.Info("QKD link block size", "km", km, "pulses_per_block", pulses, "source_seconds", float64(pulses)/40e6)
	blockTime := time.Duration(float64(lc.PulsesPerBlock) / 40e6 * float64(time.Second))
	if cfg.Speedup > 0 {
		blockTime = time.Duration(float64(blockTime) / cfg.Speedup)
	} else {
		blockTime = 0
	}
	aliceCert, err := p.CA.ServiceTLS(ctx, "qkd-alice", pki.IssueRequest{Role: pki.RoleApplication, CommonName: "qkd-alice", Kind: pki.PrincipalKMEPeer, Scheme: "qkd"})
	if err != nil {
		return err
	}
	bobCert, err := p.CA.ServiceTLS(ctx, "qkd-bob", pki.IssueRequest{Role: pki.RoleServer, CommonName: "qkd-bob", IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	bobErr := make(chan error, 1)
	go func() {
		tr, err := link.Accept(ctx, ln, pki.PostQuantumOnly(p.CA.ServerTLS(ctx, bobCert)))
		if err != nil {
			bobErr <- err
			return
		}
		defer tr.Close()
		bobCfg := lc
		bobCfg.OnBlock = nil // each block is logged once, by Alice
		_, err = link.RunBob(ctx, tr, bobCfg, sinkB)
		bobErr <- err
	}()
	tr, err := link.Dial(ctx, ln.Addr().String(), pki.PostQuantumOnly(p.CA.ClientTLS(ctx, aliceCert, "127.0.0.1")))
	if err != nil {
		return err
	}
	last := time.Now()
	paced := func(ctx context.Context, keys []qkd.Key) error {
		if err := sinkA(ctx, keys); err != nil {
			return err
		}
		if wait := blockTime - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
		last = time.Now()
		return nil
	}
	_, err = link.RunAlice(ctx, tr, lc, paced)
	tr.Close()
	if berr := <-bobErr; err == nil && berr != nil && ctx.Err() == nil {
		err = berr
	}
	return err
}
