// Package experiment runs qshield's measurement commands and writes their results.
//
// An experiment is a [Spec]: a name, a one-line summary, the parameters it accepts
// and a Run function that returns a [Result]. A Result holds one or more Markdown
// tables, optional plot data and an optional JSON-able value. The runner
// ([Write]) prints the tables and, when asked, writes them as Markdown and JSON
// plus one PNG per plot into an output directory. Experiments never print
// directly: they report progress through [Env.Progress] and return data, so that
// `qshield experiment NAME --json` stays machine-readable.
package experiment

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/qshield/qshield/progress"
)

// Param is one named parameter an experiment accepts, as --param name=value on the
// command line.
type Param struct {
	Name    string
	Default string
	Usage   string
}

// Spec describes one experiment.
type Spec struct {
	Name    string
	Summary string
	Params  []Param
	Run     func(ctx context.Context, env *Env) (*Result, error)
}

// Env is what an experiment receives from the runner.
type Env struct {
	// Params holds every declared parameter, defaults filled in.
	Params map[string]string
	// DB is the database DSN chosen with --db ("" means a fresh temporary SQLite file).
	DB string
	// Postgres is a PostgreSQL DSN when one is reachable for comparisons, else "".
	Postgres string
	// Log is the experiment's logger.
	Log *slog.Logger
	// Progress creates progress reporters (a bar on a terminal, plain lines otherwise).
	Progress *progress.Factory
}

// String returns parameter name, or "" when it is not declared.
func (e *Env) String(name string) string { return e.Params[name] }

// Int returns parameter name as an int.
func (e *Env) Int(name string) (int, error) {
	v, err := strconv.Atoi(strings.TrimSpace(e.Params[name]))
	if err != nil {
		return 0, fmt.Errorf("parameter %s: %w", name, err)
	}
	return v, nil
}

// Float returns parameter name as a float64.
func (e *Env) Float(name string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(e.Params[name]), 64)
	if err != nil {
		return 0, fmt.Errorf("parameter %s: %w", name, err)
	}
	return v, nil
}

// Duration returns parameter name as a time.Duration.
func (e *Env) Duration(name string) (time.Duration, error) {
	v, err := time.ParseDuration(strings.TrimSpace(e.Params[name]))
	if err != nil {
		return 0, fmt.Errorf("parameter %s: %w", name, err)
	}
	return v, nil
}

// Result is what an experiment returns.
type Result struct {
	Name   string  `json:"name"`
	Title  string  `json:"title"`
	Tables []Table `json:"tables"`
	Plots  []Plot  `json:"plots,omitempty"`
	// Data is any extra JSON-able value (raw measurements).
	Data any `json:"data,omitempty"`
	// Machine describes where it ran (filled by the runner).
	Machine string `json:"machine,omitempty"`
	// Started and Elapsed are filled by the runner.
	Started time.Time     `json:"started"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Table is one Markdown table.
type Table struct {
	Title  string     `json:"title"`
	Header []string   `json:"header"`
	Rows   [][]string `json:"rows"`
	Notes  []string   `json:"notes,omitempty"`
}

// AddRow appends a row, formatting each cell with fmt.Sprint (floats with %.4g).
func (t *Table) AddRow(cells ...any) {
	row := make([]string, len(cells))
	for i, c := range cells {
		switch v := c.(type) {
		case float64:
			row[i] = strconv.FormatFloat(v, 'g', 4, 64)
		case float32:
			row[i] = strconv.FormatFloat(float64(v), 'g', 4, 32)
		case time.Duration:
			row[i] = FormatDuration(v)
		default:
			row[i] = fmt.Sprint(v)
		}
	}
	t.Rows = append(t.Rows, row)
}

// FormatDuration prints d with three significant digits in a fitting unit.
func FormatDuration(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.3g µs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.3g ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.3g s", d.Seconds())
	}
}

// Markdown renders the table.
func (t *Table) Markdown(w io.Writer) error {
	var b strings.Builder
	if t.Title != "" {
		fmt.Fprintf(&b, "### %s\n\n", t.Title)
	}
	b.WriteString("| " + strings.Join(escapeCells(t.Header), " | ") + " |\n")
	seps := make([]string, len(t.Header))
	for i := range seps {
		seps[i] = "---"
	}
	b.WriteString("|" + strings.Join(seps, "|") + "|\n")
	for _, r := range t.Rows {
		b.WriteString("| " + strings.Join(escapeCells(r), " | ") + " |\n")
	}
	for _, n := range t.Notes {
		b.WriteString("\n" + n + "\n")
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func escapeCells(cells []string) []string {
	out := make([]string, len(cells))
	for i, c := range cells {
		out[i] = strings.ReplaceAll(c, "|", `\|`)
	}
	return out
}

// Plot is data for one PNG line plot, written as File (a base name such as
// "qkd-rate.png") under the output directory.
type Plot struct {
	File   string `json:"file"`
	Title  string `json:"title"`
	XLabel string `json:"x_label"`
	YLabel string `json:"y_label"`
	LogX   bool   `json:"log_x,omitempty"`
	LogY   bool   `json:"log_y,omitempty"`
	// Legend places the legend: "" (top right), "top-left", "bottom-left"
	// or "bottom-right".
	Legend string `json:"legend,omitempty"`
	// YMin and YMax, when non-zero, fix the Y range (e.g. to make room for
	// the legend).
	YMin   float64  `json:"y_min,omitempty"`
	YMax   float64  `json:"y_max,omitempty"`
	Series []Series `json:"series"`
}

// Series is one named line (or, with Points set, scatter) in a plot.
type Series struct {
	Name   string    `json:"name"`
	X      []float64 `json:"x"`
	Y      []float64 `json:"y"`
	Points bool      `json:"points,omitempty"`
}

// Registry is an ordered set of experiments.
type Registry struct{ specs map[string]Spec }

// NewRegistry returns a registry holding specs; a duplicate name is an error.
func NewRegistry(specs ...Spec) (*Registry, error) {
	r := &Registry{specs: make(map[string]Spec, len(specs))}
	for _, s := range specs {
		if s.Name == "" || s.Run == nil {
			return nil, fmt.Errorf("experiment: spec %q has no name or no Run", s.Name)
		}
		if _, dup := r.specs[s.Name]; dup {
			return nil, fmt.Errorf("experiment: duplicate name %q", s.Name)
		}
		r.specs[s.Name] = s
	}
	return r, nil
}

// Lookup returns the experiment called name.
func (r *Registry) Lookup(name string) (Spec, bool) {
	s, ok := r.specs[name]
	return s, ok
}

// Names lists the registered experiments in alphabetical order.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.specs))
	for n := range r.specs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ResolveParams fills defaults and checks that every given parameter is declared.
func ResolveParams(s Spec, given map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(s.Params))
	for _, p := range s.Params {
		out[p.Name] = p.Default
	}
	for k, v := range given {
		if _, ok := out[k]; !ok {
			return nil, fmt.Errorf("experiment %s has no parameter %q", s.Name, k)
		}
		out[k] = v
	}
	return out, nil
}
