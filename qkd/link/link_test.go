package link

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qkd/bb84"
	"github.com/qshield/qshield/qkd/cascade"
)

type collector struct {
	mu   sync.Mutex
	keys []qkd.Key
}

func (c *collector) sink(_ context.Context, k []qkd.Key) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keys = append(c.keys, k...)
	return nil
}

func sameKeys(t *testing.T, a, b []qkd.Key) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("Alice has %d keys, Bob %d", len(a), len(b))
	}
	seen := map[string]bool{}
	for i := range a {
		if a[i].ID != b[i].ID || !bytes.Equal(a[i].Bytes, b[i].Bytes) {
			t.Fatalf("key %d differs: %s vs %s", i, a[i].ID, b[i].ID)
		}
		if !validUUID(a[i].ID) || seen[a[i].ID] {
			t.Fatalf("key %d: bad or repeated ID %q", i, a[i].ID)
		}
		seen[a[i].ID] = true
	}
}

func testConfig(km float64) Config {
	cfg := DefaultConfig(km)
	cfg.Blocks = 1
	seed := [32]byte{42}
	cfg.Seed = &seed
	return cfg
}

func TestRunDeliversIdenticalKeys(t *testing.T) {
	var a, b collector
	cfg := testConfig(25)
	cfg.Blocks = 2
	st, err := Run(context.Background(), cfg, a.sink, b.sink)
	if err != nil {
		t.Fatal(err)
	}
	sameKeys(t, a.keys, b.keys)
	if len(a.keys) == 0 || int64(len(a.keys)) != st.DeliveredKeys || st.FinalBits != 256*st.DeliveredKeys {
		t.Fatalf("delivered %d keys, stats say %d keys / %d bits", len(a.keys), st.DeliveredKeys, st.FinalBits)
	}
	for _, k := range a.keys {
		if len(k.Bytes) != 32 {
			t.Fatalf("key of %d bytes", len(k.Bytes))
		}
	}
	// A frame Cascade leaves with an error (about 10^-4 of frames) is caught
	// by verification and discarded; more than a couple in 2 blocks is a bug.
	if st.Blocks != 2 || st.Aborted || st.ResidualFrames > 2 {
		t.Fatalf("stats: %+v", st)
	}
	if st.F < 1 || st.F > 1.15 {
		t.Errorf("reconciliation efficiency %.3f", st.F)
	}
	// Sifting keeps the detections where both chose the same basis.
	px := cfg.Physics.PX
	if r, want := float64(st.Sifted)/float64(st.Detected), px*px+(1-px)*(1-px); math.Abs(r-want) > 0.01 {
		t.Errorf("sifted fraction %.4f, want %.4f", r, want)
	}
	// QBER ≈ e_d plus dark counts at 25 km (3.3%).
	if st.QBER < 0.028 || st.QBER > 0.038 {
		t.Errorf("QBER %.4f, want about 0.033", st.QBER)
	}
	t.Logf("%+v", st)
}

func TestFullInterceptResendAborts(t *testing.T) {
	var a, b collector
	cfg := testConfig(10)
	cfg.Physics.Eve = bb84.EveInterceptResend
	cfg.Physics.EveFraction = 1
	st, err := Run(context.Background(), cfg, a.sink, b.sink)
	if !errors.Is(err, qkd.ErrAborted) {
		t.Fatalf("err = %v, want ErrAborted", err)
	}
	if len(a.keys)+len(b.keys) != 0 || !st.Aborted || st.FinalBits != 0 {
		t.Fatalf("aborted block delivered keys: %+v", st)
	}
	if st.SampledQBER < 0.22 || st.SampledQBER > 0.30 {
		t.Errorf("QBER under full intercept-resend %.3f, want about 0.25", st.SampledQBER)
	}
}

