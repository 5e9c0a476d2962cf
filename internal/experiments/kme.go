package experiments

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/kme"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/sqldb"
)

// KMEExperiment measures ETSI GS QKD 014 key delivery: a master SAE calls
// enc_keys at KME A (which reserves the keys at KME B over the KME-to-KME
// channel) and its slave SAE calls dec_keys at KME B, over mutual TLS on
// loopback, with 1 and 128 keys per request.
func KMEExperiment() experiment.Spec {
	return experiment.Spec{
		Name:    "kme",
		Summary: "ETSI GS QKD 014 enc_keys + dec_keys throughput and latency over mutual TLS on loopback (1 and 128 keys per request)",
		Params: []experiment.Param{
			{Name: "duration", Default: "5s", Usage: "measuring time per cell"},
			{Name: "concurrency", Default: "4,16", Usage: "SAE pairs working in parallel (comma-separated list)"},
			{Name: "batches", Default: "1,128", Usage: "keys per request"},
			{Name: "pool", Default: "1000000", Usage: "most 256-bit keys' worth of material deposited in each KME before a cell (a cell stops early if its pool runs dry; with segment=256 at most 25,000 × (keys/request + 1))"},
			{Name: "segment", Default: "65536", Usage: "bits per stored unit: 65536 fills the pools as qshield serve does (link blocks joined by kme.JoinKeys, cut into 64-kbit segments); 256 stores every 256-bit key as its own row"},
			{Name: "http2", Default: "true", Usage: "SAE clients use HTTP/2 (false: HTTP/1.1 keep-alive)"},
		},
		Run: runKME,
	}
}

type kmeCell struct {
	Keys        int           `json:"keys_per_request"`
	Concurrency int           `json:"concurrency"`
	Elapsed     time.Duration `json:"elapsed_ns"`
	RoundTrips  int64         `json:"round_trips"` // enc_keys + dec_keys pairs
	Requests    int64         `json:"requests"`    // ETSI calls (2 per round trip)
	Errors      int64         `json:"errors"`
	FirstErr    string        `json:"first_error,omitempty"`
	ReqPerSec   float64       `json:"requests_per_s"`
	RTPerSec    float64       `json:"round_trips_per_s"`
	KeysPerSec  float64       `json:"keys_per_s"`
	EncP50      time.Duration `json:"enc_p50_ns"`
	EncP99      time.Duration `json:"enc_p99_ns"`
	DecP50      time.Duration `json:"dec_p50_ns"`
	DecP99      time.Duration `json:"dec_p99_ns"`
	RTP99       time.Duration `json:"round_trip_p99_ns"`
	// CPUPerRT is the process CPU time (KMEs, database and SAE clients
	// together) per round trip; CoresUsed the average cores busy.
	CPUPerRT  time.Duration `json:"cpu_per_round_trip_ns"`
	CoresUsed float64       `json:"cores_used"`
}

// kmeCPU returns the process's user+system CPU time.
func kmeCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func runKME(ctx context.Context, env *experiment.Env) (*experiment.Result, error) {
	dur, err := env.Duration("duration")
	if err != nil {
		return nil, err
	}
	concs, err := kmeIntList(env.String("concurrency"))
	if err != nil {
		return nil, fmt.Errorf("parameter concurrency: %w", err)
	}
	batches, err := kmeIntList(env.String("batches"))
	if err != nil {
		return nil, fmt.Errorf("parameter batches: %w", err)
	}
	poolN, err := env.Int("pool")
	if err != nil {
		return nil, err
	}
	h2 := env.String("http2") != "false"
	seg, err := env.Int("segment")
	if err != nil {
		return nil, err
	}
	if seg < 256 || seg%8 != 0 {
		return nil, fmt.Errorf("parameter segment: %d is not a multiple of 8 of at least 256", seg)
	}
	var cells []kmeCell
	for _, b := range batches {
		for _, c := range concs {
			n := poolN
			if seg == 256 {
				n = min(poolN, 25000*(b+1)) // a row per key: fill only what a cell can use
			}
			cell, err := kmeCellRun(ctx, env, b, c, dur, n, seg, h2)
			if err != nil {
				return nil, err
			}
			cells = append(cells, cell)
		}
	}
	tab := experiment.Table{
		Title:  "ETSI GS QKD 014 over mutual TLS 1.3 on loopback (enc_keys at KME A + dec_keys at KME B)",
		Header: []string{"keys/request", "SAE pairs", "ETSI requests/s", "round trips/s", "keys/s", "enc p50", "enc p99", "dec p50", "dec p99", "errors", "CPU/round trip", "cores used"},
	}
	plot := experiment.Plot{File: "kme.png", Title: "ETSI 014 keys delivered per second", XLabel: "concurrent SAE pairs", YLabel: "keys/s (to both SAEs)", LogY: true}
	for _, b := range batches {
		s := experiment.Series{Name: fmt.Sprintf("%d keys/request", b)}
		for _, c := range cells {
			if c.Keys == b {
				s.X = append(s.X, float64(c.Concurrency))
				s.Y = append(s.Y, c.KeysPerSec)
			}
		}
		plot.Series = append(plot.Series, s)
	}
	for _, c := range cells {
		tab.AddRow(c.Keys, c.Concurrency, c.ReqPerSec, c.RTPerSec, c.KeysPerSec, c.EncP50, c.EncP99, c.DecP50, c.DecP99, c.Errors, c.CPUPerRT, c.CoresUsed)
	}
	tab.Notes = append(tab.Notes,
		"A round trip is one enc_keys call by the master SAE at KME A (which first reserves the keys at KME B over the KME-to-KME mutual-TLS channel and commits to the database) followed by one dec_keys call by the slave SAE at KME B; an ETSI request is either call.",
		"Targets: ≥ 2,000 requests/s with 1 key, ≥ 50,000 keys/s with 128 keys per request, p99 < 10 ms.",
		"CPU/round trip is the whole process (both KMEs, the database driver and the SAE clients); cores used below the machine's cores means the run waited on something else (fsync, other load).",
		"Keys are 256 bits; the pools are in one SQLite database (WAL, synchronous=FULL) unless --db names another; every delivery is committed before it is answered.",
		fmt.Sprintf("Pools stored in units of %d bits (65536: as qshield serve stores them, keys carved from 64-kbit segments).", seg))
	return &experiment.Result{Name: "kme", Title: "ETSI GS QKD 014 key delivery", Tables: []experiment.Table{tab}, Plots: []experiment.Plot{plot}, Data: cells}, nil
}

