package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/qshield/qshield/internal/config"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/sqldb"
)

// pflags adapts a cobra flag set to config.Flags. A flag counts as given
// when it or one of its deprecated aliases (which share its variable) was.
type pflags struct{ fs *pflag.FlagSet }

var flagAliases = map[string][]string{"dir": {"state-dir"}}

func (p pflags) Changed(name string) bool {
	for _, n := range append([]string{name}, flagAliases[name]...) {
		if p.fs.Lookup(n) != nil && p.fs.Changed(n) {
			return true
		}
	}
	return false
}
func (p pflags) Value(name string) (string, bool) {
	f := p.fs.Lookup(name)
	if f == nil {
		return "", false
	}
	return f.Value.String(), true
}

// nodeFlags registers the node settings that the command does not define
// already (serve defines --listen, --dir, --insecure-http; --db is
// global), plus --config. Their values are read back through config.Resolve.
func nodeFlags(cmd *cobra.Command, configPath *string) {
	d := config.Defaults()
	fs := cmd.Flags()
	fs.StringVar(configPath, "config", "", "configuration file (JSON; env "+config.EnvConfig+"); flags > environment > file > defaults")
	for _, s := range config.Settings() {
		if s.Flag == "db" || fs.Lookup(s.Flag) != nil { // --db is the global flag
			continue
		}
		help := s.Help + " (env " + s.Env + ")"
		switch v := d.Value(s); {
		case s.IsBool():
			fs.Bool(s.Flag, v == "true", help)
		default:
			fs.String(s.Flag, v, help)
		}
	}
}

// resolveNode resolves the node configuration of cmd (flags given on the
// command line, the environment, the file).
func resolveNode(cmd *cobra.Command, configPath string) (*config.Resolved, error) {
	flags := pflags{cmd.Flags()}
	return config.Resolve(configPath, os.Getenv, flags)
}

// platformConfig turns a resolved node configuration into the platform's.
func platformConfig(rc *config.Resolved) platform.Config {
	c := rc.Config
	ac := platform.AuditConfig{CheckpointFile: c.AuditCheckpointFile, CheckpointURL: c.AuditCheckpointURL, WitnessQuorum: c.AuditWitnessQuorum}
	ws, _ := c.AuditWitnesses() // Validate reported any error
	for _, w := range ws {
		ac.WitnessURLs = append(ac.WitnessURLs, platform.WitnessEndpoint{KeyFile: w.KeyFile, URL: w.URL})
	}
	return platform.Config{
		DB: c.DB, StateDir: c.StateDir, InsecureHTTP: c.InsecureHTTP, Audit: ac,
		DBOptions: sqldb.Options{
			MaxOpenConns: c.DBMaxOpenConns, MaxIdleConns: c.DBMaxIdleConns,
			StatementTimeout: c.DBStatementTimeout, LockTimeout: c.DBLockTimeout,
			IdleInTxTimeout: c.DBIdleInTxTimeout, ConnectTimeout: c.DBConnectTimeout,
			Pragmas: sqlitePragmas(c.DBSQLiteMmapMiB),
		},
		MaxInFlight: c.HTTPMaxInFlight, MaxQueue: c.HTTPMaxQueue, MaxConns: c.HTTPMaxConns,
		QueueTimeout: c.HTTPQueueTimeout, RequestTimeout: c.HTTPRequestTimeout,
		WatermarkChallengesOff: !c.WatermarkChallenges,
	}
}

// sqlitePragmas returns the SQLite pragmas of db_sqlite_mmap_mib (0: none).
func sqlitePragmas(mmapMiB int) []string {
	if mmapMiB <= 0 {
		return nil
	}
	return []string{fmt.Sprintf("mmap_size(%d)", int64(mmapMiB)<<20)}
}

