package demo

import (
	"context"

	"github.com/qshield/qshield/internal/scenario"
)

// KeyCharge is seed 001: a key storage device through its lifecycle, charged
// with quantum key, used for an encrypted channel, and each refusal.
func KeyCharge() Scenario {
	return Scenario{Name: "keycharge", Run: func(ctx context.Context, env *Env) ([]Row, error) {
		steps, err := scenario.KeyCharge(ctx, scenario.KeyChargeDeps{DB: env.P.DB, CA: env.P.CA, Audit: env.P.Audit, Log: env.Log})
		rows := make([]Row, len(steps))
		for i, s := range steps {
			rows[i] = Row{Step: s.Step, Outcome: s.Outcome, Detail: s.Detail}
		}
		return rows, err
	}}
}
