package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/keycharge"
	"github.com/qshield/qshield/keycharge/device"
)

// AdminCommand is `qshield admin`, with `qshield admin device …`: the QKMP's
// device lifecycle (manufacture, init, distribute, bind, activate, freeze,
// report-lost, unfreeze, cancel, unlock-pin), inspection (show, list, keys),
// the audit statistics, and the local PUK unlock of a device.
func AdminCommand(g *Globals) *cobra.Command {
	a := &adminEnv{g: g}
	admin := &cobra.Command{Use: "admin", Short: "Administer the platform (key storage devices, console operators)"}
	a.pf.register(admin, "administrator client certificate (default ADMIN/admin.pem)")
	dev := &cobra.Command{Use: "device", Short: "Quantum key storage devices (QKMSD): lifecycle on the QKMP"}
	admin.AddCommand(dev)
	dev.AddCommand(adminManufacture(g, a), adminInit(g, a))
	dev.AddCommand(adminLifecycle(g, a)...)
	dev.AddCommand(adminKeys(g, a), adminStats(g, a), adminUnlock(g, a))
	admin.AddCommand(adminOperator(g, a), AdminCertCommand(g), AdminRotateCommand(g), adminEnrolmentCode(g, a))
	return admin
}

// adminEnv is what the admin commands share: the connection flags.
type adminEnv struct {
	g  *Globals
	pf kcPlatformFlags
}

// withClient connects to the platform with the administrator certificate for run.
func (a *adminEnv) withClient(run func(ctx context.Context, c *keycharge.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := a.pf.client(a.g, true)
		if err != nil {
			return err
		}
		defer c.Close()
		return run(cmd.Context(), c, args)
	}
}

// adminManufacture creates a device store and registers it.
func adminManufacture(g *Globals, a *adminEnv) *cobra.Command {
	var pinFlag, pukFlag, dir, serial, model, kind string
	manufacture := &cobra.Command{
		Use:   "manufacture",
		Short: "Create a device store in --dir (key pair generated inside, PIN and PUK set) and register it",
		Args:  cobra.NoArgs,
		RunE: a.withClient(func(ctx context.Context, c *keycharge.Client, _ []string) error {
			pin, err := kcSecret(g, pinFlag, EnvDevicePIN, "new device PIN")
			if err != nil {
				return err
			}
			puk, err := kcSecret(g, pukFlag, EnvDevicePUK, "administrator unlock code (PUK)")
			if err != nil {
				return err
			}
			info := device.Info{Serial: serial, Model: model, Kind: kind}
			if err := device.Manufacture(dir, info, pin, puk, device.Options{}); err != nil {
				return err
			}
			d, err := c.Register(ctx, keycharge.RegisterRequest{Serial: serial, Model: model, Kind: kind})
			if err != nil {
				return fmt.Errorf("device created in %s but not registered: %w", dir, err)
			}
			return g.Report(d, "manufactured: "+kcDeviceLine(d))
		}),
	}
	manufacture.Flags().StringVar(&dir, "dir", "", "device directory (the device's mount point)")
	manufacture.Flags().StringVar(&serial, "serial", "", "device serial number")
	manufacture.Flags().StringVar(&model, "model", "QK-UKEY", "device model")
	manufacture.Flags().StringVar(&kind, "kind", "ukey", "device kind (ukey, tf, sd)")
	manufacture.Flags().StringVar(&pinFlag, "pin", "", "PIN (else "+EnvDevicePIN+" or a prompt)")
	manufacture.Flags().StringVar(&pukFlag, "puk", "", "PUK (else "+EnvDevicePUK+" or a prompt)")
	_ = manufacture.MarkFlagRequired("dir")
	_ = manufacture.MarkFlagRequired("serial")
	return manufacture
}

// adminInit has the platform CA certify a device's own key.
func adminInit(g *Globals, a *adminEnv) *cobra.Command {
	var initDir, initPIN string
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Initialise the device in --dir: the platform CA certifies the device's own key",
		Args:  cobra.NoArgs,
		RunE: a.withClient(func(ctx context.Context, c *keycharge.Client, _ []string) error {
			pin, err := kcSecret(g, initPIN, EnvDevicePIN, "device PIN")
			if err != nil {
				return err
			}
			d, err := device.Open(initDir, pin, device.Options{})
			if err != nil {
				return err
			}
			defer d.Close()
			if err := keycharge.Initialise(ctx, c, d); err != nil {
				return err
			}
			got, err := c.Device(ctx, d.Info().Serial)
			if err != nil {
				return err
			}
			return g.Report(got, "initialised: "+kcDeviceLine(got))
		}),
	}
	initCmd.Flags().StringVar(&initDir, "dir", "", "device directory")
	initCmd.Flags().StringVar(&initPIN, "pin", "", "PIN (else "+EnvDevicePIN+" or a prompt)")
	_ = initCmd.MarkFlagRequired("dir")
	return initCmd
}

