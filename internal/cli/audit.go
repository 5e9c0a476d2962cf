package cli

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/sqldb"
)

// EnvAuditKey names the environment variable holding the audit MAC key
// (hex or base64, at least 32 bytes). When it is set every qshield process
// that writes or verifies the audit trail must use it: open the log with
// OpenAudit.
const EnvAuditKey = platform.EnvAuditKey

// OpenAudit opens the audit trail in db, keyed with $QSHIELD_AUDIT_KEY when set.
func OpenAudit(ctx context.Context, db *sqldb.DB) (*audit.Log, error) {
	return platform.OpenAudit(ctx, db)
}

// ErrAuditBroken is returned (so the process exits non-zero) when
// `qshield audit verify` finds a broken chain.
var ErrAuditBroken = errors.New("audit chain broken")

// AuditCommand is `qshield audit`: verify, search and count the audit trail.
func AuditCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:          "audit",
		Short:        "Verify, search and count the hash-chained audit trail",
		SilenceUsage: true,
	}
	cmd.AddCommand(auditVerifyCommand(g), auditSearchCommand(g), auditStatsCommand(g), auditHeadCommand(g))
	return cmd
}

func withAudit(g *Globals, cmd *cobra.Command, fn func(ctx context.Context, l *audit.Log) error) error {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	db, err := g.OpenDB(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	l, err := OpenAudit(ctx, db)
	if err != nil {
		return err
	}
	return fn(ctx, l)
}

func parseAnchor(s string) (audit.Head, error) {
	seqText, hashText, ok := strings.Cut(s, ":")
	if !ok {
		return audit.Head{}, fmt.Errorf("--anchor wants SEQ:HEXHASH as printed by `qshield audit head`")
	}
	seq, err := strconv.ParseInt(seqText, 10, 64)
	if err != nil || seq < 0 {
		return audit.Head{}, fmt.Errorf("--anchor: bad sequence number %q", seqText)
	}
	h, err := hex.DecodeString(hashText)
	if err != nil || len(h) != 32 {
		return audit.Head{}, fmt.Errorf("--anchor: hash must be 64 hex digits")
	}
	return audit.Head{Seq: seq, Hash: h}, nil
}

func auditVerifyCommand(g *Globals) *cobra.Command {
	var anchor string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Walk the chain; report every changed, inserted or deleted record (exit status 1 if any)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAudit(g, cmd, func(ctx context.Context, l *audit.Log) error {
				var rep audit.Report
				var err error
				if anchor != "" {
					a, perr := parseAnchor(anchor)
					if perr != nil {
						return perr
					}
					rep, err = l.VerifyAnchor(ctx, a)
				} else {
					rep, err = l.Verify(ctx)
				}
				if err != nil {
					return err
				}
				if g.JSON {
					if err := g.PrintJSON(rep); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(g.Out, "records: %d, head: %d %x, keyed: %v\n", rep.Records, rep.Head.Seq, rep.Head.Hash, rep.MACChecked)
					for _, p := range rep.Problems {
						fmt.Fprintln(g.Out, "BROKEN:", p)
					}
					if rep.Truncated {
						fmt.Fprintln(g.Out, "(more problems not shown)")
					}
					if rep.OK {
						fmt.Fprintln(g.Out, "OK: the audit chain is intact")
					}
				}
				if !rep.OK {
					return fmt.Errorf("%w: %d problem(s)", ErrAuditBroken, len(rep.Problems))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&anchor, "anchor", "", "also check a head saved earlier (SEQ:HEXHASH, as printed by 'qshield audit head')")
	return cmd
}

func auditHeadCommand(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "head",
		Short: "Print the chain head (SEQ:HEXHASH) to keep outside the database as an anchor",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAudit(g, cmd, func(ctx context.Context, l *audit.Log) error {
				h, err := l.Head(ctx)
				if err != nil {
					return err
				}
				if g.JSON {
					return g.PrintJSON(map[string]any{"seq": h.Seq, "hash": hex.EncodeToString(h.Hash), "anchor": fmt.Sprintf("%d:%x", h.Seq, h.Hash)})
				}
				fmt.Fprintf(g.Out, "%d:%x\n", h.Seq, h.Hash)
				return nil
			})
		},
	}
}

type queryFlags struct {
	from, to, actor, event, resource, outcome string
}

func (f *queryFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.from, "from", "", "from this time, inclusive (RFC 3339, YYYY-MM-DD in UTC, or a duration ago such as 24h)")
	fl.StringVar(&f.to, "to", "", "until this time, exclusive (same forms as --from)")
	fl.StringVar(&f.actor, "actor", "", "only this actor")
	fl.StringVar(&f.event, "event", "", "only this event (a trailing * matches a prefix, e.g. 'pki.*')")
	fl.StringVar(&f.resource, "resource", "", "only this resource (a trailing * matches a prefix)")
	fl.StringVar(&f.outcome, "outcome", "", "only this outcome (success, failure, …)")
}

