package service

import (
	"net/http"
	"strconv"
	"time"

	"github.com/qshield/qshield/paypage"
)

// renderScreen writes the payer's screen (package paypage's layout): the
// code's n frames looping every period (each fetched anew: a frame is
// stamped with the current time slot), sized to the phone's width with the
// quiet zone inside the image (never cropped), a countdown to the code's
// expiry, the most the code pays (the payer's limit) and a brightness hint — a scanner reads the faint watermark best
// from a bright screen held still.
func renderScreen(w http.ResponseWriter, n, modulePx int, period time.Duration, expires time.Time, limit string) {
	msg := "Show this screen to the merchant's scanner, close up."
	if limit != "" {
		msg += " It pays at most " + limit + "."
	}
	loop := make([]string, n)
	for k := range loop {
		loop[k] = "frame/" + strconv.Itoa(k) + ".png"
	}
	paypage.Render(w, http.StatusOK, paypage.Page{
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
		Hint:       "Turn your screen brightness up and hold the phone still, 10–20 cm from the scanner.",
	})
}

// screenGone is the screen of a code that expired or never existed.
func screenGone(w http.ResponseWriter) {
	paypage.Render(w, http.StatusNotFound, paypage.Page{Title: "Payment code expired", Subheading: "qshield", Heading: "Your payment code",
		Status: paypage.Status{State: paypage.Expired, Message: "This code has expired. Open your qshield app for a new one."}})
}
