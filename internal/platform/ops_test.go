package platform_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"github.com/qshield/qshield/pki"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func get(t testing.TB, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Body.String()
}

// proxyTrust makes plain-HTTP test nodes believe the client certificate in
// proxyHeader when it comes from httptest's remote address, as a
// TLS-terminating proxy would pass it (the only way --insecure-http serves
// authenticated routes).
var proxyTrust = platform.TrustConfig{TrustedProxies: []string{"192.0.2.1"}, ClientCertHeader: proxyHeader}

const proxyHeader = "X-Client-Cert"

func post(h http.Handler, path, key, body string) *httptest.ResponseRecorder {
	return postAs(h, path, key, body, "")
}

// postAs is post presenting certPEM (URL-escaped PEM) through the proxy header.
func postAs(h http.Handler, path, key, body, certPEM string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if certPEM != "" {
		r.Header.Set(proxyHeader, certPEM)
	}
	if key != "" {
		r.Header.Set(httpx.IdempotencyHeader, key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// metric returns the value of the first series matching re ("" if none).
func metric(text, re string) string {
	m := regexp.MustCompile(`(?m)^` + re + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return ""
	}
	return m[1]
}

// TestMetricsScrape runs a platform with the QKD link on, makes scheme
// requests, and scrapes /metrics for the scheme, QKD, key-manager and pool
// series; /readyz reports the database, migrations and the link.
func TestMetricsScrape(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	p, err := platform.Open(ctx, platform.Config{DB: dir + "/q.db", StateDir: dir, InsecureHTTP: true,
		QKD: platform.QKDConfig{Speedup: 0, DistanceKm: 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	h := p.Server.Handler()
	// A refused payment of each of two schemes (nothing valid to pay with).
	for _, path := range []string{"/v1/qmsp/pay", "/v1/watermark/pay"} {
		if rec := post(h, path, "", `{}`); rec.Code < 400 || rec.Code >= 500 {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
	}
	var text string
	deadline := time.Now().Add(90 * time.Second)
	for {
		code, body := get(t, h, "/metrics")
		if code != 200 {
			t.Fatalf("/metrics: %d", code)
		}
		text = body
		if v := metric(text, `qshield_qkd_blocks_total\{result="ok"\}`); v != "" && v != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no QKD block within 90 s:\n%s", grepLines(text, "qshield_qkd"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, re := range []string{
		`qshield_scheme_requests_total\{outcome="refused",reason="[a-z_]+",route="/v1/qmsp/pay",scheme="qmsp"\}`,
		`qshield_scheme_requests_total\{outcome="refused",reason="[a-z_]+",route="/v1/watermark/pay",scheme="watermark"\}`,
		`qshield_http_requests_total\{code="[0-9]+",method="POST",route="/v1/qmsp/pay"\}`,
		`qshield_http_request_duration_seconds_count\{route="/v1/qmsp/pay"\}`,
		`qshield_qkd_qber`, `qshield_qkd_key_rate_bps`, `qshield_qkd_secret_bits_total`,
		`qshield_qkd_link_up\{kme="KME_PLATFORM"\}`, `qshield_qkd_link_state\{kme="KME_SUPERMARKET",state="up"\}`,
		`qshield_kme_pool_fill_ratio\{kme="KME_PLATFORM"\}`, `qshield_kme_keys_delivered_total\{kme="KME_PLATFORM",role="master"\}`,
		`go_sql_max_open_connections\{db_name="qshield"\}`, `qshield_ledger_transfers_recorded`,
	} {
		if metric(text, re) == "" {
			t.Errorf("no series %s", re)
		}
	}
	if q := metric(text, `qshield_qkd_qber`); q == "0" {
		t.Errorf("QBER 0 after a block at 10 km")
	}
	if v := metric(text, `qshield_qkd_link_up\{kme="KME_PLATFORM"\}`); v != "1" {
		t.Errorf("link up = %s", v)
	}
	if code, body := get(t, h, "/readyz"); code != 200 || !strings.Contains(body, `"qkd_link":"ok"`) || !strings.Contains(body, `"migrations":"ok"`) {
		t.Errorf("/readyz %d %s", code, body)
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestNodesShareOneDatabase starts three platform nodes at once on one
// empty PostgreSQL database (same secrets from the environment, separate
// state directories), then moves money through all of them: start-up is
// idempotent (it crashed on duplicate keys), and an Idempotency-Key used on
// one node is honoured by the others.
func TestNodesShareOneDatabase(t *testing.T) {
	dsn := sqldbtest.PostgresDSN(t)
	// One secret for the platform (the CA key is derived from it), one for
	// the audit trail.
	t.Setenv("QSHIELD_PLATFORM_KEY", strings.Repeat("cd", 32))
	t.Setenv(platform.EnvAuditKey, strings.Repeat("ef", 32))
	ctx := context.Background()
	const n = 3
	nodes := make([]*platform.Platform, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = platform.Open(ctx, platform.Config{DB: dsn, StateDir: t.TempDir(), InsecureHTTP: true, Trust: proxyTrust, QKD: platform.QKDConfig{Off: true}})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d did not start: %v", i, err)
		}
		defer nodes[i].Close()
	}
	// One settlement identity (it was a key pair per node's state directory).
	var pubs []string
	for _, p := range nodes {
		c, err := bioqr.ParseCredential(p.BioQR.Credential())
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(c.PublicKey)
		pubs = append(pubs, string(der))
	}
	if pubs[0] != pubs[1] || pubs[1] != pubs[2] {
		t.Fatal("the nodes have different bioqr settlement keys")
	}
	h := func(i int) http.Handler { return nodes[i%n].Server.Handler() }
	// One node issued the admin credential; the operator presents it to every node.
	var admin string
	for _, p := range nodes {
		if p.AdminCert.Leaf != nil {
			admin = url.PathEscape(string(pki.EncodeCertPEM(p.AdminCert.Leaf)))
		}
	}
	if admin == "" {
		t.Fatal("no node issued the admin credential")
	}
	post := func(h http.Handler, path, key, body string) *httptest.ResponseRecorder {
		return postAs(h, path, key, body, admin)
	}
	for i, acct := range []string{`{"id":"bank","owner":"bank","kind":"system","currency":"EUR","allow_negative":true}`, `{"id":"alice","owner":"alice","kind":"user","currency":"EUR"}`, `{"id":"shop","owner":"shop","kind":"merchant","currency":"EUR"}`} {
		if rec := post(h(i), "/v1/accounts", "", acct); rec.Code != 201 {
			t.Fatalf("account: %d %s", rec.Code, rec.Body)
		}
	}
	if rec := post(h(0), "/v1/transfers", "fund", `{"from":"bank","to":"alice","amount":100000,"currency":"EUR"}`); rec.Code != 201 {
		t.Fatalf("fund: %d %s", rec.Code, rec.Body)
	}
	// Each transfer is sent to every node with the same key, concurrently.
	for k := 0; k < 20; k++ {
		key := fmt.Sprintf("pay-%d", k)
		var created, replayed int
		var mu sync.Mutex
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					rec := post(h(i), "/v1/transfers", key, `{"from":"alice","to":"shop","amount":7,"currency":"EUR"}`)
					if rec.Code == 409 && strings.Contains(rec.Body.String(), "idempotency_in_progress") {
						time.Sleep(5 * time.Millisecond)
						continue
					}
					mu.Lock()
					defer mu.Unlock()
					switch rec.Code {
					case 201:
						created++
					case 200:
						replayed++
					default:
						t.Errorf("node %d %s: %d %s", i, key, rec.Code, rec.Body)
					}
					return
				}
			}()
		}
		wg.Wait()
		if created != 1 || replayed != n-1 {
			t.Fatalf("%s: %d created, %d replayed", key, created, replayed)
		}
	}
	r := httptest.NewRequest("GET", "/v1/accounts/shop", nil)
	r.Header.Set(proxyHeader, admin)
	rec := httptest.NewRecorder()
	h(2).ServeHTTP(rec, r)
	code, body := rec.Code, rec.Body.String()
	if code != 200 || !strings.Contains(body, `"balance":140`) {
		t.Fatalf("shop: %d %s", code, body)
	}
	for i := range n {
		if code, body := get(t, h(i), "/readyz"); code != 200 {
			t.Errorf("node %d /readyz %d %s", i, code, body)
		}
	}
}

// TestQKDLinkLeader: with two nodes on one PostgreSQL database and the QKD
// link as a singleton, exactly one node runs the link; when that node stops,
// the other takes the link over within 10 s.
func TestQKDLinkLeader(t *testing.T) {
	dsn := sqldbtest.PostgresDSN(t)
	t.Setenv("QSHIELD_CA_KEY", strings.Repeat("ab", 32))
	t.Setenv("QSHIELD_PLATFORM_KEY", strings.Repeat("cd", 32))
	ctx := context.Background()
	var nodes [2]*platform.Platform
	for i := range nodes {
		p, err := platform.Open(ctx, platform.Config{DB: dsn, StateDir: t.TempDir(), InsecureHTTP: true, QKD: platform.QKDConfig{Speedup: 0, DistanceKm: 10}})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = p
	}
	defer func() {
		for _, p := range nodes {
			if p != nil {
				p.Close()
			}
		}
	}()
	leaderOf := func(i int) string {
		_, body := get(t, nodes[i].Server.Handler(), "/metrics")
		return metric(body, `qshield_leader\{duty="qkd-link"\}`)
	}
	var leader int
	deadline := time.Now().Add(20 * time.Second)
	for {
		a, b := leaderOf(0), leaderOf(1)
		if a == "1" && b == "1" {
			t.Fatal("both nodes run the QKD link")
		}
		if a == "1" || b == "1" {
			if b == "1" {
				leader = 1
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no node took the QKD link: %q %q", a, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	nodes[leader].Close()
	nodes[leader] = nil
	other := 1 - leader
	stopped := time.Now()
	for leaderOf(other) != "1" {
		if time.Since(stopped) > 10*time.Second {
			t.Fatalf("the link did not move within 10 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("QKD link moved to node %d after %v", other, time.Since(stopped))
}
