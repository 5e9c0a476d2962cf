package paypage

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRenderEscapesAndShowsEverything(t *testing.T) {
	w := httptest.NewRecorder()
	Render(w, http.StatusOK, Page{Title: "Pay", Heading: `Bob's <script>alert(1)</script> Shop`, Amount: "12.00 CNY",
		QR: "qr.png", QRAlt: "payment code", Expires: time.Unix(1900000000, 0), StatusURL: "status", Hint: "Turn the brightness up."})
	body := w.Body.String()
	if strings.Contains(body, "<script>alert(1)") {
		t.Fatal("the merchant name was not escaped")
	}
	for _, want := range []string{`name="viewport"`, "12.00 CNY", `src="qr.png"`, `data-expires="1900000000000"`, "Turn the brightness up.", `var statusURL = "status"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("content type %q", ct)
	}
}

func TestUnavailableSaysItInWords(t *testing.T) {
	w := httptest.NewRecorder()
	Unavailable(w, "Gateway", "Corner Shop")
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	body := w.Body.String()
	if !strings.Contains(body, "Payments are unavailable for a moment") || strings.Contains(body, `"detail"`) || strings.Contains(body, "internal") {
		t.Fatalf("offline page: %s", body)
	}
}

func TestStatusJSON(t *testing.T) {
	for _, tc := range []struct {
		s    Status
		want string
	}{
		{Status{State: Waiting, Message: "Waiting"}, `{"state":"waiting","message":"Waiting"}`},
		{Status{State: Paid, Message: "Paid", Reload: true, Next: "status?code=k/2", Expires: 1900000000000},
			`{"state":"paid","message":"Paid","reload":true,"next":"status?code=k/2","expires":1900000000000}`},
		{Status{State: Waiting, Refresh: true}, `{"state":"waiting","message":"","refresh":true}`},
	} {
		w := httptest.NewRecorder()
		WriteStatus(w, tc.s)
		if got := strings.TrimSpace(w.Body.String()); got != tc.want {
			t.Errorf("got %s, want %s", got, tc.want)
		}
		if w.Header().Get("Cache-Control") != "no-store" || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("headers %v", w.Header())
		}
	}
}

func TestRenderLoop(t *testing.T) {
	w := httptest.NewRecorder()
	Render(w, http.StatusOK, Page{Title: "Code", Heading: "Your code", Loop: []string{"frame/0.png", "frame/1.png"}, LoopMillis: 66, LoopFresh: true})
	body := w.Body.String()
	for _, want := range []string{`src="frame/0.png"`, `loopMs =  66 `, `fresh =  true `, `holdMs =  4000 `, `var statusURL = ""`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, `id="countdown"`) {
		t.Error("a countdown without an expiry")
	}
}

// TestRenderScripts: a page's own scripts and WebAssembly are allowed only
// when the page asks for them.
func TestRenderScripts(t *testing.T) {
	w := httptest.NewRecorder()
	Render(w, http.StatusOK, Page{Title: "Code", Heading: "Your code"})
	csp := w.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'unsafe-inline';") || strings.Contains(csp, "wasm") || strings.Contains(w.Body.String(), `id="note"`) {
		t.Fatalf("a page without scripts: policy %q", csp)
	}
	w = httptest.NewRecorder()
	Render(w, http.StatusOK, Page{Title: "Code", Heading: "Your code", Note: "Starting the camera…", Scripts: []string{"/wallet/wasm_exec.js", "screen.js"}, WASM: true})
	csp = w.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval';") {
		t.Fatalf("a page with scripts and WebAssembly: policy %q", csp)
	}
	body := w.Body.String()
	for _, want := range []string{`<script src="/wallet/wasm_exec.js"></script>`, `<script src="screen.js"></script>`, `id="note" aria-live="polite">Starting the camera…</p>`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Index(body, "wasm_exec.js") > strings.Index(body, "screen.js") {
		t.Error("scripts out of order")
	}
}
