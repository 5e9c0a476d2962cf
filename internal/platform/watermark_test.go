package platform

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/service"
)

// wmDevices enrols a watermark phone on a funded payer account and scanners
// at two shops, and returns their HTTPS clients.
func wmDevices(t *testing.T, p *Platform) (phone, scanA, scanB *http.Client) {
	t.Helper()
	ctx := context.Background()
	userAccount(t, p, "bank", ledger.KindSystem, true)
	userAccount(t, p, "payer", ledger.KindUser, false)
	userAccount(t, p, "shop-a", ledger.KindMerchant, false)
	userAccount(t, p, "shop-b", ledger.KindMerchant, false)
	if _, err := p.Ledger.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "fund", From: "bank", To: "payer", Amount: 100_00, Currency: "CNY"}); err != nil {
		t.Fatal(err)
	}
	code, err := p.IssueEnrolmentCode(ctx, "test", "payer")
	if err != nil {
		t.Fatal(err)
	}
	client := func(name, role, account, code string) *http.Client {
		iss, err := p.EnrolWatermarkDevice(ctx, name, role, account, code, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := pki.TLSCertificate(iss)
		if err != nil {
			t.Fatal(err)
		}
		return httpsClient(p, c)
	}
	return client("WM-PHONE", "phone", "payer", code), client("SCAN-A", "scanner", "shop-a", ""), client("SCAN-B", "scanner", "shop-b", "")
}

// TestWatermarkChallengesRelayRefused runs the platform with its default
// settings, scanner challenges on (node setting watermark_challenges):
// scanner A fetches its challenge key over its certificate, the phone binds
// its stamps to A's current challenge, and the exact claim a live relay
// would carry is refused at scanner B (wrong_scanner: the stamps are bound
// to another registered scanner; the code not consumed) but pays at A. A
// phone or anonymous caller gets no challenge key, and a claim with unbound
// stamps only (the platform's screen page, which cannot read a challenge)
// is refused (unbound_shares). Without the wiring in startWatermark (no
// ChallengeMaster) the relayed claim pays at B.
func TestWatermarkChallengesRelayRefused(t *testing.T) {
	p := openTestPlatform(t, Config{})
	url := serve(t, p)
	phone, scanA, scanB := wmDevices(t, p)

	for who, hc := range map[string]*http.Client{"phone": phone, "anonymous": httpsClient(p, tls.Certificate{})} {
		if a := call(t, hc, "GET", url+"/v1/watermark/challenge-key", nil); a.status != http.StatusForbidden && a.status != http.StatusUnauthorized {
			t.Errorf("%s fetched a challenge key: %d %s", who, a.status, a.body)
		}
	}
	a := call(t, scanA, "GET", url+"/v1/watermark/challenge-key", nil)
	if a.status != http.StatusOK {
		t.Fatalf("scanner A's challenge key: %d %s", a.status, a.body)
	}
	var ck service.ChallengeKeyResponse
	if err := json.Unmarshal([]byte(a.body), &ck); err != nil || len(ck.Key) != watermark.ChallengeKeyLen {
		t.Fatalf("challenge key answer %s: %v", a.body, err)
	}

	newCode := func() service.CodeResponse {
		a := call(t, phone, "POST", url+"/v1/watermark/codes", service.CodeRequest{Limit: 50_00})
		if a.status != http.StatusCreated && a.status != http.StatusOK {
			t.Fatalf("code: %d %s", a.status, a.body)
		}
		var c service.CodeResponse
		if err := json.Unmarshal([]byte(a.body), &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	params := p.Watermark.Params
	// The phone read A's challenge for the current slot (scanner clock =
	// server time) and stamps every share it shows from then on.
	bound := func(c service.CodeResponse) []watermark.Stamp {
		ch := watermark.ChallengeAt(ck.Key, watermark.SlotAt(time.Now()))
		var st []watermark.Stamp
		for i := 1; i <= params.Threshold; i++ {
			st = append(st, watermark.NewBoundStamp(c.SlotKey, c.Handle, byte(i), ch))
		}
		return st
	}
	pay := func(hc *http.Client, c service.CodeResponse, st []watermark.Stamp) answer {
		return call(t, hc, "POST", url+"/v1/watermark/pay", service.PayRequest{Handle: c.Handle, Token: c.Token, Stamps: st, Amount: 12_00, Currency: "CNY"})
	}

	c := newCode()
	st := bound(c)
	// Its bound stamps do not verify under B's challenges but under A's,
	// a registered scanner: wrong_scanner.
	if a := pay(scanB, c, st); a.code != "wrong_scanner" {
		t.Fatalf("claim bound to A relayed to scanner B: %d %s, want wrong_scanner", a.status, a.body)
	}
	if a := pay(scanA, c, st); a.status != http.StatusOK && a.status != http.StatusCreated {
		t.Fatalf("the same claim at scanner A: %d %s, want paid", a.status, a.body)
	}
	ctx := context.Background()
	for acct, want := range map[string]int64{"payer": 88_00, "shop-a": 12_00, "shop-b": 0} {
		got, err := p.Ledger.Account(ctx, acct)
		if err != nil {
			t.Fatal(err)
		}
		if got.Balance != want {
			t.Errorf("%s holds %d, want %d", acct, got.Balance, want)
		}
	}

	// A phone that read no challenge (the platform's screen page): unbound
	// stamps only are refused, at any scanner.
	c = newCode()
	slot := watermark.SlotAt(time.Now())
	var unbound []watermark.Stamp
	for i := 1; i <= params.Threshold; i++ {
		unbound = append(unbound, watermark.NewStamp(c.SlotKey, c.Handle, byte(i), slot))
	}
	if a := pay(scanA, c, unbound); a.code != "unbound_shares" {
		t.Errorf("unbound claim with challenges on: %d %s, want unbound_shares", a.status, a.body)
	}
}

// TestWatermarkChallengesOptOut: with the opt-out (watermark_challenges
// false) the key route answers challenges_off and an unbound claim pays as
// before challenges.
func TestWatermarkChallengesOptOut(t *testing.T) {
	p := openTestPlatform(t, Config{WatermarkChallengesOff: true})
	url := serve(t, p)
	phone, scanA, _ := wmDevices(t, p)
	if a := call(t, scanA, "GET", url+"/v1/watermark/challenge-key", nil); a.code != "challenges_off" {
		t.Errorf("challenge key with challenges off: %d %s, want challenges_off", a.status, a.body)
	}
	a := call(t, phone, "POST", url+"/v1/watermark/codes", service.CodeRequest{Limit: 50_00})
	var c service.CodeResponse
	if err := json.Unmarshal([]byte(a.body), &c); err != nil {
		t.Fatalf("code: %d %s", a.status, a.body)
	}
	slot := watermark.SlotAt(time.Now())
	var unbound []watermark.Stamp
	for i := 1; i <= p.Watermark.Params.Threshold; i++ {
		unbound = append(unbound, watermark.NewStamp(c.SlotKey, c.Handle, byte(i), slot))
	}
	if a := call(t, scanA, "POST", url+"/v1/watermark/pay", service.PayRequest{Handle: c.Handle, Token: c.Token, Stamps: unbound, Amount: 12_00, Currency: "CNY"}); a.status != http.StatusOK {
		t.Errorf("unbound claim with challenges off: %d %s, want paid", a.status, a.body)
	}
}
