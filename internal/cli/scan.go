package cli

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/gif"
	_ "image/jpeg" // frame decoders
	"image/png"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/camsim"
	"github.com/qshield/qshield/watermark/scan"
	"github.com/qshield/qshield/watermark/trial"
)

// ScanCommand is `qshield scan`: the merchant scanner for watermarked payment
// codes. It prints the recovered token; use ScanCommandWith to submit it.
func ScanCommand(g *Globals) *cobra.Command { return ScanCommandWith(g, nil) }

// ScanCommandWith is ScanCommand with a Submitter that receives the recovered
// (T1, T0) for verification and payment (nil: print only).
func ScanCommandWith(g *Globals, sub scan.Submitter) *cobra.Command {
	var o scanOptions
	cmd := &cobra.Command{
		Use:   "scan [FRAME|DIR ...]",
		Short: "Scan a watermarked payment code from camera frames and recover its token",
		Long: `scan reads camera frames of a looping watermarked payment code (seed 003),
decodes the QR text T1 and the watermark share of each frame, and recovers the
token T0 once it holds t distinct shares of one code.

Frames come from image files (PNG, JPEG, GIF — every frame of an animated GIF),
directories (their image files in name order), a list file (--list, one path
per line, "-" for stdin), or the camera simulator (--simulate PROFILE, which
also creates a payer's loop). To scan a video, extract its frames first, e.g.
ffmpeg -i scan.mp4 frames/%05d.png.

Profiles: close-scan (merchant scanner, 10–20 cm), on-site-theft (phone at
1–3 m; --burst photos), collaborative (those photos replayed on another screen
to a merchant scanner).`,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return o.run(ctx, g, sub, args, cmd.InOrStdin())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.list, "list", "", "file listing frame paths, one per line (- for stdin)")
	f.StringVar(&o.simulate, "simulate", "", "film a fresh payer loop with the camera simulator: close-scan, on-site-theft or collaborative")
	f.StringVar(&o.tokenHex, "token", "", "with --simulate: T0 in hex (default: random)")
	f.IntVar(&o.frames, "frames", 90, "with --simulate close-scan: camera frames to film (30/s)")
	f.Uint64Var(&o.seed, "seed", 0, "with --simulate: random seed (0: random)")
	f.Float64Var(&o.distance, "distance", 0, "with --simulate: distance in mm (0: drawn from the profile)")
	f.IntVar(&o.lens, "lens", -1, "with --simulate theft: phone lens 0=1x 1=2x 2=3x (-1: random)")
	f.IntVar(&o.burst, "burst", 5, "with --simulate theft: photos in the burst (10/s)")
	f.BoolVar(&o.tryHarder, "try-harder", false, "spend more time decoding hard frames")
	f.StringVar(&o.saveDir, "save-frames", "", "write every frame scanned as PNG into this directory")
	return cmd
}

// scanOptions are the flags of `qshield scan`.
type scanOptions struct {
	list      string
	simulate  string
	tokenHex  string
	frames    int
	seed      uint64
	distance  float64
	lens      int
	burst     int
	tryHarder bool
	saveDir   string
}

// run scans the frames, submits a recovered token to sub (if any) and
// prints the report.
func (o *scanOptions) run(ctx context.Context, g *Globals, sub scan.Submitter, args []string, stdin io.Reader) error {
	p := watermark.DefaultParams()
	sess, err := scan.NewSession(p, o.tryHarder, g.Log)
	if err != nil {
		return err
	}
	src, err := o.source(p, args, stdin)
	if err != nil {
		return err
	}
	start := time.Now()
	rep, err := o.scanFrames(ctx, g, sess, src, sub)
	if err != nil {
		return err
	}
	st := sess.Stats()
	rep.Stats = st
	rep.Elapsed = time.Since(start).Round(time.Millisecond).String()
	if rep.Frames == 0 {
		rep.Frames = st.Frames
	}
	if err := printScanReport(g, rep); err != nil {
		return err
	}
	if rep.SubmitError != "" {
		return fmt.Errorf("scan: submitting token: %s", rep.SubmitError)
	}
	if !rep.Recovered {
		return ErrNoToken
	}
	return nil
}

// source is where the frames come from: the camera simulator, or files,
// directories and a list.
func (o *scanOptions) source(p watermark.Params, args []string, stdin io.Reader) (frameSource, error) {
	if o.simulate != "" {
		if len(args) > 0 || o.list != "" {
			return nil, errors.New("scan: --simulate takes no frame arguments or --list")
		}
		return simulatedFrames(p, o.simulate, o.tokenHex, o.frames, o.seed, o.distance, o.lens, o.burst)
	}
	paths, err := framePaths(args, o.list, stdin)
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, errors.New("scan: no frames given (files, directories, --list or --simulate)")
	}
	return fileFrames(paths), nil
}

