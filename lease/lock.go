package lease

import (
	"context"
	"database/sql/driver"
	"fmt"
	"time"

	"github.com/qshield/qshield/sqldb"
)

// Lock takes the named mutual-exclusion lock shared by every process on
// db's PostgreSQL database, waiting for it as long as ctx allows, and
// returns its release. Use it around a short check-then-act that must
// happen once across nodes starting together (issue the one admin
// credential, create a shared key), where a lease with its renewals would
// be too much. The lock is a session advisory lock held on a dedicated
// connection; if that connection dies the lock is released, so the
// critical section must be safe to redo (it is: it re-checks under the
// lock).
//
// On SQLite the database file belongs to one node and Lock returns at once
// with a release that does nothing.
func Lock(ctx context.Context, db *sqldb.DB, name string) (unlock func(), err error) {
	if db.Dialect != sqldb.Postgres {
		return func() {}, nil
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("lease: lock %q: %w", name, err)
	}
	// The schema is part of the key: platforms in different schemas of one
	// database (tests, experiments) are different platforms.
	const key = `hashtext('qshield lock ' || current_schema() || ' ' || $1)`
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(`+key+`)`, name); err != nil {
		conn.Close()
		return nil, fmt.Errorf("lease: lock %q: %w", name, err)
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.ExecContext(uctx, `SELECT pg_advisory_unlock(`+key+`)`, name); err != nil {
			// Closing the session releases the lock: never hand this
			// connection back to the pool still holding it.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		conn.Close()
	}, nil
}
