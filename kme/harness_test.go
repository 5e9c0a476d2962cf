package kme

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/sqldb"
)

var testMaster = bytes.Repeat([]byte{0x42}, 32)

type testEnv struct {
	t    *testing.T
	db   *sqldb.DB
	ca   *pki.CA
	cfg  PairConfig
	p    *Pair
	tls  map[string]*tls.Config // SAE → client TLS
	http map[string]*http.Client
}

func newCA(t *testing.T, db *sqldb.DB) *pki.CA { return newCAtb(t, db) }

func newCAtb(t testing.TB, db *sqldb.DB) *pki.CA {
	t.Helper()
	enc, err := pki.RawKey(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.OpenOrCreateCA(context.Background(), db, "test", pki.Options{}, enc)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func startEnv(t *testing.T, db *sqldb.DB, mod func(*PairConfig)) *testEnv {
	t.Helper()
	e := &testEnv{t: t, db: db, ca: newCA(t, db), tls: map[string]*tls.Config{}, http: map[string]*http.Client{}}
	e.cfg = PairConfig{
		CA:        e.ca,
		A:         SiteConfig{KMEID: "KME_A", SAEs: []string{"SAE_A1", "SAE_A2"}},
		B:         SiteConfig{KMEID: "KME_B", SAEs: []string{"SAE_B1", "SAE_B2"}},
		MasterKey: testMaster,
		SyncGrace: -1, ReconcileEvery: -1,
		MaxKeyCount: 1000,
	}
	if mod != nil {
		mod(&e.cfg)
	}
	e.start()
	for _, s := range []string{"SAE_A1", "SAE_A2", "SAE_B1", "SAE_B2", "SAE_X"} {
		tc, err := e.p.ClientTLS(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		e.tls[s] = tc
		e.http[s] = &http.Client{Transport: &http.Transport{TLSClientConfig: tc.Clone()}, Timeout: 20 * time.Second}
	}
	// A certificate of the wrong role named like an SAE, and one named like
	// the peer KME: the CA refuses the names (they belong to principals of
	// another kind), so the impostors get look-alike names.
	for _, x := range []struct {
		name, cn string
		role     pki.Role
	}{{"client-role SAE", "SAE_A1", pki.RoleClient}, {"fake KME_A", "KME_A", pki.RoleApplication}} {
		if _, err := e.ca.IssueTLS(context.Background(), x.role, x.cn, nil, nil); !errors.Is(err, pki.ErrNameTaken) {
			t.Fatalf("CA issued a %s certificate named %s: %v", x.role, x.cn, err)
		}
		cert, err := e.ca.IssueTLS(context.Background(), x.role, x.cn+"_", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		tc := e.ca.ClientTLS(context.Background(), cert, "127.0.0.1")
		e.http[x.name] = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 20 * time.Second}
	}
	// No client certificate at all, but trusting the CA.
	e.http["none"] = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.ca.RootPool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}}, Timeout: 20 * time.Second}
	t.Cleanup(func() {
		if e.p != nil {
			e.p.Close()
		}
	})
	return e
}

func (e *testEnv) start() {
	e.t.Helper()
	p, err := StartPair(context.Background(), e.db, e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.p = p
}

// restart closes and reopens the pair on the same database (same ports).
func (e *testEnv) restart() {
	e.t.Helper()
	a, b := strings.TrimPrefix(e.p.AURL, "https://"), strings.TrimPrefix(e.p.BURL, "https://")
	if err := e.p.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.cfg.A.Listen, e.cfg.B.Listen = a, b
	e.start()
}

// fill deposits n fresh 256-bit keys into both KMEs.
func (e *testEnv) fill(n int) {
	e.t.Helper()
	keys := qkd.RandomKeys(n, 32)
	sa, sb := e.p.Sinks()
	ctx := context.Background()
	if err := sa(ctx, keys); err != nil {
		e.t.Fatal(err)
	}
	if err := sb(ctx, keys); err != nil {
		e.t.Fatal(err)
	}
}

type rawResp struct {
	status int
	ctype  string
	body   []byte
}

// do sends a raw request as sae ("none" = no certificate) to the KME at base.
func (e *testEnv) do(sae, method, base, path, body string) rawResp {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.http[sae].Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawResp{resp.StatusCode, resp.Header.Get("Content-Type"), b}
}

func (r rawResp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// snapshot captures both pools (available units, reserved keys) and the row count.
type snapshot struct {
	availA, availB, resA, resB []string
	rows                       int
}

func (e *testEnv) snap() snapshot {
	e.t.Helper()
	var n int
	if err := e.db.QueryRow(`SELECT COUNT(*) FROM kme_keys`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return snapshot{e.p.A.AvailableIDs(), e.p.B.AvailableIDs(), e.p.A.ReservedKeyIDs(), e.p.B.ReservedKeyIDs(), n}
}

func (s snapshot) equal(o snapshot) bool {
	return slices.Equal(s.availA, o.availA) && slices.Equal(s.availB, o.availB) &&
		slices.Equal(s.resA, o.resA) && slices.Equal(s.resB, o.resB) && s.rows == o.rows
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
