package browsertest_test

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/qshield/qshield/internal/browsertest"
	"github.com/qshield/qshield/paypage"
)

// TestFreshLoopOnSlowFrames: a looping code whose frames are fetched anew
// (paypage.Page.LoopFresh, the watermark screen page) from a server that
// takes 300 ms a frame, three times the page's 100 ms loop. The page shows
// frame after frame, each late. Before, it asked for the next frame every
// 100 ms whatever happened, each request cancelled the one before, and the
// page showed no frame at all (the screen page's browser test, whose frames
// are rendered per request, failed so on a loaded CI machine).
func TestFreshLoopOnSlowFrames(t *testing.T) {
	var frame bytes.Buffer
	img := image.NewGray(image.Rect(0, 0, 8, 8))
	for i := range img.Pix {
		img.Pix[i] = uint8(color.Gray{Y: uint8(i * 4)}.Y)
	}
	if err := png.Encode(&frame, img); err != nil {
		t.Fatal(err)
	}
	var served atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /frame/{n}", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		served.Add(1)
		w.Header().Set("Content-Type", "image/png")
		w.Write(frame.Bytes())
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		paypage.Render(w, http.StatusOK, paypage.Page{Title: "Loop", Heading: "Corner Shop",
			Loop: []string{"/frame/0", "/frame/1", "/frame/2"}, LoopMillis: 100, LoopFresh: true})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	bctx := browsertest.Browser(t, throwawayCAPEM(t))
	tab := browsertest.NewTab(t, bctx, time.Minute)
	nctx, cancel := context.WithTimeout(tab, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(nctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		// The document loads once its first frame has: a page that
		// cancels every frame never finishes loading.
		t.Fatalf("the page did not finish loading in 15 s (%v): no frame of its code arrived (%d served)", err, served.Load())
	}
	eval[bool](t, tab, `(window.qsLoads = 0, document.getElementById('code').addEventListener('load', function(){ window.qsLoads++ }), true)`)
	time.Sleep(3 * time.Second)
	loads := eval[int](t, tab, "window.qsLoads")
	src := eval[string](t, tab, "document.getElementById('code').src")
	t.Logf("in 3 s: %d frames shown, %d served; on screen %s", loads, served.Load(), src[strings.LastIndex(src, "/"):])
	// About one frame every 300 ms: at least half of that, and every frame
	// the page asked for arrived (none cancelled by the next).
	if loads < 5 {
		t.Fatalf("the page showed %d frames in 3 s from a server taking 300 ms a frame (%d served)", loads, served.Load())
	}
	if n := strings.Count(src, "t="); n != 1 || !strings.Contains(src, "/frame/") {
		t.Errorf("frame URL %q", src)
	}
}
