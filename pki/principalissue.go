package pki

import (
	"context"
	"crypto"
	"fmt"
	"slices"
)

// PrincipalRequest asks the CA for a client certificate that makes a new
// principal of the register: the one operation behind `qshield admin cert
// issue` and the operator console's certificate page.
type PrincipalRequest struct {
	Kind   PrincipalKind
	Name   string
	Scheme string
	Scope  []string
	// PublicKey is the subject's own key (from a certificate request the
	// device or browser signed, so the private key never reaches the CA);
	// nil makes the CA generate the key pair and return it in Issued.Key
	// (an ECDSA P-256 CA only, as for TLS).
	PublicKey crypto.PublicKey
}

// IssuableKinds are the kinds a principal certificate may be issued for on
// request (none and server are the platform's own).
func IssuableKinds() []PrincipalKind {
	var out []PrincipalKind
	for _, k := range principalKinds {
		if k != PrincipalNone && k != PrincipalServer {
			out = append(out, k)
		}
	}
	return out
}

// IssuePrincipal issues a client certificate for req: kind checked, role
// derived from the kind (application for SAEs and chargers, client
// otherwise), and the register entry and its audit record written with the
// certificate (Issue).
func (ca *CA) IssuePrincipal(ctx context.Context, req PrincipalRequest) (*Issued, error) {
	if !slices.Contains(IssuableKinds(), req.Kind) {
		return nil, fmt.Errorf("%w: kind %q cannot be issued on request", ErrBadRequest, req.Kind)
	}
	if req.Name == "" {
		return nil, fmt.Errorf("%w: a principal needs a name", ErrBadRequest)
	}
	if req.PublicKey == nil && ca.alg != ECDSAP256 {
		return nil, ErrTLSNotSM2
	}
	role := RoleClient
	if req.Kind == PrincipalSAE || req.Kind == PrincipalCharger {
		role = RoleApplication
	}
	return ca.Issue(ctx, IssueRequest{Role: role, CommonName: req.Name, Kind: req.Kind, Scheme: req.Scheme, Scope: req.Scope, PublicKey: req.PublicKey})
}
