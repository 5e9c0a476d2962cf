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
