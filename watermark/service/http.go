package service

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
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

// CodeResponse answers POST /v1/watermark/codes.
type CodeResponse struct {
	Handle    string    `json:"handle"` // T1
	Token     []byte    `json:"token"`  // T0: the phone derives the watermark from it
	ExpiresAt time.Time `json:"expires_at"`
	// Screen is the path of a page showing the code's loop (the phone's
	// screen, served by the platform for demonstrations and browsers).
	Screen string `json:"screen"`
}

// PayRequest is the body of POST /v1/watermark/pay.
type PayRequest struct {
	Handle   string `json:"handle"`
	Token    []byte `json:"token"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

// Handler serves:
//
//	POST /v1/watermark/codes        a phone asks for a fresh code (phone certificate)
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
		t0, rec, err := s.Issue(r.Context(), acct)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		loop, err := watermark.NewLoop(t0, s.Params, nil)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		id := screens.add(loop, rec.ExpiresAt)
		httpx.WriteJSON(w, http.StatusCreated, CodeResponse{Handle: rec.Handle, Token: t0, ExpiresAt: rec.ExpiresAt, Screen: "/watermark/screen/" + id + "/"})
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
		t, err := s.Pay(r.Context(), peer(r), merchant, req.Handle, req.Token, req.Amount, req.Currency, key)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, t)
	})
	mux.HandleFunc("GET /watermark/screen/{id}/{file...}", func(w http.ResponseWriter, r *http.Request) {
		sc := screens.get(r.PathValue("id"))
		if sc == nil {
			codes.WriteCode(w, r, "not_found", "no such code (expired?)")
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		file := r.PathValue("file")
		switch {
		case file == "" || file == "index.html":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_ = screenPage.Execute(w, map[string]any{"N": len(sc.loop.Frames), "Period": s.Params.FramePeriod().Milliseconds(), "Handle": sc.loop.Handle})
		case file == "loop.gif":
			var buf bytes.Buffer
			if err := sc.loop.WriteGIF(&buf); err != nil {
				writeErr(w, r, err)
				return
			}
			w.Header().Set("Content-Type", "image/gif")
			_, _ = w.Write(buf.Bytes())
		case len(file) > 10 && file[:6] == "frame/":
			n, err := strconv.Atoi(file[6 : len(file)-4])
			if err != nil || n < 0 || n >= len(sc.loop.Frames) || file[len(file)-4:] != ".png" {
				codes.WriteCode(w, r, "not_found", "no such frame")
				return
			}
			w.Header().Set("Content-Type", "image/png")
			_ = png.Encode(w, sc.loop.Frames[n])
		default:
			codes.WriteCode(w, r, "not_found", "no such file")
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
for (var k=0;k<n;k++){var im=new Image(); im.src='frame/'+k+'.png'; frames.push(im);}
setInterval(function(){i=(i+1)%n; document.getElementById('f').src=frames[i].src;}, {{.Period}});
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

// codes is the watermark service's error-code registry.
var codes = httpx.NewRegistry(
	httpx.Code{Code: "unknown_code", Status: http.StatusNotFound, Message: "The payment code is not known.", Err: watermark.ErrUnknownToken},
	httpx.Code{Code: "code_expired", Status: http.StatusGone, Message: "The payment code has expired; please scan a new one.", Err: watermark.ErrExpired},
	httpx.Code{Code: "code_used", Status: http.StatusConflict, Message: "The payment code was already used.", Err: watermark.ErrUsed},
	httpx.Code{Code: "wrong_token", Status: http.StatusForbidden, Message: "The payment code does not match.", Err: watermark.ErrWrongToken},
	httpx.Code{Code: "unknown_device", Status: http.StatusForbidden, Message: "This device is not registered for payments.", Err: ErrUnknownDevice},
	httpx.Code{Code: "payment_refused", Status: http.StatusUnprocessableEntity, Message: "The payment was refused.", Err: ErrRefused},
	httpx.Code{Code: "invalid_payment", Status: http.StatusUnprocessableEntity, Message: "The payment amount or currency is not valid.", Err: ledger.ErrInvalidAmount},
	httpx.Code{Code: "invalid_payment", Status: http.StatusUnprocessableEntity, Message: "The payment amount or currency is not valid.", Err: ledger.ErrCurrencyMismatch},
)

// ErrorCodes returns the watermark service's error-code registry.
func ErrorCodes() *httpx.Registry { return codes }

func writeErr(w http.ResponseWriter, r *http.Request, err error) { codes.Write(w, r, err) }
