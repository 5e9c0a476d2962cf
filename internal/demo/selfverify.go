package demo

import (
	"context"
	"net/http"
	"time"

	"github.com/qshield/qshield/internal/scenario"
)

// SelfVerify is seed 002: registration, withdrawal, three payments and a
// user-confirmed deposit over HTTPS, then each attack.
func SelfVerify() Scenario {
	return Scenario{Name: "selfverify", Run: func(ctx context.Context, env *Env) ([]Row, error) {
		hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: env.ClientTLS(env.P.AdminCert)}}
		defer hc.CloseIdleConnections()
		seal, err := env.P.OperatorKeySealer()
		if err != nil {
			return nil, err
		}
		steps, err := scenario.SelfVerify(ctx, scenario.SelfVerifyDeps{DB: env.P.DB, Ledger: env.P.Ledger, Audit: env.P.Audit, OperatorURL: env.URL, HTTPClient: hc, KeySeal: seal})
		rows := make([]Row, len(steps))
		for i, s := range steps {
			rows[i] = Row{Step: s.Step, Outcome: s.Outcome, Detail: s.Detail}
		}
		return rows, err
	}}
}
