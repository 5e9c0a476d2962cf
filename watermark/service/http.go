package service

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"github.com/qshield/qshield/pki"
	"image/png"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/watermark"
)

// CodeRequest is the body of POST /v1/watermark/codes.
type CodeRequest struct {
	// Limit is the most the payer agrees to pay with the code, in minor
	// units of the account's currency (required, > 0).
	Limit int64 `json:"limit"`
}

// CodeResponse answers POST /v1/watermark/codes.
type CodeResponse struct {
	Handle  string `json:"handle"`   // T1
	Token   []byte `json:"token"`    // T0: the phone derives the watermark from it
	SlotKey []byte `json:"slot_key"` // K: the phone stamps every frame's share with it
	Limit   int64  `json:"limit"`
	// ServerTime is the server's clock when the code was issued: the phone
	// runs its slot clock from it (local clock plus the offset it implies),
	// so the slots it stamps agree with the server's to within about half a
	// round trip.
	ServerTime time.Time `json:"server_time"`
	ExpiresAt  time.Time `json:"expires_at"`
	// Screen is the path of a page showing the code's loop (the phone's
	// screen, served by the platform for demonstrations and browsers).
	Screen string `json:"screen"`
}

// PayRequest is the body of POST /v1/watermark/pay.
type PayRequest struct {
	Handle   string            `json:"handle"`
	Token    []byte            `json:"token"`
	Stamps   []watermark.Stamp `json:"stamps"` // the stamps of the shares the scanner read
	Amount   int64             `json:"amount"`
	Currency string            `json:"currency"`
}

// ChallengeKeyResponse answers GET /v1/watermark/challenge-key: the
// scanner's key for the challenges it shows (watermark.ChallengeAt) and the
// server's time, to which the scanner's slot clock is set.
type ChallengeKeyResponse struct {
	Key        []byte    `json:"key"`
	ServerTime time.Time `json:"server_time"`
}

