package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestErrorClasses: which failures are "the database is unavailable" (503
// with Retry-After), which lost connections are safe to retry, and which
// are neither (a bug or a refusal: 500 or the caller's 4xx).
func TestErrorClasses(t *testing.T) {
	pg := func(code string) error { return fmt.Errorf("ledger: transfer: %w", &pgconn.PgError{Code: code}) }
	tests := []struct {
		name              string
		err               error
		conn, unavailable bool
	}{
		{"admin shutdown (pg_terminate_backend)", pg("57P01"), true, true},
		{"crash shutdown", pg("57P02"), true, true},
		{"cannot connect now", pg("57P03"), true, true},
		{"connection failure", pg("08006"), true, true},
		{"read-only transaction (demoted primary)", pg("25006"), true, true},
		{"disk full", pg("53100"), false, true},
		{"too many connections", pg("53300"), false, true},
		{"statement timeout", pg("57014"), false, true},
		{"lock timeout", pg("55P03"), false, true},
		{"I/O error", pg("58030"), false, true},
		{"serialization failure after retries", pg("40001"), false, true},
		{"unique violation", pg("23505"), false, false},
		{"syntax error (a bug)", pg("42601"), false, false},
		{"unexpected EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true, true},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true, true},
		{"bad conn", driver.ErrBadConn, true, true},
		{"conn done", sql.ErrConnDone, false, true},
		{"pool closed", errors.New("sql: database is closed"), false, true},
		{"commit in doubt", fmt.Errorf("%w: %w", ErrInDoubt, io.ErrUnexpectedEOF), true, true},
		{"deadline", context.DeadlineExceeded, false, true},
		{"no rows (a bug here)", sql.ErrNoRows, false, false},
		{"plain error", errors.New("decode row: bad"), false, false},
		{"nil", nil, false, false},
	}
	for _, tt := range tests {
		if got := IsConnError(tt.err); got != tt.conn {
			t.Errorf("%s: IsConnError = %v", tt.name, got)
		}
		if got := IsUnavailable(tt.err); got != tt.unavailable {
			t.Errorf("%s: IsUnavailable = %v", tt.name, got)
		}
	}
}

// TestInTxRetriesConnectionLossBeforeCommit: a transaction that lost its
// connection before COMMIT (the server rolled it back) is run again; only
// serialization failures and deadlocks were.
func TestInTxRetriesConnectionLossBeforeCommit(t *testing.T) {
	db, err := Open(context.Background(), t.TempDir()+"/x.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	calls := 0
	err = db.InTx(context.Background(), func(tx *sql.Tx) error {
		calls++
		if calls < 3 {
			return fmt.Errorf("insert: %w", &pgconn.PgError{Code: "57P01"})
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("err %v after %d attempts, want success on the third", err, calls)
	}
}
