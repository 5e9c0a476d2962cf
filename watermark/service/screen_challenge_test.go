package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image/gif"
	"image/png"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/internal/testclock"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
	"github.com/qshield/qshield/watermark"
)

// screenFixture is a service with scanner challenges on, its handler, two
// registered scanners and a phone.
type screenFixture struct {
	s   *Service
	h   http.Handler
	led *ledger.Ledger
	clk *testclock.Clock
}

func (f screenFixture) now() time.Time { return f.clk.Now() }

func newScreenFixture(t *testing.T, db *sqldb.DB, challenges bool) screenFixture {
	t.Helper()
	_, led, clk := setup(t, db)
	return screenFixtureOn(t, db, led, clk, challenges)
}

// screenFixtureOn is newScreenFixture on a ledger and clock already set up.
func screenFixtureOn(t *testing.T, db *sqldb.DB, led *ledger.Ledger, clk *testclock.Clock, challenges bool) screenFixture {
	t.Helper()
	ctx := context.Background()
	cfg := Config{DB: db, Ledger: led, Now: clk.Now}
	if challenges {
		cfg.ChallengeMaster = bytes.Repeat([]byte{9}, watermark.ChallengeKeyLen)
	}
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, d := range [][2]string{{"phone-1", "phone"}, {"scanner-1", "scanner"}, {"scanner-2", "scanner"}} {
		acct := "shop"
		if d[1] == "phone" {
			acct = "payer"
		}
		if _, err := s.Account(ctx, d[0], d[1]); err == nil {
			continue // enrolled by an earlier fixture on this database
		}
		if err := s.Enrol(ctx, d[0], d[1], acct); err != nil {
			t.Fatal(err)
		}
	}
	return screenFixture{s: s, h: s.Handler(), led: led, clk: clk}
}

