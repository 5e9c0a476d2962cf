package qrimg

import (
	"bytes"
	"crypto/rand"
	"errors"
	"image"
	"image/draw"
	"strings"
	"testing"

	"github.com/qshield/qshield/bioqr/base45"
)

func TestRoundTripSizes(t *testing.T) {
	for _, n := range []int{16, 200, 400, 700, 1000} {
		raw := make([]byte, n)
		rand.Read(raw)
		content := "QS1:" + base45.Encode(raw)
		for _, scale := range []int{2, 4} {
			c, err := Encode(content, M)
			if err != nil {
				t.Fatalf("Encode %d bytes: %v", n, err)
			}
			if c.Mode != "ALPHANUMERIC" {
				t.Fatalf("Base45 content encoded in %s mode", c.Mode)
			}
			img := c.Image(scale)
			got, err := Decode(img)
			if err != nil {
				t.Fatalf("%d bytes (version %d) at scale %d: %v", n, c.Version, scale, err)
			}
			if got != content {
				t.Fatalf("%d bytes: decoded content differs", n)
			}
		}
	}
}

func TestDecodeOffsetInLargerImage(t *testing.T) {
	c, err := Encode("000201010212HELLO", Q)
	if err != nil {
		t.Fatal(err)
	}
	src := c.Image(3)
	dst := image.NewGray(image.Rect(0, 0, 400, 300))
	for i := range dst.Pix {
		dst.Pix[i] = 0xff
	}
	draw.Draw(dst, src.Bounds().Add(image.Pt(150, 40)), src, image.Point{}, draw.Src)
	got, err := Decode(dst)
	if err != nil || got != "000201010212HELLO" {
		t.Fatalf("Decode = %q, %v", got, err)
	}
}

func TestByteModeUTF8(t *testing.T) {
	s := "00020101021259xx支付"
	png, info, err := EncodePNG(s, M, 3)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode != "BYTE" {
		t.Fatalf("mode %s", info.Mode)
	}
	got, err := DecodePNG(bytes.NewReader(png), 0)
	if err != nil || got != s {
		t.Fatalf("DecodePNG = %q, %v", got, err)
	}
}

func TestRefusals(t *testing.T) {
	if _, err := Encode(strings.Repeat("A", 5000), M); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("5000 characters: %v", err)
	}
	blank := image.NewGray(image.Rect(0, 0, 100, 100))
	if _, err := Decode(blank); !errors.Is(err, ErrNoCode) {
		t.Fatalf("blank image: %v", err)
	}
	if _, err := DecodePNG(strings.NewReader("not a png"), 0); !errors.Is(err, ErrNoCode) {
		t.Fatalf("garbage: %v", err)
	}
}

func FuzzDecodePNG(f *testing.F) {
	png, _, _ := EncodePNG("HELLO", L, 1)
	f.Add(png)
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Invariants: input over the limit is refused, and what decodes is
		// content a QR code can carry (it encodes and decodes back).
		text, err := DecodePNG(bytes.NewReader(b), 1<<16)
		if err != nil {
			return
		}
		if len(b) > 1<<16 {
			t.Fatalf("%d-byte input over the 65536-byte limit decoded", len(b))
		}
		png, _, err := EncodePNG(text, L, 2)
		if err != nil {
			t.Fatalf("decoded text %q does not encode: %v", text, err)
		}
		if again, err := DecodePNG(bytes.NewReader(png), 1<<24); err != nil || again != text {
			t.Fatalf("decoded text %q does not round-trip: %q %v", text, again, err)
		}
	})
}
