package cli

import (
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/consent"
)

// adminEnrolmentCode is `qshield admin enrolment-code --account ID`: the
// account holder's consent to binding one payer device (a bioqr, QMSP or
// watermark phone) to the account. The code is single-use and valid for ten
// minutes; the holder hands it to the enrolment desk with the phone
// (`--enrolment-code`). An operator gets codes only for accounts in its scope.
func adminEnrolmentCode(g *Globals, a *adminEnv) *cobra.Command {
	var account string
	cmd := &cobra.Command{
		Use:   "enrolment-code --account ID",
		Short: "Issue an account holder's single-use enrolment code (consent to bind one payer phone to the account)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := a.pf.dir(g)
			if err != nil {
				return err
			}
			ac, err := adminClient(a.pf.server, dir)
			if err != nil {
				return err
			}
			defer ac.Close()
			var out consent.Code
			if _, err := ac.Do(cmd.Context(), http.MethodPost, "/v1/enrolment-codes", nil, consent.IssueRequest{Account: account}, &out); err != nil {
				return fmt.Errorf("enrolment code for %s: %w", account, err)
			}
			return g.Report(out, fmt.Sprintf("%s\n(single use, for account %s, valid until %s)", out.Code, out.Account, out.Expires.UTC().Format(time.RFC3339)))
		},
	}
	cmd.Flags().StringVar(&account, "account", "", "the ledger account the holder consents to bind a phone to")
	_ = cmd.MarkFlagRequired("account")
	return cmd
}
