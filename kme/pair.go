package kme

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/sqldb"
)

// SiteConfig describes one site of a Pair.
type SiteConfig struct {
	KMEID  string   // e.g. "KME_A"
	SAEs   []string // SAEs attached to this site's KME
	Listen string   // listen address, e.g. "127.0.0.1:8441" (":0" style for any port)
	// RedeliverWithin (see Config) for this site's slave SAEs.
	RedeliverWithin time.Duration
}

// PairConfig configures StartPair: both sites' KMEs on one database and one
// CA, each with its own mutual-TLS listener, linked to each other.
type PairConfig struct {
	CA        *pki.CA
	A, B      SiteConfig
	MasterKey []byte // pool master key (32 bytes), shared by both KMEs here
	// Host is the name or IP the KMEs are reached at (in their server
	// certificates and URLs); default "127.0.0.1".
	Host string
	// Optional KME limits (see Config); zero means the default.
	KeySizeBits, SegmentBits, MaxKeyCount, MaxKeyPerRequest, MaxKeySize, MinKeySize int
	SyncGrace, ReconcileEvery                                                       time.Duration
	Logger                                                                          *slog.Logger
	// Duty (see Config) runs both KMEs' background duties.
	Duty func(ctx context.Context, name string, work func(context.Context))
}

// Pair is two KMEs, one per site, serving ETSI 014 and synchronised with
// each other. The QKD link feeds them through SinkA and SinkB (or RunLink).
type Pair struct {
	A, B       *KME
	AURL, BURL string // https://host:port of each KME
	ca         *pki.CA
	host       string
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	errs       chan error
	w          *writer // shared by A and B
}

