package ledger

import (
	"context"
	"fmt"
)

// FeedEntry is a transfer with its position in the ledger's insertion order.
type FeedEntry struct {
	Seq int64 `json:"seq"`
	Transfer
}

// Since returns up to limit transfers recorded after position after (0 = from
// the newest limit transfers), oldest first, for a live feed of every
// account's transfers: a reader polls with the Seq of the last entry it saw.
// limit ≤ 0 means 50; at most 1000 are returned. A pending transfer appears
// once, when it is recorded; its later state is read with GetTransfer.
func (l *Ledger) Since(ctx context.Context, after int64, limit int) ([]FeedEntry, error) {
	if limit <= 0 {
		limit = 50
	}
	if limit > 1000 {
		limit = 1000
	}
	if after < 0 {
		return nil, fmt.Errorf("%w: feed position %d", ErrInvalidCursor, after)
	}
	q := l.q.feedAfter
	args := []any{after, limit}
	if after == 0 {
		q, args = l.q.feedLatest, []any{limit}
	}
	rows, err := l.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: feed: %w", err)
	}
	defer rows.Close()
	var out []FeedEntry
	for rows.Next() {
		r, err := scanTransfer(rows)
		if err != nil {
			return nil, fmt.Errorf("ledger: feed: %w", err)
		}
		out = append(out, FeedEntry{Seq: r.seq, Transfer: r.Transfer})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: feed: %w", err)
	}
	if after == 0 { // newest first from the query; the feed is oldest first
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out, nil
}
