package experiments

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/camsim"
	"github.com/qshield/qshield/watermark/scan"
	"github.com/qshield/qshield/watermark/trial"
)

// WatermarkExperiment measures watermarked dynamic payment codes (seed 003)
// through the camera simulator: normal payments with the close-scan profile,
// on-site and collaborative theft, theft against distance and burst length,
// share-extraction robustness (JPEG quality, blur, distance) and per-frame
// scan speed at 1280×720 beside the QR decode alone.
func WatermarkExperiment() experiment.Spec {
	return experiment.Spec{
		Name:    "watermark",
		Summary: "watermarked payment codes: payment time, theft success (on-site, collaborative, vs distance/burst), robustness, scan speed",
		Params: []experiment.Param{
			{Name: "trials", Default: "100", Usage: "normal payments (phone slot clock within ±0.5 s of the server's)"},
			{Name: "skew-trials", Default: "15", Usage: "normal payments per clock-skew point (−3 … +3 s)"},
			{Name: "replay-trials", Default: "1000", Usage: "recordings replayed later than the window"},
			{Name: "recapture-trials", Default: "100", Usage: "close re-captures (10–30 cm, 1x/2x) relayed live to a scanner"},
			{Name: "relay-trials", Default: "1000", Usage: "live relays of the phone's exact frames to another scanner within the window"},
			{Name: "challenges", Default: "on", Usage: "scanner challenges (on: the phone binds its shares to the scanner's challenge and the server requires it; off: time binding alone)"},
			{Name: "challenge-delay", Default: "50ms-150ms", Usage: "time from the scanner coming into the phone's front camera's view (its first exposure) to the phone holding its challenge, uniform in this range"},
			{Name: "tune-trials", Default: "8", Usage: "direct scans and re-captures per depth in the trade-off sweep (tuning seed)"},
			{Name: "depths", Default: "0.1,0.15,0.2,0.3", Usage: "ring depths of the trade-off sweep"},
			{Name: "scale-frames", Default: "10", Usage: "frames per (scale, phase) point of the resampling sweep"},
			{Name: "theft-trials", Default: "200", Usage: "on-site and collaborative photo theft trials each"},
			{Name: "sweep-trials", Default: "6", Usage: "theft trials per (lens, distance) point of the sweep"},
			{Name: "sweep-burst", Default: "15", Usage: "longest burst in the sweep (photos at 10/s)"},
			{Name: "robust-trials", Default: "20", Usage: "frames per point of the robustness sweeps"},
			{Name: "speed-frames", Default: "40", Usage: "1280×720 frames timed for the speed table"},
			{Name: "threshold", Default: "6", Usage: "t of the (t, n) sharing"},
			{Name: "shares", Default: "10", Usage: "n of the (t, n) sharing"},
			{Name: "frame-rate", Default: "15", Usage: "display loop frames per second"},
			{Name: "version", Default: "3", Usage: "QR version of every frame"},
			{Name: "max-module-errors", Default: "0.06", Usage: "scanner policy: most misread rings per share (0: off)"},
			{Name: "replay-frames", Default: "1", Usage: "merchant-scanner frames per replayed photo (collaborative theft)"},
			{Name: "timeout", Default: "3s", Usage: "give up a normal payment after this simulated time"},
			{Name: "seed", Default: "1", Usage: "random seed of the reported runs"},
			{Name: "tune-seed", Default: "1001", Usage: "random seed of the tuning sweep (kept apart from the reported runs)"},
		},
		Run: runWatermark,
	}
}

type wmData struct {
	PayTimesMS   []float64   `json:"pay_times_ms"`
	PayFrames    []int       `json:"pay_frames"`
	PayFailures  int         `json:"pay_failures"`
	FailedSetups []wmFailure `json:"failed_setups,omitempty"`
}

// wmFailure records a failed normal payment for diagnosis.
type wmFailure struct {
	Trial  int          `json:"trial"`
	Setup  camsim.Setup `json:"setup"`
	Stats  scan.Stats   `json:"stats"`
	Reason string       `json:"reason"`
}

