package cli

import "github.com/spf13/cobra"

// PhoneCommand is `qshield phone`: the phone side of each scheme.
func PhoneCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{Use: "phone", Short: "The phone (payer) side of each scheme"}
	cmd.AddCommand(PhoneQMSPCommand(g), PhoneBioQRCommand(g))
	return cmd
}