// Handler serves:
//
//	POST /v1/watermark/codes        a phone asks for a fresh code with its limit (phone certificate)
//	POST /v1/watermark/pay          a scanner redeems a reconstructed code (scanner certificate, Idempotency-Key)
//	GET  /v1/watermark/challenge-key a scanner fetches its challenge key (scanner certificate; 404 when challenges are off)
//	GET  /watermark/screen/{id}/    the code's loop as a page; …/loop.gif, …/frame/{n}.png, …/status (paypage.Status), …/screen.js
//	POST /watermark/screen/{id}/challenge  the page tells what scanner challenge its front camera read (ScreenChallengeRequest)
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	screens := &screens{m: map[string]*screen{}, now: s.now}
	mux.HandleFunc("POST /v1/watermark/codes", func(w http.ResponseWriter, r *http.Request) {
		acct, ok := s.device(w, r, "phone")
		if !ok {
			return
		}
		var req CodeRequest
		if !httpx.DecodeOrProblem(w, r, 1<<10, &req) {
			return
		}
		if req.Limit <= 0 {
			codes.WriteCode(w, r, "invalid_code_limit", "limit must be a positive amount in minor units")
			return
		}
		code, rec, err := s.Issue(r.Context(), acct, req.Limit)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		loop, err := watermark.NewLoop(code.Token, code.SlotKey, s.Params, nil)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		limit := ""
		if a, err := s.led.Account(r.Context(), acct); err == nil {
			limit = money.Format(rec.Limit, a.Currency)
		}
		id := screens.add(loop, rec.Handle, rec.ExpiresAt, limit)
		httpx.WriteJSON(w, http.StatusCreated, CodeResponse{Handle: rec.Handle, Token: code.Token, SlotKey: code.SlotKey, Limit: rec.Limit,
			ServerTime: s.now(), ExpiresAt: rec.ExpiresAt, Screen: "/watermark/screen/" + id + "/"})
	})
	mux.HandleFunc("POST /v1/watermark/pay", func(w http.ResponseWriter, r *http.Request) {
		merchant, ok := s.device(w, r, "scanner")
		if !ok {
			return
		}
		key, ok := httpx.IdempotencyKey(w, r)
		if !ok {
			return
		}
		var req PayRequest
		if !httpx.DecodeOrProblem(w, r, 4<<10, &req) {
			return
		}
		if len(req.Stamps) > 255 {
			codes.WriteCode(w, r, "invalid_stamps", "at most 255 stamps")
			return
		}
		t, err := s.Pay(r.Context(), peer(r), merchant, watermark.Claim{Handle: req.Handle, Token: req.Token, Stamps: req.Stamps, Amount: req.Amount}, req.Currency, key)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, t)
	})
	mux.HandleFunc("GET /v1/watermark/challenge-key", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.device(w, r, "scanner"); !ok {
			return
		}
		k, err := s.ChallengeKey(peer(r))
		if err != nil {
			writeErr(w, r, err)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		httpx.WriteJSON(w, http.StatusOK, ChallengeKeyResponse{Key: k, ServerTime: s.now()})
	})
	mux.HandleFunc("GET /watermark/screen/{id}/{file...}", func(w http.ResponseWriter, r *http.Request) {
		sc := screens.get(r.PathValue("id"))
		if sc == nil && (r.PathValue("file") == "" || r.PathValue("file") == "index.html") {
			screenGone(w)
			return
		}
		if sc == nil {
			codes.WriteCode(w, r, "not_found", "no such code (expired?)")
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		file := r.PathValue("file")
		switch {
		case file == "" || file == "index.html":
			renderScreen(w, s.Params.Shares, s.Params.ModulePx, s.Params.FramePeriod(), sc.expires, s.waitingMessage(sc.limit), s.challengeMaster != nil)
		case file == "screen.js":
			// The page's front-camera reader (scanner challenges).
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			_, _ = w.Write(screenJS)
		case file == "status":
			// The screen's live status: "paid" once a scanner redeemed the code.
			s.writeScreenStatus(w, r, sc)
		case file == "loop.gif":
			// The next few seconds of the loop: its stamps age out after that.
			var buf bytes.Buffer
			if err := sc.writeGIF(&buf, s.now(), 3*time.Second); err != nil {
				writeErr(w, r, err)
				return
			}
			w.Header().Set("Content-Type", "image/gif")
			_, _ = w.Write(buf.Bytes())
		case len(file) > 10 && file[:6] == "frame/":
			n, err := strconv.Atoi(file[6 : len(file)-4])
			if err != nil || n < 0 || n >= s.Params.Shares || file[len(file)-4:] != ".png" {
				codes.WriteCode(w, r, "not_found", "no such frame")
				return
			}
			// Share n stamped with the current slot, bound to the scanner
			// challenge the page's front camera read last (if it holds one).
			w.Header().Set("Content-Type", "image/png")
			_ = png.Encode(w, sc.frame(n, s.now()))
		default:
			codes.WriteCode(w, r, "not_found", "no such file")
		}
	})
	mux.HandleFunc("POST /watermark/screen/{id}/challenge", func(w http.ResponseWriter, r *http.Request) {
		s.screenChallenge(w, r, screens.get(r.PathValue("id")))
	})
	return mux
}

type screen struct {
	loop    *watermark.Loop
	handle  string // the code's T1, for its status
	expires time.Time
	limit   string // the most the code pays, as people read it ("" unknown)

	// The scanner challenges the page's front camera read (POST …/challenge).
	mu      sync.Mutex
	tracker watermark.ChallengeTracker
	posts   *rate.Limiter
}

type screens struct {
	mu  sync.Mutex
	m   map[string]*screen
	now func() time.Time // the service's clock
}

func (s *screens) add(l *watermark.Loop, handle string, expires time.Time, limit string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, v := range s.m { // drop expired loops: they hold shares of T0
		if now.After(v.expires) {
			delete(s.m, k)
		}
	}
	s.m[id] = &screen{loop: l, handle: handle, expires: expires, limit: limit, posts: rate.NewLimiter(screenChallengeRate, screenChallengeBurst)}
	return id
}

func (s *screens) get(id string) *screen {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.m[id]
	if sc != nil && s.now().After(sc.expires) {
		delete(s.m, id)
		return nil
	}
	return sc
}

