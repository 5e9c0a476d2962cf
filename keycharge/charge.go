package keycharge

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/keycharge/device"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/pki"
)

// Charge states on the platform.
const (
	ChargeChallenged = "challenged"
	ChargePending    = "pending"
	ChargeCommitted  = "committed"
	ChargeAborted    = "aborted"
)

// MaxKeysPerCharge bounds the key IDs of one commit.
const MaxKeysPerCharge = 1 << 16

// BeginRequest starts a charge: the device certificate and the volume.
type BeginRequest struct {
	Serial      string `json:"serial"`
	Volume      int64  `json:"volume"`      // bytes
	Certificate []byte `json:"certificate"` // DER
	// AbortOpen: the charger has recovered the device, which holds no
	// staged charge; any open charge of the device on the platform is aborted.
	AbortOpen bool `json:"abort_open,omitempty"`
}

// BeginResponse carries the challenge the device must sign.
type BeginResponse struct {
	ChargeID  string `json:"charge_id"`
	Challenge []byte `json:"challenge"`
}

// ChallengeDigest is what the device signs to authenticate a charge.
func ChallengeDigest(chargeID, serial string, volume int64, challenge []byte) []byte {
	h := sha256.New()
	h.Write([]byte("qkmp charge challenge v1\x00"))
	for _, s := range []string{chargeID, serial} {
		var l [2]byte
		binary.BigEndian.PutUint16(l[:], uint16(len(s)))
		h.Write(l[:])
		h.Write([]byte(s))
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(volume))
	h.Write(v[:])
	h.Write(challenge)
	return h.Sum(nil)
}

// verifyDeviceCert checks a presented device certificate against the CA
// (counterfeits: self-signed, other CA, revoked, expired) and its serial.
func (q *QKMP) verifyDeviceCert(ctx context.Context, der []byte, serial string) (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate does not parse: %v", ErrCounterfeit, err)
	}
	info, err := q.cfg.CA.Verify(ctx, cert, pki.RoleDevice, q.cfg.Now())
	if err != nil {
		if errors.Is(err, pki.ErrUntrusted) || errors.Is(err, pki.ErrRevoked) || errors.Is(err, pki.ErrExpired) || errors.Is(err, pki.ErrWrongRole) {
			return nil, fmt.Errorf("%w: %v", ErrCounterfeit, err)
		}
		return nil, err
	}
	if info == nil || info.Serial != serial || cert.Subject.CommonName != serial {
		return nil, fmt.Errorf("%w: certificate is not for device %s", ErrCounterfeit, serial)
	}
	if _, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok {
		return nil, fmt.Errorf("%w: device key is not ECDSA", ErrCounterfeit)
	}
	return cert, nil
}

