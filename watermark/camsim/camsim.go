package camsim

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"time"
)

// ErrParams reports an invalid display, camera or pose.
var ErrParams = errors.New("camsim: invalid parameters")

// Display is the screen showing the code.
type Display struct {
	// CodeWidthMM is the physical width of one frame image (code plus quiet
	// zone) on the screen.
	CodeWidthMM float64
	// ScreenWMM, ScreenHMM are the size of the lit screen around the code
	// (a white app page); the code is centred on it.
	ScreenWMM, ScreenHMM float64
	// White and Black are the luminances (cd/m²) of pixel values 255 and 0.
	White, Black float64
	// Gamma is the display's transfer exponent (value → luminance).
	Gamma float64
	// Ambient is the luminance (cd/m²) of ambient light reflected by the glass,
	// added everywhere on the screen (veiling glare).
	Ambient float64
	// Bezel is the luminance of everything outside the screen.
	Bezel float64
	// PixelPitchMM is the panel's pixel pitch. When set, the frame is
	// resampled onto the panel's pixels (nearest neighbour, as an app draws
	// a QR code's modules, or bilinear when Smooth is set, as a video
	// player or photo viewer scales a picture) and every panel pixel emits
	// through its subpixels (Subpixels), so the camera sees the panel's
	// structure: aliasing against the camera's pixel grid gives moiré. Zero
	// means an ideal continuous display (no structure).
	PixelPitchMM float64
	// Smooth selects bilinear resampling onto the panel.
	Smooth bool
	// Subpixels is the emission of a panel pixel on a 3×3 grid (row-major),
	// relative to the pixel's mean: for grey content an RGB-stripe pixel's
	// columns emit the Rec. 709 luma shares of red, green and blue, and the
	// rows model the black matrix. Zero means uniform.
	Subpixels [9]float64
}

// RGBStripe returns the 3×3 emission mask of an RGB-stripe panel pixel for
// grey content: columns R, G, B with the Rec. 709 luma weights 0.2126,
// 0.7152, 0.0722 (ITU-R BT.709-6, item 3.2), and the bottom third dark (the
// black matrix and the gap between pixel rows; emitting aperture ratios of
// phone panels are about 50–70 %), normalised to mean 1.
func RGBStripe() [9]float64 {
	w := [3]float64{0.2126, 0.7152, 0.0722}
	var m [9]float64
	for r := range 2 {
		for c := range 3 {
			m[3*r+c] = w[c] * 3 * 3 / 2
		}
	}
	return m
}

// Camera is the capturing device.
type Camera struct {
	Name string
	// SensorW, SensorH are the full output resolution; HFOVDeg the horizontal
	// field of view across SensorW.
	SensorW, SensorH int
	HFOVDeg          float64
	// Crop, when set, makes Capture return only the region around the screen
	// (as a thief crops a photo); the pixels are the sensor's own.
	Crop bool
	// CropMargin is the crop's size relative to the frame (0 means 1.25).
	CropMargin float64
	// BlurPx is the optics + demosaicing point-spread sigma in output pixels.
	BlurPx float64
	// FocusMM and DefocusK model a fixed-focus lens: extra blur sigma
	// DefocusK·|1/d − 1/FocusMM| px at distance d (mm). FocusMM 0 = autofocus,
	// which focuses at d unless d is closer than MinFocusMM (then it stays at
	// MinFocusMM and DefocusK applies).
	FocusMM, DefocusK float64
	MinFocusMM        float64
	// MotionPx is the length of motion blur during the exposure, in pixels.
	MotionPx float64
	// Exposure is the exposure time of one row; Readout the rolling-shutter
	// time from the first to the last row of the full sensor.
	Exposure, Readout time.Duration
	// FullWell is the number of electrons a pixel collects from the screen's
	// white (auto-exposure puts it at 90 % of the output range);
	// ReadNoise is in electrons.
	FullWell, ReadNoise float64
	// JPEGQuality 1..100; 0 means no compression.
	JPEGQuality int
}

// Pose places the screen in front of the camera.
type Pose struct {
	DistanceMM float64 // camera to screen centre, along the optical axis
	YawDeg     float64 // screen rotation about its vertical axis (viewing angle)
	PitchDeg   float64 // rotation about its horizontal axis
	RollDeg    float64 // rotation in its plane
	ShiftXMM   float64 // screen centre offset from the optical axis
	ShiftYMM   float64
	MotionDeg  float64 // direction of the motion blur in the image
}

