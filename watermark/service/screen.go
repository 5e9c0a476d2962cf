package service

import (
	_ "embed"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/time/rate"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/watermark"
)

// The platform's screen page under scanner challenges (issue 18).
//
// The page /watermark/screen/{id}/ shows the code's loop as frames the
// server renders. With challenges on, a scanner pays only with stamps bound
// to its own challenge, which the phone must read with its front camera. The
// page does it the way the browser wallet does (screen.js): it opens the
// front camera, decodes the scanner's challenge QR code with the wallet's
// WebAssembly decoder (/wallet/wallet.wasm, same origin), and posts the text
// it read to POST /watermark/screen/{id}/challenge. The server parses it
// (watermark.ParseChallenge, canonical text only), checks that its slot lies
// within the acceptance window of now (a challenge that could bind no fresh
// stamp is refused, stale_challenge), and hands it to the screen's
// watermark.ChallengeTracker with the server's receipt time; from then on
// every frame the page fetches is stamped bound to the tracker's current
// challenge (Loop.FrameBound), and unbound again when no challenge came
// for the tracker's hold (2 slots) or two different challenges conflict.
//
// Who may post: whoever holds the screen's unguessable id (128 random bits,
// given only to the phone that asked for the code), the same capability that
// shows the code. The server cannot tell a challenge the payer's camera read
// from one typed in by the id's holder — nor can the wallet's tracker — so
// the id is as secret as the code's frames themselves. Posts are bounded
// (a body of at most maxScreenChallengeBody bytes, screenChallengeRate per screen); bad input gets a 4xx and
// leaves the tracker unchanged.

// ErrStaleChallenge reports a challenge whose slot lies outside the
// acceptance window: frames bound to it could not pay.
var ErrStaleChallenge = errors.New("watermark: scanner challenge is not current")

// screenChallengeRate and screenChallengeBurst bound how often one screen's
// page may post what its camera read (it posts at most a few times a slot).
const (
	screenChallengeRate  = rate.Limit(8)
	screenChallengeBurst = 16
)

// maxScreenChallengeBody bounds the body of a challenge post: the JSON
// object around a 31-character challenge text.
const maxScreenChallengeBody = 128

// ScreenChallengeRequest is the body of POST /watermark/screen/{id}/challenge.
type ScreenChallengeRequest struct {
	// Challenge is the text of the scanner's challenge QR code
	// (watermark.Challenge.String).
	Challenge string `json:"challenge"`
}

// ScreenChallengeResponse answers it: whether the screen's frames are now
// bound to a scanner's challenge (false while two challenges conflict).
type ScreenChallengeResponse struct {
	Bound bool `json:"bound"`
}

//go:embed screen.js
var screenJS []byte

// decodeScreenChallenge reads a POST …/challenge request: one JSON object
// {"challenge": text} of at most maxScreenChallengeBody bytes (httpx.Decode's
// rules: application/json, no unknown or repeated fields) whose text is a
// canonical challenge (watermark.ParseChallenge). Errors are
// *httpx.DecodeError for the body and the challenge's own otherwise.
func decodeScreenChallenge(r *http.Request) (watermark.Challenge, error) {
	var req ScreenChallengeRequest
	if err := httpx.Decode(r, maxScreenChallengeBody, &req); err != nil {
		return watermark.Challenge{}, err
	}
	return watermark.ParseChallenge(req.Challenge)
}

// fresh reports whether frames bound to c, shown at now, could still pay:
// c's slot lies within w of now (the server's check of a bound stamp).
func fresh(c watermark.Challenge, now time.Time, w watermark.Window) bool {
	start := watermark.SlotStart(c.Slot)
	return now.Sub(start.Add(watermark.SlotDuration)) <= w.MaxAge && start.Sub(now) <= w.MaxLead
}

// screenChallenge serves POST /watermark/screen/{id}/challenge for sc (nil:
// no such screen).
func (s *Service) screenChallenge(w http.ResponseWriter, r *http.Request, sc *screen) {
	if sc == nil {
		codes.WriteCode(w, r, "not_found", "no such code (expired?)")
		return
	}
	if s.challengeMaster == nil {
		writeErr(w, r, ErrChallengesOff)
		return
	}
	if res := sc.posts.Reserve(); !res.OK() || res.Delay() > 0 {
		wait := time.Second
		if res.OK() {
			wait = res.Delay()
			res.Cancel()
		}
		w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
		codes.WriteCode(w, r, "rate_limited", "too many challenge reads for this screen")
		return
	}
	c, err := decodeScreenChallenge(r)
	var de *httpx.DecodeError
	switch {
	case errors.As(err, &de):
		httpx.WriteProblem(w, r, de.Status, de.Code, de.Error())
		return
	case err != nil:
		writeErr(w, r, err)
		return
	}
	now := s.now()
	if !fresh(c, now, s.window) {
		writeErr(w, r, fmt.Errorf("%w: slot %d, now %d", ErrStaleChallenge, c.Slot, watermark.SlotAt(now)))
		return
	}
	sc.mu.Lock()
	sc.tracker.Observe(c, now)
	_, bound := sc.tracker.Current(now)
	sc.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, ScreenChallengeResponse{Bound: bound})
}

// challenge returns the scanner challenge the screen's frames shown at now
// are bound to (ok false: none).
func (sc *screen) challenge(now time.Time) (watermark.Challenge, bool) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.tracker.Current(now)
}

// frame renders share n as shown at now: bound to the challenge the page
// holds, or stamped with now's slot alone.
func (sc *screen) frame(n int, now time.Time) *image.Gray {
	if c, ok := sc.challenge(now); ok {
		return sc.loop.FrameBound(n, c)
	}
	return sc.loop.Frame(n, watermark.SlotAt(now))
}

// writeGIF writes the next d of the loop from start, every frame bound to
// the challenge the page held at start (if any).
func (sc *screen) writeGIF(w io.Writer, start time.Time, d time.Duration) error {
	c, ok := sc.challenge(start)
	if !ok {
		return sc.loop.WriteGIF(w, start, d)
	}
	tl := sc.loop.Timeline(start)
	tl.Challenge = func(int) (watermark.Challenge, bool) { return c, true }
	pal := make(color.Palette, 256)
	for i := range pal {
		pal[i] = color.Gray{Y: uint8(i)}
	}
	delay := max(2, int(math.Round(100/sc.loop.Params.FrameRate)))
	g := &gif.GIF{LoopCount: -1}
	for _, f := range tl.Frames(int(d.Seconds()*sc.loop.Params.FrameRate) + 1) {
		p := image.NewPaletted(f.Rect, pal)
		copy(p.Pix, f.Pix) // palette index i is grey level i; strides are equal
		g.Image = append(g.Image, p)
		g.Delay = append(g.Delay, delay)
	}
	if err := gif.EncodeAll(w, g); err != nil {
		return fmt.Errorf("watermark/service: encoding GIF: %w", err)
	}
	return nil
}
