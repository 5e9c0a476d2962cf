package cli

import (
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/internal/experiments"
)

// Root builds the qshield command tree.
func Root(g *Globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "qshield",
		Short:         "qshield: secure QR-code mobile payments (QKD keys, self-verified keys, watermarked and biometric QR codes)",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			g.Init()
			// cobra checks required flags after this hook and without the
			// flag-error hook: check them here so that a missing flag is a
			// usage error (exit status 2) like every other.
			if err := cmd.ValidateRequiredFlags(); err != nil {
				return Usage(err)
			}
			if err := cmd.ValidateFlagGroups(); err != nil {
				return Usage(err)
			}
			warnDeprecated(g, cmd)
			if err := defaultAdmin(g, cmd); err != nil {
				return err
			}
			if g.CPUProfile != "" {
				f, err := os.Create(g.CPUProfile)
				if err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					f.Close()
					return err
				}
			}
			return nil
		},
		PersistentPostRun: func(cmd *cobra.Command, args []string) {
			if g.CPUProfile != "" {
				pprof.StopCPUProfile()
			}
		},
	}
	root.PersistentFlags().StringVar(&g.CPUProfile, "cpuprofile", "", "write a CPU profile to this file (for go tool pprof)")
	root.PersistentFlags().StringVar(&g.DB, "db", g.DB, "database: an SQLite file path (default in the user data directory) or a postgres:// URL (env "+EnvDB+")")
	root.PersistentFlags().BoolVar(&g.JSON, "json", false, "machine-readable JSON output")
	root.PersistentFlags().BoolVarP(&g.Verbose, "verbose", "v", false, "debug logging on stderr")
	root.AddCommand(
		VersionCommand(g),
		ServeCommand(g),
		ConfigCommand(g),
		DemoCommand(g),
		AuditCommand(g),
		GatewayCommand(g),
		QMSPCommand(g),
		POSCommand(g),
		QKDCommand(g),
		KMECommand(g),
		AdminCommand(g),
		ChargerCommand(g),
		VendorCommand(g),
		SelfVerifyCommand(g),
		WatermarkScanCommand(g),
		WatermarkCommand(g),
		PhoneCommand(g),
		ExperimentCommand(g, func() (*experiment.Registry, error) { return experiment.NewRegistry(experiments.All()...) }),
		LedgerCommand(g),
	)
	markUsage(root)
	return root
}
