package qmsp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"github.com/qshield/qshield/internal/testclock"
	"path/filepath"
	"testing"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/kme"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

type env struct {
	t       testing.TB
	db      *sqldb.DB
	ca      *pki.CA
	pair    *kme.Pair
	css     *CSS
	pps     *PPS
	led     *ledger.Ledger
	clk     *testclock.Clock
	dir     string
	gwKey   *ecdsa.PrivateKey
	storage []byte
}

func fillKeys(t testing.TB, p *kme.Pair, n int) {
	if err := p.Deposit(context.Background(), qkd.RandomKeys(n, 32)); err != nil {
		t.Fatal(err)
	}
}

func newEnv(t testing.TB, db *sqldb.DB, keys int) *env {
	t.Helper()
	ctx := context.Background()
	enc, _ := pki.RawKey(bytes.Repeat([]byte{9}, 32))
	ca, err := pki.OpenOrCreateCA(ctx, db, "qmsp-test", pki.Options{}, enc)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := kme.StartPair(ctx, db, kme.PairConfig{
		CA: ca, MasterKey: bytes.Repeat([]byte{1}, 32),
		A:          kme.SiteConfig{KMEID: "KME_PLATFORM", SAEs: []string{"pps"}},
		B:          kme.SiteConfig{KMEID: "KME_SUPERMARKET", SAEs: []string{"css"}},
		MaxKeySize: 8192, MaxKeyCount: 100000, SyncGrace: -1, ReconcileEvery: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pair.Close() })
	fillKeys(t, pair, keys)
	cssTLS, err := pair.ClientTLS(ctx, "css")
	if err != nil {
		t.Fatal(err)
	}
	ppsTLS, err := pair.ClientTLS(ctx, "pps")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, ca: ca, pair: pair, clk: testclock.New(time.Now()), dir: t.TempDir(), storage: bytes.Repeat([]byte{5}, 32)}
	al, err := audit.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	e.led, err = ledger.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.led.Close() })
	cssKeys, ppsKeys := etsi014.New(pair.BURL, cssTLS), etsi014.New(pair.AURL, ppsTLS)
	e.css, err = NewCSS(ctx, CSSConfig{DB: db, Keys: cssKeys, SlaveSAE: "pps", StorageKey: e.storage, Audit: al, Now: e.clk.Now, Prefetch: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.css.Close() })
	e.pps, err = NewPPS(ctx, PPSConfig{DB: db, Keys: ppsKeys, MasterSAE: "css", Ledger: e.led, StorageKey: e.storage, Audit: al, Now: e.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.pps.Close() })
	for _, a := range []ledger.NewAccount{
		{ID: "bank", Owner: "bank", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true},
		{ID: "alice", Owner: "alice", Kind: ledger.KindUser, Currency: "CNY"},
		{ID: "market", Owner: "supermarket", Kind: ledger.KindMerchant, Currency: "CNY"},
	} {
		if _, err := e.led.CreateAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.led.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "fund", From: "bank", To: "alice", Amount: 1_000_000, Currency: "CNY"}); err != nil {
		t.Fatal(err)
	}
	if err := e.pps.RegisterPayer(ctx, 42, "alice", "phone-alice"); err != nil {
		t.Fatal(err)
	}
	e.gwKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return e
}

// gateway registers gi at both servers and opens the device.
func (e *env) gateway(gi string) *Gateway {
	e.t.Helper()
	ctx := context.Background()
	pk, err := e.css.RegisterGateway(ctx, gi, 7)
	if err != nil {
		e.t.Fatal(err)
	}
	iss, err := e.ca.Issue(ctx, pki.IssueRequest{Role: pki.RoleDevice, CommonName: gi, PublicKey: e.gwKey.Public()})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.pps.RegisterGateway(ctx, gi, 7, "market", iss.Cert); err != nil {
		e.t.Fatal(err)
	}
	path := filepath.Join(e.dir, gi+".state")
	if err := ProvisionGateway(path, e.storage, gi, 7, pk); err != nil {
		e.t.Fatal(err)
	}
	return e.openGateway(gi)
}

