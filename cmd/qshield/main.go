// Command qshield runs the qshield payment-security platform: the server, the
// device-side tools (gateway, POS, charger, phone, scanner), the demo and the
// experiments. Every subcommand lives in internal/cli.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/qshield/qshield/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Root(cli.NewGlobals()).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "qshield:", err)
		os.Exit(1)
	}
}
