// Package paypage renders the pages payers and merchants look at — a QMSP
// gateway's screen, a POS terminal's display, a payer's watermarked code —
// with one layout: who is paid, how much, the code, a live status and, where a
// code expires, a countdown.
//
// The pages are built for phones and shop counters: a mobile viewport, no
// horizontal scrolling from 320 px up, the code drawn with crisp pixels at up
// to 420 px and never cropped (its quiet zone included), large type, and
// colours with AA contrast. Everything a page needs is inline (no CDN, no
// other request than the code image and the status), so a page works offline
// once loaded. The status is fetched from a JSON endpoint the page names; when
// the platform cannot be reached the page says so in words and keeps trying.
// Payers never see raw JSON, stack traces or internal error codes: a Status
// carries a sentence written for them.
//
// A status answer may move the page on: Next names the status URL of the
// next code (after a payment the page keeps "paid" on screen for
// PaidHoldMillis, fades the spent code, then loads the next one), Reload
// fetches the code image again, Expires restarts the countdown, and Refresh
// reloads the whole page (what it shows changed beyond the status). While
// the status cannot be fetched three times in a row the page shows the
// offline state and fades the code, so nobody scans a code that cannot be
// paid; it recovers by itself on the next answer.
package paypage

import (
	"bytes"
	"encoding/json"
	"html/template"
	"net/http"
	"time"
)

// Page is one payer- or merchant-facing page.
type Page struct {
	// Title is the browser tab's title.
	Title string
	// Heading is the large line at the top: usually the merchant's name.
	Heading string
	// Subheading is a smaller line under it (e.g. "Payment to").
	Subheading string
	// Amount is the amount as people read it ("12.00 CNY"); "" hides it.
	Amount string
	// QR is the URL of the code image (PNG); "" shows no code.
	QR string
	// QRAlt describes the code for screen readers.
	QRAlt string
	// QRScale is the image's pixels per module (for QR and Loop). When set,
	// the page draws every module with the same whole number of device
	// pixels, as large as fits (uneven modules from a fractional scale
	// trouble decoders), and a whole multiple of QRScale when there is room
	// (the image's own pixels, such as a watermark's, are copied exactly);
	// 0 scales the image to the width.
	QRScale int
	// Expires, when set, shows a countdown to it.
	Expires time.Time
	// StatusURL is polled (GET, JSON Status) every second; "" disables it.
	StatusURL string
	// Status is the status shown before the first poll.
	Status Status
	// Hint is a line of advice under the code (e.g. turn the brightness up).
	Hint string
	// Loop, when set, replaces QR by these frame URLs shown in turn every
	// LoopMillis (a looping code, such as the watermarked one).
	Loop       []string
	LoopMillis int
	// LoopFresh fetches every frame anew each time it is shown (frames that
	// change over time, such as time-stamped shares) instead of preloading
	// the loop once; the next frame is asked for once the one on screen has
	// arrived, LoopMillis after the previous request at the soonest.
	LoopFresh bool
	// PaidHoldMillis is how long a "paid" status stays on screen before the
	// page moves on to the next code (Status.Next); default 4000.
	PaidHoldMillis int
	// Note is a line under the status that the page's own scripts keep up
	// to date (id "note"; e.g. what the front camera sees). It is shown
	// when set or when the page has Scripts.
	Note string
	// Scripts are same-origin script URLs the page runs after its own, in
	// order (the policy then allows 'self' scripts).
	Scripts []string
	// WASM lets the page's scripts compile WebAssembly (the policy's
	// 'wasm-unsafe-eval'), such as the wallet's QR decoder.
	WASM bool
}

// Status is what a page's status endpoint answers.
type Status struct {
	// State is one of waiting, paid, refused, expired, offline.
	State string `json:"state"`
	// Message is a sentence for the person at the screen.
	Message string `json:"message"`
	// Reload asks the page to fetch a new code image (the code changed).
	Reload bool `json:"reload,omitempty"`
	// Next, when set, is the status URL to poll from now on (the status of
	// the next code); after a payment the page keeps "paid" on screen for
	// a moment before it shows the next code.
	Next string `json:"next,omitempty"`
	// Expires, when not zero, is the new expiry of the code on screen in
	// Unix milliseconds (the countdown restarts from it).
	Expires int64 `json:"expires,omitempty"`
	// Refresh asks the page to load itself again (what it shows changed
	// more than the status and the code image).
	Refresh bool `json:"refresh,omitempty"`
}

