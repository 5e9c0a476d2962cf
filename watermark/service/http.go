package service

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/qshield/qshield/pki"
	"html/template"
	"image/png"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/ledger"
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

// Handler serves:
//
//	POST /v1/watermark/codes        a phone asks for a fresh code with its limit (phone certificate)
//	POST /v1/watermark/pay          a scanner redeems a reconstructed code (scanner certificate, Idempotency-Key)
//	GET  /watermark/screen/{id}/    the code's loop as a page; …/loop.gif, …/frame/{n}.png
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	screens := &screens{m: map[string]*screen{}}
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
			httpx.WriteProblem(w, r, http.StatusBadRequest, "invalid_limit", "limit must be a positive amount in minor units")
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
		id := screens.add(loop, rec.ExpiresAt)
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
			httpx.WriteProblem(w, r, http.StatusBadRequest, "invalid_stamps", "at most 255 stamps")
			return
		}
		t, err := s.Pay(r.Context(), peer(r), merchant, watermark.Claim{Handle: req.Handle, Token: req.Token, Stamps: req.Stamps, Amount: req.Amount}, req.Currency, key)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, t)
	})
	mux.HandleFunc("GET /watermark/screen/{id}/{file...}", func(w http.ResponseWriter, r *http.Request) {
		sc := screens.get(r.PathValue("id"))
		if sc == nil {
			httpx.WriteProblem(w, r, http.StatusNotFound, "not_found", "no such code (expired?)")
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		file := r.PathValue("file")
		switch {
		case file == "" || file == "index.html":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_ = screenPage.Execute(w, map[string]any{"N": s.Params.Shares, "Period": s.Params.FramePeriod().Milliseconds(), "Handle": sc.loop.Handle})
		case file == "loop.gif":
			// The next few seconds of the loop: its stamps age out after that.
			var buf bytes.Buffer
			if err := sc.loop.WriteGIF(&buf, s.now(), 3*time.Second); err != nil {
				writeErr(w, r, err)
				return
			}
			w.Header().Set("Content-Type", "image/gif")
			_, _ = w.Write(buf.Bytes())
		case len(file) > 10 && file[:6] == "frame/":
			n, err := strconv.Atoi(file[6 : len(file)-4])
			if err != nil || n < 0 || n >= s.Params.Shares || file[len(file)-4:] != ".png" {
				httpx.WriteProblem(w, r, http.StatusNotFound, "not_found", "no such frame")
				return
			}
			// Share n stamped with the current slot.
			w.Header().Set("Content-Type", "image/png")
			_ = png.Encode(w, sc.loop.Frame(n, watermark.SlotAt(s.now())))
		default:
			httpx.WriteProblem(w, r, http.StatusNotFound, "not_found", "no such file")
		}
	})
	return mux
}

var screenPage = template.Must(template.New("s").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Payment code</title>
<style>body{background:#fff;text-align:center;font-family:sans-serif}img{image-rendering:pixelated;width:420px}</style></head>
<body><p>Show this screen to the merchant's scanner, close up.</p>
<img id="f" src="frame/0.png" alt="payment code">
<script>
var n={{.N}}, i=0, frames=[];
// Every frame carries the current time slot: fetch each one fresh.
setInterval(function(){i=(i+1)%n; document.getElementById('f').src='frame/'+i+'.png?t='+Date.now();}, {{.Period}});
</script></body></html>`))

type screen struct {
	loop    *watermark.Loop
	expires time.Time
}

type screens struct {
	mu sync.Mutex
	m  map[string]*screen
}

func (s *screens) add(l *watermark.Loop, expires time.Time) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for k, v := range s.m { // drop expired loops: they hold shares of T0
		if now.After(v.expires) {
			delete(s.m, k)
		}
	}
	s.m[id] = &screen{loop: l, expires: expires}
	return id
}

func (s *screens) get(id string) *screen {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.m[id]
	if sc != nil && time.Now().After(sc.expires) {
		delete(s.m, id)
		return nil
	}
	return sc
}

func peer(r *http.Request) string {
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

func writeErr(w http.ResponseWriter, r *http.Request, err error) {
	status, code := http.StatusInternalServerError, "internal"
	switch {
	case errors.Is(err, watermark.ErrUnknownToken):
		status, code = http.StatusNotFound, "unknown_code"
	case errors.Is(err, watermark.ErrExpired):
		status, code = http.StatusGone, "code_expired"
	case errors.Is(err, watermark.ErrUsed):
		status, code = http.StatusConflict, "code_used"
	case errors.Is(err, watermark.ErrWrongToken):
		status, code = http.StatusForbidden, "wrong_token"
	case errors.Is(err, watermark.ErrStale):
		status, code = http.StatusForbidden, "stale_shares"
	case errors.Is(err, watermark.ErrBadStamp):
		status, code = http.StatusForbidden, "bad_stamp"
	case errors.Is(err, watermark.ErrOverLimit):
		status, code = http.StatusUnprocessableEntity, "over_limit"
	case errors.Is(err, ErrUnknownDevice):
		status, code = http.StatusForbidden, "unknown_device"
	case errors.Is(err, ErrRefused):
		status, code = http.StatusUnprocessableEntity, "payment_refused"
	case errors.Is(err, ledger.ErrInvalidAmount), errors.Is(err, ledger.ErrCurrencyMismatch):
		status, code = http.StatusUnprocessableEntity, "invalid_payment"
	}
	detail := err.Error()
	if status == http.StatusInternalServerError {
		detail = "internal error"
	}
	httpx.WriteProblem(w, r, status, code, fmt.Sprint(detail))
}