func runWatermark(ctx context.Context, env *experiment.Env) (*experiment.Result, error) {
	ints := map[string]int{}
	for _, k := range []string{"trials", "skew-trials", "replay-trials", "recapture-trials", "relay-trials", "tune-trials", "scale-frames", "theft-trials", "sweep-trials", "sweep-burst", "robust-trials", "speed-frames", "threshold", "shares", "seed", "tune-seed", "replay-frames"} {
		v, err := env.Int(k)
		if err != nil {
			return nil, err
		}
		if v < 0 {
			return nil, fmt.Errorf("parameter %s: negative", k)
		}
		ints[k] = v
	}
	fps, err := env.Float("frame-rate")
	if err != nil {
		return nil, err
	}
	timeout, err := env.Duration("timeout")
	if err != nil {
		return nil, err
	}
	chOn := env.String("challenges")
	if chOn != "on" && chOn != "off" {
		return nil, fmt.Errorf("parameter challenges: %q is neither on nor off", chOn)
	}
	dlo, dhi, err := wmRange(env.String("challenge-delay"))
	if err != nil {
		return nil, fmt.Errorf("parameter challenge-delay: %w", err)
	}
	p := watermark.DefaultParams()
	p.Threshold, p.Shares, p.FrameRate = ints["threshold"], ints["shares"], fps
	if p.Version, err = env.Int("version"); err != nil {
		return nil, err
	}
	if p.MaxModuleErrors, err = env.Float("max-module-errors"); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(uint64(ints["seed"]), 0x71736869656c64))
	// Tokens and sharing polynomials come from a seeded ChaCha8 stream too, so
	// a run is reproducible from its seed (production uses crypto/rand).
	var chachaSeed [32]byte
	chachaSeed[0], chachaSeed[1] = byte(ints["seed"]), byte(ints["seed"]>>8)
	tokRand := rand.NewChaCha8(chachaSeed)
	close := trial.WithDisplay(camsim.CloseScan(), p)
	thief := trial.WithDisplay(camsim.OnSiteTheft(), p)
	res := &experiment.Result{Name: "watermark", Title: "Watermarked dynamic payment codes (seed 003)"}
	data := &wmData{}
	res.Data = data
	setup := fmt.Sprintf("Layout: QR version %d-%s, mask %d, (t, n) = (%d, %d), %g frames/s display loop, %g mm symbol, depth %.2f. "+
		"Processing times are thread CPU time (clock: %v), one core.",
		p.Version, p.ECLevel, p.Mask, p.Threshold, p.Shares, p.FrameRate, trial.SymbolMM, p.Depth, map[bool]string{true: "CLOCK_THREAD_CPUTIME_ID", false: "wall"}[trial.CPUClock])

	newLoop := func() (*watermark.Loop, error) {
		t0, err := watermark.NewToken(p.TokenLen, tokRand)
		if err != nil {
			return nil, err
		}
		key, err := watermark.NewSlotKey(tokRand)
		if err != nil {
			return nil, err
		}
		return watermark.NewLoop(t0, key, p, tokRand)
	}
	// The server: an in-memory store whose verifier's clock is set to each
	// claim's simulated receipt time.
	srvClock := &wmClock{t: trial.DefaultEpoch}
	store := watermark.NewMemStore()
	issuer := &watermark.Issuer{Store: store, Rand: tokRand, Now: srvClock.now}
	verifier := &watermark.Verifier{Store: store, Threshold: p.Threshold, Now: srvClock.now}
	// Scanner challenges: the platform's master key, the honest merchant
	// scanner A the payer holds the phone to, and scanner B (another
	// merchant's, where a thief's accomplice shows the relayed video).
	chal := &wmChallenges{on: chOn == "on", delayLo: dlo, delayHi: dhi}
	if chal.on {
		chal.master = make([]byte, watermark.ChallengeKeyLen)
		if _, err := io.ReadFull(tokRand, chal.master); err != nil {
			return nil, err
		}
		verifier.ChallengeMaster = chal.master
		if chal.keyA, err = watermark.ScannerChallengeKey(chal.master, "merchant-A"); err != nil {
			return nil, err
		}
		if chal.keyB, err = watermark.ScannerChallengeKey(chal.master, "merchant-B"); err != nil {
			return nil, err
		}
	}
	issue := func(pp watermark.Params, at time.Time) (*watermark.Loop, error) {
		srvClock.t = at
		code, _, err := issuer.Issue(ctx, "payer", 100_00)
		if err != nil {
			return nil, err
		}
		return watermark.NewLoop(code.Token, code.SlotKey, pp, tokRand)
	}
	// verify submits a scanner's result at its simulated receipt time and
	// returns the server's verdict and its CPU time.
	verify := func(r trial.PayResult) (time.Duration, error) {
		srvClock.t = r.Submitted
		runtime.LockOSThread()
		c0 := trial.ThreadCPU()
		_, err := verifier.Verify(ctx, r.Claim(42_00))
		vt := trial.ThreadCPU() - c0
		runtime.UnlockOSThread()
		return vt, err
	}
	at := trial.DefaultEpoch
	nextStart := func() time.Time {
		at = at.Add(2 * time.Minute).Add(time.Duration(rng.Int64N(int64(time.Second))))
		return at
	}

	// 1. Normal payments.
	if ints["trials"] > 0 {
		n := ints["trials"]
		bar := env.Progress.Start("watermark: normal payments", int64(n), "trials")
		var times []time.Duration
		var frames []int
		var cpu time.Duration
		var nframes, ok, reaims int
		for i := 0; i < n; i++ {
			start := nextStart()
			loop, err := issue(p, start)
			if err != nil {
				return nil, err
			}
			ck := chal.atA(trial.Clock{Start: start.Add(time.Second), Skew: time.Duration((rng.Float64() - 0.5) * float64(time.Second)),
				Latency: time.Duration(50+rng.IntN(250)) * time.Millisecond}, rng)
			r, err := trial.Pay(ctx, loop, close, rng, timeout, ck)
			if err != nil {
				return nil, err
			}
			nframes += r.Frames
			cpu += r.Processing
			if r.Reaims > 0 {
				reaims++
			}
			if r.OK {
				// Server verification is part of the payment time.
				vt, verr := verify(r)
				if verr == nil {
					ok++
					times = append(times, r.Elapsed+vt)
					frames = append(frames, r.Frames)
					data.PayTimesMS = append(data.PayTimesMS, float64(r.Elapsed+vt)/1e6)
					data.PayFrames = append(data.PayFrames, r.Frames)
				} else {
					data.PayFailures++
					data.FailedSetups = append(data.FailedSetups, wmFailure{i, r.Setup, r.Stats, verr.Error()})
				}
			} else {
				data.PayFailures++
				data.FailedSetups = append(data.FailedSetups, wmFailure{i, r.Setup, r.Stats, "timeout"})
			}
			bar.Add(1)
		}
		bar.Done()
		slices.Sort(times)
		slices.Sort(frames)
		t := experiment.Table{Title: "Normal payments (close-scan profile, 10–20 cm scanner, 30 fps)",
			Header: []string{"trials", "paid", "success", "median time", "p95 time", "max time", "median frames", "CPU per frame", "target"}}
		t.AddRow(n, ok, wmPct(ok, n), wmQuant(times, 0.5), wmQuant(times, 0.95), wmQuant(times, 1), wmQuantInt(frames, 0.5),
			wmDurDiv(cpu, nframes), "100 %, median ≤ 400 ms, p95 ≤ 700 ms")
		t.Notes = append(t.Notes, setup,
			"Time: from the start of the first camera exposure to the end of processing of the frame that completes the reconstruction (single-core pipeline: a frame is processed once read out and once the previous frame is done), plus the server's verification (not the network's 50–300 ms, which is part of the receipt time the window is checked against). A payment that does not complete within the timeout, or that the server refuses (stale or bad stamps), counts as failed.",
			"Time binding: every frame's share carries its 1 s slot and a tag under the code's slot key; the server accepts T0 only with at least t stamps of slots that ended at most 2 s before, or start at most 2 s after, its receipt. The phone's slot clock is set from the server's time at issue; its residual error is drawn uniformly in ±0.5 s here (the skew table below goes to ±3 s). Payments run on the reporting seed; nothing was tuned on it.",
			chal.note(),
			fmt.Sprintf("The pose (distance, tilt, roll, offset) is drawn once per trial and held; if the scanner has not completed after %v the payer re-aims (a new pose, shares kept): %d of %d trials needed it.", trial.ReaimAfter, reaims, n))
		res.Tables = append(res.Tables, t)
	}

	// 1b. Clock skew between phone and server.
	if err := wmSkew(ctx, env, res, p, close, rng, timeout, ints["skew-trials"], issue, verify, nextStart, chal); err != nil {
		return nil, err
	}
	// 1c. Recordings replayed later than the window.
	if err := wmReplayLater(ctx, env, res, p, rng, ints["replay-trials"], issue, verify, nextStart, chal); err != nil {
		return nil, err
	}
	// 1c'. The phone's exact frames relayed live to another scanner.
	if err := wmRelayNow(ctx, env, res, p, rng, ints["relay-trials"], issue, verify, nextStart, chal); err != nil {
		return nil, err
	}
	// 1d. Close re-capture relayed live, within the window.
	relay := trial.Relay{Thief: trial.WithDisplay(camsim.RecaptureVideo(), p), Lens: -1,
		Scanner: close, Replay: camsim.ReplayDisplay(), Delay: 300 * time.Millisecond, Timeout: timeout}
	if err := wmRecapture(ctx, env, res, p, relay, rng, ints["recapture-trials"], issue, verify, nextStart, chal); err != nil {
		return nil, err
	}
	// 1e. The depth trade-off, on the tuning seed.
	if err := wmTradeoff(ctx, env, res, p, close, relay, ints["tune-seed"], ints["tune-trials"], env.String("depths"), timeout); err != nil {
		return nil, err
	}
	// 1f. Resampling: scale and sub-pixel phase.
	if err := wmScales(env, res, p, ints["scale-frames"], newLoop); err != nil {
		return nil, err
	}

	// 2. Theft.
	if ints["theft-trials"] > 0 {
		n := ints["theft-trials"]
		loop, err := newLoop()
		if err != nil {
			return nil, err
		}
		t := experiment.Table{Title: "Theft (T0 recovered from the stolen photos counts as a theft; target 0)",
			Header: []string{"scenario", "lens", "trials", "thefts", "trials with ≥ 1 share", "mean distinct shares", "max shares"}}
		type agg struct{ n, ok, some, shares, maxs int }
		for _, sc := range []string{"on-site", "collaborative"} {
			bar := env.Progress.Start("watermark: "+sc+" theft", int64(n), "trials")
			per := make([]agg, len(thief.Lenses)+1)
			for i := 0; i < n; i++ {
				lens := rng.IntN(len(thief.Lenses))
				var r trial.TheftResult
				if sc == "on-site" {
					r, err = trial.OnSite(ctx, loop, thief, rng, lens, 0, 0)
				} else {
					r, err = trial.Collaborative(ctx, loop, thief, close, camsim.ReplayDisplay(), rng, lens, 0, 0, max(1, ints["replay-frames"]))
				}
				if err != nil {
					return nil, err
				}
				for _, k := range []int{lens, len(thief.Lenses)} {
					a := &per[k]
					a.n++
					if r.OK {
						a.ok++
					}
					if r.Shares > 0 {
						a.some++
					}
					a.shares += r.Shares
					a.maxs = max(a.maxs, r.Shares)
				}
				bar.Add(1)
			}
			bar.Done()
			for k, a := range per {
				name := "all"
				if k < len(thief.Lenses) {
					name = thief.Lenses[k].Name
				}
				t.AddRow(sc, name, a.n, a.ok, a.some, float64(a.shares)/float64(max(a.n, 1)), a.maxs)
			}
		}
		t.Notes = append(t.Notes,
			fmt.Sprintf("On-site: phone at 1–3 m, 10–45° off-axis, lens drawn among 1x/2x/3x, burst of %d–%d photos at %g/s; the thief runs our extractor with TRY_HARDER. Collaborative: the same kind of photos shown zoomed on another phone and scanned by the close-scan merchant scanner (%d frame(s) per still photo — further frames of a still differ only by sensor noise — into one session). See package camsim for every parameter's source.", thief.Burst[0], thief.Burst[1], thief.CaptureRate, max(1, ints["replay-frames"])),
			fmt.Sprintf("A burst of at most %d photos spans at most %d distinct frames, fewer than t = %d: in this profile the threshold alone guarantees 0 thefts whatever the optics; 'trials with ≥ 1 share' shows how much of the watermark itself survives. The sweep below shows longer bursts.", thief.Burst[1], thief.Burst[1], p.Threshold))
		res.Tables = append(res.Tables, t)
	}

	// 3. Theft against distance and burst length.
	if ints["sweep-trials"] > 0 {
		nt := ints["sweep-trials"]
		maxBurst := ints["sweep-burst"]
		dists := []float64{500, 1000, 1500, 2000, 3000}
		bursts := []int{1, p.Threshold, maxBurst}
		lensIdx := []int{0, 1, 2}
		bar := env.Progress.Start("watermark: theft sweep", int64(len(dists)*len(lensIdx)*nt), "trials")
		t := experiment.Table{Title: fmt.Sprintf("On-site theft success against distance, lens and burst length (%d trials per point)", nt),
			Header: []string{"lens", "distance"}}
		for _, b := range bursts {
			t.Header = append(t.Header, fmt.Sprintf("burst %d", b))
		}
		t.Header = append(t.Header, "shares per photo")
		plot := experiment.Plot{File: "watermark-theft.png", Title: "On-site theft success vs distance",
			XLabel: "distance (m)", YLabel: "theft success rate"}
		loop, err := newLoop()
		if err != nil {
			return nil, err
		}
		for _, li := range lensIdx {
			series := make([]experiment.Series, len(bursts))
			for bi, b := range bursts {
				series[bi] = experiment.Series{Name: fmt.Sprintf("%s, burst %d", thief.Lenses[li].Name, b)}
			}
			for _, d := range dists {
				succ := make([]int, len(bursts))
				shares, photos := 0, 0
				for range nt {
					r, err := trial.OnSite(ctx, loop, thief, rng, li, d, maxBurst)
					if err != nil {
						return nil, err
					}
					if r.OK {
						for bi, b := range bursts {
							if r.SucceededAt <= b {
								succ[bi]++
							}
						}
					}
					shares += r.Shares
					photos += r.SucceededAt
					if !r.OK {
						photos += maxBurst
					}
					bar.Add(1)
				}
				row := []any{thief.Lenses[li].Name, fmt.Sprintf("%.1f m", d/1000)}
				for bi := range bursts {
					row = append(row, wmPct(succ[bi], nt))
					series[bi].X = append(series[bi].X, d/1000)
					series[bi].Y = append(series[bi].Y, float64(succ[bi])/float64(nt))
				}
				row = append(row, fmt.Sprintf("%.2f", float64(shares)/float64(max(photos, 1))))
				t.AddRow(row...)
			}
			plot.Series = append(plot.Series, series...)
		}
		bar.Done()
		t.Notes = append(t.Notes, "Bursts at 10 photos/s from a random point of the loop; 'shares per photo' is distinct valid shares obtained per photo taken (a lower bound on per-photo extraction). The defence's limit: a thief with a 2x/3x lens close enough to resolve about 6 px per module who films at least t distinct frames recovers T0.")
		res.Tables = append(res.Tables, t)
		res.Plots = append(res.Plots, plot)
	}

	// 4. Robustness of share extraction (single frames, close-scan camera).
	if ints["robust-trials"] > 0 {
		n := ints["robust-trials"]
		loop, err := newLoop()
		if err != nil {
			return nil, err
		}
		still := func(setup camsim.Setup) (bool, bool, error) {
			scene := &camsim.Scene{Display: close.Display, Frames: []*image.Gray{loop.Frame(0, 0)}}
			img, err := setup.Camera.Capture(scene, setup.Pose, 0, rng)
			if err != nil {
				return false, false, nil
			}
			ex, err := watermark.NewExtractor(p, false)
			if err != nil {
				return false, false, err
			}
			fr, err := ex.Extract(img)
			return fr.Handle != "", err == nil, nil
		}
		t := experiment.Table{Title: fmt.Sprintf("Share extraction from single frames (close-scan camera at 150 mm unless varied; %d frames per point)", n),
			Header: []string{"varied", "value", "QR decoded", "share extracted"}}
		plot := experiment.Plot{File: "watermark-robustness.png", Title: "Share extraction vs JPEG quality (close-scan camera)",
			XLabel: "JPEG quality", YLabel: "fraction of frames"}
		sq, ss := experiment.Series{Name: "QR decoded"}, experiment.Series{Name: "share extracted"}
		total := 8*n + 6*n + 6*n
		bar := env.Progress.Start("watermark: robustness", int64(total), "frames")
		run := func(label, value string, mod func(*camsim.Setup)) (float64, float64, error) {
			q, s := 0, 0
			for range n {
				su, err := close.Draw(rng, 0, 150)
				if err != nil {
					return 0, 0, err
				}
				mod(&su)
				a, b, err := still(su)
				if err != nil {
					return 0, 0, err
				}
				if a {
					q++
				}
				if b {
					s++
				}
				bar.Add(1)
			}
			t.AddRow(label, value, wmPct(q, n), wmPct(s, n))
			return float64(q) / float64(n), float64(s) / float64(n), nil
		}
		for _, jq := range []int{30, 40, 50, 60, 70, 80, 90, 95} {
			a, b, err := run("JPEG quality", fmt.Sprint(jq), func(s *camsim.Setup) { s.Camera.JPEGQuality = jq })
			if err != nil {
				return nil, err
			}
			sq.X, sq.Y = append(sq.X, float64(jq)), append(sq.Y, a)
			ss.X, ss.Y = append(ss.X, float64(jq)), append(ss.Y, b)
		}
		for _, bl := range []float64{0.5, 1, 1.5, 2, 2.5, 3} {
			if _, _, err := run("optics blur σ", fmt.Sprintf("%.1f px", bl), func(s *camsim.Setup) { s.Camera.BlurPx = bl }); err != nil {
				return nil, err
			}
		}
		for _, d := range []float64{100, 150, 200, 250, 300, 400} {
			if _, _, err := run("distance", fmt.Sprintf("%.0f mm", d), func(s *camsim.Setup) {
				s.Pose.DistanceMM = d
			}); err != nil {
				return nil, err
			}
		}
		bar.Done()
		plot.Series = []experiment.Series{sq, ss}
		t.Notes = append(t.Notes, "Each frame draws a fresh close-scan pose (tilt up to 20°, any roll, motion blur up to 1.5 px) and varies one parameter; the scanner's fixed focus (150 mm) adds defocus away from it.")
		res.Tables = append(res.Tables, t)
		res.Plots = append(res.Plots, plot)
	}

	// 5. Speed.
	if ints["speed-frames"] > 0 {
		n := ints["speed-frames"]
		loop, err := newLoop()
		if err != nil {
			return nil, err
		}
		var frames []image.Image
		for len(frames) < n {
			su, err := close.Draw(rng, -1, 0)
			if err != nil {
				return nil, err
			}
			tl := loop.Timeline(trial.DefaultEpoch.Add(time.Duration(rng.Int64N(int64(time.Hour)))))
			scene := &camsim.Scene{Display: close.Display, Source: tl.Frame, FrameRate: p.FrameRate, Phase: tl.Phase}
			img, err := su.Camera.Capture(scene, su.Pose, time.Duration(rng.Int64N(int64(time.Second))), rng)
			if err != nil {
				continue
			}
			frames = append(frames, img)
		}
		ex, err := watermark.NewExtractor(p, false)
		if err != nil {
			return nil, err
		}
		runtime.LockOSThread()
		var dec, full []time.Duration
		decoded := 0
		for _, f := range frames {
			c0 := trial.ThreadCPU()
			_, derr := ex.DecodeQR(f)
			c1 := trial.ThreadCPU()
			_, _ = ex.Extract(f)
			c2 := trial.ThreadCPU()
			if derr == nil {
				decoded++
				dec = append(dec, c1-c0)
				full = append(full, c2-c1)
			}
		}
		runtime.UnlockOSThread()
		slices.Sort(dec)
		slices.Sort(full)
		t := experiment.Table{Title: "Scan speed per 1280×720 frame (one core, frames with a decodable code)",
			Header: []string{"frames", "QR decode alone (median)", "full scan (median)", "full scan (p95)", "ratio (median)", "target"}}
		ratio := 0.0
		if len(dec) > 0 && wmQuant(dec, 0.5) > 0 {
			ratio = float64(wmQuant(full, 0.5)) / float64(wmQuant(dec, 0.5))
		}
		t.AddRow(decoded, wmQuant(dec, 0.5), wmQuant(full, 0.5), wmQuant(full, 0.95), fmt.Sprintf("%.2f×", ratio), "≤ 20 ms, ≤ 2× decode")
		t.Notes = append(t.Notes, "Full scan = luminance, QR decode (gozxing), detector transform, sampling of every data module's centre and ring, ISI/illumination regression, soft Viterbi decoding and CRC check. Decode alone = luminance and gozxing decode of the same frame in the same run.")
		res.Tables = append(res.Tables, t)
	}
	return res, nil
}