func (e *env) openGateway(gi string) *Gateway {
	e.t.Helper()
	g, err := OpenGateway(GatewayConfig{StatePath: filepath.Join(e.dir, gi+".state"), StorageKey: e.storage, Signer: e.gwKey, CSS: LocalCSS{CSS: e.css, Peer: gi}, Now: e.clk.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	return g
}

func (e *env) balance(id string) int64 {
	a, err := e.led.Account(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return a.Balance
}

func (e *env) phone() *Phone {
	return &Phone{Payer: 42, Platform: LocalPPS{PPS: e.pps, Peer: "phone-alice"}}
}

func code(t testing.TB, g *Gateway) string {
	t.Helper()
	d, err := g.Current(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPaymentsAcrossBatches(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := newEnv(t, db, 400)
		g := e.gateway("GW-1")
		ctx := context.Background()
		ph := e.phone()
		units := (MaxBatchSize - PresetKeySize) / UnitSize
		total := int64(0)
		for i := 0; i < units+3; i++ { // crosses into a second batch
			amount := int64(100 + i)
			r, err := ph.Pay(ctx, code(t, g), amount, 156)
			if err != nil {
				t.Fatalf("payment %d: %v", i, err)
			}
			if r.Amount != amount || r.Currency != "CNY" || r.Payer != 42 {
				t.Fatalf("receipt %+v", r)
			}
			total += amount
			if err := g.Advance(); err != nil {
				t.Fatal(err)
			}
		}
		if got := e.balance("market"); got != total {
			t.Fatalf("market has %d, want %d", got, total)
		}
		if got := e.balance("alice"); got != 1_000_000-total {
			t.Fatalf("alice has %d", got)
		}
		if st := g.State(); st.Epoch != 2 {
			t.Fatalf("gateway epoch %d, want 2", st.Epoch)
		}
		if ep, pend, _ := e.css.Epoch(ctx, "GW-1"); ep != 2 || pend != 0 {
			t.Fatalf("CSS epoch %d pending %d, want 2 and 0", ep, pend)
		}
	})
}

func TestAttacks(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := newEnv(t, db, 400)
	g := e.gateway("GW-A")
	ctx := context.Background()
	ph := e.phone()

	t.Run("replayed ciphertext", func(t *testing.T) {
		req, _, err := ph.BuildPayment(code(t, g), 500, 156)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.pps.Pay(ctx, "phone-alice", "k-1", *req); err != nil {
			t.Fatal(err)
		}
		before := e.balance("alice")
		if _, err := e.pps.Pay(ctx, "phone-alice", "k-other", *req); !errors.Is(err, ErrKeyUsed) {
			t.Fatalf("replay: want ErrKeyUsed, got %v", err)
		}
		// The same client retrying with its own idempotency key gets its
		// first result back, and no second debit.
		if _, err := e.pps.Pay(ctx, "phone-alice", "k-1", *req); err != nil {
			t.Fatalf("idempotent retry: %v", err)
		}
		if e.balance("alice") != before {
			t.Fatal("money moved on replay")
		}
		g.Advance()
	})
	t.Run("bit-flipped amount", func(t *testing.T) {
		req, _, err := ph.BuildPayment(code(t, g), 100, 156)
		if err != nil {
			t.Fatal(err)
		}
		req.Ciphertext[14] ^= 0x01 // the low byte of the 48-bit amount
		before := e.balance("alice")
		if _, err := e.pps.Pay(ctx, "phone-alice", "k-2", *req); !errors.Is(err, ErrAuth) {
			t.Fatalf("bit flip: want ErrAuth, got %v", err)
		}
		if e.balance("alice") != before {
			t.Fatal("money moved")
		}
	})
	t.Run("expired code", func(t *testing.T) {
		c := code(t, g)
		e.clk.Add(61 * time.Second)
		defer g.Advance()
		if _, err := ph.Pay(ctx, c, 100, 156); !errors.Is(err, ErrExpired) {
			t.Fatalf("want ErrExpired, got %v", err)
		}
		// The gateway itself moves past the expired unit.
		if c2 := code(t, g); c2 == c {
			t.Fatal("gateway shows an expired code again")
		}
	})
	t.Run("stretched expiry", func(t *testing.T) {
		req, _, err := ph.BuildPayment(code(t, g), 100, 156)
		if err != nil {
			t.Fatal(err)
		}
		req.Expires += 3600 // the signature no longer covers it
		if _, err := e.pps.Pay(ctx, "phone-alice", "k-3", *req); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("want ErrBadSignature, got %v", err)
		}
	})
	t.Run("unregistered gateway", func(t *testing.T) {
		// At the CSS: a device nobody registered asks for quantum key.
		var pk [PresetKeySize]byte
		rand.Read(pk[:])
		path := filepath.Join(e.dir, "rogue.state")
		if err := ProvisionGateway(path, e.storage, "GW-ROGUE", 7, pk); err != nil {
			t.Fatal(err)
		}
		rogue, err := OpenGateway(GatewayConfig{StatePath: path, StorageKey: e.storage, Signer: e.gwKey, CSS: LocalCSS{CSS: e.css, Peer: "GW-ROGUE"}, Now: e.clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rogue.Current(ctx); !errors.Is(err, ErrUnknownGateway) {
			t.Fatalf("CSS: want ErrUnknownGateway, got %v", err)
		}
		// At the PPS: a code claiming an unregistered gateway.
		req, _, err := ph.BuildPayment(code(t, g), 100, 156)
		if err != nil {
			t.Fatal(err)
		}
		req.Gateway = "GW-ROGUE"
		if _, err := e.pps.Pay(ctx, "phone-alice", "k-4", *req); !errors.Is(err, ErrUnknownGateway) {
			t.Fatalf("PPS: want ErrUnknownGateway, got %v", err)
		}
		// A registered gateway's identity with another key's signature.
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		d, _ := g.Current(ctx)
		forged := *d
		forged.Sig, _ = ecdsa.SignASN1(rand.Reader, other, sha256Sum(forged.SignedBytes()))
		fc, _ := forged.MarshalText()
		if _, err := ph.Pay(ctx, string(fc), 100, 156); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("forged signature: want ErrBadSignature, got %v", err)
		}
	})
	t.Run("gateway certificate of another gateway", func(t *testing.T) {
		st := g.State()
		var pk [PresetKeySize]byte
		copy(pk[:], st.PK)
		now := e.clk.Now().Unix()
		nonce := newNonce()
		req := KeyRequest{Gateway: "GW-A", Epoch: st.Epoch, Time: now, Nonce: nonce, MAC: requestMAC(&pk, "keyreq", "GW-A", st.Epoch, now, nonce)}
		if _, err := e.css.AcquireKey(ctx, "GW-B", req); !errors.Is(err, ErrUnknownGateway) {
			t.Fatalf("want ErrUnknownGateway, got %v", err)
		}
	})
	t.Run("wrong payer for this phone", func(t *testing.T) {
		req, _, err := ph.BuildPayment(code(t, g), 100, 156)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.pps.Pay(ctx, "phone-mallory", "k-5", *req); !errors.Is(err, ErrUnknownPayer) {
			t.Fatalf("want ErrUnknownPayer, got %v", err)
		}
		g.Advance()
	})
}

func sha256Sum(b []byte) []byte {
	h := sha256Hash(b)
	return h[:]
}

// TestSniffedDelivery: a CSS→gateway message yields nothing without PK.
func TestSniffedDelivery(t *testing.T) {
	var pk, wrong [PresetKeySize]byte
	rand.Read(pk[:])
	rand.Read(wrong[:])
	qk := make([]byte, MaxBatchSize)
	rand.Read(qk)
	var id [16]byte
	rand.Read(id[:])
	w, err := Wrap(&pk, "GW-1", 5, id, qk)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+8 <= len(qk); i += 8 {
		if bytes.Contains(w, qk[i:i+8]) {
			t.Fatal("wrapped message contains quantum key bytes in clear")
		}
	}
	if _, err := Unwrap(&wrong, "GW-1", 5, id, w); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong PK: want ErrAuth, got %v", err)
	}
	// Bound to gateway, epoch and key ID: a delivery cannot be redirected.
	if _, err := Unwrap(&pk, "GW-2", 5, id, w); !errors.Is(err, ErrAuth) {
		t.Fatal("delivery opened for another gateway")
	}
	if _, err := Unwrap(&pk, "GW-1", 6, id, w); !errors.Is(err, ErrAuth) {
		t.Fatal("delivery opened for another epoch")
	}
	w[20] ^= 1
	if _, err := Unwrap(&pk, "GW-1", 5, id, w); !errors.Is(err, ErrAuth) {
		t.Fatal("tampered delivery opened")
	}
}

// TestRatchetStaysInStep covers a lost delivery, a lost acknowledgement, a
// duplicated delivery, a reboot, and a gateway restored from an old backup.
func TestRatchetStaysInStep(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := newEnv(t, db, 400)
		g := e.gateway("GW-R")
		ctx := context.Background()
		pkOf := func() [PresetKeySize]byte {
			var pk [PresetKeySize]byte
			copy(pk[:], g.State().PK)
			return pk
		}
		request := func(epoch uint64, pk [PresetKeySize]byte) KeyRequest {
			now := e.clk.Now().Unix()
			nonce := newNonce()
			return KeyRequest{Gateway: "GW-R", Epoch: epoch, Time: now, Nonce: nonce, MAC: requestMAC(&pk, "keyreq", "GW-R", epoch, now, nonce)}
		}
		// Lost delivery: the CSS answers, the gateway never hears.
		lost, err := e.css.AcquireKey(ctx, "GW-R", request(0, pkOf()))
		if err != nil {
			t.Fatal(err)
		}
		if _, pend, _ := e.css.Epoch(ctx, "GW-R"); pend != 1 {
			t.Fatalf("pending %d", pend)
		}
		if err := g.Refresh(ctx); err != nil { // resynchronises: pending discarded
			t.Fatalf("refresh after lost delivery: %v", err)
		}
		if g.State().KeyID == lost.KeyID {
			t.Fatal("the lost delivery's key was used")
		}
		// Duplicate of the lost (old) delivery arriving late: refused by epoch check.
		if lost.Epoch == g.State().Epoch+1 {
			t.Fatal("stale delivery would look current")
		}
		// Lost acknowledgement: apply a delivery without acking.
		st := g.State()
		d, err := e.css.AcquireKey(ctx, "GW-R", request(st.Epoch, pkOf()))
		if err != nil {
			t.Fatal(err)
		}
		id, _ := parseKeyID(d.KeyID)
		pk := pkOf()
		qk, err := Unwrap(&pk, "GW-R", d.Epoch, id, d.Wrapped)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := DivQ(qk)
		// The next request comes at the new epoch under the new key.
		if _, err := e.css.AcquireKey(ctx, "GW-R", request(d.Epoch, b.NextPK)); err != nil {
			t.Fatalf("request after lost ack: %v", err)
		}
		if ep, _, _ := e.css.Epoch(ctx, "GW-R"); ep != d.Epoch {
			t.Fatalf("CSS epoch %d, want %d committed", ep, d.Epoch)
		}
		// That left a pending delivery the real gateway never saw, and the
		// real gateway's state is now behind by one epoch: its request is
		// refused, never silently served under a key the sides disagree on.
		if err := g.Refresh(ctx); !errors.Is(err, ErrOutOfStep) {
			t.Fatalf("stale gateway: want ErrOutOfStep, got %v", err)
		}
		// Forged MAC at the current epoch.
		var junk [PresetKeySize]byte
		if _, err := e.css.AcquireKey(ctx, "GW-R", request(d.Epoch, junk)); !errors.Is(err, ErrAuth) {
			t.Fatalf("forged MAC: want ErrAuth, got %v", err)
		}
		// Stale timestamp.
		old := request(d.Epoch, b.NextPK)
		old.Time -= 3600
		if _, err := e.css.AcquireKey(ctx, "GW-R", old); !errors.Is(err, ErrStale) {
			t.Fatalf("stale request: want ErrStale, got %v", err)
		}
	})
}

