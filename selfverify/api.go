package selfverify

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/qshield/qshield/selfverify/ecqv"
)

// OperatorAPI is the operator as its users and vendors see it: the in-process
// *Operator (through Operator.Local) or the HTTP client (*OperatorClient).
type OperatorAPI interface {
	Params(ctx context.Context) (*Params, error)
	Register(ctx context.Context, req RegisterRequest) (*RegisterResponse, error)
	Vendor(ctx context.Context, id string) (*Identity, error)
	Withdraw(ctx context.Context, req WithdrawRequest) (*SignedToken, error)
	Reserve(ctx context.Context, req ReserveRequest) (*ReserveResponse, error)
	Deposit(ctx context.Context, req DepositRequest) (*DepositResponse, error)
	DepositStatus(ctx context.Context, id string) (*DepositResponse, error)
	Confirmations(ctx context.Context, serial string) (*ConfirmationList, error)
	Confirm(ctx context.Context, ans ConfirmAnswer) (*ConfirmationStatus, error)
	CloseToken(ctx context.Context, req CloseRequest) (*TokenStatus, error)
	TokenStatus(ctx context.Context, serial string) (*TokenStatus, error)
}

// Credentials are a registered entity's self-certified key material: ID_X,
// d_X, P_X and Q_N. Q_X is rebuilt from them; nothing else is needed.
type Credentials struct {
	ID       string
	Role     string
	Currency string
	Key      *ecqv.PrivateKey
	P        *ecqv.Point
	QN       *ecqv.PublicKey
}

// Curve is the credentials' curve.
func (c *Credentials) Curve() *ecqv.Curve { return c.Key.Curve() }

// Register performs ECQV registration of id with the operator: it draws k_X,
// sends R_X with the enrollment code, and completes d_X, refusing a response
// that does not satisfy d_X·G = e·P_X + Q_N. qN pins the operator's key; when
// nil, Q_N is taken from the operator's /params over the (TLS-authenticated)
// connection.
func Register(ctx context.Context, api OperatorAPI, qN *ecqv.PublicKey, id, role, code string) (*Credentials, error) {
	if qN == nil {
		p, err := api.Params(ctx)
		if err != nil {
			return nil, fmt.Errorf("selfverify: register: fetch parameters: %w", err)
		}
		c, err := ecqv.CurveByName(p.Curve)
		if err != nil {
			return nil, err
		}
		if qN, err = c.ParsePublicKey(p.QN); err != nil {
			return nil, fmt.Errorf("selfverify: register: operator key: %w", err)
		}
	}
	curve := qN.Curve()
	req, sec, err := ecqv.NewRequest(curve, rand.Reader, id)
	if err != nil {
		return nil, err
	}
	resp, err := api.Register(ctx, RegisterRequest{ID: id, Role: role, R: req.R.Bytes(), Code: code})
	if err != nil {
		return nil, fmt.Errorf("selfverify: register %s: %w", id, err)
	}
	if err := resp.validate(); err != nil {
		return nil, fmt.Errorf("selfverify: register %s: response: %w", id, err)
	}
	if resp.ID != id || resp.Role != role || resp.Curve != curve.Name() {
		return nil, fmt.Errorf("selfverify: register %s: %w: response is for another identity or curve", id, ecqv.ErrInvalidResponse)
	}
	r, err := ecqv.ParseResponse(curve, resp.P, resp.R)
	if err != nil {
		return nil, fmt.Errorf("selfverify: register %s: %w: %v", id, ecqv.ErrInvalidResponse, err)
	}
	key, err := ecqv.Complete(sec, r, qN)
	if err != nil {
		return nil, fmt.Errorf("selfverify: register %s: %w", id, err)
	}
	return &Credentials{ID: id, Role: role, Currency: resp.Currency, Key: key, P: r.P, QN: qN}, nil
}
