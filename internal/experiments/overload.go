package experiments

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/internal/platform"
)

// OverloadExperiment measures what a node costs per open connection and
// how it behaves when more clients arrive than it serves: the server is a
// separate `qshield serve` process (so its memory is its own), on a fresh
// SQLite database, HTTPS with mutual TLS.
func OverloadExperiment() experiment.Spec {
	return experiment.Spec{
		Name:    "overload",
		Summary: "server memory per open connection (up to 2,000) and load shedding: goodput, 503s and latency with and without a concurrency cap",
		Params: []experiment.Param{
			{Name: "conns", Default: "0,500,1000,2000", Usage: "idle keep-alive connection counts for the memory table"},
			{Name: "clients", Default: "64,500,2000", Usage: "concurrent clients for the shedding table"},
			{Name: "duration", Default: "10s", Usage: "length of each shedding cell"},
			{Name: "max-in-flight", Default: "64", Usage: "the node's concurrency cap in the capped runs"},
		},
		Run: runOverload,
	}
}

// node is a `qshield serve` child process.
type node struct {
	cmd  *exec.Cmd
	url  string
	tls  *tls.Config
	dir  string
	done chan error
}

func startNode(ctx context.Context, dir string, extra ...string) (*node, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := append([]string{"--json", "serve", "--db", filepath.Join(dir, "q.db"), "--state-dir", dir,
		"--listen", "127.0.0.1:0", "--kme-a", "127.0.0.1:0", "--kme-b", "127.0.0.1:0", "--no-qkd", "--log-level", "error"}, extra...)
	cmd := exec.CommandContext(ctx, exe, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	n := &node{cmd: cmd, dir: dir, done: make(chan error, 1)}
	// `serve --json` prints one JSON object with the URL once it listens.
	dec := json.NewDecoder(bufio.NewReader(out))
	var info struct {
		URL string `json:"url"`
	}
	if err := dec.Decode(&info); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("qshield serve did not start (%v): %s", err, stderr.String())
	}
	go func() { io.Copy(io.Discard, out); n.done <- cmd.Wait() }()
	n.url = info.URL
	if n.tls, err = platform.LoadClientTLS(dir); err != nil {
		n.stop()
		return nil, err
	}
	return n, nil
}

func (n *node) stop() {
	_ = n.cmd.Process.Signal(os.Interrupt)
	select {
	case <-n.done:
	case <-time.After(15 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// rssKiB reads the node's resident set size.
func (n *node) rssKiB() (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, errors.New("no VmRSS")
}

func (n *node) client(conns int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: n.tls.Clone(), MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: time.Minute,
	}}
}

func (n *node) post(ctx context.Context, c *http.Client, path, key, body string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", n.url+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func runOverload(ctx context.Context, env *experiment.Env) (*experiment.Result, error) {
	conns, err := intListZero(env.String("conns"))
	if err != nil {
		return nil, fmt.Errorf("parameter conns: %w", err)
	}
	clients, err := intList(env.String("clients"))
	if err != nil {
		return nil, fmt.Errorf("parameter clients: %w", err)
	}
	dur, err := env.Duration("duration")
	if err != nil || dur <= 0 {
		return nil, fmt.Errorf("parameter duration: want a positive duration")
	}
	cap, err := env.Int("max-in-flight")
	if err != nil || cap < 1 {
		return nil, fmt.Errorf("parameter max-in-flight: want a positive integer")
	}
	res := &experiment.Result{Name: "overload", Title: "A node under many connections and overload"}

	// Memory per idle keep-alive connection.
	dir, err := os.MkdirTemp("", "qshield-overload-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	n, err := startNode(ctx, dir)
	if err != nil {
		return nil, err
	}
	mem := experiment.Table{Title: "Server memory with idle keep-alive HTTPS connections (each made one request)",
		Header: []string{"connections", "server RSS", "per connection"}}
	plot := experiment.Plot{File: "overload-memory.png", Title: "Server RSS by open connections", XLabel: "open connections", YLabel: "RSS (MiB)"}
	series := experiment.Series{Name: "qshield serve", Points: true}
	var base int
	memData := []map[string]any{}
	slices.Sort(conns)
	var held []*http.Client
	open := 0
	for _, c := range conns {
		if c > open {
			hc := n.client(c - open)
			var wg sync.WaitGroup
			var fails atomic.Int64
			var firstErr atomic.Value
			// A slow request holds its connection, so concurrent
			// requests open one connection each (the listen backlog
			// refuses bursts, hence the paced start and the retries).
			for i := 0; i < c-open; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for attempt := 0; ; attempt++ {
						req, _ := http.NewRequestWithContext(ctx, "GET", n.url+"/healthz", nil)
						resp, err := hc.Do(req)
						if err == nil {
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							return
						}
						if attempt == 4 {
							fails.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
							return
						}
						time.Sleep(100 * time.Millisecond)
					}
				}()
				if i%50 == 49 {
					time.Sleep(20 * time.Millisecond)
				}
			}
			wg.Wait()
			if f := fails.Load(); f > 0 {
				n.stop()
				return nil, fmt.Errorf("%d of %d connections failed (first: %v)", f, c-open, firstErr.Load())
			}
			held = append(held, hc)
			open = c
		}
		time.Sleep(time.Second)
		rss, err := n.rssKiB()
		if err != nil {
			n.stop()
			return nil, err
		}
		if c == 0 {
			base = rss
		}
		per := "—"
		if c > 0 {
			per = fmt.Sprintf("%.1f KiB", float64(rss-base)/float64(c))
		}
		mem.AddRow(c, fmt.Sprintf("%.1f MiB", float64(rss)/1024), per)
		series.X = append(series.X, float64(c))
		series.Y = append(series.Y, float64(rss)/1024)
		memData = append(memData, map[string]any{"connections": c, "rss_kib": rss})
	}
	for _, hc := range held {
		hc.CloseIdleConnections()
	}
	n.stop()
	plot.Series = append(plot.Series, series)
	res.Tables = append(res.Tables, mem)
	res.Plots = append(res.Plots, plot)

	// Shedding: transfers from many clients, uncapped and capped.
	shed := experiment.Table{Title: fmt.Sprintf("Transfers through the HTTPS API for %s, SQLite, no cap vs --max-in-flight %d --queue-timeout 500ms", dur, cap),
		Header: []string{"node", "clients", "ok/s", "503/s", "other errors", "p50 ok", "p99 ok", "max RSS"}}
	var shedData []map[string]any
	for _, mode := range []struct {
		name string
		args []string
	}{
		{"no cap", []string{"--max-in-flight", "-1", "--max-conns", "-1"}},
		{fmt.Sprintf("cap %d", cap), []string{"--max-in-flight", strconv.Itoa(cap), "--queue-timeout", "500ms"}},
	} {
		for _, c := range clients {
			d, err := os.MkdirTemp("", "qshield-overload-*")
			if err != nil {
				return nil, err
			}
			row, err := shedCell(ctx, d, mode.args, c, dur)
			os.RemoveAll(d)
			if err != nil {
				return nil, fmt.Errorf("%s, %d clients: %w", mode.name, c, err)
			}
			secs := dur.Seconds()
			shed.AddRow(mode.name, c, fmt.Sprintf("%.0f", float64(row.ok)/secs), fmt.Sprintf("%.0f", float64(row.unavailable)/secs),
				row.other, experiment.FormatDuration(row.p50), experiment.FormatDuration(row.p99), fmt.Sprintf("%.1f MiB", float64(row.maxRSS)/1024))
			shedData = append(shedData, map[string]any{"node": mode.name, "clients": c, "ok": row.ok, "unavailable": row.unavailable,
				"other": row.other, "p50_ns": row.p50, "p99_ns": row.p99, "max_rss_kib": row.maxRSS})
		}
	}
	shed.Notes = append(shed.Notes, "ok: 201 Created; 503: answered overloaded with Retry-After (clients do not retry here); other: anything else, including client-side timeouts (30 s).")
	res.Tables = append(res.Tables, shed)
	res.Data = map[string]any{"memory": memData, "shedding": shedData}
	return res, nil
}

