package platform

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/sqldb"
)

// Platform state shared by the nodes is kept in the database
// (platform_state_files), so that every node of one platform has the same
// identity: the bioqr settlement unit (each node materialises it in its
// state directory for the code that reads files; its private keys sealed
// under a key derived from the platform master key, as on disk), the audit
// checkpoint verifier key the log is signed with (checkpointkey.go), and
// the sealed device key of a gateway while it is being provisioned (qmsp.go).
var stateMigrations = []sqldb.Migration{{Version: 1, SQL: `
CREATE TABLE platform_state_files (
	name       TEXT PRIMARY KEY,
	data       BYTEA NOT NULL,
	updated_at BIGINT NOT NULL
)`}}

// adoptStateFile makes path hold the platform's copy of name: the database's
// when there is one; otherwise create() makes (or a pre-existing local file
// provides) this node's, which is offered to the database with INSERT … ON
// CONFLICT DO NOTHING — when another node got there first, its copy wins and
// replaces the local file.
func (p *Platform) adoptStateFile(ctx context.Context, name, path string, create func() error) error {
	if err := p.DB.Migrate(ctx, "platform_state", stateMigrations); err != nil {
		return fmt.Errorf("platform: %w", err)
	}
	data, err := p.stateFile(ctx, name)
	if err == nil {
		return fsutil.WriteFileAtomic(path, data, 0o600, true)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if err := create(); err != nil {
		return err
	}
	mine, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("platform: %w", err)
	}
	theirs, err := recordStateOnce(ctx, p.DB, name, mine)
	if err != nil {
		return err
	}
	if !bytes.Equal(theirs, mine) {
		p.Config.Log.Info("platform: another node created the platform's copy first; adopting it", "file", name)
		return fsutil.WriteFileAtomic(path, theirs, 0o600, true)
	}
	return nil
}

// saveStateFile stores the current contents of path as name (after the
// code owning the file changed it, e.g. installed a certificate).
func (p *Platform) saveStateFile(ctx context.Context, name, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("platform: %w", err)
	}
	if _, err := p.DB.ExecContext(ctx, p.DB.Rebind(`UPDATE platform_state_files SET data = ?, updated_at = ? WHERE name = ?`), data, time.Now().UnixNano(), name); err != nil {
		return fmt.Errorf("platform: store %s: %w", name, err)
	}
	return nil
}

func (p *Platform) stateFile(ctx context.Context, name string) ([]byte, error) {
	return readStateFile(ctx, p.DB, name)
}

// readStateFile reads the platform_state_files row name (sql.ErrNoRows
// when there is none).
func readStateFile(ctx context.Context, db *sqldb.DB, name string) ([]byte, error) {
	var data []byte
	err := db.QueryRowContext(ctx, db.Rebind(`SELECT data FROM platform_state_files WHERE name = ?`), name).Scan(&data)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("platform: read %s: %w", name, err)
	}
	return data, err
}
