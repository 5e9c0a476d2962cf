package link

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// ErrClosed is returned by a transport after Close.
var ErrClosed = errors.New("qkd/link: transport closed")

// Transport carries protocol messages between Alice and Bob. It must be
// authenticated (mutual TLS, or a MAC): the classical discussion of QKD is
// public but must not be tampered with. Send and Recv may be called from
// different goroutines; each of them is called by one goroutine at a time.
type Transport interface {
	Send(ctx context.Context, m Message) error
	Recv(ctx context.Context) (Message, error)
	Close() error
}

// Pipe returns two connected in-memory transports (Alice's end, Bob's end).
// Messages are marshalled and unmarshalled as on a network connection, so the
// in-process protocol exercises the same codec.
func Pipe() (Transport, Transport) {
	ab := make(chan []byte, 4)
	ba := make(chan []byte, 4)
	done := make(chan struct{})
	var once sync.Once
	closeFn := func() { once.Do(func() { close(done) }) }
	return &pipeEnd{out: ab, in: ba, done: done, close: closeFn},
		&pipeEnd{out: ba, in: ab, done: done, close: closeFn}
}

type pipeEnd struct {
	out   chan<- []byte
	in    <-chan []byte
	done  chan struct{}
	close func()
}

func (p *pipeEnd) Send(ctx context.Context, m Message) error {
	b := Marshal(m)
	if len(b) > MaxFrameBytes {
		return fmt.Errorf("qkd/link: sending %T: %d bytes exceeds the frame limit", m, len(b))
	}
	select {
	case p.out <- b:
		return nil
	case <-p.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pipeEnd) Recv(ctx context.Context) (Message, error) {
	select {
	case b := <-p.in:
		return Unmarshal(b)
	case <-p.done:
		// Drain what was sent before the close.
		select {
		case b := <-p.in:
			return Unmarshal(b)
		default:
		}
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pipeEnd) Close() error { p.close(); return nil }

// connTransport frames messages on a stream: a 4-byte big-endian length, then
// the marshalled message.
type connTransport struct {
	c  net.Conn
	wm sync.Mutex
	rm sync.Mutex
}

// NewConnTransport frames messages on c. The connection must already be
// authenticated (use Dial and Accept for mutual TLS); a bare TCP connection is
// only acceptable in tests.
func NewConnTransport(c net.Conn) Transport { return &connTransport{c: c} }

// deadline applies ctx's deadline and cancellation to an I/O call on c.
func withCtx(ctx context.Context, c net.Conn, set func(time.Time) error, f func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d, _ := ctx.Deadline()
	_ = set(d)
	stop := context.AfterFunc(ctx, func() { _ = set(time.Unix(1, 0)) })
	err := f()
	if !stop() && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (t *connTransport) Send(ctx context.Context, m Message) error {
	b := Marshal(m)
	if len(b) > MaxFrameBytes {
		return fmt.Errorf("qkd/link: sending %T: %d bytes exceeds the frame limit", m, len(b))
	}
	t.wm.Lock()
	defer t.wm.Unlock()
	frame := make([]byte, 4, 4+len(b))
	binary.BigEndian.PutUint32(frame, uint32(len(b)))
	frame = append(frame, b...)
	return withCtx(ctx, t.c, t.c.SetWriteDeadline, func() error {
		if _, err := t.c.Write(frame); err != nil {
			return fmt.Errorf("qkd/link: sending %T: %w", m, err)
		}
		return nil
	})
}

func (t *connTransport) Recv(ctx context.Context) (Message, error) {
	t.rm.Lock()
	defer t.rm.Unlock()
	var m Message
	err := withCtx(ctx, t.c, t.c.SetReadDeadline, func() error {
		var hdr [4]byte
		if _, err := io.ReadFull(t.c, hdr[:]); err != nil {
			return fmt.Errorf("qkd/link: reading frame header: %w", err)
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 || n > MaxFrameBytes {
			return fmt.Errorf("%w: frame length %d", ErrMalformed, n)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(t.c, b); err != nil {
			return fmt.Errorf("qkd/link: reading %d-byte frame: %w", n, err)
		}
		var err error
		m, err = Unmarshal(b)
		return err
	})
	return m, err
}

func (t *connTransport) Close() error { return t.c.Close() }

// requireMutual checks that a TLS configuration authenticates both ends.
func requireMutual(cfg *tls.Config, server bool) error {
	if cfg == nil {
		return errors.New("qkd/link: a TLS configuration is required (the classical channel must be authenticated)")
	}
	if server && cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		return errors.New("qkd/link: the server TLS configuration must require and verify client certificates (mutual TLS)")
	}
	if !server && len(cfg.Certificates) == 0 && cfg.GetClientCertificate == nil {
		return errors.New("qkd/link: the client TLS configuration has no client certificate (mutual TLS)")
	}
	if cfg.InsecureSkipVerify {
		return errors.New("qkd/link: InsecureSkipVerify would leave the classical channel unauthenticated")
	}
	return nil
}

// Dial connects to a QKD peer over TCP with mutual TLS (cfg must carry a
// client certificate and the CA that verifies the server).
func Dial(ctx context.Context, addr string, cfg *tls.Config) (Transport, error) {
	if err := requireMutual(cfg, false); err != nil {
		return nil, err
	}
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("qkd/link: dialing %s: %w", addr, err)
	}
	return NewConnTransport(c), nil
}

// Accept waits for one peer on ln and completes a mutual-TLS handshake (cfg
// must require and verify client certificates).
func Accept(ctx context.Context, ln net.Listener, cfg *tls.Config) (Transport, error) {
	if err := requireMutual(cfg, true); err != nil {
		return nil, err
	}
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	var c net.Conn
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("qkd/link: accepting: %w", r.err)
		}
		c = r.c
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
	tc := tls.Server(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("qkd/link: TLS handshake with %s: %w", c.RemoteAddr(), err)
	}
	return NewConnTransport(tc), nil
}

// Serve accepts peers on ln with mutual TLS until ctx is cancelled, running
// handle (for example RunBob) on each in its own goroutine. Handler errors are
// reported through onErr when it is not nil.
func Serve(ctx context.Context, ln net.Listener, cfg *tls.Config, handle func(context.Context, Transport) error, onErr func(error)) error {
	if err := requireMutual(cfg, true); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		tr, err := Accept(ctx, ln, cfg)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			if onErr != nil {
				onErr(err)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer tr.Close()
			if err := handle(ctx, tr); err != nil && onErr != nil {
				onErr(err)
			}
		}()
	}
}

// validUUID reports whether s is a lower-case version-4 UUID.
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return s[14] == '4' && (s[19] == '8' || s[19] == '9' || s[19] == 'a' || s[19] == 'b')
}
