package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"

	"github.com/qshield/qshield/audit"
)

// ReconcileReport is the result of Reconcile.
type ReconcileReport struct {
	OK           bool     `json:"ok"`
	Accounts     int64    `json:"accounts"`
	Transfers    int64    `json:"transfers"`
	MoneyRecords int64    `json:"money_records"` // ledger.* audit records examined
	Problems     []string `json:"problems,omitempty"`
	Truncated    bool     `json:"truncated,omitempty"` // more than 1000 problems
}

func (r *ReconcileReport) add(format string, args ...any) {
	if len(r.Problems) >= 1000 {
		r.Truncated = true
		return
	}
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// Reconcile proves that the ledger and the audit trail agree, reading both
// in one database snapshot: every account has exactly one
// ledger.account.create record; every transfer exactly one ledger.transfer
// record with the same accounts, amount, currency and initial state; every
// resolved pending transfer exactly one ledger.post (with the posted
// amount), ledger.void or ledger.expire record matching its state; and every
// ledger record belongs to a transfer or account that exists and matches it.
// A database error is an error; a disagreement is a report with OK false.
func (l *Ledger) Reconcile(ctx context.Context, log *audit.Log) (ReconcileReport, error) {
	var rep ReconcileReport
	err := log.Snapshot(ctx, func(tx *sql.Tx) error {
		byRes := map[string][]audit.Record{}
		if err := log.ScanEvents(ctx, tx, "ledger.", func(r audit.Record) error {
			rep.MoneyRecords++
			byRes[r.Resource] = append(byRes[r.Resource], r)
			return nil
		}); err != nil {
			return err
		}
		seen := map[string]bool{}
		rows, err := tx.QueryContext(ctx, `SELECT id, owner, kind, currency, allow_negative FROM ledger_accounts ORDER BY id`)
		if err != nil {
			return fmt.Errorf("ledger: reconcile: %w", err)
		}
		for rows.Next() {
			var a Account
			var neg int64
			if err := rows.Scan(&a.ID, &a.Owner, &a.Kind, &a.Currency, &neg); err != nil {
				rows.Close()
				return fmt.Errorf("ledger: reconcile: %w", err)
			}
			a.AllowNegative = neg != 0
			rep.Accounts++
			seen[a.ID] = true
			recs := byRes[a.ID]
			if n := count(recs, EventAccountCreate); n != 1 {
				rep.add("account %s has %d %s records, want 1", a.ID, n, EventAccountCreate)
				continue
			}
			d := recs[0].Details
			if d["owner"] != a.Owner || d["kind"] != string(a.Kind) || d["currency"] != a.Currency || d["allow_negative"] != strconv.FormatBool(a.AllowNegative) {
				rep.add("account %s differs from its audit record (owner, kind, currency or allow_negative)", a.ID)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("ledger: reconcile: %w", err)
		}
		rows, err = tx.QueryContext(ctx, `SELECT id, from_id, to_id, amount, currency, pending, state, posted_amount FROM ledger_transfers ORDER BY seq`)
		if err != nil {
			return fmt.Errorf("ledger: reconcile: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var t Transfer
			var pending int64
			if err := rows.Scan(&t.ID, &t.From, &t.To, &t.Amount, &t.Currency, &pending, &t.State, &t.PostedAmount); err != nil {
				return fmt.Errorf("ledger: reconcile: %w", err)
			}
			rep.Transfers++
			seen[t.ID] = true
			recs := byRes[t.ID]
			initial := StatePosted
			if pending != 0 {
				initial = StatePending
			}
			check := func(event string, want int, amount int64, state State) {
				var got []audit.Record
				for _, r := range recs {
					if r.Event == event {
						got = append(got, r)
					}
				}
				if len(got) != want {
					rep.add("transfer %s has %d %s records, want %d", t.ID, len(got), event, want)
					return
				}
				for _, r := range got {
					d := r.Details
					if d["transfer_id"] != t.ID || d["from"] != t.From || d["to"] != t.To || d["amount"] != strconv.FormatInt(amount, 10) ||
						d["currency"] != t.Currency || d["state"] != string(state) {
						rep.add("transfer %s (%s → %s, %d %s, %s) differs from its %s record %d (%s → %s, %s %s, %s)", t.ID, t.From, t.To, amount, t.Currency, state,
							event, r.Seq, d["from"], d["to"], d["amount"], d["currency"], d["state"])
					}
				}
			}
			check(EventTransfer, 1, t.Amount, initial)
			resolved := map[string]int{EventPost: 0, EventVoid: 0, EventExpire: 0}
			if pending != 0 {
				switch t.State {
				case StatePosted:
					resolved[EventPost] = 1
				case StateVoided:
					resolved[EventVoid] = 1
				case StateExpired:
					resolved[EventExpire] = 1
				}
			}
			for _, ev := range []string{EventPost, EventVoid, EventExpire} {
				amount := t.Amount
				if ev == EventPost {
					amount = t.PostedAmount
				}
				check(ev, resolved[ev], amount, t.State)
			}
			for _, r := range recs {
				switch r.Event {
				case EventTransfer, EventPost, EventVoid, EventExpire:
				default:
					rep.add("transfer %s has an unexpected %s record", t.ID, r.Event)
				}
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("ledger: reconcile: %w", err)
		}
		for res, recs := range byRes {
			if !seen[res] {
				for _, r := range recs {
					rep.add("audit record %d (%s %s) has no account or transfer in the ledger", r.Seq, r.Event, res)
				}
			}
		}
		return nil
	})
	rep.OK = err == nil && len(rep.Problems) == 0 && !rep.Truncated
	return rep, err
}

func count(recs []audit.Record, event string) int {
	n := 0
	for _, r := range recs {
		if r.Event == event {
			n++
		}
	}
	return n
}
