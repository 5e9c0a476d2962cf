// Package qrimg renders QR codes to PNG and reads them back, through the
// gozxing port of ZXing, and reports what a code costs: its version (size),
// error-correction level and encoding mode. qshield's payment codes are shown
// on a screen and photographed, so the renderer keeps the 4-module quiet zone
// the standard asks for and defaults to error-correction level M.
package qrimg

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
	"github.com/makiuchi-d/gozxing/qrcode/decoder"
	"github.com/makiuchi-d/gozxing/qrcode/encoder"
)

// Errors.
var (
	ErrTooLarge = errors.New("qrimg: content does not fit in a QR code")
	ErrNoCode   = errors.New("qrimg: no readable QR code in the image")
)

// Level is an error-correction level.
type Level string

const (
	L Level = "L" // ~7 % of codewords recoverable
	M Level = "M" // ~15 %
	Q Level = "Q" // ~25 %
	H Level = "H" // ~30 %
)

func (l Level) zxing() (decoder.ErrorCorrectionLevel, error) {
	switch l {
	case L:
		return decoder.ErrorCorrectionLevel_L, nil
	case M, "":
		return decoder.ErrorCorrectionLevel_M, nil
	case Q:
		return decoder.ErrorCorrectionLevel_Q, nil
	case H:
		return decoder.ErrorCorrectionLevel_H, nil
	}
	return 0, fmt.Errorf("qrimg: unknown error-correction level %q", l)
}

// Info describes an encoded QR code.
type Info struct {
	Version int    `json:"version"` // 1..40
	Modules int    `json:"modules"` // modules per side, 17 + 4·version
	Level   Level  `json:"level"`
	Mode    string `json:"mode"` // BYTE, ALPHANUMERIC, NUMERIC
	Chars   int    `json:"chars"`
}

// Code is an encoded QR code.
type Code struct {
	Info
	matrix *encoder.ByteMatrix
}

// Encode encodes content at the given error-correction level ("" = M). Text
// made only of the 45 alphanumeric characters (e.g. Base45) is stored in
// alphanumeric mode, anything else in byte mode as UTF-8.
func Encode(content string, level Level) (*Code, error) {
	ec, err := level.zxing()
	if err != nil {
		return nil, err
	}
	if level == "" {
		level = M
	}
	hints := map[gozxing.EncodeHintType]interface{}{gozxing.EncodeHintType_CHARACTER_SET: "UTF-8"}
	if isAlnum(content) {
		hints = nil
	}
	code, err := encoder.Encoder_encode(content, ec, hints)
	if err != nil {
		return nil, fmt.Errorf("%w: %d characters at level %s: %v", ErrTooLarge, len(content), level, err)
	}
	v := code.GetVersion().GetVersionNumber()
	return &Code{
		Info:   Info{Version: v, Modules: 17 + 4*v, Level: level, Mode: code.GetMode().String(), Chars: len(content)},
		matrix: code.GetMatrix(),
	}, nil
}

func isAlnum(s string) bool {
	const set = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
	for i := 0; i < len(s); i++ {
		if bytes.IndexByte([]byte(set), s[i]) < 0 {
			return false
		}
	}
	return true
}

// Image renders the code with scale pixels per module and a 4-module quiet zone.
func (c *Code) Image(scale int) image.Image {
	if scale < 1 {
		scale = 1
	}
	const quiet = 4
	n := c.matrix.GetWidth()
	side := (n + 2*quiet) * scale
	img := image.NewGray(image.Rect(0, 0, side, side))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			if c.matrix.Get(x, y) != 1 {
				continue
			}
			for dy := 0; dy < scale; dy++ {
				for dx := 0; dx < scale; dx++ {
					img.SetGray((x+quiet)*scale+dx, (y+quiet)*scale+dy, color.Gray{Y: 0})
				}
			}
		}
	}
	return img
}

// PNG renders the code as a PNG with scale pixels per module.
func (c *Code) PNG(scale int) ([]byte, error) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, c.Image(scale)); err != nil {
		return nil, fmt.Errorf("qrimg: encode PNG: %w", err)
	}
	return buf.Bytes(), nil
}

// EncodePNG is Encode followed by PNG.
func EncodePNG(content string, level Level, scale int) ([]byte, Info, error) {
	c, err := Encode(content, level)
	if err != nil {
		return nil, Info{}, err
	}
	b, err := c.PNG(scale)
	return b, c.Info, err
}

// MaxImagePixels bounds the images Decode accepts (a decompression bomb
// guard: 4096 × 4096).
const MaxImagePixels = 4096 * 4096

// Decode finds and reads one QR code in img: first with ZXing's detector
// (TRY_HARDER, any position and rotation), then — because the detector
// misplaces a finder pattern on a few tenths of a percent of clean
// screen-rendered codes — by reading the image as a pure, axis-aligned code.
func Decode(img image.Image) (string, error) {
	b := img.Bounds()
	if b.Dx() <= 0 || b.Dy() <= 0 || b.Dx()*b.Dy() > MaxImagePixels {
		return "", fmt.Errorf("%w: image of %dx%d pixels", ErrNoCode, b.Dx(), b.Dy())
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoCode, err)
	}
	hints := map[gozxing.DecodeHintType]interface{}{gozxing.DecodeHintType_TRY_HARDER: true}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, hints)
	if err == nil {
		return res.GetText(), nil
	}
	pure := map[gozxing.DecodeHintType]interface{}{gozxing.DecodeHintType_PURE_BARCODE: true}
	if res, err2 := qrcode.NewQRCodeReader().Decode(bmp, pure); err2 == nil {
		return res.GetText(), nil
	}
	return "", fmt.Errorf("%w: %v", ErrNoCode, err)
}

// DecodePNG reads a PNG (or any registered image format) of at most maxBytes
// (0 = 8 MiB) and decodes the QR code in it. The image header is checked
// before the pixels are decoded.
func DecodePNG(r io.Reader, maxBytes int64) (string, error) {
	if maxBytes <= 0 {
		maxBytes = 8 << 20
	}
	data, err := io.ReadAll(io.LimitReader(r, maxBytes+1))
	if err != nil {
		return "", fmt.Errorf("qrimg: read image: %w", err)
	}
	if int64(len(data)) > maxBytes {
		return "", fmt.Errorf("%w: image larger than %d bytes", ErrNoCode, maxBytes)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoCode, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > MaxImagePixels {
		return "", fmt.Errorf("%w: image of %dx%d pixels", ErrNoCode, cfg.Width, cfg.Height)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoCode, err)
	}
	return Decode(img)
}
