package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/internal/metrics"
	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// logBuf collects JSON log lines from concurrent requests.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lineFor returns the first log line with msg for request id ("" if none).
func (l *logBuf) lineFor(id, msg string) map[string]any {
	for _, line := range strings.Split(l.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if m["request_id"] == id && m["msg"] == msg {
			return m
		}
	}
	return nil
}

type opsEnv struct {
	h    http.Handler
	led  *ledger.Ledger
	logs *logBuf
	m    *metrics.Metrics
}

func newOpsAPI(t testing.TB, db *sqldb.DB, cfg server.Config) opsEnv {
	t.Helper()
	ctx := context.Background()
	led, err := ledger.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	logs := &logBuf{}
	cfg.InsecureHTTP = true
	cfg.Log = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	store, err := httpx.OpenSQLStore(ctx, db, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	(&server.LedgerAPI{Ledger: led, Idempotency: &httpx.Idempotency{Store: store}}).Register(s)
	s.AddCheck(server.Check{Name: "database", Func: db.PingContext})
	for _, a := range []ledger.NewAccount{
		{ID: "bank", Owner: "bank", Kind: ledger.KindSystem, Currency: "EUR", AllowNegative: true},
		{ID: "alice", Owner: "alice", Kind: ledger.KindUser, Currency: "EUR"},
		{ID: "shop", Owner: "shop", Kind: ledger.KindMerchant, Currency: "EUR"},
	} {
		if _, err := led.CreateAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := led.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "fund", From: "bank", To: "alice", Amount: 1000, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	return opsEnv{h: s.Handler(), led: led, logs: logs, m: cfg.Metrics}
}

// assertUnavailable checks a 503 "unavailable" with Retry-After, the request
// ID in the header and the problem, and a warning log line with the cause.
func assertUnavailable(t testing.TB, env opsEnv, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %s", rec.Code, rec.Body)
	}
	if ra := rec.Header().Get("Retry-After"); ra == "" {
		t.Fatalf("503 without Retry-After")
	}
	var p httpx.Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Code != "unavailable" {
		t.Fatalf("problem %s (%v), want code unavailable", rec.Body, err)
	}
	id := rec.Header().Get(server.RequestIDHeader)
	if id == "" || p.RequestID != id {
		t.Fatalf("request ID header %q, problem %q", id, p.RequestID)
	}
	line := env.logs.lineFor(id, "request failed: service unavailable")
	if line == nil || line["err"] == "" || line["level"] != "WARN" {
		t.Fatalf("no warning with the cause logged for request %s:\n%s", id, env.logs)
	}
}

func transfer(h http.Handler, key string, amount int) *httptest.ResponseRecorder {
	return do(h, "POST", "/v1/transfers", key, "application/json", fmt.Sprintf(`{"from":"alice","to":"shop","amount":%d,"currency":"EUR"}`, amount))
}

// TestClosedDatabaseIs503: a database that cannot be reached answers 503
// unavailable with Retry-After and logs the cause (it was an anonymous 500
// with nothing logged).
func TestClosedDatabaseIs503(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		env := newOpsAPI(t, db, server.Config{})
		db.Close()
		assertUnavailable(t, env, transfer(env.h, "after-close", 5))
		assertUnavailable(t, env, do(env.h, "GET", "/v1/accounts/alice", "", "", ""))
		if rec := do(env.h, "GET", "/readyz", "", "", ""); rec.Code != 503 {
			t.Fatalf("/readyz %d with the database closed", rec.Code)
		}
		if rec := do(env.h, "GET", "/healthz", "", "", ""); rec.Code != 200 {
			t.Fatalf("/healthz %d: liveness must not depend on the database", rec.Code)
		}
	})
}

// TestBugIs500WithRequestID: an error that is not the database's fault is a
// 500 carrying the request ID, logged at error level with the cause.
func TestBugIs500WithRequestID(t *testing.T) {
	logs := &logBuf{}
	s, err := server.New(server.Config{InsecureHTTP: true, Log: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("GET /bug", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteError(w, r, fmt.Errorf("decode row: %w", io.ErrShortBuffer))
	}))
	s.Handle("GET /panic", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("boom") }))
	for _, path := range []string{"/bug", "/panic"} {
		rec := do(s.Handler(), "GET", path, "", "", "")
		var p httpx.Problem
		if rec.Code != 500 || json.Unmarshal(rec.Body.Bytes(), &p) != nil || p.Code != "internal" {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		id := rec.Header().Get(server.RequestIDHeader)
		if id == "" || p.RequestID != id || strings.Contains(rec.Body.String(), "short buffer") {
			t.Fatalf("%s: request id %q / %q, body %s", path, id, p.RequestID, rec.Body)
		}
		env := opsEnv{logs: logs}
		msg := "request failed: internal error"
		if path == "/panic" {
			msg = "panic in handler"
		}
		if line := env.logs.lineFor(id, msg); line == nil || line["level"] != "ERROR" {
			t.Fatalf("%s: no error line for %s:\n%s", path, id, logs)
		}
	}
}

