// Command qshield runs the qshield payment-security platform: the server, the
// device-side tools (gateway, POS, charger, phone, scanner), the ledger, the
// demo and the experiments. Every subcommand lives in internal/cli; the
// command vocabulary and exit statuses are in docs/CLI.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/qshield/qshield/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, cli.NewGlobals(), os.Args[1:])
	stop()
	os.Exit(code)
}
