package qrimg

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"math/rand/v2"

	"golang.org/x/image/draw"
	"golang.org/x/image/math/f64"
)

// Distortion imitates a phone camera photographing a screen, for measuring
// how reliably codes scan. Seeded math/rand is used on purpose: the noise is
// test data, reproducible, never secret.
type Distortion struct {
	Rotate      float64 // degrees
	Scale       float64 // output size relative to input (0 = 1)
	Blur        int     // box-blur radius in pixels
	Noise       float64 // standard deviation of added grey-level noise (0–255)
	Contrast    float64 // 0 = unchanged; 0.5 maps black/white to 64/191
	JPEGQuality int     // 0 = no JPEG round trip
	Seed        uint64
}

// Distort applies d to img (a rendered code) and returns a grey image.
func Distort(img image.Image, d Distortion) image.Image {
	scale := d.Scale
	if scale <= 0 {
		scale = 1
	}
	b := img.Bounds()
	w, h := float64(b.Dx()), float64(b.Dy())
	// Output canvas large enough for the rotated, scaled code plus margin.
	side := int(math.Ceil((w+h)*scale*1.1)) + 8
	dst := image.NewGray(image.Rect(0, 0, side, side))
	for i := range dst.Pix {
		dst.Pix[i] = 0xff
	}
	th := d.Rotate * math.Pi / 180
	cos, sin := math.Cos(th)*scale, math.Sin(th)*scale
	cx, cy := w/2, h/2
	ox, oy := float64(side)/2, float64(side)/2
	m := f64.Aff3{cos, -sin, ox - cos*cx + sin*cy, sin, cos, oy - sin*cx - cos*cy}
	draw.BiLinear.Transform(dst, m, img, b, draw.Over, nil)
	if d.Blur > 0 {
		dst = boxBlur(dst, d.Blur)
	}
	if d.Contrast > 0 || d.Noise > 0 {
		rng := rand.New(rand.NewPCG(d.Seed, 0x9e3779b97f4a7c15))
		lo, hi := 255*d.Contrast/2, 255*(1-d.Contrast/2)
		for i, p := range dst.Pix {
			v := lo + float64(p)/255*(hi-lo) + rng.NormFloat64()*d.Noise
			dst.Pix[i] = uint8(math.Max(0, math.Min(255, math.Round(v))))
		}
	}
	if d.JPEGQuality > 0 {
		var buf bytes.Buffer
		if jpeg.Encode(&buf, dst, &jpeg.Options{Quality: d.JPEGQuality}) == nil {
			if j, err := jpeg.Decode(&buf); err == nil {
				g := image.NewGray(j.Bounds())
				draw.Draw(g, g.Bounds(), j, j.Bounds().Min, draw.Src)
				return g
			}
		}
	}
	return dst
}

func boxBlur(src *image.Gray, r int) *image.Gray {
	b := src.Bounds()
	out := image.NewGray(b)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			sum, n := 0, 0
			for dy := -r; dy <= r; dy++ {
				for dx := -r; dx <= r; dx++ {
					p := image.Pt(x+dx, y+dy)
					if p.In(b) {
						sum += int(src.GrayAt(p.X, p.Y).Y)
						n++
					}
				}
			}
			out.SetGray(x, y, color.Gray{Y: uint8(sum / n)})
		}
	}
	return out
}
