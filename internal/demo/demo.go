// Package demo runs qshield end to end: it starts the platform in-process on a
// fresh SQLite file in a temporary directory, listening on loopback with TLS,
// then runs one scenario per scheme through the same clients real devices
// use, each with its attacks. Every step is a row in the printed table; a step
// whose outcome differs from what the scheme must do fails the demo.
package demo

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/internal/client"
	"github.com/qshield/qshield/internal/platform"
)

// Row is one step of a scenario.
type Row struct {
	Scheme  string `json:"scheme"`
	Step    string `json:"step"`
	Outcome string `json:"outcome"`
	Detail  string `json:"detail"`
}

// Env is what a scenario gets: the running platform and an admin client.
type Env struct {
	P      *platform.Platform
	URL    string
	Client *client.Client
	// ClientTLS builds a TLS config for a client presenting cert.
	ClientTLS func(cert tls.Certificate) *tls.Config
	Log       *slog.Logger
	// DataDir is the FVC2002 directory (QSHIELD_FINGERPRINT_DATA), or "" for synthetic prints.
	DataDir string
}

// Scenario is one scheme's demo.
type Scenario struct {
	Name string
	Run  func(ctx context.Context, env *Env) ([]Row, error)
}

// Options configure Run.
type Options struct {
	Log     *slog.Logger
	DataDir string
}

// Run starts a platform in a temporary directory and runs every scenario,
// returning all rows; it stops at the first scenario that fails.
func Run(ctx context.Context, opts Options, scenarios []Scenario) ([]Row, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "qshield-demo-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	p, err := platform.Open(ctx, platform.Config{DB: filepath.Join(dir, "qshield.db"), StateDir: dir, Log: opts.Log,
		QKD: platform.QKDConfig{Speedup: 20}})
	if err != nil {
		return nil, fmt.Errorf("demo: start platform: %w", err)
	}
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Serve(sctx, ln) }()
	defer func() { stop(); <-done }()

	env := &Env{
		P:         p,
		URL:       p.URL(ln.Addr()),
		ClientTLS: func(c tls.Certificate) *tls.Config { return p.ClientTLS(ctx, c) },
		Log:       opts.Log,
		DataDir:   opts.DataDir,
	}
	env.Client = client.New(env.URL, env.ClientTLS(p.AdminCert))
	defer env.Client.Close()
	if err := waitHealthy(ctx, env.Client); err != nil {
		return nil, err
	}
	var rows []Row
	for _, s := range scenarios {
		r, err := s.Run(ctx, env)
		for i := range r {
			if r[i].Scheme == "" {
				r[i].Scheme = s.Name
			}
		}
		rows = append(rows, r...)
		if err != nil {
			return rows, fmt.Errorf("demo: %s: %w", s.Name, err)
		}
	}
	return rows, nil
}

func waitHealthy(ctx context.Context, c *client.Client) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Healthz(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: server did not become healthy: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Table renders rows as one Markdown table per run.
func Table(rows []Row) experiment.Table {
	t := experiment.Table{Title: "qshield demo", Header: []string{"scheme", "step", "outcome", "detail"}}
	for _, r := range rows {
		t.Rows = append(t.Rows, []string{r.Scheme, r.Step, r.Outcome, r.Detail})
	}
	return t
}

// Print writes rows as a Markdown table.
func Print(w io.Writer, rows []Row) error {
	t := Table(rows)
	return t.Markdown(w)
}

// Expect records a step: ok when err matches want ("" = success, else the
// expected problem code or error substring). It returns a non-nil error when
// the outcome is not what the scheme must do.
func Expect(rows *[]Row, step string, err error, want, detail string) error {
	row := Row{Step: step, Detail: detail}
	switch {
	case want == "" && err == nil:
		row.Outcome = "ok"
	case want != "" && err != nil && (client.ProblemCode(err) == want || strings.Contains(err.Error(), want)):
		row.Outcome = "refused (" + want + ")"
		if row.Detail == "" {
			row.Detail = err.Error()
		}
	default:
		row.Outcome = "UNEXPECTED"
		if err != nil {
			row.Detail = err.Error()
		}
		*rows = append(*rows, row)
		if want == "" {
			return fmt.Errorf("%s: %w", step, err)
		}
		return fmt.Errorf("%s: expected refusal %q, got %v", step, want, err)
	}
	*rows = append(*rows, row)
	return nil
}
