package platform

import (
	"context"
	"time"

	"github.com/qshield/qshield/lease"
	"github.com/qshield/qshield/sqldb"
)

// duty runs work, a node's periodic background duty (an expiry sweeper, the
// key managers' pool sync), until ctx ends. On SQLite (one node) it simply
// calls work. On PostgreSQL, where several nodes may share the database, work
// runs under the lease named name (package lease): one node at a time holds
// it, and when that node stops another takes the duty within the lease TTL
// plus a third (8 s with lease.DefaultTTL); work's ctx ends when the lease
// is lost. Each duty has its own lease, so duties spread over the nodes.
//
// The duties run this way write idempotently — conditional state
// transitions (selfverify's sweep: `... WHERE state = 'awaiting'`, ledger
// transfers with idempotency keys, the ledger's expiry of a transfer still
// pending) and deletions of rows that no longer
// serve (the KME's delivered keys, units the peer lacks) — the same writes
// the request path and a restarted node may run concurrently; a paused
// former holder that wakes up repeats a write already done or does a
// still-due one, so they pass no fencing token (lease.Elector.Fence).
// qshield_leader{duty} reports the holder.
func (p *Platform) duty(ctx context.Context, name string, work func(context.Context)) {
	if p.DB.Dialect != sqldb.Postgres {
		work(ctx)
		return
	}
	for {
		el, err := lease.New(ctx, p.DB, name, p.node, 0, p.Config.Log)
		if err == nil {
			el.OnChange = func(held bool) { p.Metrics.SetLeader(name, held) }
			p.Metrics.SetLeader(name, false)
			_ = el.Run(ctx, func(ctx context.Context, _ int64) error {
				work(ctx)
				return nil
			})
			return
		}
		p.Config.Log.Error("duty: cannot compete for its lease; retrying", "duty", name, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// startLedgerExpiry voids, every minute, the pending transfers whose expiry
// has passed (ledger.ExpirePending, what the ledger's own sweeper does on
// SQLite) as the duty "ledger-expiry". Each expiry is a state-checked
// resolution of one pending transfer: a transfer already resolved is left
// alone.
func (p *Platform) startLedgerExpiry(ctx context.Context) {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.duty(rctx, "ledger-expiry", func(ctx context.Context) {
			t := time.NewTicker(time.Minute)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if n, err := p.Ledger.ExpirePending(ctx, time.Now()); err != nil && ctx.Err() == nil {
					p.Config.Log.Warn("ledger: expiry sweep failed", "err", err)
				} else if n > 0 {
					p.Config.Log.Debug("ledger: expired pending transfers", "count", n)
				}
			}
		})
	}()
	p.closers = append(p.closers, func() error { cancel(); <-done; return nil })
}