func wmPct(k, n int) string {
	if n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f %% (%d/%d)", 100*float64(k)/float64(n), k, n)
}

func wmQuant(v []time.Duration, q float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	i := int(q*float64(len(v)-1) + 0.5)
	return v[min(i, len(v)-1)]
}

func wmQuantInt(v []int, q float64) int {
	if len(v) == 0 {
		return 0
	}
	return v[min(int(q*float64(len(v)-1)+0.5), len(v)-1)]
}

func wmDurDiv(d time.Duration, n int) time.Duration {
	if n == 0 {
		return 0
	}
	return d / time.Duration(n)
}

type wmClock struct{ t time.Time }

func (c *wmClock) now() time.Time { return c.t }

// wmChallenges is the experiment's scanner-challenge setup.
type wmChallenges struct {
	on               bool
	master           []byte
	keyA, keyB       []byte
	delayLo, delayHi time.Duration
}

// atA returns ck for a phone held to merchant A's scanner: its key and
// name, and a challenge-reading delay drawn from the configured range.
func (c *wmChallenges) atA(ck trial.Clock, rng *rand.Rand) trial.Clock {
	if !c.on {
		return ck
	}
	ck.ScannerKey, ck.Scanner = c.keyA, "merchant-A"
	ck.ChallengeDelay = c.delayLo
	if c.delayHi > c.delayLo {
		ck.ChallengeDelay += time.Duration(rng.Int64N(int64(c.delayHi - c.delayLo)))
	}
	return ck
}

