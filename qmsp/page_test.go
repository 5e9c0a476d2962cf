package qmsp

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/qshield/qshield/paypage"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// get serves one request of the gateway page (file is its path under the
// page, with any query).
func get(t *testing.T, gp *GatewayPage, file string) *httptest.ResponseRecorder {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET /gw/{file...}", gp)
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/gw/"+file, nil))
	return w
}

func status(t *testing.T, w *httptest.ResponseRecorder) paypage.Status {
	t.Helper()
	var s paypage.Status
	if err := json.Unmarshal(w.Body.Bytes(), &s); err != nil {
		t.Fatalf("status %d %q: %v", w.Code, w.Body, err)
	}
	return s
}

func TestGatewayPageStatus(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := newEnv(t, db, 400)
	g := e.gateway("GW-P")
	gp := &GatewayPage{Gateway: g, Used: e.pps.UnitUsed, Merchant: "Corner Shop"}
	ctx := context.Background()

	page := get(t, gp, "")
	body := page.Body.String()
	if page.Code != http.StatusOK || !strings.Contains(body, "Corner Shop") || !strings.Contains(body, "data-expires=") {
		t.Fatalf("page %d: %s", page.Code, body)
	}
	d, err := g.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	shown := statusURL(d.Ref)
	if !strings.Contains(body, strings.ReplaceAll(shown, "/", `\/`)) {
		t.Fatalf("the page does not poll %s", shown)
	}

	// Before the payment: waiting, same code.
	if s := status(t, get(t, gp, shown)); s.State != paypage.Waiting || s.Reload || s.Next != "" {
		t.Fatalf("before payment: %+v", s)
	}
	// After it: paid, and the next code's status to poll.
	text, _ := d.MarshalText()
	if _, err := e.phone().Pay(ctx, string(text), 3_00, 156); err != nil {
		t.Fatal(err)
	}
	s := status(t, get(t, gp, shown))
	next, _ := g.Current(ctx)
	if s.State != paypage.Paid || !s.Reload || s.Next != statusURL(next.Ref) || next.Ref == d.Ref || s.Expires != next.Expires.UnixMilli() {
		t.Fatalf("after payment: %+v (next unit %v)", s, next.Ref)
	}
	// Polling the next code: waiting again.
	if s := status(t, get(t, gp, s.Next)); s.State != paypage.Waiting || s.Reload {
		t.Fatalf("next code: %+v", s)
	}
	// A poll without (or with a malformed) reference learns the current one.
	for _, q := range []string{"status", "status?code=nonsense", "status?code=" + strings.Repeat("0", 40) + "/1"} {
		if s := status(t, get(t, gp, q)); s.State != paypage.Waiting || s.Next != statusURL(next.Ref) {
			t.Fatalf("%s: %+v", q, s)
		}
	}
	// A code carrying a sale shows its signed amount.
	if err := g.SetSale(12_50, 156); err != nil {
		t.Fatal(err)
	}
	if body := get(t, gp, "").Body.String(); !strings.Contains(body, `id="amount">12.50 CNY<`) {
		t.Fatalf("sale page lacks the amount: %s", body)
	}
}

func TestGatewayPageOffline(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := newEnv(t, db, 400)
	g := e.gateway("GW-O")
	down := errors.New("platform unreachable")
	gp := &GatewayPage{Gateway: g, Used: func(context.Context, KeyRef) (bool, error) { return false, down }}

	page := get(t, gp, "")
	body := page.Body.String()
	if page.Code != http.StatusServiceUnavailable || !strings.HasPrefix(page.Header().Get("Content-Type"), "text/html") ||
		!strings.Contains(body, "Payments are unavailable for a moment") || strings.Contains(body, "unreachable") || strings.Contains(body, `"detail"`) {
		t.Fatalf("offline page %d %q: %s", page.Code, page.Header().Get("Content-Type"), body)
	}
	st := get(t, gp, "status")
	if s := status(t, st); st.Code != http.StatusServiceUnavailable || s.State != paypage.Offline || strings.Contains(s.Message, "unreachable") {
		t.Fatalf("offline status %d %+v", st.Code, s)
	}
	if img := get(t, gp, "qr.png"); img.Code != http.StatusServiceUnavailable || strings.Contains(img.Body.String(), "{") {
		t.Fatalf("offline image %d %q", img.Code, img.Body)
	}
}
