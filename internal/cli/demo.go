package cli

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/fingerprint/fvc"
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
		demo.Audit(), // last: reconciles and checkpoints everything above
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
				// The variable, through fvc.DataDir: set to a path that
				// holds nothing, it is an error, not synthetic prints.
				dir, err := fvc.DataDir()
				if err != nil && !errors.Is(err, fvc.ErrDataUnset) {
					return err
				}
				data = dir
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
	cmd.Flags().StringVar(&data, "fingerprints", "", "FVC2002 directory holding DB1_B for the biometric scheme (default $"+fvc.DataEnv+"; neither: synthetic prints)")
	return cmd
}