// TestPNSExposedByDecoys: a photon-number-splitting attack does not raise the
// QBER, but the decoy bounds expose it and the block aborts.
func TestPNSExposedByDecoys(t *testing.T) {
	cfg := testConfig(50)
	cfg.Physics.Eve = bb84.EvePNS
	cfg.Physics.EveFraction = 1
	st, err := Run(context.Background(), cfg, nil, nil)
	if !errors.Is(err, qkd.ErrAborted) {
		t.Fatalf("err = %v, want ErrAborted (stats %+v)", err, st)
	}
	if st.SampledQBER > 0.05 {
		t.Errorf("PNS raised the QBER to %.3f; it should not", st.SampledQBER)
	}
	if st.AbortCause != qkd.CauseDecoy {
		t.Errorf("abort cause %q (%s), want %q", st.AbortCause, st.AbortReason, qkd.CauseDecoy)
	}
}

func TestContinueOnAbort(t *testing.T) {
	cfg := testConfig(10)
	cfg.Blocks = 2
	cfg.ContinueOnAbort = true
	cfg.Physics.Eve = bb84.EveInterceptResend
	cfg.Physics.EveFraction = 1
	st, err := Run(context.Background(), cfg, nil, nil)
	if !errors.Is(err, qkd.ErrAborted) || st.Blocks != 2 || st.AbortedBlocks != 2 {
		t.Fatalf("err = %v, stats %+v", err, st)
	}
}

// tamper wraps Bob's transport and flips one parity in some of Alice's
// replies: Cascade then miscorrects, and verification must catch every such
// frame so that both ends still hold identical keys.
type tamper struct {
	Transport
	n int
}

func (t *tamper) Recv(ctx context.Context) (Message, error) {
	m, err := t.Transport.Recv(ctx)
	if r, ok := m.(*ParityReply); ok && err == nil {
		t.n++
		if (t.n == 30 || t.n == 60) && len(r.Frames) > 0 && r.Frames[0].N > 0 {
			r.Frames[0].Bits[0] ^= 1
		}
	}
	return m, err
}

func TestVerificationCatchesCorruptedFrames(t *testing.T) {
	ta, tb := Pipe()
	cfg := testConfig(25)
	var a, b collector
	var bobErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, bobErr = RunBob(context.Background(), &tamper{Transport: tb}, cfg, b.sink)
	}()
	st, err := RunAlice(context.Background(), ta, cfg, a.sink)
	ta.Close()
	wg.Wait()
	if err != nil || bobErr != nil {
		t.Fatalf("alice: %v, bob: %v", err, bobErr)
	}
	if st.ResidualFrames == 0 {
		t.Fatal("no frame was corrupted: the test did not exercise verification")
	}
	sameKeys(t, a.keys, b.keys)
	t.Logf("%d of %d frames caught and discarded", st.ResidualFrames, st.Frames)
}

func TestSinkErrorStops(t *testing.T) {
	boom := errors.New("disk full")
	_, err := Run(context.Background(), testConfig(25), nil, func(context.Context, []qkd.Key) error { return boom })
	if !errors.Is(err, boom) && !errors.Is(err, ErrPeer) {
		t.Fatalf("err = %v", err)
	}
}

func TestBadConfig(t *testing.T) {
	cfg := testConfig(25)
	cfg.FrameBits = 10
	if _, err := Run(context.Background(), cfg, nil, nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v, want ErrConfig", err)
	}
	cfg = testConfig(0)
	cfg.PulsesPerBlock = 1e12 // 2·10^10 detections: far beyond one block's limit
	if _, err := Run(context.Background(), cfg, nil, nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v, want ErrConfig", err)
	}
	cfg = testConfig(25)
	cfg.Physics.Nu = 0.9
	if _, err := RunAlice(context.Background(), nil, cfg, nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v, want ErrConfig", err)
	}
}

func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cfg := testConfig(25)
	cfg.Blocks = 0
	n := 0
	cfg.OnBlock = func(qkd.Stats) {
		n++
		if n == 2 {
			cancel()
		}
	}
	st, err := Run(ctx, cfg, nil, nil)
	if !errors.Is(err, context.Canceled) || st.Blocks != 2 {
		t.Fatalf("err = %v after %d blocks", err, st.Blocks)
	}
}

// --- mutual TLS over TCP ---

type pki struct {
	server, client *tls.Config
	rogue          *tls.Config // client certificate from another CA
}

