package keycharge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"unicode/utf8"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/keycharge/device"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
)

// RegisterRequest records a manufactured device.
type RegisterRequest struct {
	Serial string `json:"serial"`
	Model  string `json:"model,omitempty"`
	Kind   string `json:"kind,omitempty"` // default "ukey"
}

// Register records a newly manufactured device (state manufactured).
func (q *QKMP) Register(ctx context.Context, p Principal, req RegisterRequest) (*Device, error) {
	if req.Kind == "" {
		req.Kind = pki.KindUKey
	}
	if !q.isAdmin(p) {
		q.auditDenied(ctx, p, "keycharge.device.register", req.Serial, ErrForbidden)
		return nil, ErrForbidden
	}
	if err := (device.Info{Serial: req.Serial, Model: req.Model, Kind: req.Kind}).Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	now := q.now()
	err := q.db.InTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, q.db.Rebind(`INSERT INTO keycharge_devices (serial, model, kind, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)`),
			req.Serial, req.Model, req.Kind, string(StateManufactured), now, now)
		if sqldb.IsUniqueViolation(err) {
			return fmt.Errorf("%w: device %s", ErrExists, req.Serial)
		}
		if err != nil {
			return fmt.Errorf("keycharge: register device: %w", err)
		}
		_, err = q.cfg.Audit.AppendTx(ctx, tx, audit.Entry{Actor: actorName(p), Event: "keycharge.device.register", Outcome: audit.OutcomeSuccess, Origin: "qkmp", Resource: req.Serial,
			Details: map[string]string{"state": string(StateManufactured), "model": req.Model, "kind": req.Kind}})
		return err
	})
	if err != nil {
		return nil, err
	}
	return q.Device(ctx, p, req.Serial)
}

// TransitionRequest applies a lifecycle action.
type TransitionRequest struct {
	Action Action `json:"action"`
	// initialise: the device's signing public key (PKIX DER), its separate
	// encryption public key (PKIX DER) and the signing key's signature over
	// InitialiseDigest of both (proof that the keys are the device's).
	PublicKey     []byte `json:"public_key,omitempty"`
	EncryptionKey []byte `json:"encryption_key,omitempty"`
	Proof         []byte `json:"proof,omitempty"`
	// distribute: the user administrator; bind: the user identity.
	Administrator string `json:"administrator,omitempty"`
	User          string `json:"user,omitempty"`
	Reason        string `json:"reason,omitempty"`
}

// TransitionResult is the device after the transition (and the new
// certificate after initialise).
type TransitionResult struct {
	Device  *Device `json:"device"`
	CertDER []byte  `json:"certificate,omitempty"`
}

// InitialiseDigest is what a device signs to prove possession of its key
// at initialisation.
func InitialiseDigest(serial string, pubDER, encDER []byte) []byte {
	h := sha256.New()
	h.Write([]byte("qkmp initialise v2\x00"))
	for _, b := range [][]byte{[]byte(serial), pubDER, encDER} {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(b)))
		h.Write(l[:])
		h.Write(b)
	}
	return h.Sum(nil)
}

// AttrEncryptionKey is the device-certificate attribute that registers a
// key storage device's encryption key (hex of its PKIX DER) beside its
// signing key, the certificate's own.
const AttrEncryptionKey = "encryption_key"

// DeviceEncryptionKey returns the encryption key a device certificate
// registers: what the platform encrypts to for that device (device.Encrypt).
// Never the certificate's own key, which only signs: a certificate without
// the attribute (issued before the keys were separated) is refused.
func DeviceEncryptionKey(cert *x509.Certificate) (*ecdsa.PublicKey, error) {
	info, err := pki.DeviceInfoOf(cert)
	if err != nil || info == nil || info.Attrs[AttrEncryptionKey] == "" {
		return nil, fmt.Errorf("%w: the device certificate registers no encryption key (initialise the device again)", ErrInvalid)
	}
	der, err := hex.DecodeString(info.Attrs[AttrEncryptionKey])
	if err != nil {
		return nil, fmt.Errorf("%w: device encryption key: %v", ErrInvalid, err)
	}
	k, err := x509.ParsePKIXPublicKey(der)
	ec, ok := k.(*ecdsa.PublicKey)
	if err != nil || !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: device encryption key is not a P-256 key", ErrInvalid)
	}
	if sig, ok := cert.PublicKey.(*ecdsa.PublicKey); ok && sig.Equal(ec) {
		return nil, fmt.Errorf("%w: device encryption key equals its signing key", ErrInvalid)
	}
	return ec, nil
}