// adminLifecycle is the device's life on the platform (distribute … cancel)
// and its inspection (show, list).
func adminLifecycle(g *Globals, a *adminEnv) []*cobra.Command {
	transition := func(use, short string, action keycharge.Action, flags func(*cobra.Command, *keycharge.TransitionRequest)) *cobra.Command {
		var req keycharge.TransitionRequest
		cmd := &cobra.Command{
			Use:   use + " SERIAL",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: a.withClient(func(ctx context.Context, c *keycharge.Client, args []string) error {
				req.Action = action
				res, err := c.Transition(ctx, args[0], req)
				if err != nil {
					return err
				}
				return g.Report(res.Device, string(action)+": "+kcDeviceLine(res.Device))
			}),
		}
		cmd.Flags().StringVar(&req.Reason, "reason", "", "reason recorded in the audit trail")
		if flags != nil {
			flags(cmd, &req)
		}
		return cmd
	}
	return []*cobra.Command{
		transition("distribute", "Distribute an initialised device to a user administrator", keycharge.ActDistribute, func(c *cobra.Command, r *keycharge.TransitionRequest) {
			c.Flags().StringVar(&r.Administrator, "to", "", "user administrator")
			_ = c.MarkFlagRequired("to")
		}),
		transition("bind", "Bind a distributed device to a user identity (registration)", keycharge.ActBind, func(c *cobra.Command, r *keycharge.TransitionRequest) {
			c.Flags().StringVar(&r.User, "user", "", "user identity")
			_ = c.MarkFlagRequired("user")
		}),
		transition("activate", "Activate a bound device", keycharge.ActActivate, nil),
		transition("freeze", "Freeze an active device (its keys too)", keycharge.ActFreeze, nil),
		transition("report-lost", "Report a device lost (its keys are frozen)", keycharge.ActReportLost, nil),
		transition("unfreeze", "Cancel the loss / unfreeze: the device and its keys are active again", keycharge.ActUnfreeze, nil),
		transition("cancel", "Cancel a device for good: its keys on the platform are destroyed, its certificate revoked", keycharge.ActCancel, nil),
		transition("unlock-pin", "Reset the platform's count of wrong PINs reported by chargers", keycharge.ActUnlockPIN, nil),
		&cobra.Command{
			Use: "show SERIAL", Short: "Show a device with its key volume", Args: cobra.ExactArgs(1),
			RunE: a.withClient(func(ctx context.Context, c *keycharge.Client, args []string) error {
				d, err := c.Device(ctx, args[0])
				if err != nil {
					return err
				}
				return g.Report(d, kcDeviceLine(d))
			}),
		},
		&cobra.Command{
			Use: "list", Short: "List devices", Args: cobra.NoArgs,
			RunE: a.withClient(func(ctx context.Context, c *keycharge.Client, _ []string) error {
				ds, err := c.Devices(ctx)
				if err != nil {
					return err
				}
				if g.JSON {
					return g.PrintJSON(ds)
				}
				for _, d := range ds {
					fmt.Fprintln(g.Out, kcDeviceLine(d))
				}
				return nil
			}),
		},
	}
}

// adminKeys lists a device's keys on the platform.
func adminKeys(g *Globals, a *adminEnv) *cobra.Command {
	var keysLimit int
	keysCmd := &cobra.Command{
		Use: "keys SERIAL", Short: "List a device's keys on the platform with their life (extraction … destruction)", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(ctx context.Context, c *keycharge.Client, args []string) error {
			ks, err := c.Keys(ctx, args[0], keysLimit)
			if err != nil {
				return err
			}
			if g.JSON {
				return g.PrintJSON(ks)
			}
			for _, k := range ks {
				fmt.Fprintf(g.Out, "%s  charge=%s #%d  %d/%d used  %s  distributed %s\n", k.KeyID, k.Charge, k.Seq, k.Used, k.Length, k.State, k.Distributed.Format(time.RFC3339))
			}
			return nil
		}),
	}
	keysCmd.Flags().IntVar(&keysLimit, "limit", 100, "at most this many keys")
	return keysCmd
}

// adminStats counts the key charging platform's audit records.
func adminStats(g *Globals, a *adminEnv) *cobra.Command {
	var by string
	stats := &cobra.Command{
		Use: "stats", Short: "Audit statistics of the key charging platform (per event, device, day)", Args: cobra.NoArgs,
		RunE: a.withClient(func(ctx context.Context, c *keycharge.Client, _ []string) error {
			cs, err := c.AuditStats(ctx, by)
			if err != nil {
				return err
			}
			if g.JSON {
				return g.PrintJSON(cs)
			}
			for _, x := range cs {
				fmt.Fprintf(g.Out, "%-60s %d\n", strings.Join(x.Keys, "  "), x.N)
			}
			return nil
		}),
	}
	stats.Flags().StringVar(&by, "by", "event", "grouping: event, resource (device), day, actor, outcome (comma-separated)")
	return stats
}

// adminUnlock releases a PIN-locked device with the PUK (locally).
func adminUnlock(g *Globals, a *adminEnv) *cobra.Command {
	var unlockDir, unlockPUK, unlockPIN string
	unlock := &cobra.Command{
		Use: "unlock", Short: "Release a PIN-locked device with the PUK and set a new PIN (local, on the device)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			puk, err := kcSecret(g, unlockPUK, EnvDevicePUK, "PUK")
			if err != nil {
				return err
			}
			pin, err := kcSecret(g, unlockPIN, EnvDevicePIN, "new PIN")
			if err != nil {
				return err
			}
			if err := device.Unlock(unlockDir, puk, pin, device.Options{}); err != nil {
				return err
			}
			return g.Report(map[string]string{"unlocked": unlockDir}, "device unlocked; new PIN set")
		},
	}
	unlock.Flags().StringVar(&unlockDir, "dir", "", "device directory")
	unlock.Flags().StringVar(&unlockPUK, "puk", "", "PUK (else "+EnvDevicePUK+" or a prompt)")
	unlock.Flags().StringVar(&unlockPIN, "new-pin", "", "new PIN (else "+EnvDevicePIN+" or a prompt)")
	_ = unlock.MarkFlagRequired("dir")
	return unlock
}
