package selfverify

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// capture records every request body a handler receives and every response
// body it sends.
type capture struct {
	mu   sync.Mutex
	seen [][]byte
}

func (c *capture) add(b []byte) {
	c.mu.Lock()
	c.seen = append(c.seen, append([]byte(nil), b...))
	c.mu.Unlock()
}

func (c *capture) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.add([]byte(r.URL.String()))
		c.add(b)
		for k, v := range r.Header {
			c.add([]byte(k + ": " + strings.Join(v, ",")))
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		h.ServeHTTP(w, r)
	})
}

// captureTransport records what V receives from N.
type captureTransport struct {
	c    *capture
	next http.RoundTripper
}

func (t captureTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.c.add(b)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

type httpSetup struct {
	e        *env
	opSrv    *httptest.Server
	vSrv     *httptest.Server
	opClient *OperatorClient
	vendor   *Vendor
	vDB      *sqldb.DB
	vendorIn *capture
}

// newHTTPSetup runs N and V as separate TLS servers; V has its own database
// and talks to N over HTTPS only.
func newHTTPSetup(t *testing.T, db *sqldb.DB) *httpSetup {
	e := newEnv(t, db, ecqv.P256())
	opSrv := httptest.NewTLSServer(e.op.Handler())
	t.Cleanup(opSrv.Close)
	opClient, err := NewOperatorClient(opSrv.URL, opSrv.Client())
	if err != nil {
		t.Fatal(err)
	}
	vDB, err := sqldb.Open(context.Background(), filepath.Join(t.TempDir(), "vendor.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vDB.Close() })
	capt := &capture{}
	hc := *opSrv.Client() // a copy: the user's client must not be captured
	hc.Transport = captureTransport{c: capt, next: hc.Transport}
	vendorOp, _ := NewOperatorClient(opSrv.URL, &hc)

	e.account("acct.tea-shop", "merchant", 0)
	code, err := e.op.Enroll(e.ctx, "tea-shop", RoleVendor, "acct.tea-shop")
	if err != nil {
		t.Fatal(err)
	}
	cred, err := Register(e.ctx, vendorOp, nil, "tea-shop", RoleVendor, code)
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveVendorCredentials(e.ctx, vDB, cred); err != nil {
		t.Fatal(err)
	}
	v, err := NewVendor(e.ctx, vDB, cred, VendorConfig{Operator: vendorOp, Catalog: catalog, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	vSrv := httptest.NewTLSServer(capt.wrap(v.Handler()))
	t.Cleanup(vSrv.Close)
	return &httpSetup{e: e, opSrv: opSrv, vSrv: vSrv, opClient: opClient, vendor: v, vDB: vDB, vendorIn: capt}
}

func (s *httpSetup) httpUser(t *testing.T, id string) *User {
	e := s.e
	e.account("acct."+id, "user", 10_000)
	code, err := e.op.Enroll(e.ctx, id, RoleUser, "acct."+id)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := Register(e.ctx, s.opClient, nil, id, RoleUser, code)
	if err != nil {
		t.Fatal(err)
	}
	u, err := OpenUser(NewWallet(cred), s.opClient, WithClock(e.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestHTTPAndAnonymity runs the four phases over HTTPS and then inspects
// everything the vendor received (request bodies, URLs, headers, the
// operator's answers) and everything it stored (every row of every table of
// its database) for any identifier of the user: ID, account, P_U, Q_U, in raw,
// hex and base64 form.
func TestHTTPAndAnonymity(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		s := newHTTPSetup(t, db)
		ctx := context.Background()
		vc, err := NewVendorClient(s.vSrv.URL, s.vSrv.Client())
		if err != nil {
			t.Fatal(err)
		}
		u := s.httpUser(t, "alice.wang")
		st, err := u.Withdraw(ctx, 900, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, item := range []string{"tea", "cake", "pen"} {
			if _, err := u.Pay(ctx, vc, item); err != nil {
				t.Fatal(err)
			}
		}
		// An error crosses HTTP as the same sentinel.
		if _, err := u.Pay(ctx, vc, "book"); !errors.Is(err, ErrOverspend) {
			t.Fatalf("overspend over HTTP: %v", err)
		}
		dep, err := s.vendor.Deposit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.Confirm(ctx, st.Token.Serial, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.vendor.RefreshDeposit(ctx, dep.ID); err != nil {
			t.Fatal(err)
		}
		if got := s.e.balance("acct.tea-shop"); got != 400 {
			t.Fatalf("vendor balance %d", got)
		}
		if _, err := u.Close(ctx, st.Token.Serial); err != nil {
			t.Fatal(err)
		}
		if got := s.e.balance("acct.alice.wang"); got != 9600 {
			t.Fatalf("user balance %d", got)
		}

		// Missing Idempotency-Key on a money-moving POST.
		resp, err := s.opSrv.Client().Post(s.opSrv.URL+"/v1/selfverify/withdraw", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d", resp.StatusCode)
		}

		// Anonymity.
		w := u.Wallet()
		qU, _ := ecqv.Reconstruct(ecqv.P256(), w.ID, mustPoint(t, w.P), mustPub(t, w.QN))
		needles := map[string][]byte{"id": []byte("alice.wang"), "account": []byte("acct.alice")}
		for name, b := range map[string][]byte{"P_U": w.P, "Q_U": qU.Bytes(), "Q_U uncompressed": qU.Point().Uncompressed(), "d_U": w.Key} {
			needles[name] = b
			needles[name+" hex"] = []byte(hex.EncodeToString(b))
			needles[name+" base64"] = []byte(base64.StdEncoding.EncodeToString(b))
		}
		var haystack [][]byte
		s.vendorIn.mu.Lock()
		haystack = append(haystack, s.vendorIn.seen...)
		s.vendorIn.mu.Unlock()
		if len(haystack) < 10 {
			t.Fatalf("captured only %d messages", len(haystack))
		}
		rows := dumpDB(t, s.vDB)
		if len(rows) < 5 {
			t.Fatalf("vendor database dump has %d rows", len(rows))
		}
		haystack = append(haystack, rows...)
		for _, h := range haystack {
			for name, n := range needles {
				if bytes.Contains(bytes.ToLower(h), bytes.ToLower(n)) {
					t.Fatalf("vendor saw the user's %s in %.200q", name, h)
				}
			}
		}
		// Sanity: the scan finds what is there (the vendor's own ID).
		found := false
		for _, h := range haystack {
			found = found || bytes.Contains(h, []byte("tea-shop"))
		}
		if !found {
			t.Fatal("scan is blind: vendor ID not found either")
		}
	})
}

func mustPoint(t *testing.T, b []byte) *ecqv.Point {
	p, err := ecqv.P256().ParsePoint(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustPub(t *testing.T, b []byte) *ecqv.PublicKey {
	p, err := ecqv.P256().ParsePublicKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// dumpDB returns every row of every table of a SQLite database as text.
func dumpDB(t *testing.T, db *sqldb.DB) [][]byte {
	ctx := context.Background()
	rows, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table'`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	var out [][]byte
	for _, tb := range tables {
		r, err := db.QueryContext(ctx, `SELECT * FROM "`+tb+`"`)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := r.Columns()
		for r.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := r.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			b.WriteString(tb)
			for _, v := range vals {
				fmt.Fprintf(&b, "|%s", v)
			}
			out = append(out, b.Bytes())
		}
		r.Close()
	}
	return out
}