// scanFrames feeds frames to the session until a token is recovered or the
// frames run out; a recovered token is submitted to sub.
func (o *scanOptions) scanFrames(ctx context.Context, g *Globals, sess *scan.Session, src frameSource, sub scan.Submitter) (*scanReport, error) {
	rep := &scanReport{}
	for i := 0; ; i++ {
		name, img, err := src(i)
		if errors.Is(err, io.EOF) {
			return rep, nil
		}
		if err != nil {
			return nil, err
		}
		if o.saveDir != "" {
			if err := saveFrame(o.saveDir, i, img); err != nil {
				return nil, err
			}
		}
		ev, err := sess.Add(ctx, img)
		if err != nil {
			return nil, err
		}
		g.Log.Debug("scan: frame", "frame", name, "handle", ev.Handle, "index", ev.Index, "have", ev.Have, "need", ev.Need, "err", ev.Err)
		if ev.Result == nil {
			continue
		}
		rep.Handle = ev.Result.Handle
		rep.Token = hex.EncodeToString(ev.Result.Token)
		rep.Recovered = true
		rep.Frames = ev.Result.Frames
		if sub != nil {
			if err := sub.Submit(ctx, *ev.Result); errors.Is(err, errNotSubmitted) {
				// no server configured: print only
			} else if err != nil {
				rep.SubmitError = err.Error()
			} else {
				rep.Submitted = true
			}
		}
		return rep, nil
	}
}

// printScanReport writes the report as JSON (--json) or text.
func printScanReport(g *Globals, rep *scanReport) error {
	if g.JSON {
		return g.PrintJSON(rep)
	}
	st := rep.Stats
	if rep.Recovered {
		fmt.Fprintf(g.Out, "recovered token for %s after %d frames\nT0 %s\n", rep.Handle, rep.Frames, rep.Token)
		if rep.Submitted {
			fmt.Fprintln(g.Out, "submitted: verified and paid")
		}
	} else {
		fmt.Fprintf(g.Out, "no token recovered from %d frames\n", st.Frames)
	}
	fmt.Fprintf(g.Out, "frames %d: without code %d, without valid share %d, duplicate shares %d, new shares %d, rejected reconstructions %d\n",
		st.Frames, st.NoCode, st.BadShare, st.Duplicate, st.NewShares, st.Rejected)
	return nil
}

// ErrNoToken is returned (non-zero exit) when no token was recovered.
var ErrNoToken = errors.New("scan: no token recovered")

type scanReport struct {
	Recovered   bool       `json:"recovered"`
	Handle      string     `json:"handle,omitempty"`
	Token       string     `json:"token,omitempty"`
	Frames      int        `json:"frames"`
	Submitted   bool       `json:"submitted,omitempty"`
	SubmitError string     `json:"submit_error,omitempty"`
	Elapsed     string     `json:"elapsed"`
	Stats       scan.Stats `json:"stats"`
}

// frameSource returns frame i, or io.EOF after the last.
type frameSource func(i int) (string, image.Image, error)

var imageExts = []string{".png", ".jpg", ".jpeg", ".gif"}

func framePaths(args []string, list string, stdin io.Reader) ([]string, error) {
	var paths []string
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		if !fi.IsDir() {
			paths = append(paths, a)
			continue
		}
		ents, err := os.ReadDir(a)
		if err != nil {
			return nil, fmt.Errorf("scan: reading %s: %w", a, err)
		}
		var names []string
		for _, e := range ents {
			if !e.IsDir() && slices.Contains(imageExts, strings.ToLower(filepath.Ext(e.Name()))) {
				names = append(names, filepath.Join(a, e.Name()))
			}
		}
		slices.Sort(names)
		paths = append(paths, names...)
	}
	if list != "" {
		var r io.Reader = stdin
		if list != "-" {
			f, err := os.Open(list)
			if err != nil {
				return nil, fmt.Errorf("scan: %w", err)
			}
			defer f.Close()
			r = f
		}
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
				paths = append(paths, l)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("scan: reading list: %w", err)
		}
	}
	return paths, nil
}

