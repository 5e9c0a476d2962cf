// Package trial runs end-to-end payment and theft trials of watermarked
// payment codes through the camera simulator. Experiments, attack tests, the
// demo and `qshield scan --simulate` use it.
//
// Timing model of a normal payment. The scanner films at its profile's rate;
// camera frame i starts its exposure at i/rate and is available once the last
// row is read out. A single core processes frames in order: frame i starts
// when it is available and the previous frame is done. The payment time is
// from the start of the first exposure to the end of processing of the frame
// that completes the reconstruction. Processing times are measured as thread
// CPU time on this machine, so the result does not depend on other load. The
// payer's pose is held until ReaimAfter passes without success, then redrawn.
//
// Scanner challenges (Clock.ScannerKey): the scanner shows its per-slot
// challenge from the first exposure on and the phone holds it
// Clock.ChallengeDelay later; frames the phone starts showing from then on
// are bound to it. The challenge channel itself (scanner display to front
// camera) is modelled by that delay only, not rendered.
//
// Thieves use the same extraction software as the scanner with the decoder's
// TRY_HARDER mode (the best a thief can do with our code); each theft trial is
// one burst (on-site) or one burst replayed on the accomplice's screen to a
// merchant scanner (collaborative).
package trial

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/camsim"
	"github.com/qshield/qshield/watermark/scan"
)

// SymbolMM is the width of the QR symbol (without quiet zone) on the payer's
// screen.
const SymbolMM = 45.0

// FrameMM returns the physical width of a rendered frame for p.
func FrameMM(p watermark.Params) float64 {
	return SymbolMM * float64(p.FrameModules()) / float64(p.Dimension())
}

// WithDisplay returns prof with its display sized for p's frames.
func WithDisplay(prof camsim.Profile, p watermark.Params) camsim.Profile {
	prof.Display.CodeWidthMM = FrameMM(p)
	return prof
}

// PayResult is the outcome of one normal payment.
type PayResult struct {
	OK         bool
	Frames     int           // camera frames processed
	Elapsed    time.Duration // first exposure to reconstruction (pipeline model)
	Processing time.Duration // total CPU time spent on the frames
	Token      []byte
	Stamps     []watermark.Stamp
	Handle     string
	Setup      camsim.Setup // the first pose
	Stats      scan.Stats
	Reaims     int // times the payer moved the phone (see ReaimAfter)
	// Submitted is the server time at which the reconstruction reached the
	// server (Start + Elapsed + Latency).
	Submitted time.Time
	// Scanner is the submitting scanner's name (Clock.Scanner).
	Scanner string
}

// ReaimAfter is how long a payer holds the phone still without the scanner's
// beep before moving it: Pay then draws a new pose from the profile. Payers
// do this naturally; without it a pose the decoder cannot read (for example a
// strong tilt combined with a 45° roll) would hold for the whole timeout.
const ReaimAfter = time.Second

// Clock places a payment in time.
type Clock struct {
	// Start is the server's time when the scanner's first exposure starts.
	Start time.Time
	// Skew is the phone's slot clock minus the server's clock.
	Skew time.Duration
	// Latency is the scanner-to-server time of the submission.
	Latency time.Duration
	// ScannerKey, when set, is the challenge key of the scanner in front of
	// the phone: the scanner shows its rotating challenge
	// (watermark.ChallengeAt on the server's clock) from the first exposure
	// on, the phone reads it ChallengeDelay later (and each new slot's
	// challenge ChallengeDelay after it appears), stamps every frame it
	// starts showing from then on with the bound tag, and the scanner
	// waits for t bound stamps (scan.Session.RequireBound).
	ScannerKey     []byte
	ChallengeDelay time.Duration
	// Scanner is the scanner's name, put in the claim (PayResult.Claim) as
	// the server would take it from the scanner's certificate.
	Scanner string
	// Processing, when set, is the simulated time the scanner takes to
	// process each frame, instead of the thread CPU time the scan measured.
	// Tests set it: under the race detector and a loaded machine the
	// measured time is several times the real one, which delays the
	// simulated submission past the shares' freshness window.
	Processing time.Duration
}