func checkName(what, s string) error {
	if s == "" || len(s) > 128 || !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s must be 1-128 bytes of UTF-8", ErrInvalid, what)
	}
	return nil
}

// Transition applies req.Action to device serial. Only administrators may;
// an action the state machine does not allow fails with ErrTransition and
// changes nothing. The change and its audit record commit together.
func (q *QKMP) Transition(ctx context.Context, p Principal, serial string, req TransitionRequest) (*TransitionResult, error) {
	event := "keycharge.device." + string(req.Action)
	if _, ok := transitions[req.Action]; !ok {
		return nil, fmt.Errorf("%w: unknown action %q", ErrInvalid, req.Action)
	}
	if !q.isAdmin(p) {
		q.auditDenied(ctx, p, event, serial, ErrForbidden)
		return nil, ErrForbidden
	}
	if !device.ValidID(serial) {
		return nil, fmt.Errorf("%w: serial %q", ErrInvalid, serial)
	}
	switch req.Action {
	case ActDistribute:
		if err := checkName("administrator", req.Administrator); err != nil {
			return nil, err
		}
	case ActBind:
		if err := checkName("user", req.User); err != nil {
			return nil, err
		}
	}
	if len(req.Reason) > 512 || !utf8.ValidString(req.Reason) {
		return nil, fmt.Errorf("%w: reason too long", ErrInvalid)
	}
	// Initialisation issues the certificate first (the CA writes its own
	// register); if the transition then fails the certificate is revoked.
	var issued *pki.Issued
	if req.Action == ActInitialise {
		cur, err := q.Device(ctx, p, serial)
		if err != nil {
			return nil, err
		}
		if !Allowed(cur.State, req.Action) {
			err := fmt.Errorf("%w: cannot %s a device in state %s", ErrTransition, req.Action, cur.State)
			q.auditDenied(ctx, p, event, serial, err)
			return nil, err
		}
		pub, err := x509.ParsePKIXPublicKey(req.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("%w: public key: %v", ErrInvalid, err)
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: device key must be ECDSA", ErrInvalid)
		}
		encPub, err := x509.ParsePKIXPublicKey(req.EncryptionKey)
		if err != nil {
			return nil, fmt.Errorf("%w: encryption key (a separate P-256 key is required): %v", ErrInvalid, err)
		}
		enc, ok := encPub.(*ecdsa.PublicKey)
		if !ok || enc.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: encryption key must be a P-256 key", ErrInvalid)
		}
		if enc.Equal(ec) {
			q.auditDenied(ctx, p, event, serial, ErrInvalid)
			return nil, fmt.Errorf("%w: the encryption key must differ from the signing key", ErrInvalid)
		}
		if !ecdsa.VerifyASN1(ec, InitialiseDigest(serial, req.PublicKey, req.EncryptionKey), req.Proof) {
			q.auditDenied(ctx, p, event, serial, ErrBadSignature)
			return nil, fmt.Errorf("%w: proof of possession", ErrBadSignature)
		}
		issued, err = q.cfg.CA.Issue(ctx, pki.IssueRequest{Role: pki.RoleDevice, CommonName: serial, PublicKey: ec,
			Device: &pki.DeviceInfo{Serial: serial, Model: cur.Model, Kind: cur.Kind,
				Attrs: map[string]string{AttrEncryptionKey: hex.EncodeToString(req.EncryptionKey)}}})
		if err != nil {
			return nil, fmt.Errorf("keycharge: issue device certificate: %w", err)
		}
	}
	var revoke string
	err := q.db.InTx(ctx, func(tx *sql.Tx) error {
		revoke = ""
		d, err := q.getDeviceTx(ctx, tx, serial, true)
		if err != nil {
			return err
		}
		if !Allowed(d.State, req.Action) {
			return fmt.Errorf("%w: cannot %s a device in state %s", ErrTransition, req.Action, d.State)
		}
		to := transitions[req.Action].to
		now := q.now()
		details := map[string]string{"from": string(d.State), "action": string(req.Action)}
		if req.Reason != "" {
			details["reason"] = req.Reason
		}
		set, args := "updated_at = ?", []any{now}
		if to != "" {
			set += ", state = ?"
			args = append(args, string(to))
			details["to"] = string(to)
		}
		switch req.Action {
		case ActInitialise:
			set += ", cert_serial = ?, cert_der = ?"
			args = append(args, issued.Cert.SerialNumber.Text(16), issued.DER)
			details["cert_serial"] = issued.Cert.SerialNumber.Text(16)
		case ActDistribute:
			set += ", administrator = ?"
			args = append(args, req.Administrator)
			details["administrator"] = req.Administrator
		case ActBind:
			set += ", user_id = ?"
			args = append(args, req.User)
			details["user"] = req.User
		case ActUnlockPIN:
			set += ", pin_failures = 0"
		}
		args = append(args, serial, string(d.State))
		res, err := tx.ExecContext(ctx, q.db.Rebind(`UPDATE keycharge_devices SET `+set+` WHERE serial = ? AND state = ?`), args...)
		if err != nil {
			return fmt.Errorf("keycharge: update device: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("%w: device %s changed concurrently", ErrTransition, serial)
		}
		// The keys follow the device.
		var keyState, col string
		switch req.Action {
		case ActFreeze, ActReportLost:
			keyState, col = "frozen", "frozen_at"
		case ActUnfreeze:
			keyState, col = "active", "restored_at"
		case ActCancel:
			keyState, col = "destroyed", "destroyed_at"
		}
		if keyState != "" {
			extra := ""
			if keyState == "destroyed" {
				extra = ", sealed = NULL"
			}
			res, err := tx.ExecContext(ctx, q.db.Rebind(`UPDATE keycharge_keys SET state = ?, `+col+` = ?`+extra+` WHERE serial = ? AND state <> 'destroyed'`), keyState, now, serial)
			if err != nil {
				return fmt.Errorf("keycharge: update keys: %w", err)
			}
			n, _ := res.RowsAffected()
			details["keys_"+keyState] = fmt.Sprint(n)
		}
		if req.Action == ActCancel {
			// Pending charges die with the device.
			if _, err := tx.ExecContext(ctx, q.db.Rebind(`UPDATE keycharge_charges SET state = 'aborted', reason = 'device cancelled', updated_at = ? WHERE serial = ? AND state IN ('challenged','pending')`), now, serial); err != nil {
				return fmt.Errorf("keycharge: abort charges: %w", err)
			}
			revoke = d.CertSerial
		}
		_, err = q.cfg.Audit.AppendTx(ctx, tx, audit.Entry{Actor: actorName(p), Event: event, Outcome: audit.OutcomeSuccess, Origin: "qkmp", Resource: serial, Details: details})
		return err
	})
	if err != nil {
		if issued != nil {
			_ = q.cfg.CA.Revoke(context.WithoutCancel(ctx), issued.Cert.SerialNumber, "initialisation failed")
		}
		if isTransition(err) {
			q.auditDenied(ctx, p, event, serial, err)
		}
		return nil, err
	}
	q.dropSessions(serial, req.Action)
	if revoke != "" {
		if n, ok := new(big.Int).SetString(revoke, 16); ok {
			if err := q.cfg.CA.Revoke(ctx, n, "device cancelled"); err != nil {
				q.cfg.Log.Error("revoke cancelled device certificate", "serial", serial, "err", err)
			}
		}
	}
	d, err := q.Device(ctx, p, serial)
	if err != nil {
		return nil, err
	}
	out := &TransitionResult{Device: d}
	if issued != nil {
		out.CertDER = issued.DER
	}
	return out, nil
}

func isTransition(err error) bool { return errors.Is(err, ErrTransition) }