// do sends a request to the handler, as principal name when it is not "".
func (f screenFixture) do(method, path, ctype, body, name string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	if name != "" {
		r = r.WithContext(authz.WithPrincipal(r.Context(), &pki.Principal{Name: name}))
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

// code asks for a code as phone-1 and returns it.
func (f screenFixture) code(t *testing.T) CodeResponse {
	t.Helper()
	w := f.do(http.MethodPost, "/v1/watermark/codes", "application/json", `{"limit":500}`, "phone-1")
	if w.Code != http.StatusCreated {
		t.Fatalf("code: %d %s", w.Code, w.Body)
	}
	var c CodeResponse
	if err := json.Unmarshal(w.Body.Bytes(), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// stamp returns the stamp the screen's frame n carries now.
func (f screenFixture) stamp(t *testing.T, screen string, n int) watermark.Stamp {
	t.Helper()
	w := f.do(http.MethodGet, screen+"frame/"+strconv.Itoa(n)+".png", "", "", "")
	if w.Code != http.StatusOK {
		t.Fatalf("frame %d: %d %s", n, w.Code, w.Body)
	}
	img, err := png.Decode(w.Body)
	if err != nil {
		t.Fatal(err)
	}
	e, err := watermark.NewExtractor(f.s.Params, false)
	if err != nil {
		t.Fatal(err)
	}
	fr, err := e.Extract(img)
	if err != nil {
		t.Fatalf("frame %d: %v", n, err)
	}
	return fr.Share.Stamp
}

func (f screenFixture) post(screen, body string) *httptest.ResponseRecorder {
	return f.do(http.MethodPost, screen+"challenge", "application/json", body, "")
}

func challengeBody(c watermark.Challenge) string { return `{"challenge":"` + c.String() + `"}` }

// problemCode is the code of a problem answer.
func problemCode(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var p struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("answer %d is not a problem: %s", w.Code, w.Body)
	}
	return p.Code
}

// TestScreenChallenge: the screen page posts the scanner challenge its
// front camera read; from then on the frames the server renders carry
// stamps bound to it, so the code pays at that scanner and a relay of the
// frames to another scanner is refused (wrong_scanner). Without the route
// (or without the binding of the frames) the claim at scanner-1 is refused
// as unbound.
func TestScreenChallenge(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		f := newScreenFixture(t, db, true)
		code := f.code(t)
		page := f.do(http.MethodGet, code.Screen, "", "", "")
		if page.Code != http.StatusOK || !strings.Contains(page.Body.String(), `<script src="screen.js"></script>`) ||
			!strings.Contains(page.Header().Get("Content-Security-Policy"), "'wasm-unsafe-eval'") {
			t.Fatalf("screen page %d, policy %q", page.Code, page.Header().Get("Content-Security-Policy"))
		}
		if js := f.do(http.MethodGet, code.Screen+"screen.js", "", "", ""); js.Code != http.StatusOK || !strings.HasPrefix(js.Header().Get("Content-Type"), "text/javascript") ||
			!strings.Contains(js.Body.String(), "facingMode: 'user'") {
			t.Fatalf("screen.js: %d %q", js.Code, js.Header().Get("Content-Type"))
		}
		if st := f.stamp(t, code.Screen, 0); st.Bound {
			t.Fatal("a frame bound before any challenge was read")
		}
		k1, err := f.s.ChallengeKey("scanner-1")
		if err != nil {
			t.Fatal(err)
		}
		ch := watermark.ChallengeAt(k1, watermark.SlotAt(f.now()))
		w := f.post(code.Screen, challengeBody(ch))
		if w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != `{"bound":true}` {
			t.Fatalf("challenge post: %d %s", w.Code, w.Body)
		}
		var stamps []watermark.Stamp
		for n := 0; n < f.s.Params.Threshold; n++ {
			st := f.stamp(t, code.Screen, n)
			if !st.Bound {
				t.Fatalf("frame %d is not bound after the challenge", n)
			}
			stamps = append(stamps, st)
		}
		// The loop's GIF (the CLI saves it) is bound too.
		gw := f.do(http.MethodGet, code.Screen+"loop.gif", "", "", "")
		anim, err := gif.DecodeAll(gw.Body)
		if err != nil || len(anim.Image) == 0 {
			t.Fatalf("loop.gif: %d, %v", gw.Code, err)
		}
		e, err := watermark.NewExtractor(f.s.Params, false)
		if err != nil {
			t.Fatal(err)
		}
		if fr, err := e.Extract(anim.Image[0]); err != nil || !fr.Share.Stamp.Bound {
			t.Fatalf("loop.gif's first frame: %+v, %v; want a bound stamp", fr.Share.Stamp, err)
		}
		c := watermark.Claim{Handle: code.Handle, Token: code.Token, Stamps: stamps, Amount: 1_00}
		if _, err := f.s.Pay(ctx, "scanner-2", "shop", c, "CNY", "relay"); !errors.Is(err, watermark.ErrWrongScanner) {
			t.Fatalf("the screen's frames relayed to scanner-2: %v, want ErrWrongScanner", err)
		}
		if balance(t, f.led, "shop") != 0 {
			t.Fatal("the relay moved money")
		}
		if _, err := f.s.Pay(ctx, "scanner-1", "shop", c, "CNY", "ok"); err != nil {
			t.Fatalf("at scanner-1, whose challenge the screen read: %v", err)
		}
		if balance(t, f.led, "shop") != 1_00 {
			t.Fatal("scanner-1 not paid")
		}

		// The binding lapses when the camera stops reading (2 slots).
		f.clk.Add(3 * time.Second)
		if st := f.stamp(t, code.Screen, 0); st.Bound {
			t.Fatal("frames still bound 3 s after the last challenge")
		}
		// Two scanners' challenges for the same slot: bound to neither.
		code2 := f.code(t)
		k2, err := f.s.ChallengeKey("scanner-2")
		if err != nil {
			t.Fatal(err)
		}
		now := watermark.SlotAt(f.now())
		if w := f.post(code2.Screen, challengeBody(watermark.ChallengeAt(k1, now))); w.Code != http.StatusOK {
			t.Fatalf("first challenge: %d %s", w.Code, w.Body)
		}
		if w := f.post(code2.Screen, challengeBody(watermark.ChallengeAt(k2, now))); w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != `{"bound":false}` {
			t.Fatalf("a second scanner's challenge: %d %s", w.Code, w.Body)
		}
		if st := f.stamp(t, code2.Screen, 0); st.Bound {
			t.Fatal("frames bound while two scanners' challenges conflict")
		}
	})
}

// TestScreenChallengeRefusals: whatever is posted that is not a current
// challenge of a live screen gets a clear 4xx and leaves the screen's
// frames unbound.
func TestScreenChallengeRefusals(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		f := newScreenFixture(t, db, true)
		code := f.code(t)
		k1, err := f.s.ChallengeKey("scanner-1")
		if err != nil {
			t.Fatal(err)
		}
		now := watermark.SlotAt(f.now())
		good := watermark.ChallengeAt(k1, now).String()
		// 16 bytes are 26 base32 digits, the last with 2 padding bits: a
		// different last digit with the same 16 bytes is non-canonical.
		last := good[len(good)-1]
		alt := byte('A')
		for _, d := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") {
			if d != last && strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", d)>>2 == strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", last)>>2 {
				alt = d
				break
			}
		}
		nonCanonical := good[:len(good)-1] + string(alt)
		for _, tc := range []struct {
			name, path, ctype, body string
			status                  int
			code                    string
		}{
			{"not JSON", code.Screen + "challenge", "application/json", good, http.StatusBadRequest, "malformed_json"},
			{"empty", code.Screen + "challenge", "application/json", "", http.StatusBadRequest, "malformed_json"},
			{"unknown field", code.Screen + "challenge", "application/json", `{"challenge":"` + good + `","scanner":"scanner-1"}`, http.StatusBadRequest, "malformed_json"},
			{"duplicate key", code.Screen + "challenge", "application/json", `{"challenge":"` + good + `","challenge":"` + good + `"}`, http.StatusBadRequest, "malformed_json"},
			{"two values", code.Screen + "challenge", "application/json", `{"challenge":"` + good + `"}{}`, http.StatusBadRequest, "malformed_json"},
			{"text type", code.Screen + "challenge", "text/plain", `{"challenge":"` + good + `"}`, http.StatusUnsupportedMediaType, "unsupported_media_type"},
			{"too large", code.Screen + "challenge", "application/json", `{"challenge":"` + good + strings.Repeat(" ", 200) + `"}`, http.StatusRequestEntityTooLarge, "body_too_large"},
			{"no prefix", code.Screen + "challenge", "application/json", `{"challenge":"` + good[len(watermark.ChallengePrefix):] + `"}`, http.StatusBadRequest, "invalid_challenge"},
			{"lower case", code.Screen + "challenge", "application/json", `{"challenge":"` + strings.ToLower(good) + `"}`, http.StatusBadRequest, "invalid_challenge"},
			{"short", code.Screen + "challenge", "application/json", `{"challenge":"` + good[:len(good)-2] + `"}`, http.StatusBadRequest, "invalid_challenge"},
			{"non-canonical", code.Screen + "challenge", "application/json", `{"challenge":"` + nonCanonical + `"}`, http.StatusBadRequest, "invalid_challenge"},
			{"a payment code", code.Screen + "challenge", "application/json", `{"challenge":"` + code.Handle + `"}`, http.StatusBadRequest, "invalid_challenge"},
			{"old slot", code.Screen + "challenge", "application/json", challengeBody(watermark.ChallengeAt(k1, now-4)), http.StatusUnprocessableEntity, "stale_challenge"},
			{"future slot", code.Screen + "challenge", "application/json", challengeBody(watermark.ChallengeAt(k1, now+4)), http.StatusUnprocessableEntity, "stale_challenge"},
			{"unknown screen", "/watermark/screen/00112233445566778899aabbccddeeff/challenge", "application/json", `{"challenge":"` + good + `"}`, http.StatusNotFound, "not_found"},
		} {
			w := f.do(http.MethodPost, tc.path, tc.ctype, tc.body, "")
			if w.Code != tc.status || problemCode(t, w) != tc.code {
				t.Errorf("%s: %d %s, want %d %s", tc.name, w.Code, w.Body, tc.status, tc.code)
			}
			if st := f.stamp(t, code.Screen, 0); st.Bound {
				t.Fatalf("%s: the screen's frames are bound after a refused post", tc.name)
			}
		}
		// GET is not a post; the route takes nothing else.
		if w := f.do(http.MethodGet, code.Screen+"challenge", "", "", ""); w.Code != http.StatusNotFound {
			t.Errorf("GET challenge: %d", w.Code)
		}
		// Too many posts for one screen: 429 with Retry-After.
		limited := 0
		for range 4 * screenChallengeBurst {
			w := f.post(code.Screen, `{"challenge":"x"}`)
			if w.Code == http.StatusTooManyRequests {
				limited++
				if w.Header().Get("Retry-After") == "" || problemCode(t, w) != "rate_limited" {
					t.Fatalf("rate limited without Retry-After: %v %s", w.Header(), w.Body)
				}
			}
		}
		if limited == 0 {
			t.Errorf("%d posts in a row were all taken", 4*screenChallengeBurst)
		}
		// Challenges off: the route answers challenges_off and the page
		// runs no camera.
		off := screenFixtureOn(t, db, f.led, f.clk, false)
		code3 := off.code(t)
		if w := off.post(code3.Screen, challengeBody(watermark.ChallengeAt(k1, now))); w.Code != http.StatusNotFound || problemCode(t, w) != "challenges_off" {
			t.Errorf("challenges off: %d %s", w.Code, w.Body)
		}
		if page := off.do(http.MethodGet, code3.Screen, "", "", ""); strings.Contains(page.Body.String(), "screen.js") || strings.Contains(page.Header().Get("Content-Security-Policy"), "wasm") {
			t.Error("the screen runs the camera with challenges off")
		}
	})
}

