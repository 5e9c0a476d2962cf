package platform

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/qshield/qshield/seal"
)

// tlsCache keeps the certificates the platform issues to its own services
// (pki.CA.ServiceTLS: the HTTPS server, the key managers and their SAE
// clients, the QKD link ends) in platform_state_files, sealed under a key
// derived from the platform master key, so that a restart — or another node
// of the platform — reuses them instead of issuing a new set every start.
type tlsCache struct {
	p      *Platform
	sealer *seal.Sealer
}

// newTLSCache migrates platform_state_files once, for every Load and Store.
func newTLSCache(ctx context.Context, p *Platform) (*tlsCache, error) {
	if err := p.DB.Migrate(ctx, "platform_state", stateMigrations); err != nil {
		return nil, fmt.Errorf("platform: %w", err)
	}
	s, err := seal.New(p.Secret("tls-cache"), "platform service certificate")
	if err != nil {
		return nil, fmt.Errorf("platform: %w", err)
	}
	return &tlsCache{p: p, sealer: s}, nil
}

func tlsCacheRow(name string) string { return "tls/" + name }

func (c *tlsCache) Load(ctx context.Context, name string) ([]byte, error) {
	sealed, err := readStateFile(ctx, c.p.DB, tlsCacheRow(name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	data, err := c.sealer.Open(sealed, name)
	if err != nil {
		// Sealed under another master key (or damaged): issue anew.
		c.p.Config.Log.Warn("platform: a kept service certificate does not open; issuing a new one", "name", name, "err", err)
		return nil, nil
	}
	return data, nil
}

func (c *tlsCache) Store(ctx context.Context, name string, data []byte) error {
	sealed, err := c.sealer.Seal(data, name)
	if err != nil {
		return err
	}
	db := c.p.DB
	if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO platform_state_files (name, data, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at`), tlsCacheRow(name), sealed, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("platform: keep service certificate %s: %w", name, err)
	}
	return nil
}
