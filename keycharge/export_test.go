package keycharge

import (
	"context"

	"github.com/qshield/qshield/keycharge/channel"
	"github.com/qshield/qshield/seal"
	"github.com/qshield/qshield/sqldb"
)

// What the external tests (package keycharge_test) reach into; compiled
// only into the test binary.

// PoolStatus is q.poolStatus.
func (q *QKMP) PoolStatus(ctx context.Context, owner string) (*PoolStatus, error) {
	return q.poolStatus(ctx, owner)
}

// Actions lists every action of the device state machine.
func Actions() []Action {
	out := make([]Action, 0, len(transitions))
	for a := range transitions {
		out = append(out, a)
	}
	return out
}

// Channel is the session's secure channel.
func (s *PhoneSession) Channel() *channel.Session { return s.s }

// Config is the charger's configuration after defaults.
func (c *Charger) Config() ChargerConfig { return c.cfg }

// TestSealer is the QKMP's key sealer.
type TestSealer struct{ s *sealer }

// Sealer returns q's key sealer.
func (q *QKMP) Sealer() TestSealer { return TestSealer{q.seal} }

// Open opens a stored key.
func (s TestSealer) Open(id string, b []byte) ([]byte, error) { return s.s.open(id, b) }

// LegacySeal seals k in the format before package seal (nonce prepended by the caller).
func (s TestSealer) LegacySeal(id string, nonce, k []byte) []byte {
	return s.s.legacy.Seal(nonce, nonce, k, legacyKeyAD(id))
}

// Reseal is reseal.
func Reseal(ctx context.Context, db *sqldb.DB, s TestSealer) (int, error) {
	return reseal(ctx, db, s.s)
}

// Current is the sealer in the current format (package seal).
func (s TestSealer) Current() *seal.Sealer { return s.s.s }