// peer names the calling device: the principal the platform's
// authorization router authenticated (authz.PrincipalFrom; it checked the
// kind, and a name belongs to one kind) — which is also the only one there
// is behind a trusted TLS-terminating proxy — or, on a stand-alone server
// without the router, the common name of the TLS-verified client
// certificate. "" when there is none.
func peer(r *http.Request) string {
	if p := authz.PrincipalFrom(r.Context()); p != nil {
		return p.Name
	}
	cn, _, err := pki.PeerIdentity(r.TLS)
	if err != nil {
		return ""
	}
	return cn
}

func (s *Service) device(w http.ResponseWriter, r *http.Request, role string) (string, bool) {
	name := peer(r)
	if name == "" {
		httpx.WriteProblem(w, r, http.StatusUnauthorized, "client_certificate_required", "a "+role+" certificate from the platform CA is required")
		return "", false
	}
	acct, err := s.Account(r.Context(), name, role)
	if err != nil {
		writeErr(w, r, err)
		return "", false
	}
	return acct, true
}

// codes is the watermark service's error-code registry.
var codes = httpx.NewRegistry(
	httpx.Code{Code: "unknown_code", Status: http.StatusNotFound, Message: "The payment code is not known.", Err: watermark.ErrUnknownToken},
	httpx.Code{Code: "code_expired", Status: http.StatusGone, Message: "The payment code has expired; please scan a new one.", Err: watermark.ErrExpired},
	httpx.Code{Code: "code_used", Status: http.StatusConflict, Message: "The payment code was already used.", Err: watermark.ErrUsed},
	httpx.Code{Code: "wrong_token", Status: http.StatusForbidden, Message: "The payment code does not match.", Err: watermark.ErrWrongToken},
	httpx.Code{Code: "stale_shares", Status: http.StatusForbidden, Message: "The payment code was not shown just now; please scan the payer's screen again.", Err: watermark.ErrStale},
	httpx.Code{Code: "bad_stamp", Status: http.StatusForbidden, Message: "The payment code's time stamps do not verify.", Err: watermark.ErrBadStamp},
	httpx.Code{Code: "wrong_scanner", Status: http.StatusForbidden, Message: "The payment code was shown to another scanner; please hold the phone to this scanner.", Err: watermark.ErrWrongScanner},
	httpx.Code{Code: "unbound_shares", Status: http.StatusForbidden, Message: "The payment code was not shown to this scanner; please hold the phone to the scanner again.", Err: watermark.ErrUnbound},
	httpx.Code{Code: "challenges_off", Status: http.StatusNotFound, Message: "Scanner challenges are not turned on.", Err: ErrChallengesOff},
	httpx.Code{Code: "over_limit", Status: http.StatusUnprocessableEntity, Message: "The amount is above the limit the payer set for this code.", Err: watermark.ErrOverLimit},
	httpx.Code{Code: "invalid_challenge", Status: http.StatusBadRequest, Message: "What the camera read is not a scanner's challenge.", Err: watermark.ErrChallenge},
	httpx.Code{Code: "stale_challenge", Status: http.StatusUnprocessableEntity, Message: "The scanner's challenge is not current; hold the phone to the scanner again.", Err: ErrStaleChallenge},
	httpx.Code{Code: "invalid_code_limit", Status: http.StatusBadRequest, Message: "The code's limit must be a positive amount."},
	httpx.Code{Code: "invalid_stamps", Status: http.StatusBadRequest, Message: "The request carries too many stamps."},
	httpx.Code{Code: "unknown_device", Status: http.StatusForbidden, Message: "This device is not registered for payments.", Err: ErrUnknownDevice},
	httpx.Code{Code: "payment_refused", Status: http.StatusUnprocessableEntity, Message: "The payment was refused.", Err: ErrRefused},
	httpx.Code{Code: "invalid_payment", Status: http.StatusUnprocessableEntity, Message: "The payment amount or currency is not valid.", Err: ledger.ErrInvalidAmount},
	httpx.Code{Code: "invalid_payment", Status: http.StatusUnprocessableEntity, Message: "The payment amount or currency is not valid.", Err: ledger.ErrCurrencyMismatch},
)

// ErrorCodes returns the watermark service's error-code registry.
func ErrorCodes() *httpx.Registry { return codes }

func writeErr(w http.ResponseWriter, r *http.Request, err error) { codes.Write(w, r, err) }
