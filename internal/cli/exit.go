package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/money"
)

// Exit statuses of qshield (docs/CLI.md).
const (
	ExitOK      = 0 // the command did what was asked
	ExitFailure = 1 // it could not (refused payment, server down, bad file, …)
	ExitUsage   = 2 // the command line itself was wrong (unknown command or flag, missing or malformed argument)
)

// Error is an error with a stable code for scripts: with --json it is
// printed as {"error": {"code": …, "message": …}}.
type Error struct {
	Code string
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// usageError marks a mistake in the command line (exit status 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// Usage returns err as a command-line mistake: qshield exits with status 2.
func Usage(err error) error {
	if err == nil {
		return nil
	}
	return &usageError{err}
}

// Usagef is Usage(fmt.Errorf(format, args...)).
func Usagef(format string, args ...any) error { return Usage(fmt.Errorf(format, args...)) }

// ExitCode returns the exit status for the error a command returned.
func ExitCode(err error) int {
	var u *usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &u):
		return ExitUsage
	default:
		return ExitFailure
	}
}

// ErrorCode returns the stable code of err: "usage" for command-line
// mistakes, the server's problem code for API refusals, the Error's code,
// and a few well-known classes; "error" for everything else.
func ErrorCode(err error) string {
	var (
		u *usageError
		e *Error
	)
	switch {
	case errors.As(err, &e):
		return e.Code
	case httpx.ProblemCode(err) != "":
		return httpx.ProblemCode(err)
	case errors.Is(err, money.ErrUnknownCurrency):
		return "unknown_currency"
	case errors.Is(err, money.ErrSyntax), errors.Is(err, money.ErrPrecision), errors.Is(err, money.ErrRange):
		return "invalid_amount"
	case errors.As(err, &u):
		return "usage"
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, os.ErrNotExist):
		return "not_found"
	}
	return "error"
}

// errorJSON is what a failing command prints with --json.
type errorJSON struct {
	Error struct {
		Code     string `json:"code"`
		Message  string `json:"message"`
		ExitCode int    `json:"exit_code"`
	} `json:"error"`
}

// ReportError writes err for a person (stderr: "qshield: …", plus a hint
// for usage mistakes) or, with jsonOut, as one JSON object on stdout.
func ReportError(stdout, stderr io.Writer, err error, jsonOut bool) {
	if jsonOut {
		var e errorJSON
		e.Error.Code, e.Error.Message, e.Error.ExitCode = ErrorCode(err), err.Error(), ExitCode(err)
		b, _ := json.MarshalIndent(e, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return
	}
	fmt.Fprintln(stderr, "qshield:", err)
	if ExitCode(err) == ExitUsage {
		fmt.Fprintln(stderr, "run 'qshield help' or add --help to a command for its usage")
	}
}

// Main runs qshield with args (without the program name) and returns its
// exit status. cmd/qshield and the testscript tests both call it.
func Main(ctx context.Context, g *Globals, args []string) int {
	root := Root(g)
	root.SetArgs(args)
	root.SetOut(g.Out)
	root.SetErr(g.Err)
	err := root.ExecuteContext(ctx)
	if err != nil {
		ReportError(g.Out, g.Err, err, g.JSON || jsonRequested(args))
	}
	return ExitCode(err)
}

// jsonRequested finds --json in args when flag parsing failed before
// reaching it.
func jsonRequested(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "--json" || a == "--json=true" {
			return true
		}
	}
	return false
}

// markUsage makes every command-line mistake cobra detects a usage error:
// flag parsing, argument counts, unknown subcommands of a command group,
// and (checked in the root's PersistentPreRunE) required flags.
func markUsage(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return Usage(err) })
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		// A command group: a missing or unknown subcommand is a usage error
		// (cobra would print the help and exit 0).
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return Usagef("%s needs a subcommand: %s", c.CommandPath(), subcommandNames(c))
			}
			return Usagef("unknown command %q for %q (have: %s)", args[0], c.CommandPath(), subcommandNames(c))
		}
	} else if check := cmd.Args; check != nil {
		cmd.Args = func(c *cobra.Command, args []string) error { return Usage(check(c, args)) }
	}
	for _, c := range cmd.Commands() {
		markUsage(c)
	}
}

func subcommandNames(c *cobra.Command) string {
	var names []string
	for _, s := range c.Commands() {
		if s.IsAvailableCommand() {
			names = append(names, s.Name())
		}
	}
	return strings.Join(names, ", ")
}
