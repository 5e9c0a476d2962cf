// Package qrimg renders text as a QR code image and reads QR codes back from
// images, with gozxing (a pure-Go port of ZXing).
package qrimg

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
	"github.com/makiuchi-d/gozxing/qrcode/decoder"
)

// Level is an error-correction level.
type Level = decoder.ErrorCorrectionLevel

// Error-correction levels.
var (
	L = decoder.ErrorCorrectionLevel_L
	M = decoder.ErrorCorrectionLevel_M
	Q = decoder.ErrorCorrectionLevel_Q
	H = decoder.ErrorCorrectionLevel_H
)

// Encode renders text as a QR code with level ec, scale pixels per module and
// a 4-module quiet zone, as a gray image.
func Encode(text string, ec Level, scale int) (*image.Gray, int, error) {
	if scale < 1 {
		scale = 1
	}
	code, err := qrEncode(text, ec)
	if err != nil {
		return nil, 0, err
	}
	w, h := code.GetWidth(), code.GetHeight()
	const quiet = 4
	img := image.NewGray(image.Rect(0, 0, (w+2*quiet)*scale, (h+2*quiet)*scale))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if code.Get(x, y) {
				for dy := 0; dy < scale; dy++ {
					for dx := 0; dx < scale; dx++ {
						img.SetGray((x+quiet)*scale+dx, (y+quiet)*scale+dy, color.Gray{})
					}
				}
			}
		}
	}
	return img, (w - 17) / 4, nil
}

func qrEncode(text string, ec Level) (*gozxing.BitMatrix, error) {
	hints := map[gozxing.EncodeHintType]interface{}{
		gozxing.EncodeHintType_ERROR_CORRECTION: ec,
		gozxing.EncodeHintType_MARGIN:           0,
	}
	bm, err := qrcode.NewQRCodeWriter().Encode(text, gozxing.BarcodeFormat_QR_CODE, 0, 0, hints)
	if err != nil {
		return nil, fmt.Errorf("qrimg: encode: %w", err)
	}
	return bm, nil
}

// PNG renders text as a PNG-encoded QR code and returns it with the QR version.
func PNG(text string, ec Level, scale int) ([]byte, int, error) {
	img, version, err := Encode(text, ec, scale)
	if err != nil {
		return nil, 0, err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, 0, fmt.Errorf("qrimg: png: %w", err)
	}
	return buf.Bytes(), version, nil
}

// ErrNoCode is returned when no QR code is found in an image.
var ErrNoCode = errors.New("qrimg: no QR code found")

// Decode reads one QR code from img.
func Decode(img image.Image) (string, error) {
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		return "", fmt.Errorf("qrimg: %w", err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]interface{}{gozxing.DecodeHintType_TRY_HARDER: true})
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoCode, err)
	}
	return res.GetText(), nil
}

// DecodePNG reads one QR code from PNG bytes.
func DecodePNG(b []byte) (string, error) {
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return "", fmt.Errorf("qrimg: decode image: %w", err)
	}
	return Decode(img)
}
