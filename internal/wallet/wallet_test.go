package wallet_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qshield/qshield/httpsig"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/internal/wallet"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qmsp/paycode"
)

type env struct {
	p    *platform.Platform
	base string
	hc   *http.Client
}

func start(t *testing.T) *env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("https://localhost:%d", ln.Addr().(*net.TCPAddr).Port)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	p, err := platform.Open(ctx, platform.Config{DB: filepath.Join(dir, "qshield.db"), StateDir: dir, PublicURL: base,
		QKD: platform.QKDConfig{Off: true, ListenA: "127.0.0.1:0", ListenB: "127.0.0.1:0"}})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done; p.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(p.CA.Certificate())
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	t.Cleanup(hc.CloseIdleConnections)
	return &env{p: p, base: base, hc: hc}
}

func (e *env) funded(t *testing.T, id string, amount int64) {
	t.Helper()
	ctx := context.Background()
	for _, a := range []ledger.NewAccount{
		{ID: id + "-bank", Owner: "bank", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true},
		{ID: id, Owner: id, Kind: ledger.KindUser, Currency: "CNY"},
	} {
		if _, err := e.p.Ledger.CreateAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.p.Ledger.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "fund-" + id, From: id + "-bank", To: id, Amount: amount, Currency: "CNY"}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) do(t *testing.T, r *http.Request) (int, []byte) {
	t.Helper()
	resp, err := e.hc.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type device struct {
	key *ecdsa.PrivateKey
	en  wallet.Enrolled
}

func (e *env) enrol(t *testing.T, account, code string) (*device, int) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	spki, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	body, _ := json.Marshal(wallet.EnrolRequest{Account: account, Code: code, PublicKey: spki})
	r, _ := http.NewRequest("POST", e.base+"/v1/wallet/enrol", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	st, b := e.do(t, r)
	d := &device{key: k}
	if st == http.StatusCreated {
		if err := json.Unmarshal(b, &d.en); err != nil {
			t.Fatal(err)
		}
	}
	return d, st
}

func (e *env) signed(t *testing.T, d *device, method, path string, body []byte, idem string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r, _ := http.NewRequest(method, e.base+path, rd)
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	if idem != "" {
		r.Header.Set("Idempotency-Key", idem)
	}
	if err := httpsig.Sign(r, body, d.key, d.en.KeyID, time.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestWalletEndToEnd: enrolment needs the holder's code (once, for its
// account); the browser key then pays QMSP with signed requests; a replayed
// signed request, a tampered one and a revoked wallet are refused; the
// balance moved exactly once.
func TestWalletEndToEnd(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.funded(t, "w-alice", 100_00)
	e.funded(t, "w-bob", 5_00)
	if _, st := e.enrol(t, "w-alice", "AAAAAAAAAAAAAAAA"); st != http.StatusForbidden {
		t.Fatalf("enrolment with a made-up code: %d", st)
	}
	bobCode, err := e.p.BioQR.IssueEnrolmentCode(ctx, "test", "w-bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, st := e.enrol(t, "w-alice", bobCode.Code); st != http.StatusForbidden {
		t.Fatalf("enrolment on alice with bob's code: %d", st)
	}
	code, err := e.p.BioQR.IssueEnrolmentCode(ctx, "test", "w-alice")
	if err != nil {
		t.Fatal(err)
	}
	d, st := e.enrol(t, "w-alice", code.Code)
	if st != http.StatusCreated || d.en.KeyID == "" || d.en.Account != "w-alice" {
		t.Fatalf("enrolment: %d %+v", st, d.en)
	}
	if _, st := e.enrol(t, "w-alice", code.Code); st != http.StatusForbidden {
		t.Fatalf("second enrolment with the same code: %d", st)
	}

	// Balance, signed.
	st, b := e.do(t, e.signed(t, d, "GET", "/v1/wallet/me", nil, ""))
	if st != 200 || !strings.Contains(string(b), `"balance":"100.00 CNY"`) {
		t.Fatalf("me: %d %s", st, b)
	}
	// Unsigned: refused.
	r, _ := http.NewRequest("GET", e.base+"/v1/wallet/me", nil)
	if st, _ := e.do(t, r); st != http.StatusUnauthorized {
		t.Fatalf("unsigned me: %d", st)
	}

	// Pay the built-in gateway's code (12.34 CNY signed into it).
	if err := e.p.KME.Deposit(ctx, qkd.RandomKeys(200, 32)); err != nil {
		t.Fatal(err)
	}
	g, err := e.p.QMSP.Gateway(ctx, platform.BuiltinGateway)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.SetSale(12_34, 156); err != nil {
		t.Fatal(err)
	}
	disp, err := g.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := disp.MarshalText()
	var c paycode.Display
	if err := c.UnmarshalText(text); err != nil {
		t.Fatal(err)
	}
	payer, _ := strconv.ParseUint(d.en.Payer, 10, 64)
	req, err := paycode.Build(&c, payer, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(req)
	pay := e.signed(t, d, "POST", "/v1/qmsp/pay", body, c.IdempotencyKey())
	replay := pay.Clone(ctx)
	replay.Body = io.NopCloser(bytes.NewReader(body))
	tampered := e.signed(t, d, "POST", "/v1/qmsp/pay", body, c.IdempotencyKey())
	tampered.Body = io.NopCloser(bytes.NewReader(bytes.Replace(body, []byte(`"unit":`), []byte(`"unit": `), 1)))
	tampered.ContentLength = -1
	if st, b := e.do(t, tampered); st != http.StatusUnauthorized {
		t.Fatalf("tampered signed payment: %d %s", st, b)
	}
	if st, b := e.do(t, pay); st != 200 {
		t.Fatalf("signed payment: %d %s", st, b)
	}
	if st, b := e.do(t, replay); st != http.StatusUnauthorized || !strings.Contains(string(b), "signature_rejected") {
		t.Fatalf("replayed signed payment: %d %s", st, b)
	}
	a, _ := e.p.Ledger.Account(ctx, "w-alice")
	if a.Balance != 100_00-12_34 {
		t.Fatalf("alice's balance %d, want %d", a.Balance, 100_00-12_34)
	}

	// Revoked: the next signed request is refused.
	serial, _ := new(big.Int).SetString(d.en.KeyID, 16)
	if err := e.p.CA.Revoke(ctx, serial, "lost"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond) // the principal cache's TTL
	if st, _ := e.do(t, e.signed(t, d, "GET", "/v1/wallet/me", nil, "")); st != http.StatusUnauthorized {
		t.Fatalf("revoked wallet: %d", st)
	}

	// The page and its shell are served, with a CSP.
	r, _ = http.NewRequest("GET", e.base+"/wallet/", nil)
	resp, err := e.hc.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "wasm-unsafe-eval") {
		t.Fatalf("/wallet/: %d %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	r, _ = http.NewRequest("GET", e.base+"/wallet/wallet.wasm", nil)
	resp, err = e.hc.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Content-Type") != "application/wasm" {
		t.Fatalf("wallet.wasm served as %q", resp.Header.Get("Content-Type"))
	}
}

// TestAssetsUpToDate rebuilds the WebAssembly module as `go generate` does
// and fails when the committed assets differ (same Go release only: another
// release builds other bytes, and the test says so).
func TestAssetsUpToDate(t *testing.T) {
	want, err := os.ReadFile("assets/go-version")
	if err != nil {
		t.Fatal(err)
	}
	if v := strings.TrimSpace(string(want)); v != runtime.Version() {
		t.Skipf("assets were generated with %s, this is %s: run go generate ./internal/wallet with %s to compare", v, runtime.Version(), v)
	}
	if testing.Short() {
		t.Skip("building the WebAssembly module takes a while")
	}
	out := filepath.Join(t.TempDir(), "wallet.wasm")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, "./wasm")
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	got, _ := os.ReadFile(out)
	committed, _ := os.ReadFile("assets/wallet.wasm")
	if !bytes.Equal(got, committed) {
		t.Fatal("assets/wallet.wasm is out of date: run go generate ./internal/wallet")
	}
	goroot, _ := exec.Command("go", "env", "GOROOT").Output()
	js, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(goroot)), "lib", "wasm", "wasm_exec.js"))
	if err != nil {
		t.Fatal(err)
	}
	if committed, _ := os.ReadFile("assets/wasm_exec.js"); !bytes.Equal(js, committed) {
		t.Fatal("assets/wasm_exec.js differs from this Go release's: run go generate ./internal/wallet")
	}
}
