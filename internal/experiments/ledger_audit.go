package experiments

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
)

// The audited targets run the same load with the ledger auditing every
// transfer inside its transaction (ledger.WithAudit) and, as the platform
// does, a checkpoint publisher integrating the audit queue every 200 ms and
// signing a checkpoint every 1000 records (at most one a second, the
// publisher's default), so its cost is measured too.
// Compare each with its unaudited target (same accounts and clients).

// openAudited opens the audit log on db and starts a publisher (unless the
// parameter audit-checkpoint-every is 0); stop ends it.
func openAudited(ctx context.Context, env *experiment.Env, db *sqldb.DB) (ledger.Option, func(), error) {
	every := int64(1000)
	if s := env.String("audit-checkpoint-every"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return nil, nil, fmt.Errorf("parameter audit-checkpoint-every: %q", s)
		}
		every = n
	}
	alog, err := audit.Open(ctx, db)
	if err != nil {
		return nil, nil, err
	}
	if every == 0 {
		return ledger.WithAudit(alog), func() {}, nil
	}
	skey, _, err := audit.GenerateCheckpointKey("qshield-experiment")
	if err != nil {
		return nil, nil, err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, nil, err
	}
	pub := &audit.Publisher{Log: alog, Signer: signer, Every: every, Interval: 10 * time.Second}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); _ = pub.Run(rctx) }()
	return ledger.WithAudit(alog), func() { cancel(); <-done }, nil
}

// SQLiteAuditedTarget is SQLiteTarget with auditing.
func SQLiteAuditedTarget() LoadTarget {
	return LoadTarget{Name: "audited sqlite (in-process)", Open: func(ctx context.Context, env *experiment.Env, accounts int) (TransferFunc, func(), error) {
		dir, err := os.MkdirTemp("", "qshield-ledger-exp-")
		if err != nil {
			return nil, nil, err
		}
		db, err := sqldb.Open(ctx, filepath.Join(dir, "ledger.db"))
		if err != nil {
			os.RemoveAll(dir)
			return nil, nil, err
		}
		opt, stop, err := openAudited(ctx, env, db)
		if err != nil {
			db.Close()
			os.RemoveAll(dir)
			return nil, nil, err
		}
		l, err := PrepareLoadLedger(ctx, db, accounts, opt)
		if err == nil {
			_, err = db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
		}
		if err != nil {
			if l != nil {
				l.Close()
			}
			stop()
			db.Close()
			os.RemoveAll(dir)
			return nil, nil, err
		}
		return LedgerTransferFunc(l), func() { l.Close(); stop(); db.Close(); os.RemoveAll(dir) }, nil
	}}
}

// PostgresAuditedTarget is PostgresTarget with auditing.
func PostgresAuditedTarget() LoadTarget {
	return LoadTarget{Name: "audited postgres (in-process)", Postgres: true, Open: func(ctx context.Context, env *experiment.Env, accounts int) (TransferFunc, func(), error) {
		db, drop, err := FreshPostgres(ctx, env)
		if err != nil {
			return nil, nil, err
		}
		opt, stop, err := openAudited(ctx, env, db)
		if err != nil {
			drop()
			return nil, nil, err
		}
		bopts, err := pgBatcherOpts(env)
		if err != nil {
			stop()
			drop()
			return nil, nil, err
		}
		l, err := PrepareLoadLedger(ctx, db, accounts, append(bopts, opt)...)
		if err != nil {
			stop()
			drop()
			return nil, nil, err
		}
		return LedgerTransferFunc(l), func() { l.Close(); stop(); drop() }, nil
	}}
}