// processing is the simulated processing time of a frame whose scan took
// measured thread CPU time.
func (ck Clock) processing(measured time.Duration) time.Duration {
	if ck.Processing > 0 {
		return ck.Processing
	}
	return measured
}

// ChallengeFunc returns the phone's view of the scanner's challenge for a
// timeline started at phone time ck.Start+ck.Skew (nil without a key).
func (ck Clock) ChallengeFunc(tl *watermark.Timeline, fps float64) func(int) (watermark.Challenge, bool) {
	if ck.ScannerKey == nil {
		return nil
	}
	key := append([]byte(nil), ck.ScannerKey...)
	period := time.Duration(float64(time.Second) / fps)
	return func(k int) (watermark.Challenge, bool) {
		// Server time at which display frame k starts.
		at := ck.Start.Add(-tl.Phase + time.Duration(k)*period)
		seen := at.Add(-ck.ChallengeDelay)
		if seen.Before(ck.Start) {
			return watermark.Challenge{}, false
		}
		return watermark.ChallengeAt(key, watermark.SlotAt(seen)), true
	}
}

// DefaultEpoch is the simulated server time trials start from when none is
// given.
var DefaultEpoch = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// Pay simulates a payer holding loop in front of a scanner of profile prof
// (its display sized by the caller, see WithDisplay) until the scanner
// reconstructs T0 or timeout (simulated time) passes. The phone shows its
// slot-stamped frames by its own clock (ck.Start + ck.Skew at the first
// exposure).
func Pay(ctx context.Context, loop *watermark.Loop, prof camsim.Profile, rng *rand.Rand, timeout time.Duration, ck Clock) (PayResult, error) {
	return PayObserved(ctx, loop, prof, rng, timeout, ck, nil)
}

// FrameEvent is one scanner frame as an Observer sees it.
type FrameEvent struct {
	At           time.Duration // end of its processing (pipeline model)
	Index        byte          // share index, 0 when no share decoded
	ModulePx     float64
	ModuleErrors float64
}

// Observer, when given, sees every frame's event, and the scan then runs to
// its timeout even after a reconstruction (to evaluate scanner policies
// offline on the same frames).
type Observer func(FrameEvent)

// PayObserved is Pay with an observer (nil: stop at the reconstruction).
func PayObserved(ctx context.Context, loop *watermark.Loop, prof camsim.Profile, rng *rand.Rand, timeout time.Duration, ck Clock, obs Observer) (PayResult, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if ck.Start.IsZero() {
		ck.Start = DefaultEpoch.Add(time.Duration(rng.Int64N(int64(time.Hour))))
	}
	su, err := prof.Draw(rng, -1, 0)
	if err != nil {
		return PayResult{}, err
	}
	tl := loop.Timeline(ck.Start.Add(ck.Skew))
	tl.Challenge = ck.ChallengeFunc(tl, loop.Params.FrameRate)
	scene := &camsim.Scene{Display: prof.Display, Source: tl.Frame, FrameRate: loop.Params.FrameRate, Phase: tl.Phase}
	cs, err := su.Camera.NewSession(scene, su.Pose)
	if err != nil {
		return PayResult{Setup: su}, fmt.Errorf("trial: camera: %w", err)
	}
	sess, err := scan.NewSession(loop.Params, false, nil)
	if err != nil {
		return PayResult{}, err
	}
	sess.RequireBound = ck.ScannerKey != nil
	capPeriod := time.Duration(float64(time.Second) / prof.CaptureRate)
	res := PayResult{Setup: su, Handle: loop.Handle, Scanner: ck.Scanner}
	var busyUntil time.Duration
	nextAim := ReaimAfter
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		start := time.Duration(i) * capPeriod
		if start > timeout {
			return res, nil
		}
		if start >= nextAim {
			// No beep yet: the payer moves the phone. New pose, same
			// scanner session (shares collected so far are kept).
			nextAim += ReaimAfter
			if su, err = prof.Draw(rng, -1, 0); err != nil {
				return res, err
			}
			if cs, err = su.Camera.NewSession(scene, su.Pose); err != nil {
				return res, fmt.Errorf("trial: camera: %w", err)
			}
			res.Reaims++
		}
		img, err := cs.Capture(start, rng)
		if err != nil {
			return res, fmt.Errorf("trial: capture: %w", err)
		}
		ready := start + su.Camera.Exposure + su.Camera.Readout
		t0 := ThreadCPU()
		ev, err := sess.Add(ctx, img)
		proc := ck.processing(ThreadCPU() - t0)
		if err != nil {
			return res, err
		}
		res.Frames++
		res.Processing += proc
		res.Stats = sess.Stats()
		busyUntil = max(busyUntil, ready) + proc
		if obs != nil {
			obs(FrameEvent{At: busyUntil, Index: ev.Index, ModulePx: ev.ModulePx, ModuleErrors: ev.ModuleErrors})
		}
		if ev.Result != nil && !res.OK {
			res.OK = true
			res.Token = ev.Result.Token
			res.Stamps = ev.Result.Stamps
			res.Elapsed = busyUntil
			res.Submitted = ck.Start.Add(busyUntil + ck.Latency)
			if obs == nil {
				return res, nil
			}
		}
	}
}