// FuzzParseScreenChallenge: a body is accepted only when it is one JSON
// object holding a challenge's canonical text, and then it means exactly
// that challenge: the accepted body's challenge prints back to the text in
// it, and re-encoding the challenge parses to the same challenge.
func FuzzParseScreenChallenge(f *testing.F) {
	c := watermark.ChallengeAt(bytes.Repeat([]byte{1}, 32), 1_765_000_000)
	f.Add([]byte(challengeBody(c)))
	f.Add([]byte(`{"challenge":"QSC1:AAAAAAAAAAAAAAAAAAAAAAAAAA"}`))
	f.Add([]byte(`{"challenge":"QSC1:AAAAAAAAAAAAAAAAAAAAAAAAAB"}`))
	f.Add([]byte(`{"challenge":""}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := decodeScreenChallenge(postBody(body))
		if err != nil {
			if got != (watermark.Challenge{}) {
				t.Fatalf("refused body %q gave challenge %+v", body, got)
			}
			return
		}
		if len(body) > maxScreenChallengeBody {
			t.Fatalf("accepted a body of %d bytes", len(body))
		}
		var req ScreenChallengeRequest
		if err := json.Unmarshal(body, &req); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", body, err)
		}
		if got.String() != req.Challenge {
			t.Fatalf("accepted %q as %+v, which prints as %q", req.Challenge, got, got.String())
		}
		again, err := decodeScreenChallenge(postBody([]byte(challengeBody(got))))
		if err != nil || again != got {
			t.Fatalf("re-encoded %+v parses to %+v, %v", got, again, err)
		}
	})
}

// postBody is a POST …/challenge request carrying body.
func postBody(body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/watermark/screen/x/challenge", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json; charset=utf-8")
	return r
}