func (c *wmChallenges) note() string {
	if !c.on {
		return "Scanner challenges: off (time binding alone)."
	}
	return fmt.Sprintf("Scanner challenges: on. The scanner shows its per-slot challenge from its first exposure; the phone's front camera holds it %v–%v later (uniform; a modelling assumption: the challenge channel is not rendered through camsim) and binds every frame it starts showing from then on; the scanner waits for t bound stamps and the server requires them from the submitting scanner.", c.delayLo, c.delayHi)
}

// wmRange parses "a-b" (or one duration) into a range.
func wmRange(s string) (time.Duration, time.Duration, error) {
	a, b, found := strings.Cut(s, "-")
	lo, err := time.ParseDuration(a)
	if err != nil {
		return 0, 0, err
	}
	hi := lo
	if found {
		if hi, err = time.ParseDuration(b); err != nil {
			return 0, 0, err
		}
	}
	if lo < 0 || hi < lo || hi > 5*time.Second {
		return 0, 0, fmt.Errorf("range %v–%v (0 ≤ a ≤ b ≤ 5 s)", lo, hi)
	}
	return lo, hi, nil
}

// wmUpper is the exact (Clopper–Pearson) one-sided 95 % upper bound on a
// rate of k in n, as a percentage.
func wmUpper(k, n int) string {
	if n == 0 {
		return "–"
	}
	if k >= n {
		return "100 %"
	}
	// Bisection on p: P(X ≤ k; n, p) = 0.05.
	lo, hi := float64(k)/float64(n), 1.0
	for range 60 {
		mid := (lo + hi) / 2
		if wmBinomCDF(k, n, mid) > 0.05 {
			lo = mid
		} else {
			hi = mid
		}
	}
	return fmt.Sprintf("%.2f %%", 100*hi)
}

