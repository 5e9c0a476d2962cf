package link

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/qshield/qshield/qkd"
)

// runPair runs Alice and Bob over a bare (unauthenticated) TCP-like pipe with
// their own pools; tamperBob, when set, wraps Bob's transport.
func runPair(t *testing.T, cfg Config, poolA, poolB KeyPool, wrap func(Transport) Transport) (qkd.Stats, error, error, []qkd.Key, []qkd.Key) {
	t.Helper()
	// Plain TCP on loopback: unauthenticated, with kernel buffers (net.Pipe
	// would deadlock when both ends send their Abort at once).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c1, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ta, tb := NewConnTransport(c1), NewConnTransport(c2)
	if wrap != nil {
		tb = wrap(tb)
	}
	var a, b collector
	ca, cb := cfg, cfg
	ca.Auth, cb.Auth = poolA, poolB
	var bobErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, bobErr = RunBob(context.Background(), tb, cb, b.sink)
		tb.Close()
	}()
	st, err := RunAlice(context.Background(), ta, ca, a.sink)
	ta.Close()
	wg.Wait()
	return st, err, bobErr, a.keys, b.keys
}

func preshared(b byte) []byte { return bytes.Repeat([]byte{b, 0x5a, 0xc3}, 100) }

func TestTranscriptMAC(t *testing.T) {
	cfg := testConfig(25)
	cfg.Blocks = 3
	pa, pb := NewMemoryPool(preshared(1)), NewMemoryPool(preshared(1))
	start := pa.Len()
	st, err, bobErr, ka, kb := runPair(t, cfg, pa, pb, nil)
	if err != nil || bobErr != nil {
		t.Fatalf("alice: %v, bob: %v", err, bobErr)
	}
	sameKeys(t, ka, kb)
	if len(ka) == 0 || int64(len(ka)) != st.DeliveredKeys {
		t.Fatalf("%d keys delivered, stats %d", len(ka), st.DeliveredKeys)
	}
	// Each block took 24 bytes and put back one 32-byte key.
	if pa.Len() != pb.Len() || pa.Len() != start+3*(32-authKeyBytes) {
		t.Fatalf("pools: Alice %d, Bob %d bytes, started with %d", pa.Len(), pb.Len(), start)
	}
	// The pools now hold QKD output: their contents agree.
	x, _ := pa.Take(pa.Len())
	y, _ := pb.Take(pb.Len())
	if !bytes.Equal(x, y) {
		t.Fatal("pools diverged")
	}
}

// An attacker on an unauthenticated channel alters one parity: Cascade would
// cope (verification discards the frame) but the transcript MAC must refuse
// the whole block.
func TestTranscriptMACDetectsTampering(t *testing.T) {
	cfg := testConfig(25)
	_, err, bobErr, ka, kb := runPair(t, cfg, NewMemoryPool(preshared(2)), NewMemoryPool(preshared(2)),
		func(tr Transport) Transport { return &tamper{Transport: tr} })
	if !errors.Is(bobErr, ErrAuth) {
		t.Fatalf("bob: %v, want ErrAuth (alice: %v)", bobErr, err)
	}
	if len(ka)+len(kb) != 0 {
		t.Fatalf("tampered block delivered %d + %d keys", len(ka), len(kb))
	}
}

func TestTranscriptMACWrongKey(t *testing.T) {
	_, _, bobErr, ka, kb := runPair(t, testConfig(25), NewMemoryPool(preshared(3)), NewMemoryPool(preshared(4)), nil)
	if !errors.Is(bobErr, ErrAuth) || len(ka)+len(kb) != 0 {
		t.Fatalf("bob: %v, keys %d + %d", bobErr, len(ka), len(kb))
	}
}

func TestPoolExhausted(t *testing.T) {
	_, err, _, _, _ := runPair(t, testConfig(25), NewMemoryPool(make([]byte, 10)), NewMemoryPool(make([]byte, 10)), nil)
	if !errors.Is(err, ErrPoolEmpty) {
		t.Fatalf("err = %v, want ErrPoolEmpty", err)
	}
}

func TestRunRejectsSharedPool(t *testing.T) {
	cfg := testConfig(25)
	cfg.Auth = NewMemoryPool(preshared(5))
	if _, err := Run(context.Background(), cfg, nil, nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v", err)
	}
}