// Claim returns the claim the scanner submits for a successful result.
func (r PayResult) Claim(amount int64) watermark.Claim {
	return watermark.Claim{Handle: r.Handle, Token: r.Token, Stamps: r.Stamps, Amount: amount, Scanner: r.Scanner}
}

// TheftResult is the outcome of one theft attempt.
type TheftResult struct {
	OK bool
	// SucceededAt is the number of photos after which T0 was recovered
	// (0 when it was not).
	SucceededAt int
	Photos      int
	Shares      int // distinct valid shares the thief obtained
	Setup       camsim.Setup
}

// Photos takes a burst of n photos of loop with the theft profile prof (lens
// index or -1 for random, distance in mm or 0 for the profile's range).
func Photos(loop *watermark.Loop, prof camsim.Profile, rng *rand.Rand, lens int, distanceMM float64, n int) ([]*image.Gray, camsim.Setup, error) {
	su, err := prof.Draw(rng, lens, distanceMM)
	if err != nil {
		return nil, su, err
	}
	tl := loop.Timeline(DefaultEpoch.Add(time.Duration(rng.Int64N(int64(time.Hour)))))
	scene := &camsim.Scene{Display: prof.Display, Source: tl.Frame, FrameRate: loop.Params.FrameRate, Phase: tl.Phase}
	cs, err := su.Camera.NewSession(scene, su.Pose)
	if err != nil {
		return nil, su, fmt.Errorf("trial: camera: %w", err)
	}
	gap := time.Duration(float64(time.Second) / prof.CaptureRate)
	var out []*image.Gray
	for i := range n {
		img, err := cs.Capture(time.Duration(i)*gap, rng)
		if err != nil {
			return nil, su, fmt.Errorf("trial: capture: %w", err)
		}
		out = append(out, img)
	}
	return out, su, nil
}

// BurstLen draws a burst length from prof.Burst.
func BurstLen(prof camsim.Profile, rng *rand.Rand) int {
	lo, hi := max(1, prof.Burst[0]), max(1, prof.Burst[1])
	if hi <= lo {
		return lo
	}
	return lo + rng.IntN(hi-lo+1)
}

// OnSite is one on-site theft: a burst of n photos (n <= 0: drawn from the
// profile) processed by the thief with the scanner's software.
func OnSite(ctx context.Context, loop *watermark.Loop, prof camsim.Profile, rng *rand.Rand, lens int, distanceMM float64, n int) (TheftResult, error) {
	if n <= 0 {
		n = BurstLen(prof, rng)
	}
	photos, su, err := Photos(loop, prof, rng, lens, distanceMM, n)
	res := TheftResult{Setup: su, Photos: n}
	if err != nil {
		if errors.Is(err, camsim.ErrParams) {
			return res, nil // e.g. the code out of view: the photo is useless
		}
		return res, err
	}
	// The thief's own software: TRY_HARDER and no merchant-scanner policy.
	free := loop.Params
	free.MinModulePx, free.MaxModuleErrors = 0, 0
	sess, err := scan.NewSession(free, true, nil)
	if err != nil {
		return res, err
	}
	for i, img := range photos {
		ev, err := sess.Add(ctx, img)
		if err != nil {
			return res, err
		}
		res.Shares = ev.Have
		if ev.Result != nil {
			res.OK, res.SucceededAt = true, i+1
			break
		}
	}
	return res, nil
}