func wmBinomCDF(k, n int, p float64) float64 {
	// Sum in log space for stability.
	sum := 0.0
	for i := 0; i <= k; i++ {
		lg, _ := math.Lgamma(float64(n + 1))
		a, _ := math.Lgamma(float64(i + 1))
		b, _ := math.Lgamma(float64(n - i + 1))
		sum += math.Exp(lg - a - b + float64(i)*math.Log(p) + float64(n-i)*math.Log1p(-p))
	}
	return sum
}

type (
	wmIssue  func(watermark.Params, time.Time) (*watermark.Loop, error)
	wmVerify func(trial.PayResult) (time.Duration, error)
)

// wmSkew measures honest payments against the phone's clock error.
func wmSkew(ctx context.Context, env *experiment.Env, res *experiment.Result, p watermark.Params, close camsim.Profile,
	rng *rand.Rand, timeout time.Duration, n int, issue wmIssue, verify wmVerify, next func() time.Time, chal *wmChallenges) error {
	if n == 0 {
		return nil
	}
	skews := []float64{-3, -2.5, -2, -1, 0, 1, 2, 2.5, 3}
	bar := env.Progress.Start("watermark: clock skew", int64(n*len(skews)), "trials")
	t := experiment.Table{Title: fmt.Sprintf("Normal payments against the phone's slot-clock error (%d trials per point)", n),
		Header: []string{"phone clock − server clock", "paid", "refused as stale", "median time", "p95 time"}}
	plot := experiment.Plot{File: "watermark-skew.png", Title: "Honest payments vs phone clock skew",
		XLabel: "phone clock − server clock (s)", YLabel: "paid fraction"}
	ser := experiment.Series{Name: "paid", Points: true}
	for _, sk := range skews {
		ok, stale := 0, 0
		var times []time.Duration
		for range n {
			start := next()
			loop, err := issue(p, start)
			if err != nil {
				return err
			}
			r, err := trial.Pay(ctx, loop, close, rng, timeout, chal.atA(trial.Clock{Start: start.Add(time.Second),
				Skew: time.Duration(sk * float64(time.Second)), Latency: time.Duration(50+rng.IntN(250)) * time.Millisecond}, rng))
			if err != nil {
				return err
			}
			if r.OK {
				vt, err := verify(r)
				switch {
				case err == nil:
					ok++
					times = append(times, r.Elapsed+vt)
				case errors.Is(err, watermark.ErrStale):
					stale++
				}
			}
			bar.Add(1)
		}
		slices.Sort(times)
		t.AddRow(fmt.Sprintf("%+.1f s", sk), wmPct(ok, n), stale, wmQuant(times, 0.5), wmQuant(times, 0.95))
		ser.X = append(ser.X, sk)
		ser.Y = append(ser.Y, float64(ok)/float64(n))
	}
	bar.Done()
	w := watermark.DefaultWindow()
	t.Notes = append(t.Notes, fmt.Sprintf("Window: a share's slot must have ended at most %v before the server's receipt and start at most %v after it. The phone sets its slot clock from the server's time in the code response, so its error is about half a round trip plus drift over the code's 60 s life; the ±2 s points show the margin for a phone that ignores that and trusts an NTP-synchronised clock. With scanner challenges on, a bound share's slot is the scanner's (read with its challenge), so the phone's clock only matters for unbound frames, which the scanner does not forward.", w.MaxAge, w.MaxLead))
	plot.Series = []experiment.Series{ser}
	res.Tables = append(res.Tables, t)
	res.Plots = append(res.Plots, plot)
	return nil
}

// wmReplayLater: the strongest recording (the exact frames the phone
// showed) of t or more distinct frames, from which the thief rebuilds T0,
// submitted later than the window, at any delay up to the code's expiry.
func wmReplayLater(ctx context.Context, env *experiment.Env, res *experiment.Result, p watermark.Params, rng *rand.Rand,
	n int, issue wmIssue, verify wmVerify, next func() time.Time, chal *wmChallenges) error {
	if n == 0 {
		return nil
	}
	nc := max(1, n/10) // controls, on top of the n replays
	bar := env.Progress.Start("watermark: replay later", int64(n+nc), "trials")
	w := watermark.DefaultWindow()
	minDelay := w.MaxAge + watermark.SlotDuration
	paid, rebuilt, ctrlPaid, ctrl := 0, 0, 0, 0
	var stale int
	for i := range n + nc {
		start := next()
		loop, err := issue(p, start)
		if err != nil {
			return err
		}
		filmed := start.Add(time.Duration(rng.Int64N(int64(20 * time.Second))))
		tl := loop.Timeline(filmed)
		// The payer holds the phone to scanner A while the thief records.
		ck := chal.atA(trial.Clock{Start: filmed}, rng)
		tl.Challenge = ck.ChallengeFunc(tl, p.FrameRate)
		free := p // the thief's own software: no scanner policy
		free.MinModulePx, free.MaxModuleErrors = 0, 0
		sess, err := scan.NewSession(free, true, nil)
		if err != nil {
			return err
		}
		sess.RequireBound = chal.on
		var r trial.PayResult
		for k := 0; k < 4*p.Shares && !r.OK; k++ {
			ev, err := sess.Add(ctx, tl.Frame(k))
			if err != nil {
				return err
			}
			if ev.Result != nil {
				r = trial.PayResult{OK: true, Handle: ev.Result.Handle, Token: ev.Result.Token, Stamps: ev.Result.Stamps,
					Submitted: filmed.Add(time.Duration(k+1) * p.FramePeriod()), Scanner: ck.Scanner}
			}
		}
		if !r.OK {
			bar.Add(1)
			continue
		}
		rebuilt++
		// The last nc trials are controls: the same kind of recording
		// submitted at once.
		if i >= n {
			ctrl++
			if _, err := verify(r); err == nil {
				ctrlPaid++
			}
			bar.Add(1)
			continue
		}
		delay := minDelay + time.Duration(rng.Int64N(int64(watermark.MaxTTL-minDelay)))
		r.Submitted = r.Submitted.Add(delay)
		_, err = verify(r)
		switch {
		case err == nil:
			paid++
		case errors.Is(err, watermark.ErrStale), errors.Is(err, watermark.ErrExpired):
			stale++
		}
		bar.Add(1)
	}
	bar.Done()
	replays := rebuilt - ctrl
	t := experiment.Table{Title: "Theft by a recording replayed later than the window (target 0)",
		Header: []string{"trials", "T0 rebuilt by the thief (= replayed later)", "paid", "refused (stale or expired)", "control: same recording at once, paid"}}
	t.AddRow(n, replays, paid, stale, fmt.Sprintf("%d of %d", ctrlPaid, ctrl))
	t.Notes = append(t.Notes, chal.note()+" Here the recording is replayed at the scanner the phone was bound to (A), the most favourable for the thief.", fmt.Sprintf("The thief's recording is the exact frames the phone showed from a random moment in the code's first 20 s (no camera loss: this dominates a recording from any distance, any lens, any re-capture); the thief's own extractor (TRY_HARDER) rebuilds T0 and forwards the recorded stamps, as a scanner shown the recording would. The replay reaches the server %v to 60 s after filming (uniform). A further %d trials are controls submitted at once, to show that it is the time binding, not a failure to rebuild T0, that refuses the replays. Trials where the thief's extractor did not rebuild T0 (gozxing misreads about 0.7 %% of crisp synthetic codes) are not replays.", minDelay, nc))
	res.Tables = append(res.Tables, t)
	return nil
}

