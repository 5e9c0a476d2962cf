package qmsp

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/paypage"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qrimg"
)

// GatewayPage shows a gateway's current code to people (package paypage's
// layout): the merchant, the amount when the code carries one, the code, a
// countdown to its expiry and a status the page polls. Once the platform has
// seen a payment with the displayed unit, the status says "paid" and the
// gateway moves to the next unit, which the page shows after a moment.
// When the gateway cannot produce a code (the platform or its key manager
// is unreachable) the page says so in words and retries; it never shows an
// error document.
type GatewayPage struct {
	Gateway *Gateway
	// Used reports whether the platform has seen a payment with a unit
	// (in-process: PPS.UnitUsed; a standalone gateway asks the server).
	Used func(ctx context.Context, ref KeyRef) (bool, error)
	// Merchant is the name shown at the top ("" shows the merchant number).
	Merchant string
	// Log receives the errors payers are spared (nil: discarded).
	Log *slog.Logger
}

// ServeHTTP serves, relative to the gateway's page:
//
//	""              the page
//	qr.png          the current code as a PNG
//	code            the current code's text
//	status?code=R   JSON paypage.Status of the code whose key reference is R
func (gp *GatewayPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	if file == "status" {
		gp.serveStatus(w, r)
		return
	}
	d, err := gp.current(r.Context())
	if err != nil {
		gp.logErr(r, err)
		switch file {
		case "", "index.html":
			paypage.Unavailable(w, "Payment unavailable", gp.heading(nil))
		default:
			w.Header().Set("Retry-After", "5")
			http.Error(w, "Payments are unavailable for a moment.", http.StatusServiceUnavailable)
		}
		return
	}
	text, err := d.MarshalText()
	if err != nil {
		gp.logErr(r, err)
		paypage.Unavailable(w, "Payment unavailable", gp.heading(d))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	switch file {
	case "", "index.html":
		paypage.Render(w, http.StatusOK, paypage.Page{
			Title:      "Pay " + gp.heading(d),
			Subheading: "Pay with qshield",
			Heading:    gp.heading(d),
			Amount:     displayAmount(d),
			QR:         "qr.png",
			QRScale:    qrScale,
			QRAlt:      "payment code of " + gp.heading(d),
			Expires:    d.Expires,
			StatusURL:  statusURL(d.Ref),
			Status:     paypage.Status{State: paypage.Waiting, Message: "Scan the code with your qshield app to pay."},
			Hint:       "Each code pays once. A new one appears after every payment.",
		})
	case "qr.png":
		png, _, err := qrimg.EncodePNG(string(text), qrimg.M, qrScale)
		if err != nil {
			gp.logErr(r, err)
			http.Error(w, "The code could not be drawn.", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(png)
	case "code":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(text)
	default:
		http.NotFound(w, r)
	}
}

// serveStatus answers the page's poll for the code it shows.
func (gp *GatewayPage) serveStatus(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	shown, haveShown := parseRef(r.URL.Query().Get("code"))
	used := false
	if haveShown && gp.Used != nil {
		var err error
		if used, err = gp.Used(ctx, shown); err != nil {
			gp.offline(w, r, err)
			return
		}
	}
	d, err := gp.current(ctx)
	if err != nil {
		gp.offline(w, r, err)
		return
	}
	st := paypage.Status{State: paypage.Waiting, Message: "Scan the code with your qshield app to pay."}
	switch {
	case used:
		st = paypage.Status{State: paypage.Paid, Message: "Paid. Thank you!", Reload: true}
	case !haveShown || d.Ref != shown:
		st.Reload = true // the code on screen expired: show the next one
	}
	if st.Reload {
		st.Next, st.Expires = statusURL(d.Ref), d.Expires.UnixMilli()
	}
	paypage.WriteStatus(w, st)
}

func (gp *GatewayPage) offline(w http.ResponseWriter, r *http.Request, err error) {
	gp.logErr(r, err)
	w.WriteHeader(http.StatusServiceUnavailable)
	paypage.WriteStatus(w, paypage.Status{State: paypage.Offline, Message: "Payments are unavailable for a moment. This screen will try again by itself."})
}

func (gp *GatewayPage) logErr(r *http.Request, err error) {
	if gp.Log != nil {
		gp.Log.LogAttrs(r.Context(), slog.LevelWarn, "qmsp gateway page", slog.String("gateway", gp.Gateway.ID()), slog.String("err", err.Error()))
	}
}

func (gp *GatewayPage) heading(d *Display) string {
	switch {
	case gp.Merchant != "":
		return gp.Merchant
	case d != nil:
		return fmt.Sprintf("Merchant %d", d.Merchant)
	}
	return "Payment terminal " + gp.Gateway.ID()
}

// displayAmount is the amount a code carries, signed by the gateway, as
// people read it ("" when the payer enters it).
func displayAmount(d *Display) string {
	if d.Amount == 0 {
		return ""
	}
	c, err := money.ByNumeric(d.Currency)
	if err != nil {
		return ""
	}
	return c.Format(d.Amount) + " " + c.Code
}

// qrScale is the code image's pixels per module.
const qrScale = 6

func statusURL(ref KeyRef) string {
	return "status?code=" + url.QueryEscape(qkd.FormatKeyID(ref.KeyID)+"/"+strconv.Itoa(int(ref.Unit)))
}

func parseRef(s string) (KeyRef, bool) {
	id, unit, ok := strings.Cut(s, "/")
	if !ok {
		return KeyRef{}, false
	}
	kid, err := qkd.ParseKeyID(id)
	u, uerr := strconv.ParseUint(unit, 10, 16)
	if err != nil || uerr != nil {
		return KeyRef{}, false
	}
	return KeyRef{KeyID: kid, Unit: uint16(u)}, true
}

func (gp *GatewayPage) current(ctx context.Context) (*Display, error) {
	d, err := gp.Gateway.Current(ctx)
	if err != nil {
		return nil, err
	}
	if gp.Used != nil {
		used, err := gp.Used(ctx, d.Ref)
		if err != nil {
			return nil, err
		}
		if used {
			if err := gp.Gateway.AdvancePast(ctx, d.Ref); err != nil {
				return nil, err
			}
			return gp.Gateway.Current(ctx)
		}
	}
	return d, nil
}
