package qrimg

import (
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, text := range []string{"hello", "QMSP1:" + strings.Repeat("Ab0-_", 40)} {
		png, version, err := PNG(text, M, 4)
		if err != nil {
			t.Fatal(err)
		}
		if version < 1 || version > 40 {
			t.Fatalf("version %d", version)
		}
		got, err := DecodePNG(png)
		if err != nil || got != text {
			t.Fatalf("decode: %q, %v", got, err)
		}
	}
}