// wmRelayNow: the strongest live relay: the exact frames the phone showed
// while held to merchant A's scanner (or, in half the trials, to no
// scanner), from which the thief rebuilds T0, shown at once to merchant B's
// scanner and submitted within the window.
func wmRelayNow(ctx context.Context, env *experiment.Env, res *experiment.Result, p watermark.Params, rng *rand.Rand,
	n int, issue wmIssue, verify wmVerify, next func() time.Time, chal *wmChallenges) error {
	if n == 0 {
		return nil
	}
	bar := env.Progress.Start("watermark: live relay to another scanner", int64(n), "trials")
	type agg struct{ n, rebuilt, paid, ctrl, ctrlPaid int }
	var rows [2]agg // 0: phone at scanner A; 1: phone at no scanner
	for i := range n {
		start := next()
		loop, err := issue(p, start)
		if err != nil {
			return err
		}
		filmed := start.Add(time.Duration(rng.Int64N(int64(20 * time.Second))))
		tl := loop.Timeline(filmed)
		row := i % 2
		ck := trial.Clock{Start: filmed}
		if row == 0 {
			ck = chal.atA(ck, rng)
			tl.Challenge = ck.ChallengeFunc(tl, p.FrameRate)
		}
		free := p
		free.MinModulePx, free.MaxModuleErrors = 0, 0
		sess, err := scan.NewSession(free, true, nil)
		if err != nil {
			return err
		}
		// Scanner B waits for bound stamps when challenges are on; a phone
		// at no scanner never binds, so B would wait for ever: the thief
		// then forwards what it has.
		sess.RequireBound = chal.on && row == 0
		var r trial.PayResult
		for k := 0; k < 4*p.Shares && !r.OK; k++ {
			ev, err := sess.Add(ctx, tl.Frame(k))
			if err != nil {
				return err
			}
			if ev.Result != nil {
				r = trial.PayResult{OK: true, Handle: ev.Result.Handle, Token: ev.Result.Token, Stamps: ev.Result.Stamps,
					Submitted: filmed.Add(time.Duration(k+1)*p.FramePeriod() + 300*time.Millisecond), Scanner: "merchant-B"}
			}
		}
		a := &rows[row]
		a.n++
		if !r.OK {
			bar.Add(1)
			continue
		}
		a.rebuilt++
		if _, err := verify(r); err == nil {
			a.paid++
		}
		// Control: the same claim from the scanner the phone was bound to
		// (A), when it was bound; refused claims do not consume the code.
		if row == 0 && chal.on {
			a.ctrl++
			r.Scanner = "merchant-A"
			if _, err := verify(r); err == nil {
				a.ctrlPaid++
			}
		}
		bar.Add(1)
	}
	bar.Done()
	t := experiment.Table{Title: "Live relay of the phone's exact frames to another merchant's scanner, within the window (goal ≤ 1 %)",
		Header: []string{"payer's phone", "trials", "T0 rebuilt", "paid at B", "95 % upper bound", "control: same claim at A, paid"}}
	for k, name := range []string{"held to scanner A", "at no scanner"} {
		a := rows[k]
		ctrl := "–"
		if a.ctrl > 0 {
			ctrl = fmt.Sprintf("%d of %d", a.ctrlPaid, a.ctrl)
		}
		t.AddRow(name, a.n, a.rebuilt, a.paid, wmUpper(a.paid, a.n), ctrl)
	}
	all := rows[0].paid + rows[1].paid
	t.AddRow("all", n, rows[0].rebuilt+rows[1].rebuilt, all, wmUpper(all, n), "")
	t.Notes = append(t.Notes, chal.note(),
		"The relay is the exact frames the phone showed (no camera loss: this dominates any close re-capture, any lens), decoded by the thief's own extractor (TRY_HARDER, no scanner policy), shown to scanner B and submitted 0.3 s after the frame that completed T0 — inside the window. The control submits the same claim from scanner A, to show that the refusals at B come from the binding, not from a failure to rebuild T0. Bounds: exact one-sided 95 % (Clopper–Pearson).")
	res.Tables = append(res.Tables, t)
	return nil
}

