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

// lookupSignature returns the look-up signature headers for method and
// path when ctx carries a key (none otherwise, and none for a method other
// than GET).
func lookupSignature(ctx context.Context, method, path string, now int64) (map[string]string, error) {
	key, _ := ctx.Value(lookupKey{}).(*ecqv.PrivateKey)
	if key == nil || method != "GET" {
		return nil, nil
	}
	sig, err := key.Sign(rand.Reader, lookupSigningBytes(method, path, now))
	if err != nil {
		return nil, fmt.Errorf("selfverify: sign look-up: %w", err)
	}
	return map[string]string{HeaderLookupTime: strconv.FormatInt(now, 10), HeaderLookupSignature: base64.StdEncoding.EncodeToString(sig)}, nil
}

// LookupHeaders returns the look-up signature headers for a GET of path at
// now, signed with the key ctx carries (WithLookupKey); none when it
// carries no key. Clients other than OperatorClient (the browser wallet's
// WebAssembly module) use it.
func LookupHeaders(ctx context.Context, method, path string, now time.Time) (map[string]string, error) {
	return lookupSignature(ctx, method, path, ms(now))
}

// signLookup adds the look-up signature headers for method and path to h
// when ctx carries a key.
func signLookup(ctx context.Context, h http.Header, method, path string, now int64) (http.Header, error) {
	m, err := lookupSignature(ctx, method, path, now)
	if err != nil || len(m) == 0 {
		return h, err
	}
	if h == nil {
		h = http.Header{}
	}
	for k, v := range m {
		h.Set(k, v)
	}
	return h, nil
}
