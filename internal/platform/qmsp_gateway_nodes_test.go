package platform

import (
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/paypage"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qmsp"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestGatewaySessionAcrossNodes: the built-in gateway's screen, shown by
// node 1, is paid through node 2 and its status read through node 2 as
// paid; then the screen is served by either node in turn, through more
// codes than one quantum key batch holds (so each node refreshes the
// preset-key ratchet), each code paid through the other node. Every node
// shows the same code, every payment is applied once, and the CSS and the
// gateway stay in step. With the gateway kept in a per-process map and
// state-directory files, node 2 had no such gateway: its page said
// "Payment unavailable" (its provisioning failed with gateway_exists) and
// its status poll answered offline.
func TestGatewaySessionAcrossNodes(t *testing.T) {
	dsn := sqldbtest.PostgresDSN(t)
	t.Setenv("QSHIELD_PLATFORM_KEY", strings.Repeat("3d", 32))
	t.Setenv(EnvAuditKey, strings.Repeat("d3", 32))
	ctx := context.Background()
	nodes := make([]*Platform, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Unlimited anonymous requests: the screens' polls all come from 127.0.0.1.
			nodes[i], errs[i] = Open(ctx, Config{DB: dsn, StateDir: t.TempDir(), QKD: QKDConfig{Off: true}, Trust: TrustConfig{RatePerSource: -1}})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		t.Cleanup(func() { nodes[i].Close() })
	}
	urls := []string{serve(t, nodes[0]), serve(t, nodes[1])}
	if err := nodes[0].KME.Deposit(ctx, qkd.RandomKeys(6000, 32)); err != nil {
		t.Fatal(err)
	}
	for _, a := range []ledger.NewAccount{
		{ID: "bank", Owner: "bank", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true},
		{ID: "alice", Owner: "alice", Kind: ledger.KindUser, Currency: "CNY"},
	} {
		if _, err := nodes[0].Ledger.CreateAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := nodes[0].Ledger.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "fund", From: "bank", To: "alice", Amount: 1000_00, Currency: "CNY"}); err != nil {
		t.Fatal(err)
	}
	code, err := nodes[0].IssueEnrolmentCode(ctx, "test", "alice")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := nodes[0].QMSP.IssuePhone(ctx, "PHONE-GWNODES", 4712, "alice", code)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.TLSCertificate(iss)
	if err != nil {
		t.Fatal(err)
	}
	phones := []*qmsp.Phone{
		{Payer: 4712, Platform: qmsp.NewClient(urls[0], nodes[0].ClientTLS(ctx, cert))},
		{Payer: 4712, Platform: qmsp.NewClient(urls[1], nodes[1].ClientTLS(ctx, cert))},
	}
	browsers := []*http.Client{httpsClient(nodes[0], tls.Certificate{}), httpsClient(nodes[1], tls.Certificate{})}
	page := "/qmsp/gateways/" + BuiltinGateway + "/"
	get := func(node int, file string) (int, string) {
		t.Helper()
		resp, err := browsers[node].Get(urls[node] + page + file)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	shownCode := func(node int) (string, qmsp.Display) {
		t.Helper()
		st, text := get(node, "code")
		var d qmsp.Display
		if st != http.StatusOK || d.UnmarshalText([]byte(text)) != nil {
			t.Fatalf("node %d shows no code: %d %.200s", node+1, st, text)
		}
		return text, d
	}
	status := func(node int, d qmsp.Display) paypage.Status {
		t.Helper()
		ref := qkd.FormatKeyID(d.Ref.KeyID) + "/" + strconv.Itoa(int(d.Ref.Unit))
		st, body := get(node, "status?code="+url.QueryEscape(ref))
		var s paypage.Status
		if st != http.StatusOK || json.Unmarshal([]byte(body), &s) != nil {
			t.Fatalf("status of %s through node %d: %d %.200s", ref, node+1, st, body)
		}
		return s
	}
	if st, body := get(0, ""); st != http.StatusOK || !strings.Contains(body, BuiltinMerchantName) {
		t.Fatalf("node 1 page: %d %.300s", st, body)
	}
	var paid int64
	const rounds = 20 // more than the 15 units of one 1024-byte batch
	for i := range rounds {
		show, pay := i%2, (i+1)%2
		text, d := shownCode(show)
		if _, other := shownCode(pay); other.Ref != d.Ref || !other.Expires.Equal(d.Expires) {
			t.Fatalf("round %d: node %d shows %v (expires %v), node %d %v (expires %v)", i, show+1, d.Ref, d.Expires, pay+1, other.Ref, other.Expires)
		}
		if s := status(pay, d); s.State != paypage.Waiting {
			t.Fatalf("round %d: unpaid code's status through node %d: %+v", i, pay+1, s)
		}
		amount := int64(1_00 + i)
		if _, err := phones[pay].Pay(ctx, text, amount, 156); err != nil {
			t.Fatalf("round %d: code shown by node %d, paid through node %d: %v", i, show+1, pay+1, err)
		}
		paid += amount
		if s := status(pay, d); s.State != paypage.Paid {
			t.Fatalf("round %d: paid code's status through node %d: %+v", i, pay+1, s)
		}
		if s := status(show, d); s.State != paypage.Paid {
			t.Fatalf("round %d: paid code's status through node %d: %+v", i, show+1, s)
		}
		if _, next := shownCode(show); next.Ref == d.Ref {
			t.Fatalf("round %d: node %d still shows the paid code", i, show+1)
		}
	}
	shop, err := nodes[1].Ledger.Account(ctx, BuiltinMerchantAccount)
	if err != nil || shop.Balance != paid {
		t.Fatalf("merchant %+v (%v), want %d", shop, err, paid)
	}
	epoch, pending, err := nodes[1].QMSP.CSS.Epoch(ctx, BuiltinGateway)
	if err != nil || epoch < 2 {
		t.Fatalf("CSS epoch %d pending %d (%v): want at least two refreshes", epoch, pending, err)
	}
	// A sale set through node 1 is what node 2's screen shows.
	if _, err := nodes[0].QMSP.SetSaleAs(ctx, &pki.Principal{Kind: pki.PrincipalAdmin}, BuiltinGateway, 25_00, 156); err != nil {
		t.Fatal(err)
	}
	if _, d := shownCode(1); d.Amount != 25_00 || d.Currency != 156 {
		t.Fatalf("node 2 shows %d (currency %d) after a 25.00 CNY sale set through node 1", d.Amount, d.Currency)
	}
	for i, n := range nodes {
		if tills := n.QMSP.Tills(ctx); len(tills) != 1 || tills[0].Gateway != BuiltinGateway || !tills[0].Ready {
			t.Fatalf("node %d tills: %+v", i+1, tills)
		}
	}
}

// TestGatewayImportedFromStateDir: a built-in gateway that an older
// version ran from files in the state directory (already registered at the
// CSS at epoch ≥ 1) is moved into the database with its state on first
// use, and goes on in step with the CSS; provisioning it afresh would fail
// with gateway_exists.
func TestGatewayImportedFromStateDir(t *testing.T) {
	p := openTestPlatform(t, Config{})
	ctx := context.Background()
	if err := p.KME.Deposit(ctx, qkd.RandomKeys(2000, 32)); err != nil {
		t.Fatal(err)
	}
	old, err := p.QMSP.ProvisionGateway(ctx, BuiltinGateway, BuiltinMerchant, BuiltinMerchantAccount, "CNY", GatewayOptions{Dir: p.StateDir})
	if err != nil {
		t.Fatal(err)
	}
	before, err := old.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g, err := p.QMSP.Gateway(ctx, BuiltinGateway)
	if err != nil {
		t.Fatalf("open the state-directory gateway: %v", err)
	}
	if st := g.State(); st.Epoch != 1 || st.KeyID != qkd.FormatKeyID(before.Ref.KeyID) {
		t.Fatalf("imported state at epoch %d key %s, want epoch 1 key %s", st.Epoch, st.KeyID, qkd.FormatKeyID(before.Ref.KeyID))
	}
	for range 20 { // through a refresh: the ratchet is in step
		if _, err := g.Current(ctx); err != nil {
			t.Fatal(err)
		}
		if err := g.AdvanceContext(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if e, _, err := p.QMSP.CSS.Epoch(ctx, BuiltinGateway); err != nil || e < 2 {
		t.Fatalf("CSS epoch %d (%v)", e, err)
	}
	if _, err := os.Stat(filepath.Join(p.StateDir, "gateway-"+BuiltinGateway+".state")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the imported state file is still in place: %v", err)
	}
}

// Finding (#14, a crash window at the last stop): provisioning registered
// the gateway at the CA, the CSS and the PPS before writing its session, so
// a node that died in between left the identity registered and the gateway
// unprovisionable (every later run failed with gateway_exists). The device
// key is now stored before anything is registered, and the next run resumes
// with it and the CSS's unused preset key. Without the resume, the second
// Gateway call fails with ErrGatewayExists; with a wrong preset key, the
// gateway's first key request fails its MAC at the CSS.
func TestGatewayProvisioningResumedAfterCrash(t *testing.T) {
	p := openTestPlatform(t, Config{})
	ctx := context.Background()
	if err := p.KME.Deposit(ctx, qkd.RandomKeys(2000, 32)); err != nil {
		t.Fatal(err)
	}
	crash := errors.New("killed between registration and session")
	p.QMSP.afterEnrol = func() error { return crash }
	if _, err := p.QMSP.Gateway(ctx, BuiltinGateway); !errors.Is(err, crash) {
		t.Fatalf("first provisioning: %v, want the injected crash", err)
	}
	if e, _, err := p.QMSP.CSS.Epoch(ctx, BuiltinGateway); err != nil || e != 0 {
		t.Fatalf("after the crash the CSS holds epoch %d (%v), want a registered gateway at 0", e, err)
	}
	p.QMSP.afterEnrol = nil
	g, err := p.QMSP.Gateway(ctx, BuiltinGateway)
	if err != nil {
		t.Fatalf("provisioning after the crash: %v", err)
	}
	for range 20 { // key requests under the preset key, through a refresh
		if _, err := g.Current(ctx); err != nil {
			t.Fatal(err)
		}
		if err := g.AdvanceContext(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if e, _, err := p.QMSP.CSS.Epoch(ctx, BuiltinGateway); err != nil || e < 2 {
		t.Fatalf("CSS epoch %d (%v)", e, err)
	}
	if _, err := p.stateFile(ctx, provisioningName(BuiltinGateway)); !errors.Is(err, sql.ErrNoRows) {
		t.Fatalf("provisioning record left behind: %v", err)
	}
}

// A gateway that has asked the CSS for keys cannot be taken over by a
// resumed provisioning: its preset key is spent.
func TestUnusedPresetKeyRefusesUsedGateway(t *testing.T) {
	p := openTestPlatform(t, Config{})
	ctx := context.Background()
	if err := p.KME.Deposit(ctx, qkd.RandomKeys(2000, 32)); err != nil {
		t.Fatal(err)
	}
	g, err := p.QMSP.Gateway(ctx, BuiltinGateway)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Current(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := p.QMSP.CSS.UnusedPresetKey(ctx, BuiltinGateway, BuiltinMerchant); !errors.Is(err, qmsp.ErrGatewayInUse) {
		t.Fatalf("UnusedPresetKey of a gateway in use: %v, want ErrGatewayInUse", err)
	}
	if _, err := p.QMSP.CSS.UnusedPresetKey(ctx, "GW-9999", 1); !errors.Is(err, qmsp.ErrUnknownGateway) {
		t.Fatalf("UnusedPresetKey of an unknown gateway: %v", err)
	}
}