// Scene is what the screen shows over time: a loop of frames (or one still),
// or an endless sequence supplied by Source.
type Scene struct {
	Display Display
	Frames  []*image.Gray
	// Source, when set, supplies frame k ≥ 0 on demand (Frames is then
	// ignored): the sequence does not loop. All frames must have one size.
	Source func(k int) *image.Gray
	// FrameRate of the loop; 0 shows the first frame forever.
	FrameRate float64
	// Phase is the loop time at capture time 0.
	Phase time.Duration
}

// frame returns frame k.
func (s *Scene) frame(k int) *image.Gray {
	if s.Source != nil {
		return s.Source(k)
	}
	return s.Frames[k]
}

// FrameAt returns the index of the frame on screen at time t.
func (s *Scene) FrameAt(t time.Duration) int {
	if s.FrameRate <= 0 || (s.Source == nil && len(s.Frames) == 1) {
		return 0
	}
	k := int(math.Floor((t + s.Phase).Seconds() * s.FrameRate))
	if s.Source != nil {
		return max(k, 0)
	}
	k %= len(s.Frames)
	if k < 0 {
		k += len(s.Frames)
	}
	return k
}

// Capture simulates one exposure that starts (first row) at time at. rng
// drives the noise. The result is what the camera delivers: an 8-bit grey
// image after JPEG compression when JPEGQuality > 0.
func (c *Camera) Capture(s *Scene, pose Pose, at time.Duration, rng *rand.Rand) (*image.Gray, error) {
	r, err := c.newRender(s, pose)
	if err != nil {
		return nil, err
	}
	return r.capture(s, at, rng)
}

// Session captures several frames of one scene from one pose, caching the
// per-frame optical pre-filtering (a hand-held device moves little within the
// second a scan takes; use a new Session for a new pose).
type Session struct {
	cam   *Camera
	scene *Scene
	r     *render
}

// NewSession prepares captures of s by c from pose.
func (c *Camera) NewSession(s *Scene, pose Pose) (*Session, error) {
	r, err := c.newRender(s, pose)
	if err != nil {
		return nil, err
	}
	return &Session{cam: c, scene: s, r: r}, nil
}

// Capture captures one frame starting at time at.
func (ss *Session) Capture(at time.Duration, rng *rand.Rand) (*image.Gray, error) {
	return ss.r.capture(ss.scene, at, rng)
}

// FramePixelScale returns how many frame pixels one output pixel spans at
// the code centre (for reporting).
func (ss *Session) FramePixelScale() float64 { return ss.r.modScale }

func (d Display) validate() error {
	if !(d.CodeWidthMM > 0 && d.ScreenWMM >= d.CodeWidthMM && d.ScreenHMM >= d.CodeWidthMM &&
		d.White > d.Black && d.Black >= 0 && d.Gamma > 0 && d.Ambient >= 0 && d.Bezel >= 0 &&
		d.PixelPitchMM >= 0 && (d.PixelPitchMM == 0 || d.CodeWidthMM/d.PixelPitchMM <= 8192)) {
		return fmt.Errorf("%w: display %+v", ErrParams, d)
	}
	return nil
}

func (c *Camera) validate() error {
	if c.SensorW < 32 || c.SensorH < 32 || c.SensorW*c.SensorH > 64<<20 ||
		!(c.HFOVDeg > 1 && c.HFOVDeg < 170) || c.BlurPx < 0 || c.MotionPx < 0 || c.MotionPx > 64 ||
		c.Exposure <= 0 || c.Readout < 0 || !(c.FullWell > 0) || c.ReadNoise < 0 ||
		c.JPEGQuality < 0 || c.JPEGQuality > 100 || c.FocusMM < 0 || c.DefocusK < 0 || c.MinFocusMM < 0 {
		return fmt.Errorf("%w: camera %+v", ErrParams, *c)
	}
	return nil
}

// encodeJPEG compresses and decompresses g.
func encodeJPEG(g *image.Gray, q int) (*image.Gray, error) {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, g, &jpeg.Options{Quality: q}); err != nil {
		return nil, fmt.Errorf("camsim: jpeg encode: %w", err)
	}
	img, err := jpeg.Decode(&buf)
	if err != nil {
		return nil, fmt.Errorf("camsim: jpeg decode: %w", err)
	}
	if gi, ok := img.(*image.Gray); ok {
		return gi, nil
	}
	return nil, fmt.Errorf("camsim: jpeg decoded to %T", img)
}