// TestGatewayReboot: state survives a restart; payments continue with no reuse.
func TestGatewayReboot(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := newEnv(t, db, 400)
	g := e.gateway("GW-B")
	ctx := context.Background()
	ph := e.phone()
	c1 := code(t, g)
	if _, err := ph.Pay(ctx, c1, 10, 156); err != nil {
		t.Fatal(err)
	}
	g.Advance()
	g2 := e.openGateway("GW-B") // reboot
	c2 := code(t, g2)
	if c2 == c1 {
		t.Fatal("rebooted gateway shows a used code")
	}
	if _, err := ph.Pay(ctx, c2, 10, 156); err != nil {
		t.Fatalf("payment after reboot: %v", err)
	}
}

// TestLinkUnderAttack: when eavesdropping stops the link, no key is
// delivered and payments stop with a clear error.
func TestLinkUnderAttack(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := newEnv(t, db, 1) // one 256-bit key: enough for a preset key only
	e.pair.SetLink("aborted", qkd.ErrAborted)
	pk, err := e.css.RegisterGateway(context.Background(), "GW-E", 7)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.dir, "GW-E.state")
	if err := ProvisionGateway(path, e.storage, "GW-E", 7, pk); err != nil {
		t.Fatal(err)
	}
	g := e.openGateway("GW-E")
	_, err = g.Current(context.Background())
	if !errors.Is(err, ErrNoQuantumKey) {
		t.Fatalf("want ErrNoQuantumKey, got %v", err)
	}
	t.Logf("gateway reports: %v", err)
}