// Collaborative is one collaborative theft: an accomplice's burst (as OnSite)
// shown photo by photo, zoomed, on another phone to a merchant scanner
// (profile scanner, its display replaced by replay), perFrame scanner frames
// per photo, all into one scanner session.
func Collaborative(ctx context.Context, loop *watermark.Loop, thief, scanner camsim.Profile, replay camsim.Display,
	rng *rand.Rand, lens int, distanceMM float64, n, perPhoto int) (TheftResult, error) {
	if n <= 0 {
		n = BurstLen(thief, rng)
	}
	photos, su, err := Photos(loop, thief, rng, lens, distanceMM, n)
	res := TheftResult{Setup: su, Photos: n}
	if err != nil {
		if errors.Is(err, camsim.ErrParams) {
			return res, nil
		}
		return res, err
	}
	sess, err := scan.NewSession(loop.Params, false, nil)
	if err != nil {
		return res, err
	}
	scanner.Display = replay
	// Only the displayed photo is simulated (the photo already has a margin
	// around the code; nothing outside it matters to the decoder).
	scanner.Crop, scanner.CropMargin = true, 1.02
	gap := time.Duration(float64(time.Second) / scanner.CaptureRate)
	for i, ph := range photos {
		ssu, err := scanner.Draw(rng, -1, 0)
		if err != nil {
			return res, err
		}
		// The photo is shown so that its width is replay.CodeWidthMM.
		scene := &camsim.Scene{Display: replay, Frames: []*image.Gray{ph}}
		cs, err := ssu.Camera.NewSession(scene, ssu.Pose)
		if err != nil {
			continue
		}
		for k := range perPhoto {
			img, err := cs.Capture(time.Duration(k)*gap, rng)
			if err != nil {
				return res, err
			}
			ev, err := sess.Add(ctx, img)
			if err != nil {
				return res, err
			}
			res.Shares = ev.Have
			if ev.Result != nil {
				res.OK, res.SucceededAt = true, i+1
				return res, nil
			}
		}
	}
	return res, nil
}

// Relay describes a re-capture theft: a thief films the payer's screen with
// Thief (a video profile such as camsim.RecaptureVideo) and shows the video
// on Replay to a merchant scanner of profile Scanner, Delay after filming
// (a live relay has a fraction of a second; a recording replayed later,
// minutes).
type Relay struct {
	Thief      camsim.Profile
	Lens       int     // lens index in Thief, -1 random
	DistanceMM float64 // 0: the profile's range
	Scanner    camsim.Profile
	Replay     camsim.Display
	Delay      time.Duration
	Timeout    time.Duration
	Clock      Clock    // Start: server time of the thief's first exposure
	Observe    Observer // optional; see Observer
	// PayerScanner, when set, is the challenge key of the honest scanner
	// the payer's phone faces while the thief films it (the phone binds its
	// frames to that scanner's challenge, read Clock.ChallengeDelay after
	// Start); nil: the phone sees no scanner and stamps by its slot clock.
	// Clock.ScannerKey set makes the merchant scanner the video is shown to
	// wait for bound stamps, as a scanner of a platform with challenges does.
	PayerScanner []byte
}