func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

func leaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, usage x509.ExtKeyUsage) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func newPKI(t *testing.T) pki {
	ca, caKey := newCA(t, "qkd test CA")
	other, otherKey := newCA(t, "rogue CA")
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pki{
		server: &tls.Config{Certificates: []tls.Certificate{leaf(t, ca, caKey, "bob.qkd", x509.ExtKeyUsageServerAuth)},
			ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13},
		client: &tls.Config{Certificates: []tls.Certificate{leaf(t, ca, caKey, "alice.qkd", x509.ExtKeyUsageClientAuth)},
			RootCAs: pool, ServerName: "bob.qkd", MinVersion: tls.VersionTLS13},
		rogue: &tls.Config{Certificates: []tls.Certificate{leaf(t, other, otherKey, "alice.qkd", x509.ExtKeyUsageClientAuth)},
			RootCAs: pool, ServerName: "bob.qkd", MinVersion: tls.VersionTLS13},
	}
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := testConfig(25)
	var a, b collector
	bobDone := make(chan error, 1)
	go func() {
		tr, err := Accept(ctx, ln, p.server)
		if err != nil {
			bobDone <- err
			return
		}
		defer tr.Close()
		_, err = RunBob(ctx, tr, cfg, b.sink)
		bobDone <- err
	}()
	tr, err := Dial(ctx, ln.Addr().String(), p.client)
	if err != nil {
		t.Fatal(err)
	}
	st, err := RunAlice(ctx, tr, cfg, a.sink)
	tr.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-bobDone; err != nil {
		t.Fatal(err)
	}
	sameKeys(t, a.keys, b.keys)
	if st.DeliveredKeys == 0 {
		t.Fatal("no keys over TLS")
	}

	// A client whose certificate the CA did not issue is refused.
	go func() {
		_, err := Accept(ctx, ln, p.server)
		bobDone <- err
	}()
	if tr, err := Dial(ctx, ln.Addr().String(), p.rogue); err == nil {
		// TLS 1.3 reports the client-certificate failure on first read.
		_, err = tr.Recv(ctx)
		if err == nil {
			t.Fatal("rogue client accepted")
		}
		tr.Close()
	}
	if err := <-bobDone; err == nil {
		t.Fatal("server accepted a client certificate from another CA")
	}
}

