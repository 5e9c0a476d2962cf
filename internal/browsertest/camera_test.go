package browsertest_test

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/qshield/qshield/internal/browsertest"
)

// TestWriteY4MLimitedRange checks the samples: BT.601 limited range, the
// range Chromium's fake camera reads (black 16, white 235, grey chroma 128).
func TestWriteY4MLimitedRange(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 4, 2))
	draw.Draw(img, image.Rect(0, 0, 2, 2), &image.Uniform{color.Black}, image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(2, 0, 4, 2), &image.Uniform{color.White}, image.Point{}, draw.Src)
	var b bytes.Buffer
	if err := browsertest.WriteY4M(&b, []image.Image{img}, 10); err != nil {
		t.Fatal(err)
	}
	_, frame, ok := bytes.Cut(b.Bytes(), []byte("FRAME\n"))
	if !ok {
		t.Fatal("no frame")
	}
	want := []byte{16, 16, 235, 235, 16, 16, 235, 235, 128, 128, 128, 128}
	if !bytes.Equal(frame, want) {
		t.Fatalf("samples %v, want %v", frame, want)
	}
}

// TestFakeCameraShowsTheFrame films two greys and reads them back from a
// page's camera: what a wallet test's camera shows is what the test drew
// (within a few levels), not a contrast-stretched copy.
func TestFakeCameraShowsTheFrame(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><video id="v" autoplay muted playsinline></video>`)
	}))
	defer srv.Close()

	frame := image.NewRGBA(image.Rect(0, 0, 320, 240))
	draw.Draw(frame, image.Rect(0, 0, 160, 240), &image.Uniform{color.Gray{Y: 60}}, image.Point{}, draw.Src)
	draw.Draw(frame, image.Rect(160, 0, 320, 240), &image.Uniform{color.Gray{Y: 229}}, image.Point{}, draw.Src)
	cam := filepath.Join(t.TempDir(), "grey.y4m")
	if err := browsertest.WriteY4MFile(cam, []image.Image{frame, frame}, 10); err != nil {
		t.Fatal(err)
	}
	bctx := browsertest.Browser(t, throwawayCAPEM(t), browsertest.FakeCamera(cam)...)
	tab := browsertest.NewTab(t, bctx, time.Minute)
	do(t, tab, "open page", chromedp.Navigate(srv.URL))
	got := eval[string](t, tab, `navigator.mediaDevices.getUserMedia({video:true}).then(function(s){var v=document.getElementById('v');v.srcObject=s;return v.play().then(function(){return new Promise(function(res){function f(){if(v.videoWidth&&v.currentTime>0.2){var c=document.createElement('canvas');c.width=v.videoWidth;c.height=v.videoHeight;var x=c.getContext('2d');x.drawImage(v,0,0);var a=x.getImageData(40,100,1,1).data,b=x.getImageData(c.width-40,100,1,1).data;res(a[0]+' '+b[0])}else setTimeout(f,50)}f()})})})`)
	var left, right int
	if _, err := fmt.Sscan(strings.TrimSpace(got), &left, &right); err != nil {
		t.Fatalf("page read %q: %v", got, err)
	}
	if abs(left-60) > 4 || abs(right-229) > 4 {
		t.Fatalf("the camera shows greys %d and %d, the film has 60 and 229", left, right)
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// throwawayCAPEM returns a certificate for the browser's NSS database, for
// tests whose pages are served over plain HTTP on 127.0.0.1 (a secure
// context) and need no platform CA.
func throwawayCAPEM(t *testing.T) []byte {
	t.Helper()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	srv.Close()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}
