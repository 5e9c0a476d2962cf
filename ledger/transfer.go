package ledger

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/qshield/qshield/sqldb"
)

// errNeedExpiry is returned inside a transfer transaction when the debited
// account lacks funds but has reservations that may have expired.
var errNeedExpiry = errors.New("ledger: expired reservations to release")

// errExpiredNow tells expireIDs that resolve expired the transfer itself.
var errExpiredNow = errors.New("ledger: expired now")

// Transfer moves req.Amount from req.From to req.To, or reserves it when
// req.Pending. It returns only once the transfer is durably committed. A
// repeated idempotency key with the same parameters returns the first
// transfer (in its current state); with other parameters it is
// ErrIdempotencyConflict.
func (l *Ledger) Transfer(ctx context.Context, req TransferRequest) (Transfer, error) {
	now := l.now()
	exp, err := validateRequest(req, now, l.opts.defaultExpiry)
	if err != nil {
		return Transfer{}, err
	}
	for attempt := 0; ; attempt++ {
		var out Transfer
		var err error
		if l.db.Dialect == sqldb.Postgres {
			select {
			case <-l.done:
				return Transfer{}, ErrClosed
			default:
			}
			if l.pgReqs != nil {
				out, err = l.transferPGBatched(ctx, req, now, exp, attempt == 0)
			} else {
				out, err = l.transferPG(ctx, req, now, exp, attempt == 0)
			}
		} else {
			x := &xfer{ctx: ctx, req: req, now: now, exp: exp, mayExpire: attempt == 0}
			err = l.submit(ctx, func(ctx context.Context, tx *sql.Tx) error {
				t, err := l.transferTx(ctx, tx, req, now, exp, x.mayExpire)
				x.out = t
				return err
			}, x)
			out = x.out
		}
		if errors.Is(err, errNeedExpiry) && attempt == 0 {
			if _, err := l.expireForAccount(ctx, req.From); err != nil {
				return Transfer{}, err
			}
			continue
		}
		if err != nil {
			return Transfer{}, err
		}
		return out, nil
	}
}

func (l *Ledger) lockAccounts(ctx context.Context, tx *sql.Tx, a, b string) (Account, Account, error) {
	rows, err := l.query(ctx, tx, l.q.lockAccounts, a, b)
	if err != nil {
		return Account{}, Account{}, fmt.Errorf("ledger: lock accounts: %w", err)
	}
	defer rows.Close()
	var ra, rb Account
	var found [2]bool
	for rows.Next() {
		acc, err := scanAccount(rows)
		if err != nil {
			return Account{}, Account{}, fmt.Errorf("ledger: lock accounts: %w", err)
		}
		switch acc.ID {
		case a:
			ra, found[0] = acc, true
		case b:
			rb, found[1] = acc, true
		}
	}
	if err := rows.Err(); err != nil {
		return Account{}, Account{}, fmt.Errorf("ledger: lock accounts: %w", err)
	}
	if !found[0] {
		return Account{}, Account{}, fmt.Errorf("%w: %s", ErrAccountNotFound, a)
	}
	if !found[1] {
		return Account{}, Account{}, fmt.Errorf("%w: %s", ErrAccountNotFound, b)
	}
	return ra, rb, nil
}

