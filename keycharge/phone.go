package keycharge

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/qshield/qshield/keycharge/channel"
	"github.com/qshield/qshield/keycharge/device"
)

// Phone is the phone side of the quantum secure channel: a charged device
// (opened with its PIN) and the QSSC's address.
type Phone struct {
	Device   *device.Device
	Platform *Client
	Alg      channel.Alg // "" = AES-256-GCM
}

// PhoneSession is an open channel.
type PhoneSession struct {
	c *Client
	s *channel.Session
	// KeyID and Offset name the segment the session was opened with.
	KeyID  string
	Offset int
	// Remaining is the device's unused key as the QSSC counts it.
	Remaining int64
	// DeviceRemaining is the device's own count.
	DeviceRemaining int64
}

// Open takes a fresh key segment from the device (marked used before it
// leaves the store) and opens a session with the QSSC.
func (p *Phone) Open(ctx context.Context) (*PhoneSession, error) {
	alg, err := channel.ParseAlg(string(p.Alg))
	if err != nil {
		return nil, err
	}
	seg, err := p.Device.TakeSegment(channel.SegmentLen)
	if err != nil {
		return nil, err
	}
	defer clear(seg.Key)
	return p.openWith(ctx, alg, seg)
}

func (p *Phone) openWith(ctx context.Context, alg channel.Alg, seg device.Segment) (*PhoneSession, error) {
	cn := make([]byte, channel.NonceLen)
	if _, err := rand.Read(cn); err != nil {
		return nil, err
	}
	req := channel.OpenRequest{Serial: p.Device.Info().Serial, KeyID: seg.KeyID, Offset: seg.Offset, Alg: alg, ClientNonce: cn, TimeMillis: time.Now().UnixMilli()}
	sig, err := p.Device.Signer().Sign(rand.Reader, req.Digest(), crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("keycharge: device signature: %w", err)
	}
	req.Signature = sig
	ak := channel.AuthKey(seg.Key)
	req.MAC = req.RequestMAC(ak)
	resp, err := p.Platform.OpenChannel(ctx, req)
	if err != nil {
		return nil, err
	}
	if len(resp.SessionID) != 16 || len(resp.ServerNonce) != channel.NonceLen || !hmac.Equal(resp.MAC, req.AcceptMAC(ak, resp.SessionID, resp.ServerNonce)) {
		return nil, errors.New("keycharge: the QSSC did not prove it holds the key segment")
	}
	var id [16]byte
	copy(id[:], resp.SessionID)
	s, err := channel.NewSession(id, alg, seg.Key, cn, resp.ServerNonce, channel.DirToServer)
	if err != nil {
		return nil, err
	}
	return &PhoneSession{c: p.Platform, s: s, KeyID: seg.KeyID, Offset: seg.Offset, Remaining: resp.Remaining, DeviceRemaining: p.Device.Remaining()}, nil
}

// Send encrypts msg, sends it and returns the QSSC's decrypted answer.
func (ps *PhoneSession) Send(ctx context.Context, msg []byte) ([]byte, error) {
	f, err := ps.s.Seal(msg)
	if err != nil {
		return nil, err
	}
	out, err := ps.c.ChannelMessage(ctx, f)
	if err != nil {
		return nil, err
	}
	return ps.s.Open(out)
}

// Alg is the session's cipher.
func (ps *PhoneSession) Alg() channel.Alg { return ps.s.Alg }

// DeviceTLS returns a copy of base that presents the device certificate,
// signing the TLS handshake with the device key (which never leaves the
// device): the phone's mutual-TLS identity towards the platform, as the
// seed's phone configures "user certificate information".
func DeviceTLS(base *tls.Config, dev *device.Device) (*tls.Config, error) {
	cert := dev.Certificate()
	if cert == nil {
		return nil, device.ErrNoCertificate
	}
	c := base.Clone()
	c.Certificates = []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: dev.Signer(), Leaf: cert}}
	return c, nil
}
