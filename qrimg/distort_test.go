package qrimg

import (
	"testing"

	"github.com/qshield/qshield/bioqr/base45"
)

// TestDecodeCameraLike scans payment-sized codes (about 420 bytes, version
// 16) rendered at 6 pixels per module, the CLI default, after camera-like
// distortions; every one must read back. (Harsher combinations are measured,
// as rates, by `qshield experiment bioqr`.)
func TestDecodeCameraLike(t *testing.T) {
	raw := make([]byte, 420)
	for i := range raw {
		raw[i] = byte(i*151 + i*i*7)
	}
	text := "QSP1:" + base45.Encode(raw)
	c, err := Encode(text, M)
	if err != nil {
		t.Fatal(err)
	}
	img := c.Image(6)
	for name, d := range map[string]Distortion{
		"rotated 8°":           {Rotate: 8},
		"rotated 90°":          {Rotate: 90},
		"rotated 180°, 0.8×":   {Rotate: 180, Scale: 0.8},
		"blur 1 px":            {Blur: 1},
		"noise σ=30":           {Noise: 30, Seed: 1},
		"low contrast + noise": {Contrast: 0.5, Noise: 12, Seed: 2},
		"JPEG q=50, 1.3×":      {Scale: 1.3, JPEGQuality: 50},
		"rotated 5°, blurred":  {Rotate: 5, Blur: 1},
		"blur, noise, JPEG":    {Blur: 1, Noise: 8, JPEGQuality: 70, Seed: 3},
	} {
		got, err := Decode(Distort(img, d))
		if err != nil || got != text {
			t.Errorf("%s (version %d): %v", name, c.Version, err)
		}
	}
}