type shedRow struct {
	ok, unavailable, other int64
	p50, p99               time.Duration
	maxRSS                 int
}

func shedCell(ctx context.Context, dir string, args []string, clients int, dur time.Duration) (shedRow, error) {
	var row shedRow
	n, err := startNode(ctx, dir, args...)
	if err != nil {
		return row, err
	}
	defer n.stop()
	hc := n.client(clients)
	defer hc.CloseIdleConnections()
	for _, a := range []string{`{"id":"bank","owner":"bank","kind":"system","currency":"EUR","allow_negative":true}`, `{"id":"shop","owner":"shop","kind":"merchant","currency":"EUR"}`} {
		if code, err := n.post(ctx, hc, "/v1/accounts", "", a); err != nil || code != 201 {
			return row, fmt.Errorf("create account: %d %v", code, err)
		}
	}
	// Warm up: every client opens its connection (TLS handshake) first, so
	// the measured window is about requests, not handshakes.
	var warm sync.WaitGroup
	for c := 0; c < clients; c++ {
		warm.Add(1)
		go func() {
			defer warm.Done()
			for attempt := 0; attempt < 5; attempt++ {
				req, _ := http.NewRequestWithContext(ctx, "GET", n.url+"/healthz", nil)
				if resp, err := hc.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
		if c%50 == 49 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	warm.Wait()
	cctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	var mu sync.Mutex
	var lat []time.Duration
	var ok, unavail, other atomic.Int64
	var wg sync.WaitGroup
	stopRSS := make(chan struct{})
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		for {
			if r, err := n.rssKiB(); err == nil && r > row.maxRSS {
				row.maxRSS = r
			}
			select {
			case <-stopRSS:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for i := 0; cctx.Err() == nil; i++ {
				start := time.Now()
				code, err := n.post(cctx, hc, "/v1/transfers", fmt.Sprintf("c%d-%d", c, i), `{"from":"bank","to":"shop","amount":1,"currency":"EUR"}`)
				switch {
				case cctx.Err() != nil:
				case err == nil && code == 201:
					ok.Add(1)
					mine = append(mine, time.Since(start))
				case err == nil && code == 503:
					unavail.Add(1)
					time.Sleep(50 * time.Millisecond)
				default:
					other.Add(1)
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(stopRSS)
	<-rssDone
	slices.Sort(lat)
	if len(lat) > 0 {
		row.p50, row.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	row.ok, row.unavailable, row.other = ok.Load(), unavail.Load(), other.Load()
	return row, nil
}

func intListZero(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad count %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}