func (l *Ledger) transferTx(ctx context.Context, tx *sql.Tx, req TransferRequest, now, exp time.Time, mayExpire bool) (Transfer, error) {
	// refuse returns the first transfer with this key if there is one (a
	// retry of a request that succeeded earlier must get its result even if
	// it would be refused now), else err.
	refuse := func(err error) (Transfer, error) {
		if t, ok, lerr := l.byKey(ctx, tx, req); lerr != nil {
			return Transfer{}, lerr
		} else if ok {
			return t, nil
		}
		return Transfer{}, err
	}
	from, to, err := l.lockAccounts(ctx, tx, req.From, req.To)
	if err != nil {
		return refuse(err)
	}
	amt := req.Amount
	if err := checkTransfer(req, from, to); err != nil {
		if errors.Is(err, ErrInsufficientFunds) && mayExpire && from.PendingDebit > 0 {
			if _, ok, lerr := l.byKey(ctx, tx, req); lerr == nil && !ok {
				return Transfer{}, errNeedExpiry
			}
		}
		return refuse(err)
	}

	state := StatePosted
	if req.Pending {
		state = StatePending
	}
	t := Transfer{
		ID: newID("tr_"), IdempotencyKey: req.IdempotencyKey, From: req.From, To: req.To,
		Amount: amt, Currency: req.Currency, Memo: req.Memo, State: state,
		CreatedAt: now, ExpiresAt: exp,
	}
	var seq int64
	err = l.queryRow(ctx, tx, l.q.insertTransfer, t.ID, t.IdempotencyKey, t.From, t.To, t.Amount, t.Currency, t.Memo,
		boolInt(req.Pending), string(state), nanos(now), nanos(exp)).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		// The key exists (possibly committed by a concurrent request we waited for).
		first, ok, lerr := l.byKey(ctx, tx, req)
		if lerr != nil {
			return Transfer{}, lerr
		}
		if !ok {
			return Transfer{}, fmt.Errorf("ledger: idempotency key %q conflicted but is not visible", req.IdempotencyKey)
		}
		return first, nil
	}
	if err != nil {
		return Transfer{}, fmt.Errorf("ledger: record transfer: %w", err)
	}
	var res sql.Result
	if req.Pending {
		res, err = l.exec(ctx, tx, l.q.applyPending, req.From, amt, req.To, amt, req.From, req.To)
	} else {
		res, err = l.exec(ctx, tx, l.q.applyPosted, req.To, amt, -amt, req.From, req.To)
	}
	if err = checkTwoRows(res, err); err != nil {
		return Transfer{}, fmt.Errorf("ledger: update balances: %w", err)
	}
	if err := l.record(ctx, tx, moneyEntry(ctx, EventTransfer, t, t.Amount)); err != nil {
		return Transfer{}, fmt.Errorf("ledger: audit transfer %s: %w", t.ID, err)
	}
	return t, nil
}

func checkTwoRows(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != 2 {
		return fmt.Errorf("updated %d account rows, want 2", n)
	}
	return nil
}

// byKey looks up req's idempotency key: ok is false when it is unused; when it
// is used with other parameters the error is ErrIdempotencyConflict.
func (l *Ledger) byKey(ctx context.Context, tx *sql.Tx, req TransferRequest) (Transfer, bool, error) {
	r, err := scanTransfer(l.queryRow(ctx, tx, l.q.transferByKey, req.IdempotencyKey))
	return replayOf(r, err, req)
}

// replayOf interprets the lookup of req's idempotency key: no transfer yet
// (false), the first transfer of a replayed request (true, marked Replayed),
// or ErrIdempotencyConflict when the key was used with other parameters.
func replayOf(r record, err error, req TransferRequest) (Transfer, bool, error) {
	if errors.Is(err, sql.ErrNoRows) {
		return Transfer{}, false, nil
	}
	if err != nil {
		return Transfer{}, false, fmt.Errorf("ledger: look up idempotency key: %w", err)
	}
	if err := sameParams(r, req); err != nil {
		return Transfer{}, false, err
	}
	t := r.Transfer
	t.Replayed = true
	return t, true, nil
}

// TransferByKey returns the transfer recorded under an idempotency key.
func (l *Ledger) TransferByKey(ctx context.Context, key string) (Transfer, error) {
	if !validKey(key) {
		return Transfer{}, fmt.Errorf("%w: must be 1–%d printable ASCII bytes", ErrInvalidKey, maxKeyLen)
	}
	r, err := scanTransfer(l.db.QueryRowContext(ctx, l.q.transferByKey, key))
	if errors.Is(err, sql.ErrNoRows) {
		return Transfer{}, fmt.Errorf("%w: key %q", ErrTransferNotFound, key)
	}
	if err != nil {
		return Transfer{}, fmt.Errorf("ledger: look up idempotency key: %w", err)
	}
	return l.lazyExpire(ctx, r)
}