// BeginCharge authenticates the device certificate and the device's state
// and returns a challenge.
func (q *QKMP) BeginCharge(ctx context.Context, p Principal, req BeginRequest) (*BeginResponse, error) {
	const event = "keycharge.charge.begin"
	if !q.isCharger(p) {
		q.auditDenied(ctx, p, event, req.Serial, ErrForbidden)
		return nil, ErrForbidden
	}
	if !device.ValidID(req.Serial) {
		return nil, fmt.Errorf("%w: serial", ErrInvalid)
	}
	if req.Volume < 1 || req.Volume > q.cfg.MaxChargeBytes {
		return nil, fmt.Errorf("%w: volume %d outside 1..%d bytes", ErrInvalid, req.Volume, q.cfg.MaxChargeBytes)
	}
	cert, err := q.verifyDeviceCert(ctx, req.Certificate, req.Serial)
	if err != nil {
		q.auditDenied(ctx, p, event, req.Serial, err)
		return nil, err
	}
	id, err := randomID("chg-")
	if err != nil {
		return nil, err
	}
	challenge := make([]byte, 32)
	if _, err := rand.Read(challenge); err != nil {
		return nil, err
	}
	var denied error
	err = q.db.InTx(ctx, func(tx *sql.Tx) error {
		denied = nil
		d, err := q.getDeviceTx(ctx, tx, req.Serial, true)
		if err != nil {
			return err
		}
		switch {
		case d.State != StateActive:
			denied = fmt.Errorf("%w: device %s is %s", ErrDeviceState, req.Serial, d.State)
		case d.CertSerial != cert.SerialNumber.Text(16):
			denied = fmt.Errorf("%w: not the registered certificate of device %s", ErrCounterfeit, req.Serial)
		case d.PINFailures >= q.cfg.MaxPINFailures:
			denied = fmt.Errorf("%w: %d wrong PINs reported", ErrPINLocked, d.PINFailures)
		}
		if denied != nil {
			return nil
		}
		now := q.now()
		open, err := q.openCharges(ctx, tx, req.Serial)
		if err != nil {
			return err
		}
		for _, c := range open {
			stale := now-c.updated > int64(q.cfg.ChargeTimeout)
			if c.state == ChargeChallenged || stale || req.AbortOpen {
				if err := q.abortTx(ctx, tx, p, c.id, req.Serial, "superseded by a new charge"); err != nil {
					return err
				}
				continue
			}
			denied = fmt.Errorf("%w: charge %s", ErrPendingCharge, c.id)
			return nil
		}
		if _, err := tx.ExecContext(ctx, q.db.Rebind(`INSERT INTO keycharge_charges (id, serial, charger, state, volume, challenge, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
			id, req.Serial, p.Name, ChargeChallenged, req.Volume, challenge, now, now); err != nil {
			return fmt.Errorf("keycharge: record charge: %w", err)
		}
		err = q.cfg.Audit.RecordTx(ctx, tx, audit.Entry{Actor: actorName(p), Event: event, Outcome: audit.OutcomeSuccess, Origin: "qkmp", Resource: req.Serial,
			Details: map[string]string{"charge": id, "volume": fmt.Sprint(req.Volume), "cert_serial": d.CertSerial}})
		return err
	})
	if err != nil {
		return nil, err
	}
	if denied != nil {
		q.auditDenied(ctx, p, event, req.Serial, denied)
		return nil, denied
	}
	return &BeginResponse{ChargeID: id, Challenge: challenge}, nil
}

type openCharge struct {
	id, state string
	updated   int64
}

func (q *QKMP) openCharges(ctx context.Context, tx *sql.Tx, serial string) ([]openCharge, error) {
	rows, err := tx.QueryContext(ctx, q.db.Rebind(`SELECT id, state, updated_at FROM keycharge_charges WHERE serial = ? AND state IN ('challenged','pending')`), serial)
	if err != nil {
		return nil, fmt.Errorf("keycharge: open charges: %w", err)
	}
	defer rows.Close()
	var out []openCharge
	for rows.Next() {
		var c openCharge
		if err := rows.Scan(&c.id, &c.state, &c.updated); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func (q *QKMP) abortTx(ctx context.Context, tx *sql.Tx, p Principal, id, serial, reason string) error {
	res, err := tx.ExecContext(ctx, q.db.Rebind(`UPDATE keycharge_charges SET state = 'aborted', reason = ?, updated_at = ? WHERE id = ? AND state IN ('challenged','pending')`), reason, q.now(), id)
	if err != nil {
		return fmt.Errorf("keycharge: abort charge: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("%w: charge %s is not open", ErrChargeState, id)
	}
	err = q.cfg.Audit.RecordTx(ctx, tx, audit.Entry{Actor: actorName(p), Event: "keycharge.charge.abort", Outcome: audit.OutcomeSuccess, Origin: "qkmp", Resource: serial,
		Details: map[string]string{"charge": id, "reason": truncate(reason, 500)}})
	return err
}

type chargeRow struct {
	id, serial, charger, state, reason string
	volume, bytes                      int64
	challenge, hash                    []byte
	keys                               int
	created, updated                   int64
}

func (q *QKMP) chargeTx(ctx context.Context, tx *sql.Tx, id string, lock bool) (*chargeRow, error) {
	qs := `SELECT id, serial, charger, state, reason, volume, bytes, challenge, hash, key_count, created_at, updated_at FROM keycharge_charges WHERE id = ?`
	if lock {
		qs += q.forUpdate()
	}
	var c chargeRow
	err := tx.QueryRowContext(ctx, q.db.Rebind(qs), id).Scan(&c.id, &c.serial, &c.charger, &c.state, &c.reason, &c.volume, &c.bytes, &c.challenge, &c.hash, &c.keys, &c.created, &c.updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: charge %q", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("keycharge: read charge: %w", err)
	}
	return &c, nil
}

// AuthenticateCharge checks the device's signature over the challenge; the
// charge becomes pending. A wrong signature aborts the charge.
func (q *QKMP) AuthenticateCharge(ctx context.Context, p Principal, chargeID string, signature []byte) error {
	const event = "keycharge.charge.authenticate"
	if !q.isCharger(p) {
		q.auditDenied(ctx, p, event, chargeID, ErrForbidden)
		return ErrForbidden
	}
	var denied error
	var serial string
	err := q.db.InTx(ctx, func(tx *sql.Tx) error {
		denied = nil
		c, err := q.chargeTx(ctx, tx, chargeID, true)
		if err != nil {
			return err
		}
		serial = c.serial
		if c.state != ChargeChallenged || c.charger != p.Name {
			denied = fmt.Errorf("%w: charge %s is %s", ErrChargeState, chargeID, c.state)
			return nil
		}
		d, err := q.getDeviceTx(ctx, tx, c.serial, true)
		if err != nil {
			return err
		}
		if d.State != StateActive {
			denied = fmt.Errorf("%w: device %s is %s", ErrDeviceState, d.Serial, d.State)
			return q.abortTx(ctx, tx, p, chargeID, c.serial, denied.Error())
		}
		cert, err := x509.ParseCertificate(d.certDER)
		if err != nil {
			return fmt.Errorf("keycharge: stored certificate of %s: %w", d.Serial, err)
		}
		pub, _ := cert.PublicKey.(*ecdsa.PublicKey)
		if pub == nil || !ecdsa.VerifyASN1(pub, ChallengeDigest(chargeID, c.serial, c.volume, c.challenge), signature) {
			denied = ErrBadSignature
			return q.abortTx(ctx, tx, p, chargeID, c.serial, "device signature does not verify")
		}
		now := q.now()
		if _, err := tx.ExecContext(ctx, q.db.Rebind(`UPDATE keycharge_charges SET state = 'pending', updated_at = ? WHERE id = ? AND state = 'challenged'`), now, chargeID); err != nil {
			return fmt.Errorf("keycharge: update charge: %w", err)
		}
		if _, err := tx.ExecContext(ctx, q.db.Rebind(`UPDATE keycharge_devices SET pin_failures = 0 WHERE serial = ?`), c.serial); err != nil {
			return err
		}
		err = q.cfg.Audit.RecordTx(ctx, tx, audit.Entry{Actor: actorName(p), Event: event, Outcome: audit.OutcomeSuccess, Origin: "qkmp", Resource: c.serial,
			Details: map[string]string{"charge": chargeID, "method": "certificate+challenge"}})
		return err
	})
	if err != nil {
		return err
	}
	if denied != nil {
		q.auditDenied(ctx, p, event, serial, denied)
		return denied
	}
	return nil
}

// CommitRequest ends a charge with the consistency check.
type CommitRequest struct {
	MasterSAE string   `json:"master_sae"` // the charger's SAE at its KME
	KeyIDs    []string `json:"key_ids"`    // in charge order
	Hash      []byte   `json:"hash"`       // device.ChargeHash over the charged keys
}

// ChargeStatus is a charge as the platform records it.
type ChargeStatus struct {
	ID      string `json:"charge_id"`
	Serial  string `json:"serial"`
	Charger string `json:"charger"`
	State   string `json:"state"`
	Volume  int64  `json:"volume"`
	Keys    int    `json:"keys"`
	Bytes   int64  `json:"bytes"`
	Hash    []byte `json:"hash,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

func (c *chargeRow) status() *ChargeStatus {
	return &ChargeStatus{ID: c.id, Serial: c.serial, Charger: c.charger, State: c.state, Volume: c.volume, Keys: c.keys, Bytes: c.bytes, Hash: c.hash, Reason: c.reason}
}

// CommitCharge fetches the charged keys by ID from the QSSC's key manager,
// recomputes the charge hash and, only when it equals the charger's, stores
// the keys (sealed) and marks the charge committed, in one transaction. A
// repeated commit of a committed charge with the same hash succeeds
// (idempotent); a hash mismatch aborts the charge.
func (q *QKMP) CommitCharge(ctx context.Context, p Principal, chargeID string, req CommitRequest) (*ChargeStatus, error) {
	const event = "keycharge.charge.commit"
	if !q.isCharger(p) {
		q.auditDenied(ctx, p, event, chargeID, ErrForbidden)
		return nil, ErrForbidden
	}
	if len(req.Hash) != sha256.Size || len(req.KeyIDs) == 0 || len(req.KeyIDs) > MaxKeysPerCharge || strings.TrimSpace(req.MasterSAE) == "" || len(req.MasterSAE) > 128 {
		return nil, fmt.Errorf("%w: commit needs master_sae, 1..%d key_ids and a 32-byte hash", ErrInvalid, MaxKeysPerCharge)
	}
	seen := make(map[string]bool, len(req.KeyIDs))
	for _, id := range req.KeyIDs {
		if !device.ValidKeyID(id) || seen[id] {
			return nil, fmt.Errorf("%w: key ID %q invalid or repeated", ErrInvalid, id)
		}
		seen[id] = true
	}
	var c *chargeRow
	err := q.db.InTx(ctx, func(tx *sql.Tx) (err error) { c, err = q.chargeTx(ctx, tx, chargeID, false); return })
	if err != nil {
		return nil, err
	}
	if c.charger != p.Name {
		return nil, fmt.Errorf("%w: charge %s belongs to another charger", ErrForbidden, chargeID)
	}
	if c.state == ChargeCommitted {
		if subtle.ConstantTimeCompare(c.hash, req.Hash) == 1 {
			return c.status(), nil
		}
		return nil, fmt.Errorf("%w: charge %s already committed with another hash", ErrChargeState, chargeID)
	}
	if c.state != ChargePending {
		return nil, fmt.Errorf("%w: charge %s is %s", ErrChargeState, chargeID, c.state)
	}
	extracted := q.now()
	// Keys the charger announced beforehand are already in the platform's
	// pool (fetched, sealed); the others are fetched from the KME now.
	pooled, err := q.pooled(ctx, p.Name, req.KeyIDs)
	if err != nil {
		return nil, err
	}
	keys := make([][]byte, len(req.KeyIDs)) // fetched now (not pooled)
	var missing []string
	var missingAt []int
	for i, id := range req.KeyIDs {
		if _, ok := pooled[id]; !ok {
			missing = append(missing, id)
			missingAt = append(missingAt, i)
		}
	}
	mismatch := ""
	if len(missing) > 0 {
		if q.cfg.QSSC == nil {
			return nil, ErrNoKME
		}
		fetched, err := q.fetch(ctx, req.MasterSAE, missing)
		if errors.Is(err, ErrHashMismatch) {
			mismatch, err = err.Error(), nil
		}
		if err != nil {
			return nil, err
		}
		for j, k := range fetched {
			keys[missingAt[j]] = k
		}
	}
	defer func() {
		for _, k := range keys {
			clear(k)
		}
	}()
	// Consistency check: the same coding (charge order), IDs and bytes.
	h := device.NewChargeHash(chargeID)
	var total int64
	digests := make([][]byte, len(req.KeyIDs))
	if mismatch == "" {
		for i, id := range req.KeyIDs {
			if pk, ok := pooled[id]; ok {
				h.AddDigest(id, pk.length, pk.digest)
				total += int64(pk.length)
				continue
			}
			digests[i] = device.KeyDigest(keys[i])
			h.AddDigest(id, len(keys[i]), digests[i])
			total += int64(len(keys[i]))
		}
	}
	sum := h.Sum()
	switch {
	case mismatch != "":
	case subtle.ConstantTimeCompare(sum, req.Hash) != 1:
		mismatch = "charge hashes differ"
	case total < c.volume || total > c.volume+device.MaxKeyLen:
		mismatch = fmt.Sprintf("%d bytes charged for a volume of %d", total, c.volume)
	}
	if mismatch != "" {
		// Pooled keys named in a failed charge are destroyed: the charger's
		// copy no longer matches what the platform holds.
		err := q.db.InTx(ctx, func(tx *sql.Tx) error {
			if err := q.destroyPooledTx(ctx, tx, p.Name, req.KeyIDs); err != nil {
				return err
			}
			return q.abortTx(ctx, tx, p, chargeID, c.serial, "consistency check failed: "+mismatch)
		})
		if err != nil && !errors.Is(err, ErrChargeState) {
			return nil, err
		}
		q.auditDenied(ctx, p, event, c.serial, fmt.Errorf("%w: %s", ErrHashMismatch, mismatch))
		return nil, fmt.Errorf("%w: %s", ErrHashMismatch, mismatch)
	}
	coded := q.now()
	sealed := make([][]byte, len(missing))
	for j, id := range missing {
		if sealed[j], err = q.seal.seal(id, keys[missingAt[j]]); err != nil {
			return nil, err
		}
	}
	var denied error
	err = q.db.InTx(ctx, func(tx *sql.Tx) error {
		denied = nil
		d, err := q.getDeviceTx(ctx, tx, c.serial, true)
		if err != nil {
			return err
		}
		now := q.now()
		if d.State != StateActive {
			denied = fmt.Errorf("%w: device %s is %s", ErrDeviceState, d.Serial, d.State)
			return q.abortTx(ctx, tx, p, chargeID, c.serial, denied.Error())
		}
		res, err := tx.ExecContext(ctx, q.db.Rebind(`UPDATE keycharge_charges SET state = 'committed', hash = ?, key_count = ?, bytes = ?, updated_at = ? WHERE id = ? AND state = 'pending'`),
			sum, len(keys), total, now, chargeID)
		if err != nil {
			return fmt.Errorf("keycharge: commit charge: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			denied = fmt.Errorf("%w: charge %s is no longer pending", ErrChargeState, chargeID)
			return nil
		}
		// Pooled keys move to the device (batched: seq by CASE).
		if len(pooled) > 0 {
			var order []int
			for i, id := range req.KeyIDs {
				if _, ok := pooled[id]; ok {
					order = append(order, i)
				}
			}
			const part = 400
			for i := 0; i < len(order); i += part {
				sel := order[i:min(i+part, len(order))]
				var cs strings.Builder
				args := make([]any, 0, 3*len(sel)+5)
				cs.WriteString(`UPDATE keycharge_keys SET seq = CASE key_id`)
				for _, at := range sel {
					cs.WriteString(` WHEN ? THEN CAST(? AS INTEGER)`)
					args = append(args, req.KeyIDs[at], at)
				}
				cs.WriteString(` END, serial = ?, charge_id = ?, state = 'active', distributed_at = ? WHERE owner = ? AND state = 'pooled' AND key_id IN (`)
				cs.WriteString(strings.TrimSuffix(strings.Repeat("?,", len(sel)), ","))
				cs.WriteString(`)`)
				args = append(args, c.serial, chargeID, now, p.Name)
				for _, at := range sel {
					args = append(args, req.KeyIDs[at])
				}
				res, err := tx.ExecContext(ctx, q.db.Rebind(cs.String()), args...)
				if err != nil {
					return fmt.Errorf("keycharge: assign pooled keys: %w", err)
				}
				if n, _ := res.RowsAffected(); n != int64(len(sel)) {
					return fmt.Errorf("%w: pooled keys taken concurrently", ErrChargeState)
				}
			}
		}
		const chunk = 64
		for i := 0; i < len(missing); i += chunk {
			end := min(i+chunk, len(missing))
			qs := `INSERT INTO keycharge_keys (key_id, serial, charge_id, seq, length, state, sealed, extracted_at, coded_at, distributed_at, owner, digest) VALUES ` +
				strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?),", end-i), ",")
			args := make([]any, 0, 11*(end-i))
			for j := i; j < end; j++ {
				at := missingAt[j]
				args = append(args, missing[j], c.serial, chargeID, at, len(keys[at]), sealed[j], extracted, coded, now, p.Name, digests[at])
			}
			if _, err := tx.ExecContext(ctx, q.db.Rebind(qs), args...); err != nil {
				return fmt.Errorf("keycharge: store keys: %w", err)
			}
		}
		err = q.cfg.Audit.RecordTx(ctx, tx, audit.Entry{Actor: actorName(p), Event: event, Outcome: audit.OutcomeSuccess, Origin: "qkmp", Resource: c.serial,
			Details: map[string]string{"charge": chargeID, "keys": fmt.Sprint(len(keys)), "bytes": fmt.Sprint(total), "hash": hex.EncodeToString(sum),
				"master_sae": req.MasterSAE, "from_pool": fmt.Sprint(len(pooled))}})
		return err
	})
	if err != nil {
		return nil, err
	}
	if denied != nil {
		q.auditDenied(ctx, p, event, c.serial, denied)
		return nil, denied
	}
	return &ChargeStatus{ID: chargeID, Serial: c.serial, Charger: c.charger, State: ChargeCommitted, Volume: c.volume, Keys: len(keys), Bytes: total, Hash: sum}, nil
}

// fetch gets keys by ID from the QSSC's KME in parallel batches, in order.
func (q *QKMP) fetch(ctx context.Context, master string, ids []string) ([][]byte, error) {
	out := make([][]byte, len(ids))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	sem := make(chan struct{}, q.cfg.DecParallel)
	for i := 0; i < len(ids); i += q.cfg.DecBatch {
		end := min(i+q.cfg.DecBatch, len(ids))
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(i, end int) {
			defer wg.Done()
			defer func() { <-sem }()
			km, err := retryKME(ctx, func() ([]etsi014.KeyMaterial, error) { return q.cfg.QSSC.DecKeys(ctx, master, ids[i:end]...) })
			if err == nil && len(km) != end-i {
				err = fmt.Errorf("%d keys returned for %d IDs", len(km), end-i)
			}
			if err != nil {
				once.Do(func() { first = err; cancel() })
				return
			}
			for j, k := range km {
				if k.ID != ids[i+j] {
					once.Do(func() { first = fmt.Errorf("key %s returned for %s", k.ID, ids[i+j]); cancel() })
					return
				}
				out[i+j] = k.Key
			}
		}(i, end)
	}
	wg.Wait()
	if first != nil {
		if errors.Is(first, etsi014.ErrBadRequest) || errors.Is(first, etsi014.ErrUnauthorized) {
			return nil, fmt.Errorf("%w: the QSSC cannot fetch the charged keys: %v", ErrHashMismatch, first)
		}
		return nil, fmt.Errorf("%w: dec_keys: %v", ErrKME, first)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// ChargeStatusOf returns a charge (its charger or an administrator).
func (q *QKMP) ChargeStatusOf(ctx context.Context, p Principal, chargeID string) (*ChargeStatus, error) {
	if !q.isCharger(p) {
		return nil, ErrForbidden
	}
	var c *chargeRow
	err := q.db.InTx(ctx, func(tx *sql.Tx) (err error) { c, err = q.chargeTx(ctx, tx, chargeID, false); return })
	if err != nil {
		return nil, err
	}
	if !q.ownsCharge(p, c.charger) {
		return nil, fmt.Errorf("%w: charge %s belongs to another charger", ErrForbidden, chargeID)
	}
	return c.status(), nil
}

// AbortCharge aborts an open (challenged or pending) charge.
func (q *QKMP) AbortCharge(ctx context.Context, p Principal, chargeID, reason string) (*ChargeStatus, error) {
	if !q.isCharger(p) {
		return nil, ErrForbidden
	}
	if reason == "" {
		reason = "aborted by the charger"
	}
	var c *chargeRow
	err := q.db.InTx(ctx, func(tx *sql.Tx) (err error) {
		if c, err = q.chargeTx(ctx, tx, chargeID, true); err != nil {
			return err
		}
		if !q.ownsCharge(p, c.charger) {
			return fmt.Errorf("%w: charge %s belongs to another charger", ErrForbidden, chargeID)
		}
		if c.state != ChargeChallenged && c.state != ChargePending {
			return fmt.Errorf("%w: charge %s is %s", ErrChargeState, chargeID, c.state)
		}
		c.state, c.reason = ChargeAborted, reason
		return q.abortTx(ctx, tx, p, chargeID, c.serial, reason)
	})
	if err != nil {
		return nil, err
	}
	return c.status(), nil
}

// ReportPINFailure records a wrong PIN entered at a charger; after
// MaxPINFailures the platform refuses to charge the device until an
// administrator's unlock_pin.
func (q *QKMP) ReportPINFailure(ctx context.Context, p Principal, serial string) (int, error) {
	if !q.isCharger(p) {
		return 0, ErrForbidden
	}
	var n int
	err := q.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := q.getDeviceTx(ctx, tx, serial, true); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, q.db.Rebind(`UPDATE keycharge_devices SET pin_failures = pin_failures + 1, updated_at = ? WHERE serial = ?`), q.now(), serial); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, q.db.Rebind(`SELECT pin_failures FROM keycharge_devices WHERE serial = ?`), serial).Scan(&n); err != nil {
			return err
		}
		err := q.cfg.Audit.RecordTx(ctx, tx, audit.Entry{Actor: actorName(p), Event: "keycharge.device.pin_failure", Outcome: audit.OutcomeFailure, Origin: "qkc", Resource: serial,
			Details: map[string]string{"count": fmt.Sprint(n)}})
		return err
	})
	return n, err
}