// Recapture runs one re-capture theft and returns what the merchant scanner
// obtained; the caller submits r.Claim to a verifier at r.Submitted. The
// thief's video frames are captured on demand, at 30 frames/s from Start,
// and shown one per 1/CaptureRate from Start+Delay.
func Recapture(ctx context.Context, loop *watermark.Loop, rl Relay, rng *rand.Rand) (PayResult, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ck := rl.Clock
	if ck.Start.IsZero() {
		ck.Start = DefaultEpoch.Add(time.Duration(rng.Int64N(int64(time.Hour))))
	}
	tsu, err := rl.Thief.Draw(rng, rl.Lens, rl.DistanceMM)
	if err != nil {
		return PayResult{}, err
	}
	tl := loop.Timeline(ck.Start.Add(ck.Skew))
	payerCk := ck
	payerCk.ScannerKey = rl.PayerScanner
	tl.Challenge = payerCk.ChallengeFunc(tl, loop.Params.FrameRate)
	payer := &camsim.Scene{Display: rl.Thief.Display, Source: tl.Frame, FrameRate: loop.Params.FrameRate, Phase: tl.Phase}
	var vid *camsim.Session
	for {
		vid, err = tsu.Camera.NewSession(payer, tsu.Pose)
		if err == nil {
			break
		}
		// The code does not fit the frame (a 2x lens too close): the
		// thief steps back.
		if !errors.Is(err, camsim.ErrParams) || tsu.Pose.DistanceMM > 1000 {
			return PayResult{Setup: tsu}, fmt.Errorf("trial: thief camera: %w", err)
		}
		tsu.Pose.DistanceMM += 20
	}
	vgap := time.Duration(float64(time.Second) / rl.Thief.CaptureRate)
	video := map[int]*image.Gray{}
	var verr error
	source := func(k int) *image.Gray {
		if f, ok := video[k]; ok {
			return f
		}
		f, err := vid.Capture(time.Duration(k)*vgap, rng)
		if err != nil {
			verr = err
			return nil
		}
		if len(video) > 64 {
			clear(video)
		}
		video[k] = f
		return f
	}
	replay := rl.Scanner
	replay.Display = rl.Replay
	scene := &camsim.Scene{Display: rl.Replay, Source: source, FrameRate: rl.Thief.CaptureRate}
	su, err := replay.Draw(rng, -1, 0)
	if err != nil {
		return PayResult{}, err
	}
	cs, err := su.Camera.NewSession(scene, su.Pose)
	if err != nil {
		return PayResult{Setup: tsu}, fmt.Errorf("trial: scanner camera: %w (%v)", err, verr)
	}
	sess, err := scan.NewSession(loop.Params, false, nil)
	if err != nil {
		return PayResult{}, err
	}
	sess.RequireBound = ck.ScannerKey != nil
	capPeriod := time.Duration(float64(time.Second) / replay.CaptureRate)
	res := PayResult{Setup: tsu, Handle: loop.Handle, Scanner: ck.Scanner}
	var busyUntil time.Duration
	nextAim := ReaimAfter
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		start := time.Duration(i) * capPeriod
		if start > rl.Timeout {
			return res, nil
		}
		if start >= nextAim {
			nextAim += ReaimAfter
			if su, err = replay.Draw(rng, -1, 0); err != nil {
				return res, err
			}
			if cs, err = su.Camera.NewSession(scene, su.Pose); err != nil {
				return res, fmt.Errorf("trial: scanner camera: %w", err)
			}
			res.Reaims++
		}
		img, err := cs.Capture(start, rng)
		if err != nil {
			return res, fmt.Errorf("trial: capture: %w (%v)", err, verr)
		}
		ready := start + su.Camera.Exposure + su.Camera.Readout
		t0 := ThreadCPU()
		ev, err := sess.Add(ctx, img)
		proc := ck.processing(ThreadCPU() - t0)
		if err != nil {
			return res, err
		}
		res.Frames++
		res.Processing += proc
		res.Stats = sess.Stats()
		busyUntil = max(busyUntil, ready) + proc
		if rl.Observe != nil {
			rl.Observe(FrameEvent{At: busyUntil, Index: ev.Index, ModulePx: ev.ModulePx, ModuleErrors: ev.ModuleErrors})
		}
		if ev.Result != nil && !res.OK {
			res.OK = true
			res.Token = ev.Result.Token
			res.Stamps = ev.Result.Stamps
			res.Elapsed = busyUntil
			res.Submitted = ck.Start.Add(rl.Delay + busyUntil + ck.Latency)
			if rl.Observe == nil {
				return res, nil
			}
		}
	}
}
