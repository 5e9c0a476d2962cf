package platform

import (
	"context"

	"fmt"
	"github.com/qshield/qshield/pki"
	"sync"
	"time"

	"github.com/qshield/qshield/selfverify"
	"github.com/qshield/qshield/selfverify/ecqv"
)

const operatorKeyPurpose = "selfverify-operator"

// OperatorKeySealer returns the sealer of seed 002's operator key for a
// process sharing the platform's state directory dir.
func OperatorKeySealer(dir string) (pki.KeyEncryptor, error) {
	k, err := SecretIn(dir, operatorKeyPurpose)
	if err != nil {
		return nil, err
	}
	return pki.RawKey(k)
}

// OperatorKeySealer is the platform's sealer of the operator key.
func (p *Platform) OperatorKeySealer() (pki.KeyEncryptor, error) {
	return pki.RawKey(p.Secret(operatorKeyPurpose))
}

// startSelfVerify runs seed 002's network operator N: its long-term ECQV key,
// its routes under /v1/selfverify/ and the sweeper that closes expired tokens
// and unanswered deposits.
func (p *Platform) startSelfVerify(ctx context.Context) error {
	seal, err := pki.RawKey(p.Secret(operatorKeyPurpose))
	if err != nil {
		return err
	}
	key, err := selfverify.LoadOrCreateOperatorKey(ctx, p.DB, ecqv.P256(), seal)
	if err != nil {
		return fmt.Errorf("platform: selfverify operator key: %w", err)
	}
	op, err := selfverify.NewOperator(ctx, p.DB, selfverify.OperatorConfig{Key: key, Ledger: p.Ledger, Audit: p.Audit, Log: p.Config.Log})
	if err != nil {
		return fmt.Errorf("platform: selfverify operator: %w", err)
	}
	p.SelfVerify = op
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.duty(rctx, "selfverify-sweep", func(ctx context.Context) { op.Run(ctx, 30*time.Second) })
	}()
	p.closers = append(p.closers, op.Close, func() error { cancel(); wg.Wait(); return nil })
	p.Router.Register(op.Routes()...)
	return nil
}
