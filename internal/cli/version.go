package cli

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// VersionCommand prints the build's version information.
func VersionCommand(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version information",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := map[string]string{"version": "(devel)"}
			if bi, ok := debug.ReadBuildInfo(); ok {
				if bi.Main.Version != "" {
					v["version"] = bi.Main.Version
				}
				v["go"] = bi.GoVersion
				for _, s := range bi.Settings {
					switch s.Key {
					case "vcs.revision", "vcs.time", "vcs.modified":
						v[s.Key] = s.Value
					}
				}
			}
			if g.JSON {
				return g.PrintJSON(v)
			}
			fmt.Fprintf(g.Out, "qshield %s (%s", v["version"], v["go"])
			if r := v["vcs.revision"]; r != "" {
				fmt.Fprintf(g.Out, ", commit %s", r)
			}
			fmt.Fprintln(g.Out, ")")
			return nil
		},
	}
}
