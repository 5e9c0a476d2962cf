package qmsp

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qshield/qshield/qrimg"
)

// TestCodeDecodesWithZbar renders a gateway code as the gateway page does and
// reads it back with zbar, a decoder independent of the one that wrote it.
func TestCodeDecodesWithZbar(t *testing.T) {
	zbar, err := exec.LookPath("zbarimg")
	if err != nil {
		t.Skip("zbarimg not installed (CI installs zbar-tools)")
	}
	d := Display{Gateway: "GW-0001", Merchant: 1, Expires: time.Unix(1_800_000_000, 0), Sig: make([]byte, 72)}
	for i := range d.Pad {
		d.Pad[i] = byte(i * 7)
	}
	text, err := d.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	png, _, err := qrimg.EncodePNG(string(text), qrimg.M, 6)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "code.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(zbar, "--quiet", "--raw", path).Output()
	if err != nil {
		t.Fatalf("zbarimg: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != string(text) {
		t.Fatalf("zbar read %q, want %q", got, text)
	}
}