// StartPair issues the KMEs' certificates from cfg.CA, opens both KMEs on
// db, and serves them until ctx ends or Close is called.
func StartPair(ctx context.Context, db *sqldb.DB, cfg PairConfig) (*Pair, error) {
	if cfg.CA == nil {
		return nil, fmt.Errorf("%w: StartPair needs a CA", ErrConfig)
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	var dns []string
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil {
		ips = append(ips, ip)
	} else {
		dns = append(dns, host)
	}
	lnA, err := net.Listen("tcp", orDefault(cfg.A.Listen, net.JoinHostPort(host, "0")))
	if err != nil {
		return nil, fmt.Errorf("kme: listen for %s: %w", cfg.A.KMEID, err)
	}
	lnB, err := net.Listen("tcp", orDefault(cfg.B.Listen, net.JoinHostPort(host, "0")))
	if err != nil {
		lnA.Close()
		return nil, fmt.Errorf("kme: listen for %s: %w", cfg.B.KMEID, err)
	}
	urlOf := func(ln net.Listener) string {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		return "https://" + net.JoinHostPort(host, port)
	}
	p := &Pair{AURL: urlOf(lnA), BURL: urlOf(lnB), ca: cfg.CA, host: host, errs: make(chan error, 2), w: newWriter(db)}
	fail := func(err error) (*Pair, error) {
		lnA.Close()
		lnB.Close()
		if p.A != nil {
			p.A.Close()
		}
		if p.B != nil {
			p.B.Close()
		}
		p.w.close()
		return nil, err
	}
	type site struct {
		sc         SiteConfig
		peer       SiteConfig
		peerURL    string
		serverTLS  *tls.Config
		peerClient *tls.Config
	}
	mk := func(sc, peer SiteConfig, peerURL string) (*site, error) {
		srv, err := cfg.CA.ServiceTLS(ctx, "kme/"+sc.KMEID+"/server", pki.IssueRequest{Role: pki.RoleServer, CommonName: sc.KMEID, DNSNames: dns, IPAddresses: ips})
		if err != nil {
			return nil, fmt.Errorf("kme: issue server certificate for %s: %w", sc.KMEID, err)
		}
		cli, err := cfg.CA.ServiceTLS(ctx, "kme/"+sc.KMEID+"/client", pki.IssueRequest{Role: pki.RoleClient, CommonName: sc.KMEID, Kind: pki.PrincipalKMEPeer, Scheme: "kme"})
		if err != nil {
			return nil, fmt.Errorf("kme: issue client certificate for %s: %w", sc.KMEID, err)
		}
		return &site{sc: sc, peer: peer, peerURL: peerURL,
			serverTLS: cfg.CA.ServerTLS(ctx, srv), peerClient: pki.PostQuantumOnly(cfg.CA.ClientTLS(ctx, cli, host))}, nil
	}
	sa, err := mk(cfg.A, cfg.B, p.BURL)
	if err != nil {
		return fail(err)
	}
	sb, err := mk(cfg.B, cfg.A, p.AURL)
	if err != nil {
		return fail(err)
	}
	open := func(s *site) (*KME, error) {
		return newKME(ctx, db, Config{
			KMEID: s.sc.KMEID, PeerKMEID: s.peer.KMEID, SAEs: s.sc.SAEs, PeerSAEs: s.peer.SAEs,
			KeySizeBits: cfg.KeySizeBits, SegmentBits: cfg.SegmentBits, MaxKeyCount: cfg.MaxKeyCount, MaxKeyPerRequest: cfg.MaxKeyPerRequest,
			MaxKeySize: cfg.MaxKeySize, MinKeySize: cfg.MinKeySize,
			PeerURL: s.peerURL, PeerTLS: s.peerClient, MasterKey: cfg.MasterKey,
			SyncGrace: cfg.SyncGrace, ReconcileEvery: cfg.ReconcileEvery, RedeliverWithin: s.sc.RedeliverWithin, Logger: log, Duty: cfg.Duty,
			Principals: cfg.CA,
		}, p.w)
	}
	if p.A, err = open(sa); err != nil {
		return fail(err)
	}
	if p.B, err = open(sb); err != nil {
		return fail(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	for _, x := range []struct {
		k  *KME
		ln net.Listener
		tc *tls.Config
	}{{p.A, lnA, sa.serverTLS}, {p.B, lnB, sb.serverTLS}} {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := x.k.Serve(sctx, x.ln, x.tc); err != nil {
				p.errs <- err
			}
		}()
	}
	return p, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Err returns a channel that yields a server error, if one stops.
func (p *Pair) Err() <-chan error { return p.errs }

// Close stops both servers and closes both KMEs.
func (p *Pair) Close() error {
	p.cancel()
	p.wg.Wait()
	err := errors.Join(p.A.Close(), p.B.Close())
	p.w.close()
	return err
}

// ClientTLS issues a client certificate for SAE saeID and returns a TLS
// configuration for talking to either KME of the pair.
func (p *Pair) ClientTLS(ctx context.Context, saeID string) (*tls.Config, error) {
	return p.ClientTLSAs(ctx, saeID, pki.PrincipalSAE)
}

// ClientTLSAs is ClientTLS for an SAE that is also a principal of another
// kind (a key charger is an SAE of its site's KME): kind is sae or charger.
func (p *Pair) ClientTLSAs(ctx context.Context, saeID string, kind pki.PrincipalKind) (*tls.Config, error) {
	cert, err := p.ca.ServiceTLS(ctx, "kme/sae/"+saeID+"/"+string(kind), pki.IssueRequest{Role: pki.RoleApplication, CommonName: saeID, Kind: kind, Scheme: "kme"})
	if err != nil {
		return nil, fmt.Errorf("kme: issue SAE certificate for %s: %w", saeID, err)
	}
	return pki.PostQuantumOnly(p.ca.ClientTLS(ctx, cert, p.host)), nil
}

// Sinks returns the deposit functions for the two ends of the QKD link
// (Alice's keys go to A, Bob's to B). They apply back-pressure: while either
// pool is full, a sink waits (until ctx ends) instead of dropping, so a
// running link pauses rather than burning CPU; when only part of a block
// fits, both sides keep the same first units.
func (p *Pair) Sinks() (a, b qkd.Sink) {
	mk := func(k *KME) qkd.Sink {
		return func(ctx context.Context, keys []qkd.Key) error {
			if err := p.waitRoom(ctx); err != nil {
				return err
			}
			return k.Deposit(ctx, keys)
		}
	}
	return mk(p.A), mk(p.B)
}

// Deposit gives both KMEs the same keys, as the two ends of a link do.
// Tests and load experiments fill the pools this way without running the
// link (see qkd.RandomKeys).
func (p *Pair) Deposit(ctx context.Context, keys []qkd.Key) error {
	a, b := p.Sinks()
	if err := a(ctx, keys); err != nil {
		return err
	}
	return b(ctx, keys)
}

// waitRoom blocks until both pools have room.
func (p *Pair) waitRoom(ctx context.Context) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for p.A.Room() == 0 || p.B.Room() == 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// RunLink runs a QKD link session with run (e.g. a closure calling the qkd
// package's in-process runner with the two sinks), recording the link state
// in both KMEs' status: up while it runs, aborted when it fails with
// qkd.ErrAborted (eavesdropping or too much noise), down otherwise. The
// pools keep their keys; enc_keys answers 503 naming the link state once
// they run dry.
func (p *Pair) RunLink(ctx context.Context, run func(ctx context.Context, sinkA, sinkB qkd.Sink) error) error {
	a, b := p.Sinks()
	p.setLink(LinkUp, nil)
	err := run(ctx, a, b)
	switch {
	case err == nil || ctx.Err() != nil:
		p.setLink(LinkDown, nil)
	case errors.Is(err, qkd.ErrAborted):
		p.setLink(LinkAborted, err)
	default:
		p.setLink(LinkDown, err)
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("kme: QKD link: %w", err)
	}
	return nil
}

func (p *Pair) setLink(state string, err error) {
	p.A.SetLink(state, err)
	p.B.SetLink(state, err)
}

// SetLink records the link state in both KMEs.
func (p *Pair) SetLink(state string, err error) { p.setLink(state, err) }

// JoinKeys wraps sink so that each call's keys are filed as one key: their
// bytes concatenated in order under the first key's ID. A QKD link calls
// both ends' sinks with the same keys of one block, so both KMEs cut the
// same material into the same segments (Config.SegmentBits) under the same
// names, and a link that delivers small keys (256 bits) still fills a pool
// of large segments. The joined key holds exactly the bits the link
// distilled. The same block deposited again gets the same names (and is
// skipped as known); keys regrouped differently would not be recognised,
// so use JoinKeys only on a sink that a link feeds block by block.
func JoinKeys(sink qkd.Sink) qkd.Sink {
	return func(ctx context.Context, keys []qkd.Key) error {
		if len(keys) <= 1 {
			return sink(ctx, keys)
		}
		n := 0
		for _, k := range keys {
			n += len(k.Bytes)
		}
		b := make([]byte, 0, n)
		for _, k := range keys {
			b = append(b, k.Bytes...)
		}
		err := sink(ctx, []qkd.Key{{ID: keys[0].ID, Bytes: b}})
		clear(b)
		return err
	}
}
