package service

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/qshield/qshield/paypage"
	"github.com/qshield/qshield/watermark"
)

// renderScreen writes the payer's screen (package paypage's layout): the
// code's n frames looping every period (each fetched anew: a frame is
// stamped with the current time slot), sized to the phone's width with the
// quiet zone inside the image (never cropped), a countdown to the code's
// expiry, the most the code pays (the payer's limit) and a brightness hint — a scanner reads the faint watermark best
// from a bright screen held still. msg is the waiting status
// (waitingMessage). With scanner challenges on (challenges), the page also
// runs screen.js, which reads the scanner's challenge with the front camera
// through the wallet's WebAssembly QR decoder and says in the note line
// what the camera sees (screen.go).
func renderScreen(w http.ResponseWriter, n, modulePx int, period time.Duration, expires time.Time, msg string, challenges bool) {
	loop := make([]string, n)
	for k := range loop {
		loop[k] = "frame/" + strconv.Itoa(k) + ".png"
	}
	p := paypage.Page{
		Title:      "Your payment code",
		Subheading: "qshield",
		Heading:    "Your payment code",
		Loop:       loop,
		LoopMillis: int(period.Milliseconds()),
		QRAlt:      "your payment code, changing several times a second",
		QRScale:    modulePx,
		LoopFresh:  true, // every frame carries the current time slot
		Expires:    expires,
		Status:     paypage.Status{State: paypage.Waiting, Message: msg},
		StatusURL:  "status",
		Hint:       "Turn your screen brightness up and hold the phone still, 10–20 cm from the scanner.",
	}
	if challenges {
		p.Note = "Starting the front camera…"
		p.Scripts = []string{"/wallet/wasm_exec.js", "screen.js"}
		p.WASM = true
	}
	paypage.Render(w, http.StatusOK, p)
}

// screenGone is the screen of a code that expired or never existed.
func screenGone(w http.ResponseWriter) {
	paypage.Render(w, http.StatusNotFound, paypage.Page{Title: "Payment code expired", Subheading: "qshield", Heading: "Your payment code",
		Status: paypage.Status{State: paypage.Expired, Message: "This code has expired. Open your qshield app for a new one."}})
}

// writeScreenStatus answers the screen's status poll.
func (s *Service) writeScreenStatus(w http.ResponseWriter, r *http.Request, sc *screen) {
	paypage.WriteStatus(w, s.screenStatus(r.Context(), sc))
}

// screenStatus is what the payer's screen shows: paid once the code was
// redeemed (read-only: the token store's record of the code), expired, or
// waiting; offline when the record cannot be read.
func (s *Service) screenStatus(ctx context.Context, sc *screen) paypage.Status {
	rec, err := s.store.Lookup(ctx, sc.handle)
	switch {
	case errors.Is(err, watermark.ErrUnknownToken):
		return paypage.Status{State: paypage.Expired, Message: "This code has expired. Open your qshield app for a new one."}
	case err != nil:
		return paypage.Status{State: paypage.Offline, Message: "Checking the payment is not possible for a moment. This screen will try again by itself."}
	case !rec.UsedAt.IsZero():
		return paypage.Status{State: paypage.Paid, Message: "Paid. Thank you!"}
	case s.now().After(rec.ExpiresAt):
		return paypage.Status{State: paypage.Expired, Message: "This code has expired. Open your qshield app for a new one."}
	}
	return paypage.Status{State: paypage.Waiting, Message: s.waitingMessage(sc.limit)}
}

// waitingMessage is what the screen says while its code waits for a scan.
// With scanner challenges on, a scanner pays only codes bound to its own
// challenge, which the page reads with the phone's front camera: the payer
// holds the screen to the scanner (the note line says what the camera sees).
func (s *Service) waitingMessage(limit string) string {
	msg := "Show this screen to the merchant's scanner, close up."
	if s.challengeMaster != nil {
		msg = "Hold this screen to the merchant's scanner, close up: the phone's front camera reads the scanner's own code."
	}
	if limit != "" {
		msg += " It pays at most " + limit + "."
	}
	return msg
}
