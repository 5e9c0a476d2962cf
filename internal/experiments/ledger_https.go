package experiments

import (
	"context"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/internal/client"
	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
)

// HTTPSTarget is the ledger experiment's case (c): transfers through the
// platform's HTTPS API (TLS 1.3, mutual TLS with a certificate from a CA,
// JSON, Idempotency-Key), with the ledger on a fresh SQLite file.
func HTTPSTarget() LoadTarget {
	return LoadTarget{Name: "https (sqlite)", Open: func(ctx context.Context, env *experiment.Env, accounts int) (TransferFunc, func(), error) {
		dir, err := os.MkdirTemp("", "qshield-ledger-https-*")
		if err != nil {
			return nil, nil, err
		}
		cleanup := []func(){func() { os.RemoveAll(dir) }}
		undo := func() {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
		fail := func(err error) (TransferFunc, func(), error) { undo(); return nil, nil, err }
		db, err := sqldb.Open(ctx, filepath.Join(dir, "ledger.db"))
		if err != nil {
			return fail(err)
		}
		cleanup = append(cleanup, func() { db.Close() })
		led, err := PrepareLoadLedger(ctx, db, accounts)
		if err != nil {
			return fail(err)
		}
		cleanup = append(cleanup, func() { led.Close() })
		key := make([]byte, 32)
		rand.Read(key)
		enc, _ := pki.RawKey(key)
		ca, err := pki.NewCA(ctx, db, "bench", pki.Options{}, enc)
		if err != nil {
			return fail(err)
		}
		srvCert, err := ca.IssueTLS(ctx, pki.RoleServer, "localhost", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
		if err != nil {
			return fail(err)
		}
		cliCert, err := ca.IssueTLS(ctx, pki.RoleClient, "bench-client", nil, nil)
		if err != nil {
			return fail(err)
		}
		s, err := server.New(server.Config{TLS: ca.ServerTLS(ctx, srvCert)})
		if err != nil {
			return fail(err)
		}
		(&server.LedgerAPI{Ledger: led, RequireClientCert: true}).Register(s)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fail(err)
		}
		sctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.Run(sctx, ln) }()
		cleanup = append(cleanup, func() { stop(); <-done })
		c := client.New("https://localhost:"+portOf(ln), ca.ClientTLS(ctx, cliCert, "localhost"))
		cleanup = append(cleanup, c.Close)
		return func(ctx context.Context, from, to string, amount int64, key string) error {
			_, _, err := c.Transfer(ctx, key, server.TransferRequest{From: from, To: to, Amount: amount, Currency: LoadCurrency})
			return err
		}, undo, nil
	}}
}

func portOf(ln net.Listener) string {
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}