func TestTLSConfigMustBeMutual(t *testing.T) {
	p := newPKI(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	weak := p.server.Clone()
	weak.ClientAuth = tls.NoClientCert
	if _, err := Accept(context.Background(), ln, weak); err == nil {
		t.Error("Accept took a server config without client authentication")
	}
	if _, err := Dial(context.Background(), ln.Addr().String(), &tls.Config{InsecureSkipVerify: true}); err == nil {
		t.Error("Dial took a config without client certificate")
	}
	if _, err := Dial(context.Background(), ln.Addr().String(), nil); err == nil {
		t.Error("Dial took a nil config")
	}
}

// --- codec ---

func sampleMessages() []Message {
	return []Message{
		&Quantum{Block: 1, Pulses: 1000, N: 3, Slots: []uint64{5, 6, 900}, Basis: []uint64{5}, Value: []uint64{3}},
		&Detections{Block: 1, N: 2, Slots: []uint64{0, 77}, Basis: []uint64{2}},
		&Sift{Block: 2, N: 5, Basis: []uint64{9}, Class: []uint8{0, 1, 2, 0, 0}, PulsesPerClass: [3]uint64{800, 100, 100}},
		&Sample{Block: 3, N: 10, Bits: []uint64{1}},
		&Counts{Block: 3, Errors: [3]uint64{1, 2, 3}, Compared: [3]uint64{10, 20, 30}},
		&Decision{Block: 4, Abort: true, Reason: "QBER", QBER: 0.03, FrameBits: 16384, CascadeSeed: [32]byte{7}},
		&Decision{Block: 5, QBER: 0.02, FrameBits: 10000, CascadeSeed: [32]byte{8}, Method: MethodLDPC},
		&ParityRequest{Frames: []FrameRequest{{Frame: 3, Ranges: []cascade.Range{{Pass: 1, Lo: 0, Hi: 64}, {Pass: 0, Lo: 5, Hi: 9}}}}},
		&ParityReply{Frames: []FrameReply{{Frame: 3, N: 2, Bits: []uint64{2}}}},
		&Reconciled{Block: 5, Corrected: 33},
		&Verify{Block: 5, Point: 99, Tags: []uint64{1, 2}},
		&VerifyResult{Block: 5, Frames: 2, OK: []uint64{3}},
		&Amplify{Block: 6, Seed: []uint64{3, 4}, Bits: 512, IDs: []string{"0f8fad5b-d9cb-469f-a165-70867728950e", "7c9e6679-7425-40de-944b-e07fc1f90ae7"}},
		&BlockDone{Block: 6, Tag: 77},
		&Auth{Block: 6, Tag: 1 << 63},
		&Abort{Reason: "bye"},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		b := Marshal(m)
		got, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		if !bytes.Equal(Marshal(got), b) {
			t.Fatalf("%T: re-encoding differs", m)
		}
		// Every truncation is an error, never a panic.
		for i := 0; i < len(b); i++ {
			if _, err := Unmarshal(b[:i]); err == nil {
				t.Fatalf("%T truncated to %d bytes decoded", m, i)
			}
		}
	}
}

func TestCodecRejects(t *testing.T) {
	bad := []Message{
		&Quantum{Block: 1, Pulses: 10, N: 2, Slots: []uint64{5, 10}, Basis: []uint64{0}, Value: []uint64{0}},  // slot ≥ pulses
		&Quantum{Block: 1, Pulses: 100, N: 3, Slots: []uint64{5, 10}, Basis: []uint64{0}, Value: []uint64{0}}, // count mismatch
		&Counts{Errors: [3]uint64{5}, Compared: [3]uint64{4}},
		&Amplify{IDs: []string{"not-a-uuid"}},
		&Sample{N: 65, Bits: []uint64{1}},
		&VerifyResult{Frames: 65, OK: []uint64{1}},
	}
	for _, m := range bad {
		if _, err := Unmarshal(Marshal(m)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%T: err = %v, want ErrMalformed", m, err)
		}
	}
	if _, err := Unmarshal([]byte{99}); !errors.Is(err, ErrMalformed) {
		t.Error("unknown type accepted")
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(Marshal(m))
	}
	f.Add([]byte{byte(TQuantum), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Unmarshal(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// Whatever decodes must re-encode to something that decodes the same.
		b2 := Marshal(m)
		m2, err := Unmarshal(b2)
		if err != nil {
			t.Fatalf("re-encoded %T does not decode: %v", m, err)
		}
		if !bytes.Equal(Marshal(m2), b2) {
			t.Fatalf("%T: encoding not stable", m)
		}
	})
}

func FuzzConnTransport(f *testing.F) {
	for _, m := range sampleMessages() {
		b := Marshal(m)
		f.Add(append([]byte{0, 0, byte(len(b) >> 8), byte(len(b))}, b...))
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, stream []byte) {
		c1, c2 := net.Pipe()
		go func() { c2.Write(stream); c2.Close() }()
		tr := NewConnTransport(c1)
		defer tr.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// Invariants: Recv never hangs past its context, and every message
		// it returns is well formed: it marshals and unmarshals to itself.
		for i := 0; i < 4; i++ {
			m, err := tr.Recv(ctx)
			if err != nil {
				return
			}
			b := Marshal(m)
			m2, err := Unmarshal(b)
			if err != nil || !bytes.Equal(Marshal(m2), b) {
				t.Fatalf("received message %T does not round-trip: %v", m, err)
			}
		}
	})
}

// TestServe: Bob serves two Alices one after the other over mutual TLS; a
// rogue client in between is refused without stopping the server.
func TestServe(t *testing.T) {
	p := newPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := testConfig(50)
	var mu sync.Mutex
	var bobKeys []qkd.Key
	var errs []error
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, ln, p.server, func(ctx context.Context, tr Transport) error {
			_, err := RunBob(ctx, tr, cfg, func(_ context.Context, k []qkd.Key) error {
				mu.Lock()
				defer mu.Unlock()
				bobKeys = append(bobKeys, k...)
				return nil
			})
			return err
		}, func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() })
	}()
	var aliceKeys []qkd.Key
	for i := 0; i < 2; i++ {
		if i == 1 {
			if tr, err := Dial(ctx, ln.Addr().String(), p.rogue); err == nil {
				_, _ = tr.Recv(ctx)
				tr.Close()
			}
		}
		tr, err := Dial(ctx, ln.Addr().String(), p.client)
		if err != nil {
			t.Fatal(err)
		}
		_, err = RunAlice(ctx, tr, cfg, func(_ context.Context, k []qkd.Key) error { aliceKeys = append(aliceKeys, k...); return nil })
		tr.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Bob delivers before Alice: by now both sessions are stored on his side.
	cancel()
	ln.Close()
	<-served
	mu.Lock()
	defer mu.Unlock()
	sameKeys(t, aliceKeys, bobKeys)
	if len(errs) == 0 {
		t.Error("the rogue client's refusal was not reported")
	}
}