func (f *queryFlags) query() (audit.Query, error) {
	now := time.Now()
	from, err := audit.ParseTime(f.from, now)
	if err != nil {
		return audit.Query{}, fmt.Errorf("--from: %w", err)
	}
	to, err := audit.ParseTime(f.to, now)
	if err != nil {
		return audit.Query{}, fmt.Errorf("--to: %w", err)
	}
	return audit.Query{From: from, To: to, Actor: f.actor, Event: f.event, Resource: f.resource, Outcome: f.outcome}, nil
}

func auditSearchCommand(g *Globals) *cobra.Command {
	var qf queryFlags
	var limit int
	var after int64
	cmd := &cobra.Command{
		Use:   "search",
		Short: "List audit records by time, actor, event, resource or outcome",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := qf.query()
			if err != nil {
				return err
			}
			q.Limit, q.AfterSeq = limit, after
			return withAudit(g, cmd, func(ctx context.Context, l *audit.Log) error {
				recs, err := l.Search(ctx, q)
				if err != nil {
					return err
				}
				if g.JSON {
					if recs == nil {
						recs = []audit.Record{}
					}
					return g.PrintJSON(recs)
				}
				tw := tabwriter.NewWriter(g.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tEVENT\tOUTCOME\tORIGIN\tRESOURCE\tDETAILS")
				for _, r := range recs {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Time.Format(time.RFC3339), r.Actor, r.Event,
						r.Outcome, r.Origin, r.Resource, formatDetails(r.Details))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if n := len(recs); n > 0 && (n == q.Limit || (q.Limit == 0 && n == 100)) {
					fmt.Fprintf(g.Err, "more records may follow: --after %d\n", recs[len(recs)-1].Seq)
				}
				return nil
			})
		},
	}
	qf.add(cmd)
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many records (max 10000)")
	cmd.Flags().Int64Var(&after, "after", 0, "only records after this sequence number (paging)")
	return cmd
}

func formatDetails(d map[string]string) string {
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.Quote(d[k])
	}
	return strings.Join(parts, " ")
}

func auditStatsCommand(g *Globals) *cobra.Command {
	var qf queryFlags
	var by string
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Count audit records by event, day, resource, actor, outcome or origin",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			groups, err := audit.ParseGroupBy(by)
			if err != nil {
				return err
			}
			q, err := qf.query()
			if err != nil {
				return err
			}
			return withAudit(g, cmd, func(ctx context.Context, l *audit.Log) error {
				counts, err := l.Stats(ctx, q, groups...)
				if err != nil {
					return err
				}
				if g.JSON {
					out := make([]map[string]any, 0, len(counts))
					for _, c := range counts {
						m := map[string]any{"count": c.N}
						for i, gb := range groups {
							m[string(gb)] = c.Keys[i]
						}
						out = append(out, m)
					}
					return g.PrintJSON(out)
				}
				tw := tabwriter.NewWriter(g.Out, 0, 4, 2, ' ', 0)
				for _, gb := range groups {
					fmt.Fprintf(tw, "%s\t", strings.ToUpper(string(gb)))
				}
				fmt.Fprintln(tw, "COUNT")
				var total int64
				for _, c := range counts {
					fmt.Fprintf(tw, "%s\t%d\n", strings.Join(c.Keys, "\t"), c.N)
					total += c.N
				}
				fmt.Fprintf(tw, "%s%d\n", strings.Repeat("\t", len(groups)-1)+"total\t", total)
				return tw.Flush()
			})
		},
	}
	qf.add(cmd)
	cmd.Flags().StringVar(&by, "by", "event", "group by event, day, resource, actor, outcome, origin (comma-separated for several)")
	return cmd
}
