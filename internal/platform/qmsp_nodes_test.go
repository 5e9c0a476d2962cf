package platform

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qmsp"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestQMSPPaidOnAnotherNode: two nodes on one PostgreSQL database, each with
// its own key managers under the platform's KME IDs. A gateway takes its
// quantum key from node 1's CSS; the phone pays the code at node 2's PPS,
// whose key manager never saw the key in memory (it failed with
// unknown_key: a code had to be paid on the node whose CSS made it). The
// payment is applied once, and a replay at node 1 is refused as used.
func TestQMSPPaidOnAnotherNode(t *testing.T) {
	dsn := sqldbtest.PostgresDSN(t)
	t.Setenv("QSHIELD_PLATFORM_KEY", strings.Repeat("3c", 32))
	t.Setenv(EnvAuditKey, strings.Repeat("c3", 32))
	ctx := context.Background()
	nodes := make([]*Platform, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = Open(ctx, Config{DB: dsn, StateDir: t.TempDir(), QKD: QKDConfig{Off: true}})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		t.Cleanup(func() { nodes[i].Close() })
	}
	n1, n2 := nodes[0], nodes[1]
	url1, url2 := serve(t, n1), serve(t, n2)
	// Quantum key reaches the pools after both nodes loaded theirs (as a
	// running link's deposits do): only node 1's key managers index it.
	if err := n1.KME.Deposit(ctx, qkd.RandomKeys(3000, 32)); err != nil {
		t.Fatal(err)
	}
	for _, a := range []ledger.NewAccount{
		{ID: "bank", Owner: "bank", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true},
		{ID: "alice", Owner: "alice", Kind: ledger.KindUser, Currency: "CNY"},
	} {
		if _, err := n1.Ledger.CreateAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n1.Ledger.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "fund", From: "bank", To: "alice", Amount: 100_00, Currency: "CNY"}); err != nil {
		t.Fatal(err)
	}
	g, err := n1.QMSP.ProvisionGateway(ctx, "GW-NODES", 77, "shop", "CNY", GatewayOptions{Dir: t.TempDir(), ServerURL: url1})
	if err != nil {
		t.Fatal(err)
	}
	code, err := n1.IssueEnrolmentCode(ctx, "test", "alice")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := n1.QMSP.IssuePhone(ctx, "PHONE-NODES", 4711, "alice", code)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.TLSCertificate(iss)
	if err != nil {
		t.Fatal(err)
	}
	d, err := g.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := d.MarshalText()
	at := func(p *Platform, url string) *qmsp.Phone {
		return &qmsp.Phone{Payer: 4711, Platform: qmsp.NewClient(url, p.ClientTLS(ctx, cert))}
	}
	if _, err := at(n2, url2).Pay(ctx, string(text), 12_34, 156); err != nil {
		t.Fatalf("pay at node 2 for a code whose key came from node 1: %v", err)
	}
	if _, err := at(n1, url1).Pay(ctx, string(text), 12_34, 156); err == nil || !strings.Contains(err.Error(), "key_already_used") && !strings.Contains(err.Error(), "already used") {
		t.Fatalf("replay at node 1: %v", err)
	}
	shop, err := n2.Ledger.Account(ctx, "shop")
	if err != nil || shop.Balance != 12_34 {
		t.Fatalf("shop %+v (%v), want 12.34 paid once", shop, err)
	}
}
