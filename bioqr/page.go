package bioqr

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/paypage"
)

// The POS display page (package paypage's layout) is what a customer sees on
// the terminal's screen: the merchant's name from the consumption QR, the
// amount, the code, a countdown and the outcome of the last payment in
// words. The POS reports outcomes as "paid AMOUNT" or "payment refused:
// CODE" (an error code of this package's registry); the page shows the
// registry's payer-safe sentence for the code, never the code itself.

// posPage renders the display of POS id (d, ok from the display store).
func (s *Settlement) posPage(w http.ResponseWriter, r *http.Request, id string, d displayed, ok bool) {
	if !ok {
		paypage.Render(w, http.StatusNotFound, paypage.Page{Title: "Payment terminal", Heading: "Payment terminal",
			Status:    paypage.Status{State: paypage.Offline, Message: "This terminal is not showing a payment right now."},
			StatusURL: posStatusURL(id, displayed{})})
		return
	}
	p := paypage.Page{Title: "Pay " + merchantName(d), Heading: merchantName(d), Subheading: "Pay with qshield",
		Status: customerStatus(d), StatusURL: posStatusURL(id, d)}
	if d.payload != "" {
		if c, err := ParseConsumption(d.payload); err == nil {
			p.Amount = money.Format(c.Amount, c.Currency)
		}
		p.QR = "/bioqr/pos/" + url.PathEscape(id) + "/qr.png?t=" + strconv.FormatInt(d.updated.UnixNano(), 10)
		p.QRAlt = "payment code of " + merchantName(d)
		p.QRScale = posQRScale
		p.Expires = d.expires
		p.Hint = "Scan with your qshield app, then confirm with your fingerprint."
	}
	paypage.Render(w, http.StatusOK, p)
}

// posStatus answers the page's poll: the page reloads when the POS has
// published something new since the version it shows.
func (s *Settlement) posStatus(w http.ResponseWriter, r *http.Request, d displayed, ok bool) {
	st := paypage.Status{State: paypage.Offline, Message: "This terminal is not showing a payment right now."}
	if ok {
		st = customerStatus(d)
	}
	if r.URL.Query().Get("v") != version(d) {
		st.Refresh = true
	}
	paypage.WriteStatus(w, st)
}

// posQRScale is the pixels per module of the consumption QR image
// (publish draws it).
const posQRScale = 6

func posStatusURL(id string, d displayed) string {
	return "/bioqr/pos/" + url.PathEscape(id) + "/status?v=" + version(d)
}

func version(d displayed) string {
	if d.updated.IsZero() {
		return "0"
	}
	return strconv.FormatInt(d.updated.UnixNano(), 10)
}

func merchantName(d displayed) string {
	if d.merchant != "" {
		return d.merchant
	}
	return "Payment terminal"
}

// customerStatus turns what the POS published into words for its customer.
func customerStatus(d displayed) paypage.Status {
	msg := strings.TrimSpace(d.message)
	switch {
	case msg == "" && d.payload != "":
		return paypage.Status{State: paypage.Waiting, Message: "Waiting for payment…"}
	case msg == "":
		return paypage.Status{State: paypage.Waiting, Message: "No payment pending."}
	case msg == msgExpired:
		return paypage.Status{State: paypage.Expired, Message: "This code has expired. Please ask for a new one."}
	case strings.HasPrefix(msg, "paid "):
		return paypage.Status{State: paypage.Paid, Message: fmt.Sprintf("Paid %s. Thank you!", strings.TrimPrefix(msg, "paid "))}
	case strings.HasPrefix(msg, "payment refused"):
		return paypage.Status{State: paypage.Refused, Message: RefusalMessage(strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(msg, "payment refused"), ":")))}
	}
	return paypage.Status{State: paypage.Waiting, Message: msg}
}

// RefusalMessage is the sentence a customer reads for a refusal's error
// code (ErrorCode): the registry's payer-safe message, or a general one for
// a code it does not know.
func RefusalMessage(code string) string {
	if c, ok := codes.ByCode(code); ok && c.Message != "" {
		return "Payment refused. " + c.Message
	}
	return "Payment refused. Please try again or ask the cashier."
}
