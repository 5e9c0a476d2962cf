// Package cli holds the qshield subcommands. cmd/qshield only builds the root
// command from them; each subcommand parses its flags, wires library packages
// together and prints.
//
// Conventions every command follows: --db selects the database (an SQLite path,
// default in the user's data directory, or a postgres:// URL); --json switches to
// machine-readable output; logs go to stderr through log/slog; long work shows
// progress through Globals.Progress.
package cli

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/qshield/qshield/progress"
	"github.com/qshield/qshield/sqldb"
)

// Globals are the settings shared by every subcommand (persistent root flags).
type Globals struct {
	DB      string // --db, or QSHIELD_DB
	JSON    bool   // --json
	Verbose bool   // --verbose
	// CPUProfile is --cpuprofile: a file for a CPU profile of the command.
	CPUProfile string
	Out        io.Writer
	Err        io.Writer
	Log        *slog.Logger
	Progress   *progress.Factory
}

// NewGlobals returns Globals writing to stdout and stderr.
func NewGlobals() *Globals {
	return &Globals{DB: os.Getenv(EnvDB), Out: os.Stdout, Err: os.Stderr}
}

// Init sets the logger and progress factory once flags are parsed.
func (g *Globals) Init() {
	level := slog.LevelWarn
	if g.Verbose {
		level = slog.LevelDebug
	}
	g.Log = slog.New(slog.NewTextHandler(g.Err, &slog.HandlerOptions{Level: level}))
	g.Progress = progress.New(g.Err, g.JSON)
}

// OpenDB opens the database named by --db (SQLite default path when empty).
func (g *Globals) OpenDB(ctx context.Context) (*sqldb.DB, error) {
	return sqldb.Open(ctx, g.DB)
}

// PrintJSON writes v as indented JSON to Out.
func (g *Globals) PrintJSON(v any) error {
	enc := json.NewEncoder(g.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Report prints v as JSON with --json, else text (with a final newline).
func (g *Globals) Report(v any, text string) error {
	if g.JSON {
		return g.PrintJSON(v)
	}
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	_, err := io.WriteString(g.Out, text)
	return err
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(io.LimitReader(r, 1<<20)).Decode(v) }