func kmeIntList(s string) ([]int, error) {
	var out []int
	var cur, digits int
	flush := func() error {
		if digits == 0 {
			return errors.New("empty element")
		}
		if cur <= 0 {
			return fmt.Errorf("%d is not positive", cur)
		}
		out = append(out, cur)
		cur, digits = 0, 0
		return nil
	}
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			if digits >= 7 {
				return nil, fmt.Errorf("%q: number too large", s)
			}
			cur = cur*10 + int(r-'0')
			digits++
		case r == ',':
			if err := flush(); err != nil {
				return nil, fmt.Errorf("%q: %w", s, err)
			}
		case r == ' ':
		default:
			return nil, fmt.Errorf("%q: unexpected %q", s, r)
		}
	}
	if err := flush(); err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	return out, nil
}

// kmeCellRun starts a fresh pair of KMEs, fills them, and runs one cell.
func kmeCellRun(ctx context.Context, env *experiment.Env, batch, conc int, dur time.Duration, poolN, seg int, h2 bool) (kmeCell, error) {
	cell := kmeCell{Keys: batch, Concurrency: conc}
	dsn := env.DB
	if dsn == "" {
		dir, err := os.MkdirTemp("", "qshield-kme-exp-")
		if err != nil {
			return cell, err
		}
		defer os.RemoveAll(dir)
		dsn = filepath.Join(dir, "kme.db")
	}
	db, err := sqldb.Open(ctx, dsn)
	if err != nil {
		return cell, err
	}
	defer db.Close()
	var raw [32]byte
	rand.Read(raw[:])
	caKey, err := pki.RawKey(raw[:])
	if err != nil {
		return cell, err
	}
	ca, err := pki.OpenOrCreateCA(ctx, db, fmt.Sprintf("kme-exp-%x", raw[:4]), pki.Options{}, caKey)
	if err != nil {
		return cell, fmt.Errorf("kme experiment: CA: %w", err)
	}
	var master [32]byte
	rand.Read(master[:])
	saesA := make([]string, conc)
	saesB := make([]string, conc)
	for i := range saesA {
		saesA[i] = fmt.Sprintf("SAE_A%d", i)
		saesB[i] = fmt.Sprintf("SAE_B%d", i)
	}
	suffix := fmt.Sprintf("%x", raw[4:8]) // fresh KME IDs: the DB may be shared
	p, err := kme.StartPair(ctx, db, kme.PairConfig{
		CA: ca, MasterKey: master[:],
		A:           kme.SiteConfig{KMEID: "KME_A_" + suffix, SAEs: saesA},
		B:           kme.SiteConfig{KMEID: "KME_B_" + suffix, SAEs: saesB},
		MaxKeyCount: poolN, SegmentBits: seg, ReconcileEvery: -1,
		Logger: env.Log,
	})
	if err != nil {
		return cell, err
	}
	defer p.Close()
	// Fill both pools: with segments as the platform's link does (a block
	// of 256-bit keys joined into one key, cut into segments), otherwise a
	// row per 256-bit key.
	depA, depB := qkd.Sink(p.A.Deposit), qkd.Sink(p.B.Deposit)
	block := 5000
	if seg > 256 {
		depA, depB, block = kme.JoinKeys(depA), kme.JoinKeys(depB), 4096
	}
	bar := env.Progress.Start(fmt.Sprintf("filling the key pools (%d keys/request)", batch), int64(poolN), "keys")
	for done := 0; done < poolN; {
		n := min(block, poolN-done)
		keys := qkd.RandomKeys(n, 32)
		if err := depA(ctx, keys); err != nil {
			return cell, err
		}
		if err := depB(ctx, keys); err != nil {
			return cell, err
		}
		done += n
		bar.Add(int64(n))
	}
	bar.Done()

	type worker struct {
		m, s       *etsi014.Client
		master     string
		slave      string
		enc, dec   []time.Duration
		roundtrips []time.Duration
	}
	ws := make([]*worker, conc)
	for i := range ws {
		mt, err := p.ClientTLS(ctx, saesA[i])
		if err != nil {
			return cell, err
		}
		st, err := p.ClientTLS(ctx, saesB[i])
		if err != nil {
			return cell, err
		}
		newClient := func(url string, tc *tls.Config) *etsi014.Client {
			if h2 {
				return etsi014.New(url, tc)
			}
			tr := &http.Transport{TLSClientConfig: tc.Clone(), MaxIdleConnsPerHost: 4}
			return etsi014.NewWithHTTPClient(url, &http.Client{Transport: tr, Timeout: 30 * time.Second})
		}
		ws[i] = &worker{m: newClient(p.AURL, mt), s: newClient(p.BURL, st), master: saesA[i], slave: saesB[i]}
		// Warm up: TLS handshakes and one delivery.
		ks, err := ws[i].m.EncKeys(ctx, ws[i].slave, 1, 0)
		if err != nil {
			return cell, fmt.Errorf("kme experiment: warm-up: %w", err)
		}
		if _, err := ws[i].s.DecKeys(ctx, ws[i].master, ks[0].ID); err != nil {
			return cell, fmt.Errorf("kme experiment: warm-up: %w", err)
		}
	}
	var errs atomic.Int64
	var firstErr atomic.Value
	rctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	bar = env.Progress.Start(fmt.Sprintf("ETSI 014, %d keys/request, %d SAE pairs", batch, conc), int64(dur/time.Second), "s")
	start := time.Now()
	cpu0 := kmeCPU()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids := make([]string, 0, batch)
			for rctx.Err() == nil {
				t0 := time.Now()
				ks, err := w.m.EncKeys(ctx, w.slave, batch, 0)
				t1 := time.Now()
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					if errors.Is(err, etsi014.ErrUnavailable) {
						cancel() // pool exhausted: stop the cell
					}
					continue
				}
				ids = ids[:0]
				for _, k := range ks {
					ids = append(ids, k.ID)
				}
				if _, err := w.s.DecKeys(ctx, w.master, ids...); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				t2 := time.Now()
				w.enc = append(w.enc, t1.Sub(t0))
				w.dec = append(w.dec, t2.Sub(t1))
				w.roundtrips = append(w.roundtrips, t2.Sub(t0))
			}
		}()
	}
	stopTick := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopTick:
				return
			case <-t.C:
				bar.Add(1)
			}
		}
	}()
	wg.Wait()
	close(stopTick)
	bar.Done()
	cell.Elapsed = time.Since(start)
	cpu := kmeCPU() - cpu0
	var enc, dec, rt []time.Duration
	for _, w := range ws {
		enc = append(enc, w.enc...)
		dec = append(dec, w.dec...)
		rt = append(rt, w.roundtrips...)
		w.m.CloseIdleConnections()
		w.s.CloseIdleConnections()
	}
	cell.RoundTrips = int64(len(rt))
	cell.Requests = 2 * cell.RoundTrips
	cell.Errors = errs.Load()
	if v := firstErr.Load(); v != nil {
		cell.FirstErr = v.(string)
	}
	secs := cell.Elapsed.Seconds()
	cell.ReqPerSec = float64(cell.Requests) / secs
	cell.RTPerSec = float64(cell.RoundTrips) / secs
	cell.KeysPerSec = float64(cell.RoundTrips*int64(batch)) / secs
	cell.EncP50, cell.EncP99 = kmePct(enc, 0.50), kmePct(enc, 0.99)
	cell.DecP50, cell.DecP99 = kmePct(dec, 0.50), kmePct(dec, 0.99)
	cell.RTP99 = kmePct(rt, 0.99)
	if cell.RoundTrips > 0 {
		cell.CPUPerRT = cpu / time.Duration(cell.RoundTrips)
	}
	cell.CoresUsed = cpu.Seconds() / secs
	env.Log.Info("kme cell", "keys", batch, "concurrency", conc, "req/s", cell.ReqPerSec, "keys/s", cell.KeysPerSec, "enc_p99", cell.EncP99, "dec_p99", cell.DecP99, "errors", cell.Errors, "first_error", cell.FirstErr)
	return cell, nil
}

func kmePct(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q * float64(len(s)-1))
	return s[i]
}
