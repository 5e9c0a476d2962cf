package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// CreateAccount opens an account with a zero balance. An empty ID is replaced
// by a generated one; an ID already in use is ErrAccountExists.
func (l *Ledger) CreateAccount(ctx context.Context, na NewAccount) (Account, error) {
	if err := validateNewAccount(na, false); err != nil {
		return Account{}, err
	}
	if na.ID == "" {
		na.ID = newID("acc_")
	}
	var out Account
	err := l.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		a, created, err := l.insertAccount(ctx, tx, na)
		if err != nil {
			return err
		}
		if !created {
			return fmt.Errorf("%w: %s", ErrAccountExists, na.ID)
		}
		out = a
		return nil
	})
	if err != nil {
		return Account{}, err
	}
	return out, nil
}

// EnsureAccount creates the account, or returns the existing one when it has
// the same owner, kind, currency and AllowNegative; otherwise ErrAccountExists.
// The ID is required.
func (l *Ledger) EnsureAccount(ctx context.Context, na NewAccount) (Account, error) {
	if err := validateNewAccount(na, true); err != nil {
		return Account{}, err
	}
	var out Account
	err := l.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		a, created, err := l.insertAccount(ctx, tx, na)
		if err != nil {
			return err
		}
		if !created && (a.Owner != na.Owner || a.Kind != na.Kind || a.Currency != na.Currency || a.AllowNegative != na.AllowNegative) {
			return fmt.Errorf("%w: %s with different attributes", ErrAccountExists, na.ID)
		}
		out = a
		return nil
	})
	if err != nil {
		return Account{}, err
	}
	return out, nil
}

// insertAccount inserts na unless its ID exists, and returns the stored row.
func (l *Ledger) insertAccount(ctx context.Context, tx *sql.Tx, na NewAccount) (Account, bool, error) {
	res, err := l.exec(ctx, tx, l.q.insertAccount, na.ID, na.Owner, string(na.Kind), na.Currency, boolInt(na.AllowNegative), nanos(l.now()))
	if err != nil {
		return Account{}, false, fmt.Errorf("ledger: insert account %s: %w", na.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return Account{}, false, fmt.Errorf("ledger: insert account %s: %w", na.ID, err)
	}
	a, err := scanAccount(l.queryRow(ctx, tx, l.q.account, na.ID))
	if err != nil {
		return Account{}, false, fmt.Errorf("ledger: read account %s: %w", na.ID, err)
	}
	if n == 1 {
		if err := l.record(ctx, tx, accountEntry(ctx, a)); err != nil {
			return Account{}, false, fmt.Errorf("ledger: audit account %s: %w", na.ID, err)
		}
	}
	return a, n == 1, nil
}

// Account returns the account with its current balances. Reservations of
// pending transfers that have expired are released first.
func (l *Ledger) Account(ctx context.Context, id string) (Account, error) {
	a, err := l.readAccount(ctx, id)
	if err != nil || (a.PendingDebit == 0 && a.PendingCredit == 0) {
		return a, err
	}
	n, err := l.expireForAccount(ctx, id)
	if err != nil {
		return Account{}, err
	}
	if n == 0 {
		return a, nil
	}
	return l.readAccount(ctx, id)
}

func (l *Ledger) readAccount(ctx context.Context, id string) (Account, error) {
	if !ValidAccountID(id) {
		return Account{}, fmt.Errorf("%w: %q", ErrInvalidAccount, id)
	}
	a, err := scanAccount(l.db.QueryRowContext(ctx, l.q.account, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Account{}, fmt.Errorf("%w: %s", ErrAccountNotFound, id)
	}
	if err != nil {
		return Account{}, fmt.Errorf("ledger: read account %s: %w", id, err)
	}
	return a, nil
}

// Accounts lists accounts in ID order, starting after the ID after ("" = from
// the first); limit ≤ 0 means 100, and at most 1000 are returned. All rows of
// one call come from one consistent snapshot.
func (l *Ledger) Accounts(ctx context.Context, after string, limit int) ([]Account, error) {
	if limit <= 0 {
		limit = 100
	}
	if limit > 1000 {
		limit = 1000
	}
	if len(after) > maxIDLen {
		return nil, fmt.Errorf("%w: cursor %q", ErrInvalidAccount, after)
	}
	rows, err := l.db.QueryContext(ctx, l.q.accounts, after, limit)
	if err != nil {
		return nil, fmt.Errorf("ledger: list accounts: %w", err)
	}
	defer rows.Close()
	var out []Account
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return nil, fmt.Errorf("ledger: list accounts: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: list accounts: %w", err)
	}
	return out, nil
}

// TotalBalance returns the sum of the posted balances of every account in
// currency, read in one snapshot. Since every transfer moves money between two
// accounts, it only changes when accounts are created with a balance (never):
// with money issued from AllowNegative system accounts it is always 0.
func (l *Ledger) TotalBalance(ctx context.Context, currency string) (int64, error) {
	if !ValidCurrency(currency) {
		return 0, fmt.Errorf("%w: currency %q is not 3 uppercase letters", ErrCurrencyMismatch, currency)
	}
	var sum, n int64
	if err := l.db.QueryRowContext(ctx, l.q.total, currency).Scan(&sum, &n); err != nil {
		return 0, fmt.Errorf("ledger: total balance: %w", err)
	}
	return sum, nil
}
