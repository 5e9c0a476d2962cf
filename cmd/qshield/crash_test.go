package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/internal/client"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// buildBinary compiles qshield once per test binary.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "qshield")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build qshield: %v\n%s", err, out)
	}
	return bin
}

type serveProc struct {
	cmd *exec.Cmd
	url string
}

func startServe(t *testing.T, bin, dsn, stateDir string) *serveProc {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--db", dsn, "--listen", "127.0.0.1:0", "--kme-a", "127.0.0.1:0", "--kme-b", "127.0.0.1:0", "--dir", stateDir, "--json")
	cmd.Env = append(os.Environ(), "QSHIELD_CA_KEY=")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start serve: %v", err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		var buf []byte
		for sc.Scan() {
			buf = append(buf, sc.Bytes()...)
			if sc.Text() == "}" {
				lines <- string(buf)
				buf = nil
			}
		}
	}()
	select {
	case l := <-lines:
		var info struct{ URL string }
		if err := json.Unmarshal([]byte(l), &info); err != nil || info.URL == "" {
			t.Fatalf("serve printed %q: %v", l, err)
		}
		return &serveProc{cmd: cmd, url: info.URL}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("serve did not start within 60 s")
	}
	return nil
}

// TestCrashRecovery kills `qshield serve` with SIGKILL while concurrent
// clients post transfers, restarts it, retries the unacknowledged requests
// with their idempotency keys, and checks that every acknowledged transfer is
// present exactly once, retries applied at most once, and money is conserved.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test builds and runs the binary; skipped in -short")
	}
	bin := buildBinary(t)
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			dsn := b.DSN(t)
			state := t.TempDir()
			const accounts = 8
			const initial = 1_000_000
			ctx := context.Background()

			type attempt struct {
				key   string
				req   server.TransferRequest
				acked bool
			}
			var mu sync.Mutex
			var attempts []*attempt

			for round := 0; round < 3; round++ {
				p := startServe(t, bin, dsn, state)
				tlsCfg, err := platform.LoadClientTLS(state)
				if err != nil {
					t.Fatal(err)
				}
				c := client.New(p.url, tlsCfg)
				if round == 0 {
					if _, err := c.CreateAccount(ctx, server.AccountRequest{ID: "bank", Owner: "bank", Kind: ledger.KindSystem, Currency: "EUR", AllowNegative: true}); err != nil {
						t.Fatal(err)
					}
					for i := 0; i < accounts; i++ {
						id := fmt.Sprintf("acct-%d", i)
						if _, err := c.CreateAccount(ctx, server.AccountRequest{ID: id, Owner: id, Kind: ledger.KindUser, Currency: "EUR"}); err != nil {
							t.Fatal(err)
						}
						if _, _, err := c.Transfer(ctx, "fund-"+id, server.TransferRequest{From: "bank", To: id, Amount: initial, Currency: "EUR"}); err != nil {
							t.Fatal(err)
						}
					}
				}
				// Retry every unacknowledged request from earlier rounds.
				mu.Lock()
				for _, a := range attempts {
					if a.acked {
						continue
					}
					if _, _, err := c.Transfer(ctx, a.key, a.req); err == nil || client.ProblemCode(err) == "insufficient_funds" {
						a.acked = err == nil
					}
				}
				mu.Unlock()

				// Concurrent clients; kill the server mid-stream.
				stop := make(chan struct{})
				var wg sync.WaitGroup
				for w := 0; w < 8; w++ {
					wg.Add(1)
					go func(w int) {
						defer wg.Done()
						rng := rand.New(rand.NewPCG(uint64(round), uint64(w)))
						for n := 0; ; n++ {
							select {
							case <-stop:
								return
							default:
							}
							from, to := rng.IntN(accounts), rng.IntN(accounts-1)
							if to >= from {
								to++
							}
							a := &attempt{key: fmt.Sprintf("r%d-w%d-%d", round, w, n), req: server.TransferRequest{
								From: fmt.Sprintf("acct-%d", from), To: fmt.Sprintf("acct-%d", to), Amount: int64(1 + rng.IntN(5000)), Currency: "EUR"}}
							mu.Lock()
							attempts = append(attempts, a)
							mu.Unlock()
							_, _, err := c.Transfer(ctx, a.key, a.req)
							if err == nil {
								mu.Lock()
								a.acked = true
								mu.Unlock()
							} else if client.ProblemCode(err) == "" {
								return // connection broken: the server is gone
							}
						}
					}(w)
				}
				time.Sleep(time.Duration(300+rand.IntN(400)) * time.Millisecond)
				if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				_ = p.cmd.Wait()
				close(stop)
				wg.Wait()
				c.Close()
			}

			// Final retry round on a restarted server, then inspect the database.
			p := startServe(t, bin, dsn, state)
			tlsCfg, _ := platform.LoadClientTLS(state)
			c := client.New(p.url, tlsCfg)
			// A client that honours 429 (the server rate-limits each
			// principal): wait as told and retry, for at most a minute.
			// Without this, a stored transfer whose retry met the limit
			// counted as unacknowledged.
			retryUntil := time.Now().Add(time.Minute)
			retry := func(a *attempt) error {
				for {
					_, _, err := c.Transfer(ctx, a.key, a.req)
					var he *httpx.Error
					if !errors.As(err, &he) || he.Status != http.StatusTooManyRequests || time.Now().After(retryUntil) {
						return err
					}
					time.Sleep(max(he.RetryAfter, 100*time.Millisecond))
				}
			}
			for _, a := range attempts {
				if !a.acked {
					if err := retry(a); err == nil {
						a.acked = true
					} else if client.ProblemCode(err) != "insufficient_funds" {
						t.Logf("final retry of %s: %v", a.key, err)
					}
				}
			}
			c.Close()
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			_ = p.cmd.Wait()

			db, err := sqldb.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			led, err := ledger.Open(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			defer led.Close()
			acked := 0
			for _, a := range attempts {
				tr, err := led.TransferByKey(ctx, a.key)
				if a.acked {
					acked++
					if err != nil {
						t.Fatalf("acknowledged transfer %s is missing: %v", a.key, err)
					}
					if tr.Amount != a.req.Amount || tr.From != a.req.From || tr.To != a.req.To {
						t.Fatalf("transfer %s stored as %+v, requested %+v", a.key, tr, a.req)
					}
				}
			}
			var n int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM ledger_transfers WHERE idempotency_key LIKE 'r%'`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != acked {
				t.Fatalf("%d transfers stored, %d acknowledged (each key applies at most once)", n, acked)
			}
			total := int64(0)
			for i := 0; i < accounts; i++ {
				a, err := led.Account(ctx, fmt.Sprintf("acct-%d", i))
				if err != nil {
					t.Fatal(err)
				}
				if a.Balance < 0 {
					t.Fatalf("%s is negative: %d", a.ID, a.Balance)
				}
				total += a.Balance
			}
			if total != accounts*initial {
				t.Fatalf("money not conserved: %d, want %d", total, accounts*initial)
			}
			// Every transfer that survived the crashes was audited exactly
			// once in its own transaction: `audit verify` checks the log and
			// reconciles it with the ledger (exit status 1 on any mismatch).
			out, err := exec.Command(bin, "audit", "verify", "--db", dsn, "--json").CombinedOutput()
			if err != nil {
				t.Fatalf("audit verify after the crashes: %v\n%s", err, out)
			}
			var vr struct {
				OK        bool `json:"ok"`
				Reconcile struct {
					Transfers int `json:"transfers"`
				} `json:"reconcile"`
			}
			if err := json.Unmarshal(out, &vr); err != nil || !vr.OK || vr.Reconcile.Transfers < acked {
				t.Fatalf("audit verify after the crashes: %s (%v)", out, err)
			}
			t.Logf("%s: %d attempts, %d acknowledged and stored exactly once, total conserved", b.Name, len(attempts), acked)
		})
	}
}
