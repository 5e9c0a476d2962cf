package cli

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/sqldb"
)

// ExperimentCommand is `qshield experiment NAME [--json] [--out DIR] [--param k=v]`.
func ExperimentCommand(g *Globals, reg func() (*experiment.Registry, error)) *cobra.Command {
	var out string
	var params []string
	cmd := &cobra.Command{
		Use:   "experiment NAME",
		Short: "Run a measurement and print its table (and write JSON and PNG plots with --out)",
		Long: "Run a named experiment. It prints a Markdown table (or JSON with --json) and, with --out DIR,\n" +
			"writes DIR/NAME.md, DIR/NAME.json and its PNG plots. `qshield experiment list` lists them.\n" +
			"With --db postgres://… the database-bound experiments also run on that PostgreSQL server.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := reg()
			if err != nil {
				return err
			}
			if args[0] == "list" {
				if g.JSON {
					specs := make([]map[string]any, 0, len(r.Names()))
					for _, n := range r.Names() {
						s, _ := r.Lookup(n)
						specs = append(specs, map[string]any{"name": n, "summary": s.Summary, "params": s.Params})
					}
					return g.PrintJSON(specs)
				}
				for _, n := range r.Names() {
					s, _ := r.Lookup(n)
					fmt.Fprintf(g.Out, "%-16s %s\n", n, s.Summary)
					for _, p := range s.Params {
						fmt.Fprintf(g.Out, "    --param %s=%s  %s\n", p.Name, p.Default, p.Usage)
					}
				}
				return nil
			}
			spec, ok := r.Lookup(args[0])
			if !ok {
				return Usagef("no experiment %q (have: %s)", args[0], strings.Join(r.Names(), ", "))
			}
			given := map[string]string{}
			for _, p := range params {
				k, v, ok := strings.Cut(p, "=")
				if !ok {
					return Usagef("--param %q: want name=value", p)
				}
				given[k] = v
			}
			resolved, err := experiment.ResolveParams(spec, given)
			if err != nil {
				return err
			}
			env := &experiment.Env{Params: resolved, DB: g.DB, Log: g.Log, Progress: g.Progress}
			// PostgreSQL comes from --db (or QSHIELD_DB) and nowhere else,
			// as BENCHMARKS.md says: the database-bound experiments then
			// also run on it.
			if sqldb.IsPostgres(g.DB) {
				env.Postgres = g.DB
			}
			start := time.Now()
			res, err := spec.Run(cmd.Context(), env)
			if err != nil {
				return fmt.Errorf("experiment %s: %w", spec.Name, err)
			}
			res.Name = spec.Name
			res.Started = start.UTC()
			res.Elapsed = time.Since(start)
			res.Machine = Machine()
			if out != "" {
				if err := experiment.WriteFiles(out, res); err != nil {
					return err
				}
			}
			if g.JSON {
				return g.PrintJSON(res)
			}
			return experiment.WriteMarkdown(g.Out, res)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory to write NAME.md, NAME.json and PNG plots into")
	cmd.Flags().StringArrayVar(&params, "param", nil, "experiment parameter name=value (repeatable); see: qshield experiment list")
	return cmd
}

// Machine describes the machine an experiment ran on.
func Machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				if _, v, ok := strings.Cut(line, ":"); ok {
					model = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	if model == "" {
		model = runtime.GOARCH
	}
	return fmt.Sprintf("%s, %d cores, %s/%s, %s", model, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}