// wmRecapture: a thief films the payer's screen from 10–30 cm (1x/2x) and
// relays it live to a merchant scanner.
func wmRecapture(ctx context.Context, env *experiment.Env, res *experiment.Result, p watermark.Params, relay trial.Relay,
	rng *rand.Rand, n int, issue wmIssue, verify wmVerify, next func() time.Time, chal *wmChallenges) error {
	if n == 0 {
		return nil
	}
	bar := env.Progress.Start("watermark: close re-capture", int64(n), "trials")
	type agg struct{ n, rebuilt, paid, shares int }
	bins := []float64{100, 150, 200, 300}
	per := map[string]*agg{}
	keys := []string{}
	for li, l := range relay.Thief.Lenses {
		for b := 0; b+1 < len(bins); b++ {
			k := fmt.Sprintf("%s|%.0f–%.0f cm", l.Name, bins[b]/10, bins[b+1]/10)
			per[k] = &agg{}
			keys = append(keys, k)
		}
		_ = li
	}
	all := &agg{}
	for i := range n {
		start := next()
		loop, err := issue(p, start)
		if err != nil {
			return err
		}
		rl := relay
		rl.Lens = i % len(relay.Thief.Lenses)
		rl.DistanceMM = relay.Thief.DistanceMM.Min + rng.Float64()*(relay.Thief.DistanceMM.Max-relay.Thief.DistanceMM.Min)
		rl.Clock = trial.Clock{Start: start.Add(time.Second), Skew: time.Duration((rng.Float64() - 0.5) * float64(time.Second)),
			Latency: time.Duration(50+rng.IntN(250)) * time.Millisecond}
		if chal.on {
			// The payer holds the phone to scanner A (its frames bound to
			// A's challenge) while the thief films from 10–30 cm and shows
			// the video to scanner B, which waits for bound stamps.
			a := chal.atA(rl.Clock, rng)
			rl.PayerScanner = a.ScannerKey
			rl.Clock.ChallengeDelay = a.ChallengeDelay
			rl.Clock.ScannerKey, rl.Clock.Scanner = chal.keyB, "merchant-B"
		}
		r, err := trial.Recapture(ctx, loop, rl, rng)
		if err != nil {
			return err
		}
		b := 0
		for b+2 < len(bins) && rl.DistanceMM >= bins[b+1] {
			b++
		}
		a := per[fmt.Sprintf("%s|%.0f–%.0f cm", relay.Thief.Lenses[rl.Lens].Name, bins[b]/10, bins[b+1]/10)]
		for _, x := range []*agg{a, all} {
			x.n++
			x.shares += r.Stats.NewShares
			if r.OK {
				x.rebuilt++
			}
		}
		if r.OK {
			if _, err := verify(r); err == nil {
				a.paid++
				all.paid++
			}
		}
		bar.Add(1)
	}
	bar.Done()
	t := experiment.Table{Title: "Close re-capture relayed live to another merchant's scanner, within the window (goal ≤ 1 %)",
		Header: []string{"lens", "distance", "trials", "T0 rebuilt", "paid", "mean distinct shares"}}
	for _, k := range keys {
		a := per[k]
		lens, dist, _ := strings.Cut(k, "|")
		t.AddRow(lens, dist, a.n, a.rebuilt, wmPct(a.paid, a.n), fmt.Sprintf("%.1f", float64(a.shares)/float64(max(a.n, 1))))
	}
	t.AddRow("all", "10–30 cm", all.n, all.rebuilt, wmPct(all.paid, all.n), fmt.Sprintf("%.1f", float64(all.shares)/float64(max(all.n, 1))))
	t.Notes = append(t.Notes, fmt.Sprintf("Each trial: a thief films the payer's looping code in 1080p30 video (camsim.RecaptureVideo: 1x or 2x, 10–30 cm, up to 20° tilt, main camera focusing no closer than 15 cm, JPEG 85 per frame for the video codec) and shows it %v later, zoomed, on a phone (camsim.ReplayDisplay: 460 ppi RGB-stripe panel, gamma 2.2, bilinear scaling, 60 Hz sample-and-hold with rolling-shutter blending of video frames) to the close-scan merchant scanner (10–20 cm), which runs for up to %v; 'paid' means the server accepted T0 with its stamps at the simulated receipt time. The upper 95 %% bound for 0 of N is about 3/N.", relay.Delay, relay.Timeout),
		chal.note()+" The payer is at merchant A's scanner (phone bound to A's challenge); the video goes to merchant B's scanner.",
		fmt.Sprintf("All trials: 95 %% upper bound on the paid rate %s.", wmUpper(all.paid, all.n)))
	res.Tables = append(res.Tables, t)
	return nil
}

// wmTradeoff tunes the scanner's fragility policy on the tuning seed: direct
// scans (10–20 cm) and live re-captures (10–30 cm) run with the policy off,
// every frame's module pitch and raw ring error rate recorded; each
// candidate MaxModuleErrors is then applied to the same frames offline.
func wmTradeoff(ctx context.Context, env *experiment.Env, res *experiment.Result, p watermark.Params, close camsim.Profile,
	relay trial.Relay, seed, n int, _ string, timeout time.Duration) error {
	if n == 0 {
		return nil
	}
	pp := p
	pp.MaxModuleErrors = 0 // observe everything
	rng := rand.New(rand.NewPCG(uint64(seed), 0x74756e65))
	var ks [32]byte
	ks[0], ks[1], ks[2] = byte(seed), byte(seed>>8), 't'
	tokRand := rand.NewChaCha8(ks)
	bar := env.Progress.Start("watermark: policy tuning (tuning seed)", int64(2*n), "trials")
	var direct, recap [][]trial.FrameEvent
	const directWindow = 1500 * time.Millisecond
	for i := range 2 * n {
		t0, err := watermark.NewToken(pp.TokenLen, tokRand)
		if err != nil {
			return err
		}
		key, err := watermark.NewSlotKey(tokRand)
		if err != nil {
			return err
		}
		loop, err := watermark.NewLoop(t0, key, pp, tokRand)
		if err != nil {
			return err
		}
		var evs []trial.FrameEvent
		obs := func(e trial.FrameEvent) { evs = append(evs, e) }
		if i%2 == 0 {
			if _, err := trial.PayObserved(ctx, loop, close, rng, directWindow, trial.Clock{}, obs); err != nil {
				return err
			}
			direct = append(direct, evs)
		} else {
			rl := relay
			rl.Lens = (i / 2) % len(relay.Thief.Lenses)
			rl.DistanceMM = relay.Thief.DistanceMM.Min + rng.Float64()*(relay.Thief.DistanceMM.Max-relay.Thief.DistanceMM.Min)
			rl.Observe = obs
			if _, err := trial.Recapture(ctx, loop, rl, rng); err != nil {
				return err
			}
			recap = append(recap, evs)
		}
		bar.Add(1)
	}
	bar.Done()
	// done returns when t distinct shares pass the policy, or -1.
	done := func(evs []trial.FrameEvent, maxErr float64) time.Duration {
		seen := map[byte]bool{}
		for _, e := range evs {
			if e.Index == 0 || e.ModulePx < pp.MinModulePx || (maxErr > 0 && e.ModuleErrors > maxErr) {
				continue
			}
			seen[e.Index] = true
			if len(seen) >= pp.Threshold {
				return e.At
			}
		}
		return -1
	}
	t := experiment.Table{Title: fmt.Sprintf("Tuning the scanner's fragility policy: direct scans against live re-captures (tuning seed %d, %d trials each)", seed, n),
		Header: []string{"max misread rings", "direct scans paid ≤ 700 ms", "direct median", "direct p95", "re-captures rebuilding T0 (≤ 3 s)"}}
	plot := experiment.Plot{File: "watermark-tradeoff.png", Title: "Scanner policy: direct scans vs re-captures (tuning seed)",
		XLabel: "max fraction of misread rings", YLabel: "success rate", Legend: "bottom-right"}
	sd, sr := experiment.Series{Name: "direct scan 10–20 cm, ≤ 700 ms"}, experiment.Series{Name: "live re-capture 10–30 cm"}
	var dist, rist []float64
	for _, evs := range direct {
		for _, e := range evs {
			if e.Index != 0 {
				dist = append(dist, e.ModuleErrors)
			}
		}
	}
	for _, evs := range recap {
		for _, e := range evs {
			if e.Index != 0 {
				rist = append(rist, e.ModuleErrors)
			}
		}
	}
	for _, thr := range []float64{0, 0.30, 0.25, 0.22, 0.20, 0.18, 0.16, 0.14, 0.12, 0.10, 0.08, 0.06} {
		var times []time.Duration
		okD := 0
		for _, evs := range direct {
			if at := done(evs, thr); at >= 0 && at <= 700*time.Millisecond {
				okD++
				times = append(times, at)
			}
		}
		okR := 0
		for _, evs := range recap {
			if done(evs, thr) >= 0 {
				okR++
			}
		}
		slices.Sort(times)
		label := fmt.Sprintf("%.2f", thr)
		x := thr
		if thr == 0 {
			label, x = "off", 0.35
		}
		t.AddRow(label, wmPct(okD, n), wmQuant(times, 0.5), wmQuant(times, 0.95), wmPct(okR, n))
		sd.X, sd.Y = append(sd.X, x), append(sd.Y, float64(okD)/float64(n))
		sr.X, sr.Y = append(sr.X, x), append(sr.Y, float64(okR)/float64(n))
	}
	slices.Sort(dist)
	slices.Sort(rist)
	q := func(v []float64, f float64) float64 {
		if len(v) == 0 {
			return math.NaN()
		}
		return v[min(len(v)-1, int(f*float64(len(v)-1)+0.5))]
	}
	t.Notes = append(t.Notes,
		fmt.Sprintf("Misread rings per decoded share — direct scans: median %.3f, p90 %.3f, p99 %.3f (%d shares); re-captures: 10th percentile %.3f, median %.3f (%d shares). Times here are the pipeline model without server verification.", q(dist, 0.5), q(dist, 0.9), q(dist, 0.99), len(dist), q(rist, 0.1), q(rist, 0.5), len(rist)),
		fmt.Sprintf("Run on a separate seed (%d) from every other table, with the policy off and every frame recorded (direct scans for %v, re-captures for %v); each row applies its threshold to the same frames. The reported tables use MaxModuleErrors = %.2f and MinModulePx = %.1f.", seed, directWindow, relay.Timeout, p.MaxModuleErrors, p.MinModulePx))
	plot.Series = []experiment.Series{sd, sr}
	res.Tables = append(res.Tables, t)
	res.Plots = append(res.Plots, plot)
	return nil
}

