package demo

import (
	"context"

	"github.com/qshield/qshield/internal/scenario"
)

// BioQR is seed 004: a biometric QR payment between a CA-certified POS,
// phone and settlement server, with real FVC2002 templates when the shared
// data is present, then each attack.
func BioQR() Scenario {
	return Scenario{Name: "bioqr", Run: func(ctx context.Context, env *Env) ([]Row, error) {
		steps, err := scenario.BioQR(ctx, scenario.BioQRDeps{DB: env.P.DB, CA: env.P.CA, Ledger: env.P.Ledger, Audit: env.P.Audit, DataDir: env.DataDir, Log: env.Log})
		rows := make([]Row, len(steps))
		for i, s := range steps {
			rows[i] = Row{Step: s.Step, Outcome: s.Outcome, Detail: s.Detail}
		}
		return rows, err
	}}
}
