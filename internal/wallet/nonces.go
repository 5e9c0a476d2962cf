package wallet

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/qshield/qshield/httpsig"
	"github.com/qshield/qshield/sqldb"
)

var migrations = []sqldb.Migration{{Version: 1, SQL: `CREATE TABLE wallet_nonces (
		key_id TEXT NOT NULL,
		nonce TEXT NOT NULL,
		until_unix BIGINT NOT NULL,
		PRIMARY KEY (key_id, nonce));
	CREATE INDEX wallet_nonces_until ON wallet_nonces (until_unix)`}}

// sqlNonces is the nonce store shared by every node on the database: the
// primary key refuses a second use; expired rows are swept now and then.
type sqlNonces struct {
	db        *sqldb.DB
	now       func() time.Time
	lastSweep atomic.Int64
}

func (s *sqlNonces) Use(ctx context.Context, keyID, nonce string, until time.Time) error {
	now := s.now().Unix()
	_, err := s.db.ExecContext(ctx, s.db.Rebind(`INSERT INTO wallet_nonces (key_id, nonce, until_unix) VALUES (?, ?, ?)`), keyID, nonce, until.Unix())
	if err != nil {
		if sqldb.IsUniqueViolation(err) {
			return fmt.Errorf("%w: key %s", httpsig.ErrReplay, keyID)
		}
		return fmt.Errorf("wallet: nonce store: %w", err)
	}
	if last := s.lastSweep.Load(); now-last >= 30 && s.lastSweep.CompareAndSwap(last, now) {
		if _, err := s.db.ExecContext(ctx, s.db.Rebind(`DELETE FROM wallet_nonces WHERE until_unix < ?`), now); err != nil {
			return fmt.Errorf("wallet: sweep nonces: %w", err)
		}
	}
	return nil
}