// TestDiskFullIs503: SQLite reporting a full database (SQLITE_FULL, here
// from max_page_count) answers 503 with Retry-After and a log line, and the
// money stays consistent.
func TestDiskFullIs503(t *testing.T) {
	path := sqldbtest.SQLiteDSN(t)
	ctx := context.Background()
	db, err := sqldb.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	env := newOpsAPI(t, db, server.Config{})
	env.led.Close()
	var pages int
	if err := db.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	full, err := sqldb.OpenWith(ctx, path, sqldb.Options{Pragmas: []string{fmt.Sprintf("max_page_count(%d)", pages)}})
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	env = newOpsAPIExisting(t, full)
	saw503 := false
	for i := 0; i < 400 && !saw503; i++ {
		rec := transfer(env.h, fmt.Sprintf("fill-%d", i), 1)
		switch rec.Code {
		case 201:
		case 503:
			assertUnavailable(t, env, rec)
			if !strings.Contains(env.logs.String(), "full") {
				t.Fatalf("cause not logged:\n%s", env.logs)
			}
			saw503 = true
		default:
			t.Fatalf("transfer %d: %d %s\n%s", i, rec.Code, rec.Body, env.logs)
		}
	}
	if !saw503 {
		t.Fatal("the database never filled up")
	}
	var sum int64
	for _, id := range []string{"bank", "alice", "shop"} {
		a, err := env.led.Account(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		sum += a.Balance
	}
	if sum != 0 {
		t.Fatalf("money not conserved: %d", sum)
	}
}

// newOpsAPIExisting serves a database that already holds the accounts.
func newOpsAPIExisting(t testing.TB, db *sqldb.DB) opsEnv {
	t.Helper()
	ctx := context.Background()
	led, err := ledger.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	logs := &logBuf{}
	s, err := server.New(server.Config{InsecureHTTP: true, Log: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	store, err := httpx.OpenSQLStore(ctx, db, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	(&server.LedgerAPI{Ledger: led, Idempotency: &httpx.Idempotency{Store: store}}).Register(s)
	return opsEnv{h: s.Handler(), led: led, logs: logs}
}

// pgWithApp returns a fresh PostgreSQL DSN tagged with application_name, so
// that a test can terminate exactly its own backends.
func pgWithApp(t testing.TB, app string, extra url.Values) string {
	u, err := url.Parse(sqldbtest.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", app)
	for k, v := range extra {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func adminDB(t testing.TB) *sqldb.DB {
	admin, err := sqldb.Open(context.Background(), sqldbtest.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	return admin
}

// TestTerminatedConnections kills the API's PostgreSQL backends
// (pg_terminate_backend) while clients transfer money. Every answer is a
// success or a 503 with Retry-After and a log line — never a 500 — and
// retrying each 503 with its key applies every transfer exactly once.
func TestTerminatedConnections(t *testing.T) {
	app := fmt.Sprintf("qshield-test-%d", time.Now().UnixNano())
	dsn := pgWithApp(t, app, nil)
	ctx := context.Background()
	db, err := sqldb.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	env := newOpsAPI(t, db, server.Config{})
	admin := adminDB(t)
	const clients, each = 4, 25
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var killed int // written by the killer, read after killerDone
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		for round := 0; round < 8; round++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			var n int
			_ = admin.QueryRowContext(ctx, `SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n)
			killed += n
		}
	}()
	var mu sync.Mutex
	unavailable := 0
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				key := fmt.Sprintf("c%d-%d", c, i)
				for attempt := 0; ; attempt++ {
					rec := transfer(env.h, key, 1)
					if rec.Code == 201 || rec.Code == 200 {
						break
					}
					if rec.Code == 409 && strings.Contains(rec.Body.String(), "idempotency_in_progress") {
						time.Sleep(20 * time.Millisecond)
						continue
					}
					if rec.Code != 503 || rec.Header().Get("Retry-After") == "" {
						t.Errorf("%s: %d %s", key, rec.Code, rec.Body)
						return
					}
					mu.Lock()
					unavailable++
					mu.Unlock()
					time.Sleep(10 * time.Millisecond)
					if attempt > 200 {
						t.Errorf("%s: still unavailable", key)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-killerDone
	t.Logf("backends terminated: %d, 503 answers: %d", killed, unavailable)
	if killed == 0 {
		t.Fatal("no backend was terminated")
	}
	alice, err := env.led.Account(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(1000 - clients*each); alice.Balance != want {
		t.Fatalf("alice has %d, want %d (a transfer lost or applied twice)", alice.Balance, want)
	}
}

// TestLockTimeout: a transfer stuck behind a lock held by a frozen session
// gives up after the lock timeout with 503 instead of hanging.
func TestLockTimeout(t *testing.T) {
	ctx := context.Background()
	dsn := pgWithApp(t, "qshield-locktest", nil)
	db, err := sqldb.OpenWith(ctx, dsn, sqldb.Options{LockTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	env := newOpsAPI(t, db, server.Config{})
	// A second client on the same schema holds alice's row.
	holder, err := sqldb.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	tx, err := holder.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT id FROM ledger_accounts WHERE id = 'alice' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rec := transfer(env.h, "blocked", 1)
	assertUnavailable(t, env, rec)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("gave up after %v", d)
	}
	tx.Rollback()
	if rec := transfer(env.h, "blocked", 1); rec.Code != 201 {
		t.Fatalf("retry after the lock was released: %d %s", rec.Code, rec.Body)
	}
}

// TestRequestDeadline: the server's per-request deadline cancels a request
// stuck in the database (here behind a lock, with no lock timeout) and
// answers 503.
func TestRequestDeadline(t *testing.T) {
	ctx := context.Background()
	dsn := pgWithApp(t, "qshield-deadline", nil)
	db, err := sqldb.OpenWith(ctx, dsn, sqldb.Options{LockTimeout: -1, StatementTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	env := newOpsAPI(t, db, server.Config{RequestTimeout: 400 * time.Millisecond})
	holder, err := sqldb.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	tx, err := holder.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT id FROM ledger_accounts WHERE id = 'alice' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	assertUnavailable(t, env, transfer(env.h, "deadline", 1))
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("gave up after %v", d)
	}
}

// faultProxy forwards TCP to PostgreSQL and can cut every connection and
// refuse new ones (a database that went away), then come back.
type faultProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
}

func newFaultProxy(t testing.TB, target string) *faultProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *faultProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

func (p *faultProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *faultProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// TestDatabaseGoneAndBack: with the database unreachable every request is a
// 503 with Retry-After and a log line and /readyz fails; when it is back the
// node recovers by itself.
func TestDatabaseGoneAndBack(t *testing.T) {
	u, err := url.Parse(sqldbtest.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	p := newFaultProxy(t, u.Host)
	u.Host = p.ln.Addr().String()
	ctx := context.Background()
	db, err := sqldb.OpenWith(ctx, u.String(), sqldb.Options{ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	env := newOpsAPI(t, db, server.Config{})
	if rec := transfer(env.h, "before", 1); rec.Code != 201 {
		t.Fatalf("before: %d %s", rec.Code, rec.Body)
	}
	p.cut()
	for i := 0; i < 3; i++ {
		assertUnavailable(t, env, transfer(env.h, fmt.Sprintf("during-%d", i), 1))
	}
	assertUnavailable(t, env, do(env.h, "GET", "/v1/accounts/alice", "", "", ""))
	if rec := do(env.h, "GET", "/readyz", "", "", ""); rec.Code != 503 || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("/readyz during the outage: %d", rec.Code)
	}
	p.restore()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec := transfer(env.h, "during-0", 1)
		if rec.Code == 201 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery: %d %s", rec.Code, rec.Body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rec := do(env.h, "GET", "/readyz", "", "", ""); rec.Code != 200 {
		t.Fatalf("/readyz after recovery: %d %s", rec.Code, rec.Body)
	}
	alice, err := env.led.Account(ctx, "alice")
	if err != nil || alice.Balance != 998 {
		t.Fatalf("alice %d (%v), want 998", alice.Balance, err)
	}
}
