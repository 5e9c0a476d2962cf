//go:build !wasm

package selfverify

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
)

// KeySealer seals the operator's private key at rest (pki.KeyEncryptor
// implements it).
type KeySealer interface {
	Seal(plaintext, ad []byte) ([]byte, error)
	Open(sealed, ad []byte) ([]byte, error)
}

const sealedPrefix = "sealed:"

// LoadOrCreateOperatorKey returns N's long-term key d_N, creating it on first
// use. With seal it is stored sealed (AEAD, bound to the curve name); a key
// stored in clear, or sealed in pki's legacy QSK1 format, by an earlier
// version is resealed on load. With seal nil it
// is stored in clear (tests and throwaway databases only).
func LoadOrCreateOperatorKey(ctx context.Context, db *sqldb.DB, curve *ecqv.Curve, seal KeySealer) (*ecqv.PrivateKey, error) {
	if err := db.Migrate(ctx, "selfverify", operatorMigrations); err != nil {
		return nil, fmt.Errorf("selfverify: %w", err)
	}
	ad := []byte("selfverify operator key " + curve.Name())
	encode := func(d []byte) (string, error) {
		if seal == nil {
			return hex.EncodeToString(d), nil
		}
		b, err := seal.Seal(d, ad)
		if err != nil {
			return "", fmt.Errorf("selfverify: seal operator key: %w", err)
		}
		return sealedPrefix + hex.EncodeToString(b), nil
	}
	var name, stored string
	err := db.QueryRowContext(ctx, `SELECT curve, d FROM sv_operator_key WHERE id = 1`).Scan(&name, &stored)
	if errors.Is(err, sql.ErrNoRows) {
		k, err := curve.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		enc, err := encode(k.Bytes())
		if err != nil {
			return nil, err
		}
		_, err = db.ExecContext(ctx, db.Rebind(`INSERT INTO sv_operator_key (id, curve, d, created_at) VALUES (1, ?, ?, ?)`),
			curve.Name(), enc, ms(time.Now()))
		if err != nil && !sqldb.IsUniqueViolation(err) {
			return nil, fmt.Errorf("selfverify: store operator key: %w", err)
		}
		return LoadOrCreateOperatorKey(ctx, db, curve, seal)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: load operator key: %w", err)
	}
	c, err := ecqv.CurveByName(name)
	if err != nil {
		return nil, err
	}
	if c.Name() != curve.Name() {
		return nil, fmt.Errorf("selfverify: operator key is on %s, %s requested", c.Name(), curve.Name())
	}
	var raw []byte
	if strings.HasPrefix(stored, sealedPrefix) {
		if seal == nil {
			return nil, errors.New("selfverify: the operator key is sealed; the platform's key is needed to open it")
		}
		b, err := hex.DecodeString(strings.TrimPrefix(stored, sealedPrefix))
		if err != nil {
			return nil, fmt.Errorf("selfverify: stored operator key: %w", err)
		}
		if raw, err = seal.Open(b, ad); err != nil {
			return nil, fmt.Errorf("selfverify: open operator key (wrong platform key?): %w", err)
		}
		if pki.IsLegacySealed(b) { // sealed in the format before package seal: seal it again
			enc, err := encode(raw)
			if err != nil {
				return nil, err
			}
			if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE sv_operator_key SET d = ? WHERE id = 1 AND d = ?`), enc, stored); err != nil {
				return nil, fmt.Errorf("selfverify: reseal operator key: %w", err)
			}
		}
	} else {
		if raw, err = hex.DecodeString(stored); err != nil {
			return nil, fmt.Errorf("selfverify: stored operator key: %w", err)
		}
		if seal != nil { // stored in clear by an earlier version: seal it now
			enc, err := encode(raw)
			if err != nil {
				return nil, err
			}
			if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE sv_operator_key SET d = ? WHERE id = 1`), enc); err != nil {
				return nil, fmt.Errorf("selfverify: reseal operator key: %w", err)
			}
		}
	}
	return c.NewPrivateKey(raw)
}
