package selfverify

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/qshield/qshield/selfverify/ecqv"
)

// The signing half of the owner-signed look-ups (lookup.go has the
// operator's check); built on every platform, the browser wallet included.

const (
	// HeaderLookupTime carries the signed look-up's timestamp (Unix ms).
	HeaderLookupTime = "Selfverify-Lookup-Time"
	// HeaderLookupSignature carries its signature (base64).
	HeaderLookupSignature = "Selfverify-Lookup-Signature"
	labelLookup           = "qshield-sv-lookup-v1"
)

func lookupSigningBytes(method, path string, ts int64) []byte {
	return newCanon(labelLookup).str(method).str(path).i64(ts)
}

type lookupKey struct{}

// WithLookupKey returns ctx carrying key, with which an OperatorClient signs
// the look-ups made with ctx (TokenStatus and Confirmations with the token
// key, DepositStatus with the vendor's key). The in-process operator needs
// none.
func WithLookupKey(ctx context.Context, key *ecqv.PrivateKey) context.Context {
	return context.WithValue(ctx, lookupKey{}, key)
}

// signLookup adds the look-up signature headers for method and path when
// ctx carries a key.
func signLookup(ctx context.Context, h http.Header, method, path string, now int64) (http.Header, error) {
	key, _ := ctx.Value(lookupKey{}).(*ecqv.PrivateKey)
	if key == nil || method != http.MethodGet {
		return h, nil
	}
	sig, err := key.Sign(rand.Reader, lookupSigningBytes(method, path, now))
	if err != nil {
		return nil, fmt.Errorf("selfverify: sign look-up: %w", err)
	}
	if h == nil {
		h = http.Header{}
	}
	h.Set(HeaderLookupTime, strconv.FormatInt(now, 10))
	h.Set(HeaderLookupSignature, base64.StdEncoding.EncodeToString(sig))
	return h, nil
}

// LookupHeaders returns the look-up signature headers for a GET of path at
// now, signed with the key ctx carries (WithLookupKey); none when it
// carries no key. Clients other than OperatorClient (the browser wallet's
// WebAssembly module) use it.
func LookupHeaders(ctx context.Context, method, path string, now time.Time) (http.Header, error) {
	return signLookup(ctx, nil, method, path, ms(now))
}