// ConfigCommand is `qshield config`: inspect and validate node configuration.
func ConfigCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect and check a node's configuration (file, environment, flags)"}
	var path string
	var nodes int
	var offline bool
	check := &cobra.Command{
		Use:   "check",
		Short: "Print the effective configuration with the source of every value and validate it",
		Long: "Resolve the node configuration exactly as `qshield serve` does (flags > environment > file >\n" +
			"defaults), print every value with its source, and check it: values on their own, then\n" +
			"(unless --offline) that the database answers and that --nodes × db_max_open_conns fits\n" +
			"PostgreSQL's max_connections. Exits non-zero when a check fails.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := resolveNode(cmd, path)
			if err != nil {
				return err
			}
			var problems []string
			if err := rc.Validate(); err != nil {
				problems = append(problems, strings.Split(err.Error(), "\n")...)
			}
			var notes []string
			if !offline && len(problems) == 0 {
				notes, problems = checkDatabase(cmd.Context(), rc, nodes)
			}
			type item struct{ Key, Value, Source, Env, Flag string }
			var items []item
			for _, s := range config.Settings() {
				v := rc.Value(s)
				if s.Key == "db" {
					v = redactDSN(v)
				}
				items = append(items, item{s.Key, v, string(rc.Sources[s.Key]), s.Env, "--" + s.Flag})
			}
			if g.JSON {
				if err := g.PrintJSON(map[string]any{"file": rc.File, "settings": items, "notes": notes, "problems": problems, "ok": len(problems) == 0}); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(g.Out, 0, 2, 2, ' ', 0)
				fmt.Fprintln(tw, "SETTING\tVALUE\tSOURCE\tENV\tFLAG")
				for _, it := range items {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.Key, it.Value, it.Source, it.Env, it.Flag)
				}
				tw.Flush()
				if rc.File != "" {
					fmt.Fprintf(g.Out, "file: %s\n", rc.File)
				}
				for _, n := range notes {
					fmt.Fprintf(g.Out, "ok: %s\n", n)
				}
				for _, p := range problems {
					fmt.Fprintf(g.Out, "PROBLEM: %s\n", p)
				}
			}
			if len(problems) > 0 {
				return fmt.Errorf("config check: %d problem(s)", len(problems))
			}
			return nil
		},
	}
	nodeFlags(check, &path)
	check.Flags().IntVar(&nodes, "nodes", 1, "number of nodes that will share the database (for the connection budget)")
	check.Flags().BoolVar(&offline, "offline", false, "do not connect to the database")
	cmd.AddCommand(check)
	return cmd
}

// checkDatabase connects with the configured options and checks the
// connection budget.
func checkDatabase(ctx context.Context, rc *config.Resolved, nodes int) (notes, problems []string) {
	pc := platformConfig(rc)
	cctx, cancel := context.WithTimeout(ctx, 2*rc.DBConnectTimeout+time.Second)
	defer cancel()
	db, err := sqldb.OpenWith(cctx, pc.DB, pc.DBOptions)
	if err != nil {
		return nil, []string{fmt.Sprintf("database: %v", err)}
	}
	defer db.Close()
	notes = append(notes, fmt.Sprintf("database answers (%s)", db.Dialect))
	if db.Dialect != sqldb.Postgres {
		if nodes > 1 {
			problems = append(problems, fmt.Sprintf("%d nodes on SQLite: several nodes need a shared PostgreSQL database", nodes))
		}
		return notes, problems
	}
	var maxConns, reserved int
	if err := db.QueryRowContext(cctx, `SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int`).Scan(&maxConns, &reserved); err != nil {
		return notes, append(problems, fmt.Sprintf("read max_connections: %v", err))
	}
	// Per node: the pool, plus one connection each for the audit/lease
	// background work and administration headroom of 10 overall.
	need := nodes*rc.DBMaxOpenConns + 10
	if avail := maxConns - reserved; need > avail {
		problems = append(problems, fmt.Sprintf("%d nodes × db_max_open_conns %d + 10 spare = %d connections, but PostgreSQL allows %d (max_connections %d − %d reserved): lower db_max_open_conns or raise max_connections",
			nodes, rc.DBMaxOpenConns, need, avail, maxConns, reserved))
	} else {
		notes = append(notes, fmt.Sprintf("connection budget: %d of %d (max_connections %d − %d reserved)", need, avail, maxConns, reserved))
	}
	var stmt string
	if err := db.QueryRowContext(cctx, `SHOW statement_timeout`).Scan(&stmt); err == nil {
		notes = append(notes, "statement_timeout in effect: "+stmt)
	}
	return notes, problems
}

// redactDSN hides a password in a postgres:// URL.
func redactDSN(dsn string) string {
	if !sqldb.IsPostgres(dsn) {
		return dsn
	}
	at := strings.LastIndex(dsn, "@")
	scheme := strings.Index(dsn, "://")
	if at < 0 || scheme < 0 {
		return dsn
	}
	cred := dsn[scheme+3 : at]
	if user, _, ok := strings.Cut(cred, ":"); ok {
		return dsn[:scheme+3] + user + ":***" + dsn[at:]
	}
	return dsn
}
