package cli

import (
	"context"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/internal/client"
	"github.com/qshield/qshield/internal/console"
	"github.com/qshield/qshield/internal/platform"
)

// adminOperator is `qshield admin operator`: people who sign in to the
// operator console (passkeys; roles admin, operator, auditor).
func adminOperator(g *Globals, a *adminEnv) *cobra.Command {
	cmd := &cobra.Command{Use: "operator", Short: "Console operators: invite people to sign in with a passkey"}
	var name, role string
	var scope []string
	invite := &cobra.Command{
		Use:   "invite",
		Short: "Print a single-use link that lets one person create a passkey and sign in to /console with --role",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := console.ParseRole(role); err != nil {
				return Usagef("%v", err)
			}
			if name == "" {
				return Usagef("--name is required (the person's name, shown in the console and the audit trail)")
			}
			tc, err := a.pf.tlsConfig(g, a.pf.server, true)
			if err != nil {
				return err
			}
			c := client.New(a.pf.server, tc)
			defer c.Close()
			var out platform.InviteResponse
			if err := postJSON(cmd.Context(), c, "/v1/console/invites", platform.InviteRequest{Name: name, Role: role, Scope: scope}, &out); err != nil {
				return err
			}
			return g.Report(out, fmt.Sprintf("invitation for %s (%s), single use, expires %s:\n%s",
				name, role, out.ExpiresAt.Format("2006-01-02 15:04 MST"), out.URL))
		},
	}
	invite.Flags().StringVar(&name, "name", "", "the person's name")
	invite.Flags().StringVar(&role, "role", "auditor", "admin, operator or auditor (read-only)")
	invite.Flags().StringSliceVar(&scope, "scope", nil, "what the operator's principal may act for, e.g. merchant:1 (sets that merchant's tills; repeatable)")
	cmd.AddCommand(invite)
	return cmd
}

func postJSON(ctx context.Context, c *client.Client, path string, in, out any) error {
	_, err := c.Do(ctx, http.MethodPost, path, nil, in, out)
	return err
}