// The states a Status may have.
const (
	Waiting = "waiting"
	Paid    = "paid"
	Refused = "refused"
	Expired = "expired"
	Offline = "offline"
)

// Render writes p as a complete HTML page.
func Render(w http.ResponseWriter, status int, p Page) {
	var b bytes.Buffer
	if p.Status.State == "" {
		p.Status = Status{State: Waiting}
	}
	if p.LoopMillis <= 0 {
		p.LoopMillis = 100
	}
	if p.PaidHoldMillis <= 0 {
		p.PaidHoldMillis = 4000
	}
	if err := tmpl.Execute(&b, p); err != nil {
		http.Error(w, "This page could not be shown. Please try again.", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src "+scriptSrc(p)+"; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("Referrer-Policy", "same-origin")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// scriptSrc is the policy's script-src for p: its inline script, and the
// same origin's scripts and WebAssembly only when it asks for them.
func scriptSrc(p Page) string {
	src := "'unsafe-inline'"
	if len(p.Scripts) > 0 {
		src = "'self' " + src
	}
	if p.WASM {
		src += " 'wasm-unsafe-eval'"
	}
	return src
}

// WriteStatus answers a page's status poll.
func WriteStatus(w http.ResponseWriter, s Status) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	json.NewEncoder(w).Encode(s)
}

// Unavailable renders the page a payer sees when the platform cannot answer:
// a sentence, no code, no technical detail; the page retries by itself.
func Unavailable(w http.ResponseWriter, title, heading string) {
	w.Header().Set("Retry-After", "5")
	w.Header().Set("Refresh", "5")
	Render(w, http.StatusServiceUnavailable, Page{Title: title, Heading: heading,
		Status: Status{State: Offline, Message: "Payments are unavailable for a moment. This screen will try again by itself."}})
}

var tmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"unixms": func(t time.Time) int64 { return t.UnixMilli() },
	"json": func(v any) (template.JS, error) {
		b, err := json.Marshal(v)
		return template.JS(b), err
	},
}).Parse(pageHTML))

const pageHTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light">
<title>{{.Title}}</title>
<style>
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:18px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;background:#f4f6f8;display:flex;justify-content:center}
main{width:100%;max-width:480px;padding:16px 16px 28px;text-align:center}
.card{background:#fff;border-radius:18px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:18px 14px 20px}
.sub{margin:0;color:#57606a;font-size:15px}
h1{margin:2px 0 6px;font-size:24px;line-height:1.2;overflow-wrap:anywhere}
.amount{font-size:40px;font-weight:700;margin:6px 0 10px;letter-spacing:.5px}
.code{display:block;margin:0 auto;width:min(100%,420px);max-width:100%;height:auto;aspect-ratio:1/1;object-fit:contain;image-rendering:pixelated;image-rendering:crisp-edges;background:#fff}
.countdown{margin:10px 0 0;font-size:16px;color:#57606a}
.status{margin:14px 0 0;padding:12px;border-radius:12px;font-size:18px;font-weight:600;background:#eef1f4}
.status.paid{background:#e6f4ea;color:#116329}
.status.refused,.status.expired{background:#fdecea;color:#b3261e}
.status.offline{background:#fff4e5;color:#7a4d00}
.hint{margin:12px 0 0;font-size:15px;color:#57606a}
.note{margin:10px 0 0;font-size:16px;color:#1b1f24;overflow-wrap:anywhere}
.note:empty{display:none}
.note.warn{padding:10px 12px;border-radius:12px;background:#fdecea;color:#b3261e;font-weight:600}
.paid .code,.expired .code,.offline .code{opacity:.15}
@media (max-width:360px){h1{font-size:21px}.amount{font-size:34px}}
</style>
</head>
<body>
<main>
<div class="card{{if eq .Status.State "paid"}} paid{{end}}" id="card">
  {{if .Subheading}}<p class="sub">{{.Subheading}}</p>{{end}}
  <h1>{{.Heading}}</h1>
  {{if .Amount}}<p class="amount" id="amount">{{.Amount}}</p>{{end}}
  {{if .Loop}}<img class="code" id="code" src="{{index .Loop 0}}" alt="{{.QRAlt}}" width="420" height="420">
  {{else if .QR}}<img class="code" id="code" src="{{.QR}}" alt="{{.QRAlt}}" width="420" height="420">{{end}}
  {{if not .Expires.IsZero}}<p class="countdown" id="countdown" data-expires="{{unixms .Expires}}" aria-live="off"></p>{{end}}
  <p class="status {{.Status.State}}" id="status" role="status" aria-live="polite">{{if .Status.Message}}{{.Status.Message}}{{else}}Waiting for payment…{{end}}</p>
  {{if or .Note .Scripts}}<p class="note" id="note" aria-live="polite">{{.Note}}</p>{{end}}
  {{if .Hint}}<p class="hint">{{.Hint}}</p>{{end}}
</div>
</main>
<script>
"use strict";
(function(){
  var statusURL = {{json .StatusURL}}, loop = {{json .Loop}}, loopMs = {{.LoopMillis}}, fresh = {{.LoopFresh}}, holdMs = {{.PaidHoldMillis}};
  var st = document.getElementById("status"), card = document.getElementById("card"), code = document.getElementById("code");
  var scale = {{.QRScale}};
  function fit(){
    if (!code || !scale || !code.naturalWidth) return;
    var mods = code.naturalWidth / scale, dpr = window.devicePixelRatio || 1, cs = getComputedStyle(card);
    var avail = Math.min(card.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight), 420);
    var k = Math.max(1, Math.floor(avail * dpr / mods));
    if (k >= scale) k -= k % scale; // whole copies of the image's pixels: its detail survives
    code.style.width = (k * mods / dpr) + "px";
  }
  if (code) { code.addEventListener("load", fit); window.addEventListener("resize", fit); fit(); }
  var cd = document.getElementById("countdown"), end = cd ? +cd.dataset.expires : 0, holdUntil = 0, state = {{json .Status.State}};
  function reloadCode(){ if (code && !loop) code.src = code.src.split("?")[0] + "?" + Date.now(); }
  function show(s){
    if (s.refresh) { location.reload(); return; }
    state = s.state;
    st.className = "status " + s.state; card.className = "card " + s.state;
    st.textContent = s.message || (s.state === "paid" ? "Paid. Thank you!" : "Waiting for payment…");
    if (s.expires) end = s.expires;
    if (s.next) statusURL = s.next;
    tick();
    if (s.state === "paid" && s.next) {
      holdUntil = Date.now() + holdMs;
      setTimeout(function(){ holdUntil = 0; reloadCode(); poll(); }, holdMs);
      return;
    }
    if (s.reload) reloadCode();
  }
  function tick(){
    if (!cd) return;
    if (state === "paid" || state === "offline") { cd.textContent = ""; return; }
    var left = Math.max(0, Math.round((end - Date.now())/1000));
    cd.textContent = left > 0 ? "Code valid for " + left + " s" : "This code has expired.";
    if (left === 0 && state === "waiting") show({state:"expired", message:"This code has expired. A new one will appear."});
  }
  if (cd) { tick(); setInterval(tick, 1000); }
  if (loop && loop.length > 1 && code && fresh) {
    // Each frame is fetched anew: the next is asked for once this one has
    // loaded (or failed), loopMs after the request at the soonest. Asked
    // for every loopMs regardless, frames that take longer than that to
    // arrive were all cancelled by the next and the page showed none.
    var k = 0, asked = Date.now();
    var advance = function(){
      k = (k + 1) % loop.length;
      asked = Date.now();
      code.src = loop[k] + (loop[k].indexOf("?") < 0 ? "?" : "&") + "t=" + asked;
    };
    var next = function(){ setTimeout(advance, Math.max(0, loopMs - (Date.now() - asked))); };
    code.addEventListener("load", next);
    code.addEventListener("error", next);
    if (code.complete) next();
  } else if (loop && loop.length > 1 && code) {
    var j = 0, imgs = loop.map(function(u){ var i = new Image(); i.src = u; return i; });
    setInterval(function(){ j = (j + 1) % loop.length; code.src = imgs[j].src; }, loopMs);
  }
  var fails = 0;
  function poll(){
    if (!statusURL || Date.now() < holdUntil) return;
    fetch(statusURL, {cache:"no-store", credentials:"same-origin"}).then(function(r){
      if (!r.ok && r.status !== 503) throw new Error(String(r.status));
      return r.json();
    }).then(function(s){ fails = 0; if (Date.now() >= holdUntil) show(s); }).catch(function(){
      if (++fails >= 3) show({state:"offline", message:"Connection lost. Reconnecting…"});
    });
  }
  if (statusURL) setInterval(poll, 1000);
})();
</script>
{{range .Scripts}}<script src="{{.}}"></script>
{{end}}</body>
</html>`
