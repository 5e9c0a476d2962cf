//go:build !wasm

package httpx

import "github.com/qshield/qshield/sqldb"

// dbUnavailable reports a database failure a retry may cure (see
// sqldb.IsUnavailable): WriteError answers it with 503.
func dbUnavailable(err error) bool { return sqldb.IsUnavailable(err) }