// wmScales resamples clean frames to 15–50 % at several sub-pixel phases
// (area averaging, the resampling a distant camera's pixels perform, with no
// noise or blur: the most favourable case for the thief) and extracts.
func wmScales(env *experiment.Env, res *experiment.Result, p watermark.Params, n int, newLoop func() (*watermark.Loop, error)) error {
	if n == 0 {
		return nil
	}
	var scales []float64
	for s := 15; s <= 50; s++ {
		scales = append(scales, float64(s)/100)
	}
	// Integer pixels per module (3, 4, 5, 6 of 12) and per frame pixel ratio.
	for _, k := range []float64{3, 4, 5, 6} {
		scales = append(scales, k/float64(p.ModulePx))
	}
	slices.Sort(scales)
	scales = slices.Compact(scales)
	phases := []float64{0, 0.25, 0.5, 0.75}
	loop, err := newLoop()
	if err != nil {
		return err
	}
	frames := loop.Timeline(trial.DefaultEpoch).Frames(n)
	free := p
	free.MinModulePx, free.MaxModuleErrors = 0, 0
	ex, err := watermark.NewExtractor(free, true) // a thief's own software
	if err != nil {
		return err
	}
	exPol, err := watermark.NewExtractor(p, true) // a merchant's scanner
	if err != nil {
		return err
	}
	bar := env.Progress.Start("watermark: resampling sweep", int64(len(scales)*len(phases)*n), "frames")
	t := experiment.Table{Title: fmt.Sprintf("Resampled clean frames: shares recovered by scale and sub-pixel phase (%d frames per point; only rows with a recovery or an integer pixels-per-module ratio)", n),
		Header: []string{"scale", "px per module"}}
	for _, ph := range phases {
		t.Header = append(t.Header, fmt.Sprintf("phase %.2f", ph))
	}
	t.Header = append(t.Header, "merchant scanner policy, all phases")
	plot := experiment.Plot{File: "watermark-scales.png", Title: "Share recovery vs scale (clean frames, area resampling)",
		XLabel: "scale", YLabel: "fraction of frames with a share"}
	series := make([]experiment.Series, len(phases))
	for i, ph := range phases {
		series[i] = experiment.Series{Name: fmt.Sprintf("phase %.2f px", ph)}
	}
	worstLow, worstLowPol := 0.0, 0.0
	for _, sc := range scales {
		row := []any{fmt.Sprintf("%.3f", sc), fmt.Sprintf("%.2f", sc*float64(p.ModulePx))}
		anyRec := false
		kPol := 0
		for pi, ph := range phases {
			k := 0
			for _, f := range frames {
				img := wmResample(f, sc, ph)
				if _, err := ex.Extract(img); err == nil {
					k++
					if _, err := exPol.Extract(img); err == nil {
						kPol++
					}
				}
				bar.Add(1)
			}
			frac := float64(k) / float64(n)
			if k > 0 {
				anyRec = true
			}
			if sc <= 0.30 {
				worstLow = math.Max(worstLow, frac)
			}
			row = append(row, wmPct(k, n))
			series[pi].X = append(series[pi].X, sc)
			series[pi].Y = append(series[pi].Y, frac)
		}
		row = append(row, wmPct(kPol, n*len(phases)))
		if sc <= 0.30 {
			worstLowPol = math.Max(worstLowPol, float64(kPol)/float64(n*len(phases)))
		}
		integer := math.Abs(sc*float64(p.ModulePx)-math.Round(sc*float64(p.ModulePx))) < 1e-9
		if anyRec || integer {
			t.AddRow(row...)
		}
	}
	bar.Done()
	t.Notes = append(t.Notes, fmt.Sprintf("Each output pixel is the mean of the source pixels it covers (box integration, as a camera pixel integrates light), the grid shifted by the phase in output pixels; no blur, noise or compression — a real capture at the same resolution loses more. Phase columns: an extractor without the scanner's policy (a thief's own software). Last column: the merchant scanner's extractor (MinModulePx %.1f, MaxModuleErrors %.2f). Highest recovery at any scale ≤ 30 %%, any phase: %.0f %% without the policy, %.0f %% with it. Target: 0.", p.MinModulePx, p.MaxModuleErrors, 100*worstLow, 100*worstLowPol))
	plot.Series = series
	res.Tables = append(res.Tables, t)
	res.Plots = append(res.Plots, plot)
	return nil
}

// wmResample box-resamples g by scale with the output grid shifted by phase
// output pixels in x and y.
func wmResample(g *image.Gray, scale, phase float64) *image.Gray {
	w := int(float64(g.Rect.Dx())*scale) - 1
	h := int(float64(g.Rect.Dy())*scale) - 1
	out := image.NewGray(image.Rect(0, 0, w, h))
	inv := 1 / scale
	for oy := range h {
		y0 := (float64(oy) + phase) * inv
		y1 := y0 + inv
		for ox := range w {
			x0 := (float64(ox) + phase) * inv
			x1 := x0 + inv
			var acc, area float64
			for sy := int(y0); sy < int(math.Ceil(y1)) && sy < g.Rect.Dy(); sy++ {
				fy := math.Min(y1, float64(sy+1)) - math.Max(y0, float64(sy))
				for sx := int(x0); sx < int(math.Ceil(x1)) && sx < g.Rect.Dx(); sx++ {
					fx := math.Min(x1, float64(sx+1)) - math.Max(x0, float64(sx))
					a := fx * fy
					acc += a * float64(g.Pix[sy*g.Stride+sx])
					area += a
				}
			}
			out.Pix[oy*out.Stride+ox] = uint8(math.Round(acc / area))
		}
	}
	return out
}
