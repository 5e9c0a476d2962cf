package pki

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"net"
	"sync"
	"testing"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

type memTLSCache struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (c *memTLSCache) Load(_ context.Context, name string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[name], nil
}

func (c *memTLSCache) Store(_ context.Context, name string, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[name] = data
	return nil
}

// ServiceTLS reuses a kept certificate only while it is good for the
// request: the same request, this CA's, not revoked, not near its end;
// otherwise it issues a new one and keeps that.
func TestServiceTLSReuse(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		base, err := OpenOrCreateCA(ctx, db, "svc", Options{}, fastKey("service passphrase"))
		if err != nil {
			t.Fatal(err)
		}
		cache := &memTLSCache{m: map[string][]byte{}}
		ca := base.WithTLSCache(cache)
		req := IssueRequest{Role: RoleServer, CommonName: "svc", IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		serial := func(name string, r IssueRequest) string {
			t.Helper()
			c, err := ca.ServiceTLS(ctx, name, r)
			if err != nil {
				t.Fatal(err)
			}
			return c.Leaf.SerialNumber.Text(16)
		}
		first := serial("s", req)
		if again := serial("s", req); again != first {
			t.Fatalf("the kept certificate was not reused: %s then %s", first, again)
		}
		// Another request under the name: a new certificate.
		other := req
		other.IPAddresses = []net.IP{net.ParseIP("127.0.0.2")}
		second := serial("s", other)
		if second == first {
			t.Fatal("a certificate for other addresses was reused")
		}
		// Revoked: a new one.
		sn, _ := new(big.Int).SetString(second, 16)
		if err := ca.Revoke(ctx, sn, "test"); err != nil {
			t.Fatal(err)
		}
		if third := serial("s", other); third == second {
			t.Fatal("a revoked certificate was reused")
		}
		// Another CA's certificate in the cache (a restored database of
		// another platform): not used.
		foreign, err := OpenOrCreateCA(ctx, db, "foreign", Options{}, fastKey("foreign passphrase"))
		if err != nil {
			t.Fatal(err)
		}
		fc, err := foreign.WithTLSCache(cache).ServiceTLS(ctx, "f", req)
		if err != nil {
			t.Fatal(err)
		}
		cache.m["s2"] = cache.m["f"]
		if got := serial("s2", req); got == fc.Leaf.SerialNumber.Text(16) {
			t.Fatal("another CA's certificate was reused")
		}
		// Without a cache: a new certificate every time.
		a, _ := base.ServiceTLS(ctx, "s", req)
		b, _ := base.ServiceTLS(ctx, "s", req)
		if a.Leaf.SerialNumber.Cmp(b.Leaf.SerialNumber) == 0 {
			t.Fatal("without a cache the same certificate came twice")
		}
		// A kept entry whose key is not the certificate's: not used.
		var kept cachedTLS
		if err := json.Unmarshal(cache.m["s"], &kept); err != nil {
			t.Fatal(err)
		}
		var keptOther cachedTLS
		_ = json.Unmarshal(cache.m["s2"], &keptOther)
		kept.Key = keptOther.Key
		cache.m["s"], _ = json.Marshal(kept)
		cert, _ := x509.ParseCertificate(kept.Cert)
		if got := serial("s", other); got == cert.SerialNumber.Text(16) {
			t.Fatal("a kept certificate with another key was reused")
		}
		// A request the cache cannot key (a caller's own key) is refused.
		if _, err := ca.ServiceTLS(ctx, "k", IssueRequest{Role: RoleServer, CommonName: "k", PublicKey: a.Leaf.PublicKey}); err == nil {
			t.Fatal("a service certificate for a caller's key")
		}
	})
}
