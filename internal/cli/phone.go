package cli

import "github.com/spf13/cobra"

// PhoneCommand is `qshield phone`: the phone side of each scheme.
func PhoneCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{Use: "phone", Short: "The phone (payer) side of each scheme"}
	cmd.AddCommand(PhoneQMSPCommand(g), PhoneBioQRCommand(g), PhoneShopCommand(g), PhoneChannelCommand(g))
	return cmd
}

// SelfVerifyCommand is `qshield selfverify`: the operator's side of seed 002
// (enrolment codes for users and vendors).
func SelfVerifyCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{Use: "selfverify", Short: "Operator tools of the self-verified e-commerce scheme (seed 002)"}
	cmd.AddCommand(SelfVerifyEnrollCommand(g))
	return cmd
}