// TestLowLatencyCascadeLink: Bob's low-latency Cascade schedule works against
// an unchanged Alice and costs fewer round trips per block.
func TestLowLatencyCascadeLink(t *testing.T) {
	var a, b collector
	cfg := testConfig(25)
	base, err := Run(context.Background(), cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Cascade = cascade.Options{LowLatency: true, Overlap: 2}
	st, err := Run(context.Background(), cfg, a.sink, b.sink)
	if err != nil {
		t.Fatal(err)
	}
	sameKeys(t, a.keys, b.keys)
	if st.FinalBits == 0 || st.RoundTrips >= base.RoundTrips {
		t.Fatalf("low-latency: %d bits, %d round trips (default schedule %d)", st.FinalBits, st.RoundTrips, base.RoundTrips)
	}
	t.Logf("round trips per block: %d (default %d); f %.3f (default %.3f)", st.RoundTrips, base.RoundTrips, st.F, base.F)
}

// TestLDPCLink: with Method = MethodLDPC (Alice's choice, followed by a Bob
// configured for Cascade) both sides distil equal keys, Alice and Bob charge
// the same disclosure, and a block (62 frames reconciled in parallel) costs
// at most 50 round trips, where Cascade's default schedule needs about 900.
func TestLDPCLink(t *testing.T) {
	var a, b collector
	cfg := testConfig(25)
	alice, bob := Pipe()
	cfgA, cfgB := cfg, cfg
	cfgA.Method = MethodLDPC
	type out struct {
		st  qkd.Stats
		err error
	}
	bc := make(chan out, 1)
	go func() {
		st, err := RunBob(context.Background(), bob, cfgB, b.sink)
		bc <- out{st, err}
	}()
	st, err := RunAlice(context.Background(), alice, cfgA, a.sink)
	alice.Close()
	if err != nil {
		t.Fatal(err)
	}
	bo := <-bc
	if bo.err != nil {
		t.Fatal(bo.err)
	}
	sameKeys(t, a.keys, b.keys)
	if len(a.keys) == 0 || st.FinalBits == 0 {
		t.Fatalf("no key: %+v", st)
	}
	if st.DisclosedBits != bo.st.DisclosedBits || st.RoundTrips != bo.st.RoundTrips {
		t.Fatalf("Alice charged %d bits in %d round trips, Bob %d in %d", st.DisclosedBits, st.RoundTrips, bo.st.DisclosedBits, bo.st.RoundTrips)
	}
	if st.RoundTrips > 50 || st.F < 1 || st.F > 1.7 {
		t.Fatalf("LDPC: %d round trips, f %.3f", st.RoundTrips, st.F)
	}
	t.Logf("LDPC: %d frames, %d round trips per block, f %.3f, %d final bits, %d frames discarded", st.Frames, st.RoundTrips, st.F, st.FinalBits, st.ResidualFrames)
}
