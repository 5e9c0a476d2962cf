package watermark

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestZbarReadsEveryFrame checks that a standard decoder (zbar) reads T1 from
// every exported frame: the watermark leaves module centres intact.
func TestZbarReadsEveryFrame(t *testing.T) {
	zbar, err := exec.LookPath("zbarimg")
	if err != nil {
		t.Skip("zbarimg not on PATH (install zbar-tools); skipping the standard-decoder check")
	}
	p := DefaultParams()
	t0, _ := NewToken(p.TokenLen, nil)
	l, err := NewLoop(t0, testKey, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	paths, err := l.WritePNGs(dir, testSlot)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range paths {
		out, err := exec.Command(zbar, "--raw", "-q", "-Sdisable", "-Sqrcode.enable", path).Output()
		if err != nil {
			t.Fatalf("zbarimg %s: %v", filepath.Base(path), err)
		}
		if got := strings.TrimSpace(string(out)); got != l.Handle {
			t.Fatalf("zbarimg %s read %q, want %q", filepath.Base(path), got, l.Handle)
		}
	}
}
