package browsertest

import (
	"bufio"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"io"
	"os"

	"github.com/chromedp/chromedp"
)

// FakeCamera is the Chromium flags of a camera that films file, a Y4M
// video (WriteY4M) played in a loop, with the permission prompt granted.
// Chromium opens the file when a page starts capturing, so a test may
// rewrite it between captures.
func FakeCamera(file string) []chromedp.ExecAllocatorOption {
	return []chromedp.ExecAllocatorOption{
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("use-file-for-fake-video-capture", file),
	}
}

// Frame places img, scaled by whole pixels to at most fill of the frame's
// shorter side, at the centre of a w×h frame of background grey bg (a code
// held in front of a camera).
func Frame(img image.Image, w, h int, fill float64, bg uint8) *image.RGBA {
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(out, out.Bounds(), &image.Uniform{color.Gray{Y: bg}}, image.Point{}, draw.Src)
	b := img.Bounds()
	side := min(w, h)
	scale := max(1, int(float64(side)*fill)/max(b.Dx(), b.Dy()))
	ox, oy := (w-b.Dx()*scale)/2, (h-b.Dy()*scale)/2
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			c := img.At(b.Min.X+x, b.Min.Y+y)
			for dy := 0; dy < scale; dy++ {
				for dx := 0; dx < scale; dx++ {
					px, py := ox+x*scale+dx, oy+y*scale+dy
					if px >= 0 && py >= 0 && px < w && py < h {
						out.Set(px, py, c)
					}
				}
			}
		}
	}
	return out
}

// WriteY4M writes frames (all of the first frame's size, even width and
// height) as a YUV4MPEG2 video at fps frames per second, 4:2:0 (BT.601
// limited range), the format Chromium's fake camera plays.
func WriteY4M(w io.Writer, frames []image.Image, fps int) error {
	if len(frames) == 0 {
		return fmt.Errorf("y4m: no frames")
	}
	b := frames[0].Bounds()
	fw, fh := b.Dx(), b.Dy()
	if fw%2 != 0 || fh%2 != 0 || fw == 0 {
		return fmt.Errorf("y4m: frame size %dx%d must be even", fw, fh)
	}
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "YUV4MPEG2 W%d H%d F%d:1 Ip A1:1 C420jpeg\n", fw, fh, fps)
	yp := make([]byte, fw*fh)
	up := make([]byte, fw*fh/4)
	vp := make([]byte, fw*fh/4)
	for i, f := range frames {
		if f.Bounds().Dx() != fw || f.Bounds().Dy() != fh {
			return fmt.Errorf("y4m: frame %d is %v, want %dx%d", i, f.Bounds(), fw, fh)
		}
		fb := f.Bounds()
		for y := 0; y < fh; y++ {
			for x := 0; x < fw; x++ {
				r, g, bb, _ := f.At(fb.Min.X+x, fb.Min.Y+y).RGBA()
				yy, _, _ := color.RGBToYCbCr(uint8(r>>8), uint8(g>>8), uint8(bb>>8))
				yp[y*fw+x] = limitedLuma(yy)
			}
		}
		for y := 0; y < fh/2; y++ {
			for x := 0; x < fw/2; x++ {
				var sr, sg, sb uint32
				for dy := 0; dy < 2; dy++ {
					for dx := 0; dx < 2; dx++ {
						r, g, bb, _ := f.At(fb.Min.X+2*x+dx, fb.Min.Y+2*y+dy).RGBA()
						sr, sg, sb = sr+r>>8, sg+g>>8, sb+bb>>8
					}
				}
				_, cb, cr := color.RGBToYCbCr(uint8(sr/4), uint8(sg/4), uint8(sb/4))
				up[y*fw/2+x], vp[y*fw/2+x] = limitedChroma(cb), limitedChroma(cr)
			}
		}
		bw.WriteString("FRAME\n")
		bw.Write(yp)
		bw.Write(up)
		bw.Write(vp)
	}
	return bw.Flush()
}

// limitedLuma maps full-range luma (JFIF, what color.RGBToYCbCr gives)
// to BT.601 limited range, 16–235, the range Chromium reads a Y4M in:
// written full range, the camera's frames came out contrast-stretched,
// light greys clipped to white and dark ones to black.
func limitedLuma(y uint8) uint8 { return uint8(16 + (int(y)*219+127)/255) }

// limitedChroma maps full-range chroma to BT.601 limited range, 16–240.
func limitedChroma(c uint8) uint8 { return uint8(128 + ((int(c)-128)*224+127*sign(int(c)-128))/255) }

func sign(v int) int {
	if v < 0 {
		return -1
	}
	return 1
}

// WriteY4MFile writes frames to path atomically (a camera reading the old
// file never sees half a new one).
func WriteY4MFile(path string, frames []image.Image, fps int) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := WriteY4M(f, frames, fps); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
