package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/internal/demo"
)

// Scenarios lists the demo's scenarios in order (one per scheme).
func Scenarios() []demo.Scenario {
	return []demo.Scenario{
		demo.Ledger(),
		demo.QMSP(),
		demo.KeyCharge(),
		demo.SelfVerify(),
		demo.Watermark(),
		demo.BioQR(),
		demo.Trust(),
	}
}

// DemoCommand is `qshield demo`.
func DemoCommand(g *Globals) *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run every scheme end to end, with its attacks, on a fresh embedded database",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if data == "" {
				data = findSharedData()
			}
			log := g.Log
			if !g.Verbose {
				// Refusals are the demo's point; the server's warnings about
				// them would only repeat the table.
				log = slog.New(slog.NewTextHandler(g.Err, &slog.HandlerOptions{Level: slog.LevelError}))
			}
			rows, err := demo.Run(cmd.Context(), demo.Options{Log: log, DataDir: data}, Scenarios())
			if g.JSON {
				if perr := g.PrintJSON(rows); perr != nil {
					return perr
				}
			} else if perr := demo.Print(g.Out, rows); perr != nil {
				return perr
			}
			if err != nil {
				return err
			}
			if !g.JSON {
				fmt.Fprintf(g.Out, "demo: all %d steps behaved as the schemes require\n", len(rows))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "shared data directory (default: ../shared/data when present)")
	return cmd
}

// findSharedData returns ../shared/data (relative to the working directory
// or to the module root above it) when it exists.
func findSharedData() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for i := 0; i < 4; i++ {
		p := filepath.Join(dir, "..", "shared", "data")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return filepath.Clean(p)
		}
		dir = filepath.Dir(dir)
	}
	return ""
}