// GetTransfer returns a transfer by ID.
func (l *Ledger) GetTransfer(ctx context.Context, id string) (Transfer, error) {
	if !validTransferID(id) {
		return Transfer{}, fmt.Errorf("%w: %q", ErrTransferNotFound, id)
	}
	r, err := scanTransfer(l.db.QueryRowContext(ctx, l.q.transferByID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Transfer{}, fmt.Errorf("%w: %s", ErrTransferNotFound, id)
	}
	if err != nil {
		return Transfer{}, fmt.Errorf("ledger: read transfer %s: %w", id, err)
	}
	return l.lazyExpire(ctx, r)
}

func validTransferID(id string) bool { return ValidAccountID(id) }

// lazyExpire expires r if it is a pending transfer past its expiry.
func (l *Ledger) lazyExpire(ctx context.Context, r record) (Transfer, error) {
	if r.State != StatePending || r.ExpiresAt.After(l.now()) {
		return r.Transfer, nil
	}
	t, _, err := l.resolve(ctx, r.ID, resolveExpire, 0, l.now())
	return t, err
}

type resolveKind int

const (
	resolvePost resolveKind = iota
	resolveVoid
	resolveExpire
)

// Post posts a pending transfer. amount 0 posts the full amount; 0 < amount ≤
// Amount captures part of it and releases the rest. Posting an expired
// transfer is ErrExpired; posting again with the same amount returns the
// transfer.
func (l *Ledger) Post(ctx context.Context, transferID string, amount int64) (Transfer, error) {
	if amount < 0 || amount > MaxAmount {
		return Transfer{}, fmt.Errorf("%w: post amount %d", ErrInvalidAmount, amount)
	}
	t, after, err := l.resolve(ctx, transferID, resolvePost, amount, l.now())
	if err != nil {
		return Transfer{}, err
	}
	return t, after
}

// Void cancels a pending transfer and releases its reservation. Voiding a
// voided transfer returns it; a posted one is ErrNotPending, an expired one
// ErrExpired.
func (l *Ledger) Void(ctx context.Context, transferID string) (Transfer, error) {
	t, after, err := l.resolve(ctx, transferID, resolveVoid, 0, l.now())
	if err != nil {
		return Transfer{}, err
	}
	return t, after
}

// resolve moves a pending transfer to posted, voided or expired. The second
// error is an outcome reported after a successful commit (ErrExpired when the
// transfer expired on the way).
func (l *Ledger) resolve(ctx context.Context, id string, kind resolveKind, amount int64, now time.Time) (Transfer, error, error) {
	if !validTransferID(id) {
		return Transfer{}, nil, fmt.Errorf("%w: %q", ErrTransferNotFound, id)
	}
	now = now.UTC()
	var out Transfer
	var after error
	err := l.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		out, after = Transfer{}, nil
		r, err := scanTransfer(l.queryRow(ctx, tx, l.q.transferByIDLock, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %s", ErrTransferNotFound, id)
		}
		if err != nil {
			return fmt.Errorf("ledger: read transfer %s: %w", id, err)
		}
		if r.State != StatePending {
			switch {
			case kind == resolveExpire:
				out = r.Transfer // someone else resolved it
				return nil
			case r.State == StateExpired:
				return fmt.Errorf("%w: %s expired at %s", ErrExpired, id, r.ExpiresAt.Format(time.RFC3339))
			case kind == resolvePost && r.State == StatePosted && r.pending &&
				(amount == r.PostedAmount || (amount == 0 && r.PostedAmount == r.Amount)):
				out = r.Transfer
				return nil
			case kind == resolveVoid && r.State == StateVoided:
				out = r.Transfer
				return nil
			}
			return fmt.Errorf("%w: %s is %s", ErrNotPending, id, r.State)
		}
		if amount > r.Amount {
			return fmt.Errorf("%w: post %d of a pending %d", ErrInvalidAmount, amount, r.Amount)
		}
		state, posted := StateVoided, int64(0)
		switch {
		case !r.ExpiresAt.After(now):
			state = StateExpired
			if kind == resolveExpire {
				after = errExpiredNow
			} else {
				after = fmt.Errorf("%w: %s expired at %s", ErrExpired, id, r.ExpiresAt.Format(time.RFC3339))
			}
		case kind == resolvePost:
			state, posted = StatePosted, amount
			if posted == 0 {
				posted = r.Amount
			}
		case kind == resolveExpire:
			out = r.Transfer // not expired yet
			return nil
		}
		if _, _, err := l.lockAccounts(ctx, tx, r.From, r.To); err != nil {
			return err
		}
		res, err := l.exec(ctx, tx, l.q.applyResolve, r.To, posted, -posted, r.From, r.Amount, r.To, r.Amount, r.From, r.To)
		if err = checkTwoRows(res, err); err != nil {
			return fmt.Errorf("ledger: update balances: %w", err)
		}
		res, err = l.exec(ctx, tx, l.q.setState, string(state), nanos(now), posted, id)
		if err == nil {
			var n int64
			if n, err = res.RowsAffected(); err == nil && n != 1 {
				err = fmt.Errorf("updated %d transfer rows, want 1", n)
			}
		}
		if err != nil {
			return fmt.Errorf("ledger: update transfer %s: %w", id, err)
		}
		r.State, r.ResolvedAt, r.PostedAmount = state, now, posted
		out = r.Transfer
		event, moved := EventVoid, r.Amount
		switch state {
		case StatePosted:
			event, moved = EventPost, posted
		case StateExpired:
			event = EventExpire
		}
		if err := l.record(ctx, tx, moneyEntry(ctx, event, r.Transfer, moved)); err != nil {
			return fmt.Errorf("ledger: audit %s of %s: %w", state, id, err)
		}
		return nil
	})
	if err != nil {
		return Transfer{}, nil, err
	}
	return out, after, nil
}

