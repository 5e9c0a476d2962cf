package selfverify

import (
	"context"
	"crypto/rand"
	"database/sql"
	"github.com/qshield/qshield/internal/testclock"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
)

type memAudit struct {
	mu     sync.Mutex
	events []audit.Entry
	next   audit.Recorder
}

func (m *memAudit) Record(ctx context.Context, e audit.Entry) error {
	m.mu.Lock()
	m.events = append(m.events, e)
	m.mu.Unlock()
	if m.next != nil {
		return m.next.Record(ctx, e)
	}
	return nil
}

func (m *memAudit) RecordTx(ctx context.Context, tx *sql.Tx, e audit.Entry) error {
	m.mu.Lock()
	m.events = append(m.events, e)
	m.mu.Unlock()
	if m.next != nil {
		return m.next.RecordTx(ctx, tx, e)
	}
	return nil
}

func (m *memAudit) has(event, outcome string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.events {
		if e.Event == event && e.Outcome == outcome {
			return true
		}
	}
	return false
}

type env struct {
	t     testing.TB
	ctx   context.Context
	db    *sqldb.DB
	led   *ledger.Ledger
	op    *Operator
	clock *testclock.Clock
	audit *memAudit
	curve *ecqv.Curve
}

const issuer = "sys.issuer"

var catalog = []Item{{ID: "tea", Description: "green tea", Price: 120}, {ID: "cake", Description: "cake", Price: 250},
	{ID: "book", Description: "a book", Price: 600}, {ID: "pen", Price: 30}}

func newEnv(t testing.TB, db *sqldb.DB, curve *ecqv.Curve) *env {
	t.Helper()
	ctx := context.Background()
	led, err := ledger.Open(ctx, db, ledger.WithSweepInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	al, err := audit.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	key, err := LoadOrCreateOperatorKey(ctx, db, curve, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := testclock.New(time.Now().UTC())
	ma := &memAudit{next: al}
	op, err := NewOperator(ctx, db, OperatorConfig{Key: key, Ledger: led, Audit: ma, Now: c.Now, ConfirmWindow: 5 * time.Minute, DepositGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { op.Close() })
	if _, err := led.EnsureAccount(ctx, ledger.NewAccount{ID: issuer, Owner: "system", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, ctx: ctx, db: db, led: led, op: op, clock: c, audit: ma, curve: curve}
}

func (e *env) account(id string, kind ledger.Kind, balance int64) {
	e.t.Helper()
	if _, err := e.led.CreateAccount(e.ctx, ledger.NewAccount{ID: id, Owner: id, Kind: kind, Currency: "CNY"}); err != nil {
		e.t.Fatal(err)
	}
	if balance > 0 {
		if _, err := e.led.Transfer(e.ctx, ledger.TransferRequest{IdempotencyKey: "fund-" + id, From: issuer, To: id, Amount: balance, Currency: "CNY"}); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) balance(id string) int64 {
	e.t.Helper()
	a, err := e.led.Account(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return a.Balance
}

func (e *env) register(id, role string) *Credentials {
	e.t.Helper()
	acct := "acct." + strings.ReplaceAll(id, "@", ".")
	kind := ledger.KindUser
	if role == RoleVendor {
		kind = ledger.KindMerchant
	}
	bal := int64(0)
	if role == RoleUser {
		bal = 10_000
	}
	e.account(acct, kind, bal)
	code, err := e.op.Enroll(e.ctx, id, role, acct)
	if err != nil {
		e.t.Fatal(err)
	}
	cred, err := Register(e.ctx, e.op.Local(), nil, id, role, code)
	if err != nil {
		e.t.Fatal(err)
	}
	return cred
}

func (e *env) user(id string) *User {
	e.t.Helper()
	u, err := OpenUser(NewWallet(e.register(id, RoleUser)), e.op.Local(), WithClock(e.clock.Now))
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

func (e *env) vendorIn(db *sqldb.DB, id string, api OperatorAPI) *Vendor {
	e.t.Helper()
	cred := e.register(id, RoleVendor)
	if err := SaveVendorCredentials(e.ctx, db, cred); err != nil {
		e.t.Fatal(err)
	}
	cred, err := LoadVendorCredentials(e.ctx, db, id)
	if err != nil {
		e.t.Fatal(err)
	}
	v, err := NewVendor(e.ctx, db, cred, VendorConfig{Operator: api, Catalog: catalog, Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { v.Close() })
	return v
}

func (e *env) vendor(id string) *Vendor { return e.vendorIn(e.db, id, e.op.Local()) }

func mustWithdraw(t *testing.T, u *User, amount int64) *SignedToken {
	t.Helper()
	st, err := u.Withdraw(context.Background(), amount, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func mustPay(t *testing.T, u *User, v VendorAPI, item string) *Receipt {
	t.Helper()
	rc, err := u.Pay(context.Background(), v, item)
	if err != nil {
		t.Fatalf("pay %s: %v", item, err)
	}
	return rc
}

func randKey(t *testing.T, c *ecqv.Curve) *ecqv.PrivateKey {
	k, err := c.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func keyOf(t *testing.T, secret []byte) *ecqv.PrivateKey {
	t.Helper()
	k, err := ecqv.P256().NewPrivateKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
