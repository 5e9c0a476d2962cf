//go:build !wasm

package selfverify

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/selfverify/ecqv"
)

// Signed look-ups. A token's status and its pending confirmations belong to
// the token's holder, a deposit's state to its vendor. The identifiers are
// unguessable, but an identifier leaks (logs, a shoulder, a shared screen),
// so the operator answers only a request signed by the owner's key: the
// token key t for a token, the vendor's certified key d_V for a deposit.
// The signature covers the method, the request path and a timestamp within
// the operator's clock skew; it travels in two headers. Seed 002's parties
// hold ECQV keys, not platform certificates, so the routes declare an
// authz.Signed policy and the router runs the check before the handler.

// verifyLookup checks r's look-up signature against the owner's key, which
// owner returns (an error wrapping authz.ErrNotOwner when the object does
// not exist: a missing object and another's answer alike).
func (o *Operator) verifyLookup(r *http.Request, owner func(ctx context.Context) (*ecqv.PublicKey, string, error)) error {
	tsText, sigText := r.Header.Get(HeaderLookupTime), r.Header.Get(HeaderLookupSignature)
	if tsText == "" || sigText == "" {
		return fmt.Errorf("%w: headers %s and %s are required", authz.ErrUnsigned, HeaderLookupTime, HeaderLookupSignature)
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s is not a number", authz.ErrUnsigned, HeaderLookupTime)
	}
	sig, err := base64.StdEncoding.DecodeString(sigText)
	if err != nil || len(sig) == 0 || len(sig) > 160 {
		return fmt.Errorf("%w: %s is not a base64 signature", authz.ErrUnsigned, HeaderLookupSignature)
	}
	if err := fresh(o.now(), ts, o.cfg.MaxClockSkew); err != nil {
		return fmt.Errorf("%w: %v", authz.ErrUnsigned, err)
	}
	pk, actor, err := owner(r.Context())
	if err != nil {
		return err
	}
	if !pk.Verify(lookupSigningBytes(r.Method, r.URL.EscapedPath(), ts), sig) {
		return o.refuse(r.Context(), actor, "selfverify.lookup", r.URL.Path, fmt.Errorf("%w: not signed by the owner's key", authz.ErrNotOwner))
	}
	return nil
}

var errNoSuchObject = fmt.Errorf("%w (or it does not exist)", authz.ErrNotOwner)

// tokenOwner is the key of the token holder of the path's {serial}.
func (o *Operator) tokenOwner(r *http.Request) func(ctx context.Context) (*ecqv.PublicKey, string, error) {
	return func(ctx context.Context) (*ecqv.PublicKey, string, error) {
		serial := r.PathValue("serial")
		if checkHex("serial", serial, serialHex) != nil {
			return nil, "", errNoSuchObject
		}
		t, err := o.loadToken(ctx, o.db, serial, false)
		if errors.Is(err, ErrTokenNotFound) {
			return nil, "", errNoSuchObject
		}
		if err != nil {
			return nil, "", err
		}
		pk, err := o.curve.NewPublicKey(t.key)
		return pk, "user:" + serial, err
	}
}

// depositOwner is the key of the vendor of the path's deposit {id}.
func (o *Operator) depositOwner(r *http.Request) func(ctx context.Context) (*ecqv.PublicKey, string, error) {
	return func(ctx context.Context) (*ecqv.PublicKey, string, error) {
		var vendor string
		err := o.db.QueryRowContext(ctx, o.db.Rebind(`SELECT vendor FROM sv_deposits WHERE id = ?`), r.PathValue("id")).Scan(&vendor)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, "", errNoSuchObject
		}
		if err != nil {
			return nil, "", fmt.Errorf("selfverify: deposit owner: %w", err)
		}
		it, err := o.identity(ctx, vendor)
		if err != nil {
			return nil, "", err
		}
		pk, err := o.publicKey(it)
		return pk, vendor, err
	}
}
