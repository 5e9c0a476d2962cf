package cli_test

import (
	"context"
	"github.com/qshield/qshield/watermark"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/qshield/qshield/internal/cli"
	"github.com/qshield/qshield/internal/platform"
)

// TestMain lets the scripts run qshield as a command: testscript re-executes
// this test binary as "qshield", which runs cli.Main exactly as
// cmd/qshield does (exit status included).
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"qshield": func() { os.Exit(cli.Main(context.Background(), cli.NewGlobals(), os.Args[1:])) },
	})
}

// TestScripts runs testdata/script/*.txtar: the command line as a person
// uses it, mistakes included. Scripts that need a platform start one with
// the serve command (below), which sets $SERVER and $ADMIN.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			// Keep every default path (the SQLite database, wallets) inside
			// the script's work directory.
			env.Setenv("HOME", env.WorkDir)
			env.Setenv("XDG_DATA_HOME", filepath.Join(env.WorkDir, ".data"))
			env.Setenv("XDG_CONFIG_HOME", filepath.Join(env.WorkDir, ".config"))
			for _, k := range []string{cli.EnvServer, cli.EnvAdmin, cli.EnvDB, "QSHIELD_CA_KEY", "QSHIELD_PLATFORM_KEY", "QSHIELD_AUDIT_KEY"} {
				env.Setenv(k, "")
			}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){"serve": serveCmd, "freeport": freeportCmd, "waitfile": waitfileCmd},
	})
}

// serveCmd is the script command "serve [qkd] [nochallenges]": it runs the platform in
// this process on a fresh SQLite database in the work directory until the
// script ends, and sets $SERVER (its URL) and $ADMIN (its directory, the
// operator's credentials). With "qkd" the simulated QKD link runs as fast as
// the CPU allows, so that the QMSP gateway gets its keys; with
// "nochallenges" watermark scanner challenges are off (node setting
// watermark_challenges=false; on by default).
func serveCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! serve")
	}
	qkd := platform.QKDConfig{Off: true, ListenA: "127.0.0.1:0", ListenB: "127.0.0.1:0"}
	challengesOff := false
	for _, a := range args {
		switch a {
		case "qkd":
			qkd.Off, qkd.Speedup = false, 0
		case "nochallenges":
			challengesOff = true
		default:
			ts.Fatalf("serve: unknown argument %q", a)
		}
	}
	dir := ts.MkAbs("server")
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		ts.Fatalf("serve: %v", err)
	}
	p, err := platform.Open(ctx, platform.Config{
		DB: filepath.Join(dir, "qshield.db"), StateDir: dir, QKD: qkd, PublicURL: platform.LocalURL(ln.Addr(), false),
		// Each script command is a separate, race-instrumented process
		// started seconds after the last: a scan cannot follow a code within
		// the default ±2 s. The window itself is tested in watermark/service.
		WatermarkWindow:        watermark.Window{MaxAge: time.Minute, MaxLead: time.Minute},
		WatermarkChallengesOff: challengesOff,
		Log:                    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		cancel()
		ln.Close()
		ts.Fatalf("serve: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.Serve(ctx, ln)
	}()
	ts.Defer(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
		p.Close()
	})
	url := p.URL(ln.Addr())
	ts.Setenv("SERVER", url)
	ts.Setenv("ADMIN", dir)
	ts.Logf("platform at %s (%s)", url, strings.TrimPrefix(dir, ts.Getenv("WORK")))
}

// freeportCmd is the script command "freeport NAME...": it sets each $NAME
// to a TCP port free on 127.0.0.1 a moment ago, for processes the script
// starts in the background.
func freeportCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: freeport NAME...")
	}
	for _, name := range args {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			ts.Fatalf("freeport: %v", err)
		}
		ts.Setenv(name, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		ln.Close()
	}
}

// waitfileCmd is the script command "waitfile FILE [PATTERN]": it waits
// (up to a minute) until FILE exists and, with PATTERN, contains it.
func waitfileCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: waitfile FILE [PATTERN]")
	}
	path := ts.MkAbs(args[0])
	deadline := time.Now().Add(time.Minute)
	for {
		b, err := os.ReadFile(path)
		if err == nil && (len(args) == 1 || strings.Contains(string(b), args[1])) {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitfile: %s did not appear (or hold %q) within a minute", args[0], args[1:])
		}
		time.Sleep(100 * time.Millisecond)
	}
}