// fileFrames decodes the files lazily; every frame of a GIF is a frame.
func fileFrames(paths []string) frameSource {
	var queue []image.Image
	var names []string
	next := 0
	return func(int) (string, image.Image, error) {
		for len(queue) == 0 {
			if next >= len(paths) {
				return "", nil, io.EOF
			}
			path := paths[next]
			next++
			imgs, err := decodeFrames(path)
			if err != nil {
				return "", nil, err
			}
			for i, im := range imgs {
				queue = append(queue, im)
				names = append(names, fmt.Sprintf("%s#%d", path, i))
			}
		}
		img, name := queue[0], names[0]
		queue, names = queue[1:], names[1:]
		return name, img, nil
	}
}

func decodeFrames(path string) ([]image.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	defer f.Close()
	if strings.EqualFold(filepath.Ext(path), ".gif") {
		g, err := gif.DecodeAll(f)
		if err != nil {
			return nil, fmt.Errorf("scan: decoding %s: %w", path, err)
		}
		out := make([]image.Image, len(g.Image))
		for i, p := range g.Image {
			out[i] = p
		}
		return out, nil
	}
	img, _, err := image.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("scan: decoding %s: %w", path, err)
	}
	return []image.Image{img}, nil
}

func saveFrame(dir string, i int, img image.Image) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("capture-%04d.png", i))
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("scan: writing %s: %w", path, err)
	}
	return f.Close()
}

// simulatedFrames creates a payer's loop and films it with a profile.
func simulatedFrames(p watermark.Params, profile, tokenHex string, frames int, seed uint64, distance float64, lens, burst int) (frameSource, error) {
	var t0 []byte
	var err error
	if tokenHex != "" {
		t0, err = hex.DecodeString(tokenHex)
		if err != nil || len(t0) != p.TokenLen {
			return nil, fmt.Errorf("scan: --token must be %d bytes of hex", p.TokenLen)
		}
	} else if t0, err = watermark.NewToken(p.TokenLen, nil); err != nil {
		return nil, err
	}
	key, err := watermark.NewSlotKey(nil)
	if err != nil {
		return nil, err
	}
	loop, err := watermark.NewLoop(t0, key, p, nil)
	if err != nil {
		return nil, err
	}
	if seed == 0 {
		seed = rand.Uint64()
	}
	if frames < 1 || frames > 10000 || burst < 1 || burst > 1000 || lens < -1 || lens > 2 || distance < 0 {
		return nil, errors.New("scan: --frames 1..10000, --burst 1..1000, --lens -1..2, --distance >= 0")
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	closeScan := trial.WithDisplay(camsim.CloseScan(), p)
	thief := trial.WithDisplay(camsim.OnSiteTheft(), p)
	var imgs []*image.Gray
	switch profile {
	case "close-scan":
		su, err := closeScan.Draw(rng, 0, distance)
		if err != nil {
			return nil, err
		}
		tl := loop.Timeline(time.Now())
		scene := &camsim.Scene{Display: closeScan.Display, Source: tl.Frame, FrameRate: p.FrameRate, Phase: tl.Phase}
		cs, err := su.Camera.NewSession(scene, su.Pose)
		if err != nil {
			return nil, fmt.Errorf("scan: simulator: %w", err)
		}
		gap := time.Duration(float64(time.Second) / closeScan.CaptureRate)
		// Lazy: film frame i only when asked.
		return func(i int) (string, image.Image, error) {
			if i >= frames {
				return "", nil, io.EOF
			}
			img, err := cs.Capture(time.Duration(i)*gap, rng)
			return fmt.Sprintf("sim#%d", i), img, err
		}, nil
	case "on-site-theft":
		imgs, _, err = trial.Photos(loop, thief, rng, lens, distance, burst)
	case "collaborative":
		photos, _, perr := trial.Photos(loop, thief, rng, lens, distance, burst)
		if perr != nil {
			return nil, perr
		}
		for _, ph := range photos {
			su, err := closeScan.Draw(rng, 0, 0)
			if err != nil {
				return nil, err
			}
			img, err := su.Camera.Capture(&camsim.Scene{Display: camsim.ReplayDisplay(), Frames: []*image.Gray{ph}}, su.Pose, 0, rng)
			if err != nil {
				continue // replayed code out of view: the accomplice's loss
			}
			imgs = append(imgs, img)
		}
	default:
		return nil, fmt.Errorf("scan: unknown profile %q (close-scan, on-site-theft, collaborative)", profile)
	}
	if err != nil {
		return nil, fmt.Errorf("scan: simulator: %w", err)
	}
	return func(i int) (string, image.Image, error) {
		if i >= len(imgs) {
			return "", nil, io.EOF
		}
		return fmt.Sprintf("sim#%d", i), imgs[i], nil
	}, nil
}
