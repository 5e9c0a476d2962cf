package keycharge

import (
	"context"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/keycharge/channel"
	"github.com/qshield/qshield/keycharge/device"
	"github.com/qshield/qshield/pki"
)

// session is an open channel at the QSSC.
type session struct {
	serial string
	s      *channel.Session
	last   time.Time
}

const maxClockSkew = 5 * time.Minute

// maxSessions bounds the QSSC's open channel sessions (memory).
const maxSessions = 100000

// OpenChannel opens a quantum secure channel for a phone (QSSC side): see
// the package documentation. Refusals: ErrDeviceState (frozen, lost,
// cancelled…), ErrCounterfeit (certificate), ErrBadSignature (signature or
// key MAC), ErrKeyUsed (segment at or below the used mark: a replay or a
// cloned device), ErrNoKey.
func (q *QKMP) OpenChannel(ctx context.Context, req channel.OpenRequest) (*channel.OpenResponse, error) {
	const event = "keycharge.channel.open"
	anon := Principal{Name: req.Serial, Role: pki.RoleDevice, Kind: pki.PrincipalKeyDevice}
	alg, err := channel.ParseAlg(string(req.Alg))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if !device.ValidID(req.Serial) || !device.ValidKeyID(req.KeyID) || req.Offset < 0 || req.Offset > device.MaxKeyLen || len(req.ClientNonce) != channel.NonceLen || len(req.Signature) == 0 || len(req.Signature) > 256 || len(req.MAC) != 32 {
		return nil, fmt.Errorf("%w: open request fields", ErrInvalid)
	}
	if d := q.cfg.Now().Sub(time.UnixMilli(req.TimeMillis)); d > maxClockSkew || d < -maxClockSkew {
		return nil, fmt.Errorf("%w: request time off by %v", ErrInvalid, d.Round(time.Second))
	}
	var dev *Device
	err = q.db.InTx(ctx, func(tx *sql.Tx) (err error) { dev, err = q.getDeviceTx(ctx, tx, req.Serial, false); return })
	if err != nil {
		return nil, err
	}
	deny := func(err error) (*channel.OpenResponse, error) {
		q.auditDenied(ctx, anon, event, req.Serial, err)
		return nil, err
	}
	if dev.State != StateActive {
		return deny(fmt.Errorf("%w: device %s is %s", ErrDeviceState, req.Serial, dev.State))
	}
	cert, err := x509.ParseCertificate(dev.certDER)
	if err != nil {
		return nil, fmt.Errorf("keycharge: stored certificate: %w", err)
	}
	if _, err := q.cfg.CA.Verify(ctx, cert, pki.RoleDevice, q.cfg.Now()); err != nil {
		return deny(fmt.Errorf("%w: %v", ErrCounterfeit, err))
	}
	pub, _ := cert.PublicKey.(*ecdsa.PublicKey)
	if pub == nil || !ecdsa.VerifyASN1(pub, req.Digest(), req.Signature) {
		return deny(ErrBadSignature)
	}
	var remaining int64
	var seg []byte
	var denied error
	err = q.db.InTx(ctx, func(tx *sql.Tx) error {
		denied = nil
		d, err := q.getDeviceTx(ctx, tx, req.Serial, true)
		if err != nil {
			return err
		}
		if d.State != StateActive {
			denied = fmt.Errorf("%w: device %s is %s", ErrDeviceState, req.Serial, d.State)
			return nil
		}
		var length, used int
		var state string
		var sealed []byte
		err = tx.QueryRowContext(ctx, q.db.Rebind(`SELECT length, used, state, sealed FROM keycharge_keys WHERE key_id = ? AND serial = ?`+q.forUpdate()), req.KeyID, req.Serial).Scan(&length, &used, &state, &sealed)
		if errors.Is(err, sql.ErrNoRows) {
			denied = fmt.Errorf("%w: key %s is not charged to device %s", ErrNoKey, req.KeyID, req.Serial)
			return nil
		}
		if err != nil {
			return fmt.Errorf("keycharge: read key: %w", err)
		}
		switch {
		case state != "active":
			denied = fmt.Errorf("%w: key %s is %s", ErrDeviceState, req.KeyID, state)
		case req.Offset < used:
			denied = fmt.Errorf("%w: key %s offset %d is below its used mark %d", ErrKeyUsed, req.KeyID, req.Offset, used)
		case req.Offset+channel.SegmentLen > length:
			denied = fmt.Errorf("%w: key %s has no %d bytes at offset %d", ErrNoKey, req.KeyID, channel.SegmentLen, req.Offset)
		}
		if denied != nil {
			return nil
		}
		k, err := q.seal.open(req.KeyID, sealed)
		if err != nil {
			return err
		}
		seg = append([]byte(nil), k[req.Offset:req.Offset+channel.SegmentLen]...)
		clear(k)
		if !hmac.Equal(req.RequestMAC(channel.AuthKey(seg)), req.MAC) {
			denied = fmt.Errorf("%w: key MAC (the device does not hold this segment)", ErrBadSignature)
			return nil
		}
		now := q.now()
		res, err := tx.ExecContext(ctx, q.db.Rebind(`UPDATE keycharge_keys SET used = ?, last_used_at = ? WHERE key_id = ? AND used = ?`), req.Offset+channel.SegmentLen, now, req.KeyID, used)
		if err != nil {
			return fmt.Errorf("keycharge: mark key used: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			denied = fmt.Errorf("%w: key %s used concurrently", ErrKeyUsed, req.KeyID)
			return nil
		}
		if err := tx.QueryRowContext(ctx, q.db.Rebind(`SELECT COALESCE(SUM(length - used), 0) FROM keycharge_keys WHERE serial = ? AND state = 'active'`), req.Serial).Scan(&remaining); err != nil {
			return err
		}
		err = q.cfg.Audit.RecordTx(ctx, tx, audit.Entry{Actor: req.Serial, Event: event, Outcome: audit.OutcomeSuccess, Origin: "qssc", Resource: req.Serial,
			Details: map[string]string{"key_id": req.KeyID, "offset": fmt.Sprint(req.Offset), "alg": string(alg)}})
		return err
	})
	if err != nil {
		return nil, err
	}
	if denied != nil {
		return deny(denied)
	}
	var id [16]byte
	sn := make([]byte, channel.NonceLen)
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(sn); err != nil {
		return nil, err
	}
	s, err := channel.NewSession(id, alg, seg, req.ClientNonce, sn, channel.DirToPhone)
	if err != nil {
		return nil, err
	}
	mac := req.AcceptMAC(channel.AuthKey(seg), id[:], sn)
	clear(seg)
	q.mu.Lock()
	now := q.cfg.Now()
	for k, v := range q.sessions {
		if now.Sub(v.last) > q.cfg.SessionIdle {
			delete(q.sessions, k)
		}
	}
	if len(q.sessions) >= maxSessions {
		q.mu.Unlock()
		return nil, fmt.Errorf("%w: too many open channel sessions", ErrNoKey)
	}
	q.sessions[id] = &session{serial: req.Serial, s: s, last: now}
	q.mu.Unlock()
	return &channel.OpenResponse{SessionID: id[:], ServerNonce: sn, Remaining: remaining, MAC: mac}, nil
}

// ChannelMessage handles one phone→QSSC frame and returns the reply frame.
func (q *QKMP) ChannelMessage(ctx context.Context, frame []byte) ([]byte, error) {
	h, _, err := channel.ParseFrame(frame)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	q.mu.Lock()
	s := q.sessions[h.Session]
	q.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("%w: no such channel session (expired or closed); open a new one", ErrNotFound)
	}
	var state string
	if err := q.db.QueryRowContext(ctx, q.db.Rebind(`SELECT state FROM keycharge_devices WHERE serial = ?`), s.serial).Scan(&state); err != nil {
		return nil, fmt.Errorf("keycharge: device state: %w", err)
	}
	if State(state) != StateActive {
		q.dropSessions(s.serial, ActFreeze)
		return nil, fmt.Errorf("%w: device %s is %s", ErrDeviceState, s.serial, state)
	}
	msg, err := s.s.Open(frame)
	if errors.Is(err, channel.ErrReplay) {
		return nil, fmt.Errorf("%w: %v", ErrKeyUsed, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	reply, err := q.cfg.Service(ctx, s.serial, msg)
	if err != nil {
		return nil, fmt.Errorf("keycharge: service: %w", err)
	}
	q.mu.Lock()
	s.last = q.cfg.Now()
	q.mu.Unlock()
	return s.s.Seal(reply)
}

// dropSessions closes the channel sessions of a device that was frozen,
// lost or cancelled.
func (q *QKMP) dropSessions(serial string, a Action) {
	if a != ActFreeze && a != ActReportLost && a != ActCancel {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for k, v := range q.sessions {
		if v.serial == serial {
			delete(q.sessions, k)
		}
	}
}