// ExpirePending expires every pending transfer whose expiry is at or before
// now, releasing its reservation, and returns how many it expired.
func (l *Ledger) ExpirePending(ctx context.Context, now time.Time) (int, error) {
	total := 0
	const page = 256
	for {
		ids, err := l.ids(ctx, l.q.expiredPending, nanos(now.UTC()), page)
		if err != nil {
			return total, err
		}
		n, err := l.expireIDs(ctx, ids, now)
		total += n
		if err != nil || len(ids) < page {
			return total, err
		}
	}
}

func (l *Ledger) expireForAccount(ctx context.Context, account string) (int, error) {
	ids, err := l.ids(ctx, l.q.expiredForAccount, nanos(l.now()), account, account)
	if err != nil {
		return 0, err
	}
	return l.expireIDs(ctx, ids, l.now())
}

func (l *Ledger) expireIDs(ctx context.Context, ids []string, now time.Time) (int, error) {
	n := 0
	for _, id := range ids {
		_, after, err := l.resolve(ctx, id, resolveExpire, 0, now)
		if err != nil {
			return n, fmt.Errorf("ledger: expire %s: %w", id, err)
		}
		if after == errExpiredNow {
			n++
		}
	}
	return n, nil
}

func (l *Ledger) ids(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := l.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: find expired transfers: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("ledger: find expired transfers: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: find expired transfers: %w", err)
	}
	return ids, nil
}

// History returns the transfers from or to accountID, newest first, limit per
// page (≤ 0: 50; at most 1000). cursor is "" for the first page and next of the
// previous page afterwards; next is "" on the last page.
func (l *Ledger) History(ctx context.Context, accountID, cursor string, limit int) ([]Transfer, string, error) {
	if limit <= 0 {
		limit = 50
	}
	if limit > 1000 {
		limit = 1000
	}
	before, err := decodeCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	if _, err := l.readAccount(ctx, accountID); err != nil {
		return nil, "", err
	}
	n := limit + 1
	rows, err := l.db.QueryContext(ctx, l.q.history, accountID, before, n, accountID, before, n, n)
	if err != nil {
		return nil, "", fmt.Errorf("ledger: history of %s: %w", accountID, err)
	}
	defer rows.Close()
	var page []record
	for rows.Next() {
		r, err := scanTransfer(rows)
		if err != nil {
			return nil, "", fmt.Errorf("ledger: history of %s: %w", accountID, err)
		}
		page = append(page, r)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("ledger: history of %s: %w", accountID, err)
	}
	next := ""
	if len(page) > limit {
		page = page[:limit]
		next = encodeCursor(page[limit-1].seq)
	}
	out := make([]Transfer, len(page))
	for i, r := range page {
		out[i] = r.Transfer
	}
	return out, next, nil
}

const cursorVersion = 1

func encodeCursor(seq int64) string {
	var b [9]byte
	b[0] = cursorVersion
	binary.BigEndian.PutUint64(b[1:], uint64(seq))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// decodeCursor returns the sequence number to page below.
func decodeCursor(c string) (int64, error) {
	if c == "" {
		return math.MaxInt64, nil
	}
	// The decoder skips \r and \n; a cursor holding them is not one we issued.
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || strings.ContainsAny(c, "\r\n") || len(b) != 9 || b[0] != cursorVersion {
		return 0, fmt.Errorf("%w: %q", ErrInvalidCursor, c)
	}
	seq := int64(binary.BigEndian.Uint64(b[1:]))
	if seq <= 0 {
		return 0, fmt.Errorf("%w: %q", ErrInvalidCursor, c)
	}
	return seq, nil
}
