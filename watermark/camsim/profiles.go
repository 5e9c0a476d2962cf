package camsim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Range is a closed interval a parameter is drawn from uniformly.
type Range struct{ Min, Max float64 }

func (r Range) draw(rng *rand.Rand) float64 { return r.Min + (r.Max-r.Min)*rng.Float64() }

// Lens is one camera module of a phone (or the scanner's only lens).
type Lens struct {
	Name     string
	HFOVDeg  float64
	BlurPx   float64
	FullWell float64
	// ShakeScale multiplies the profile's motion blur (longer focal length,
	// same angular shake).
	ShakeScale float64
}

// Profile is a capture scenario: a device, how it is held, and when it shoots.
// Its Display defaults to a 56 mm frame (a 45 mm version-3 symbol with its
// quiet zone); set Display.CodeWidthMM for other layouts.
type Profile struct {
	Name       string
	Display    Display
	SensorW    int
	SensorH    int
	Crop       bool
	CropMargin float64
	Lenses     []Lens // one is drawn per trial
	FocusMM    float64
	DefocusK   float64
	// MinFocusMM is an autofocus lens's closest focus (see Camera);
	// DefocusKs, when set, gives DefocusK per lens.
	MinFocusMM  float64
	DefocusKs   []float64
	DistanceMM  Range
	YawDeg      Range // magnitude; the sign is random
	PitchDeg    Range // magnitude; the sign is random
	RollDeg     Range
	ShiftMM     Range // magnitude of the offset from the optical axis
	MotionPx    Range
	Exposure    Range // milliseconds
	Readout     time.Duration
	ReadNoise   float64
	JPEGQuality int
	// CaptureRate is the frames per second of the device (video for the
	// scanner, burst rate for a phone).
	CaptureRate float64
	// Burst is the number of photos per theft attempt (ignored for scanning).
	Burst [2]int
}

// Setup is one drawn trial: camera, pose and lens.
type Setup struct {
	Camera Camera
	Pose   Pose
	Lens   Lens
}

// Draw draws a camera and pose for one trial. lens selects a lens by index
// (-1: random); distanceMM overrides the distance when > 0.
func (p Profile) Draw(rng *rand.Rand, lens int, distanceMM float64) (Setup, error) {
	if len(p.Lenses) == 0 {
		return Setup{}, fmt.Errorf("%w: profile %s has no lens", ErrParams, p.Name)
	}
	if lens < 0 {
		lens = rng.IntN(len(p.Lenses))
	}
	if lens >= len(p.Lenses) {
		return Setup{}, fmt.Errorf("%w: lens %d of %d", ErrParams, lens, len(p.Lenses))
	}
	l := p.Lenses[lens]
	sign := func() float64 {
		if rng.IntN(2) == 0 {
			return -1
		}
		return 1
	}
	d := distanceMM
	if d <= 0 {
		d = p.DistanceMM.draw(rng)
	}
	shift := p.ShiftMM.draw(rng)
	ang := rng.Float64() * 2 * math.Pi
	cam := Camera{
		Name: p.Name + "/" + l.Name, SensorW: p.SensorW, SensorH: p.SensorH, HFOVDeg: l.HFOVDeg,
		Crop: p.Crop, CropMargin: p.CropMargin, BlurPx: l.BlurPx, FocusMM: p.FocusMM, DefocusK: p.DefocusK,
		MinFocusMM:  p.MinFocusMM,
		MotionPx:    p.MotionPx.draw(rng) * l.ShakeScale,
		Exposure:    time.Duration(p.Exposure.draw(rng) * float64(time.Millisecond)),
		Readout:     p.Readout,
		FullWell:    l.FullWell,
		ReadNoise:   p.ReadNoise,
		JPEGQuality: p.JPEGQuality,
	}
	if lens < len(p.DefocusKs) {
		cam.DefocusK = p.DefocusKs[lens]
	}
	pose := Pose{
		DistanceMM: d,
		YawDeg:     sign() * p.YawDeg.draw(rng),
		PitchDeg:   sign() * p.PitchDeg.draw(rng),
		RollDeg:    sign() * p.RollDeg.draw(rng),
		ShiftXMM:   shift * math.Cos(ang),
		ShiftYMM:   shift * math.Sin(ang),
		MotionDeg:  rng.Float64() * 180,
	}
	return Setup{Camera: cam, Pose: pose, Lens: l}, nil
}

// PhoneDisplay is the payer's phone showing the payment code: frameMM is the
// physical width of one frame (symbol plus quiet zone) on a 70×150 mm white
// app page. Payment apps show the symbol about 45 mm wide on a 6" phone.
// Payment apps raise the brightness; 500 cd/m² is a typical OLED phone at high
// (not peak) brightness. Black is 0 on OLED; the ambient term is 500 lx office
// light reflected diffusely by about 1 % of a glass screen (500·0.01/π ≈
// 1.6 cd/m²). Gamma 2.2 (sRGB-like panels; IEC 61966-2-1's reference display).
// Panel: 460 pixels per inch (pitch 0.0552 mm; the 6.1" 2532×1170 panels of
// iPhone 12–15, as published in Apple's technical specifications), RGB-stripe
// subpixels (see RGBStripe); most phone OLEDs use a diamond PenTile layout
// whose red and blue repeat every two pixels, a coarser structure that
// gives stronger moiré: the stripe favours the thief. The app draws the
// modules crisply (nearest-neighbour onto the panel).
func PhoneDisplay(frameMM float64) Display {
	return Display{CodeWidthMM: frameMM, ScreenWMM: 70, ScreenHMM: 150,
		White: 500, Black: 0, Gamma: 2.2, Ambient: 1.6, Bezel: 3,
		PixelPitchMM: 25.4 / 460, Subpixels: RGBStripe()}
}

// CloseScan is a merchant's payment scanner (a counter-top "scan box") reading
// a phone held 10–20 cm in front of it. Sensor 1280×720 at 30 frames/s with a
// 70° horizontal field of view (such modules have 60–80°: wide enough that a
// 45 mm code at 10 cm stays in view at any roll), rolling shutter read out in
// 20 ms, exposure 2–8 ms (the screen is bright; the scanner's LEDs do not
// light an emissive screen), fixed focus at 15 cm with defocus blur reaching
// sigma 1 px at 10 cm and 0.5 px at 20 cm, optics sigma 0.8 px. The payer's
// hand moves the phone by up to about 2 cm/s: up to 1.5 px of motion blur in
// one exposure. Viewing angle up to 20° in each axis, any roll, the code within
// 8 mm of the optical axis (the payer aims at the scanner window). Frames
// reach the decoder as JPEG at quality 85, as from a USB MJPEG camera
// (scanners that decode raw frames do better). At 10–20 cm the scanner sees
// 7–14 pixels per module of a 45 mm version-3 symbol.
func CloseScan() Profile {
	return Profile{
		Name: "close-scan", Display: PhoneDisplay(56),
		SensorW: 1280, SensorH: 720,
		Lenses:  []Lens{{Name: "scanner", HFOVDeg: 70, BlurPx: 0.8, FullWell: 4000, ShakeScale: 1}},
		FocusMM: 150, DefocusK: 300,
		DistanceMM: Range{100, 200}, YawDeg: Range{0, 20}, PitchDeg: Range{0, 20},
		RollDeg: Range{0, 180}, ShiftMM: Range{0, 8}, MotionPx: Range{0, 1.5},
		Exposure: Range{2, 8}, Readout: 20 * time.Millisecond, ReadNoise: 5,
		JPEGQuality: 85, CaptureRate: 30,
	}
}

// OnSiteTheft is a thief photographing the payer's screen from 1–3 m with a
// current phone (12 MP output, 4032×3024) while the payer holds the code up
// to the scanner. The lens is drawn per trial among the phone's modules:
// main 1x (26 mm equivalent, 69.4° HFOV, sigma 0.7 px), 2x (a 12 MP crop of a
// 48 MP quad-Bayer main sensor, 52 mm eq., 38.1°, softer: sigma 1.0 px) and a
// 3x telephoto (77 mm eq., 26.3°, sigma 0.8 px, smaller pixels behind f/2.8:
// fewer electrons). Autofocus; exposure 1/120–1/60 s with the exposure set on
// the screen (tap to expose — favourable to the thief); hand shake after OIS
// 0.2–1.5 px at 1x, scaled with focal length. The thief stands beside or
// behind the payer: the screen is seen 10–45° off-axis, pitch up to 15°, roll
// up to 30°. Burst mode at 10 photos/s, 1–5 photos. Rolling-shutter readout
// 15 ms for the full frame. HEIF/JPEG at quality 90. The thief keeps only the
// crop around the code, at the sensor's own resolution.
func OnSiteTheft() Profile {
	return Profile{
		Name: "on-site-theft", Display: PhoneDisplay(56),
		SensorW: 4032, SensorH: 3024, Crop: true,
		Lenses: []Lens{
			{Name: "1x", HFOVDeg: 69.4, BlurPx: 0.7, FullWell: 4000, ShakeScale: 1},
			{Name: "2x", HFOVDeg: 38.1, BlurPx: 1.0, FullWell: 4000, ShakeScale: 2},
			{Name: "3x", HFOVDeg: 26.3, BlurPx: 0.8, FullWell: 1500, ShakeScale: 3},
		},
		DistanceMM: Range{1000, 3000}, YawDeg: Range{10, 45}, PitchDeg: Range{0, 15},
		RollDeg: Range{0, 30}, ShiftMM: Range{0, 0}, MotionPx: Range{0.2, 1.5},
		Exposure: Range{1000.0 / 120, 1000.0 / 60}, Readout: 15 * time.Millisecond, ReadNoise: 2.5,
		JPEGQuality: 90, CaptureRate: 10, Burst: [2]int{1, 5},
	}
}

// ReplayDisplay is the accomplice's phone showing a stolen photo or video
// zoomed so the code is about as large as on the payer's phone (the crop,
// 1.25× the frame, shown 65 mm wide), same panel characteristics as
// PhoneDisplay, the picture scaled smoothly (bilinear) as photo viewers and
// video players do. Its 60 Hz sample-and-hold refresh is modelled by the
// scene's frame rate (a 30 frames/s video changes every other refresh) and
// the scanner's rolling shutter, which blends two video frames in the rows
// exposed across a change. Not modelled: PWM dimming flicker (OLEDs at
// reduced brightness; a thief replays at full brightness, where most panels
// do not flicker), which would add rolling-shutter bands and hurt the thief.
func ReplayDisplay() Display {
	d := PhoneDisplay(65)
	d.Smooth = true
	return d
}

// RecaptureVideo is a thief filming the payer's screen from close by (10–30
// cm) with a current phone's main camera in 1080p30 video, to relay it live
// (or replay it later) on another screen. Lenses: 1x (69.4° HFOV, as
// OnSiteTheft) and 2x (38.1°, a crop of the 48 MP quad-Bayer main sensor,
// the same optics), both with optics and demosaicing blur sigma 0.6 px at
// 1080p (the 12 MP image's 0.7 px, downscaled 2.1×). Autofocus, but the main
// camera does not focus closer than 150 mm (iPhone 13–15 main cameras; closer
// than that phones switch to a macro lens or stay blurred): closer, defocus
// grows as DefocusK·|1/d − 1/150| with DefocusK from the lens (f = 5.1 mm,
// f/1.6, aperture 3.2 mm): blur disc diameter D·f·|1/d − 1/s| on the sensor,
// sigma a quarter of it, in 1080p pixels of 3.6 µm (1x) or 1.8 µm (2x):
// 1130 and 2260 px·mm. Exposure 4–16 ms (the screen is bright), rolling
// shutter read out in 16 ms, hand shake after stabilisation 0.2–1.0 px at 1x
// (doubled at 2x), tilt up to 20°, any roll up to 30°. Video compression
// (H.264/HEVC at the default ~16 Mb/s) is stood in for by JPEG quality 85
// per frame, an assumption: streams at that rate spend most bits on motion,
// and a thief who records at a higher rate loses less. The thief keeps the
// crop around the code.
func RecaptureVideo() Profile {
	return Profile{
		Name: "recapture-video", Display: PhoneDisplay(56),
		SensorW: 1920, SensorH: 1080, Crop: true,
		Lenses: []Lens{
			{Name: "1x", HFOVDeg: 69.4, BlurPx: 0.6, FullWell: 6000, ShakeScale: 1},
			{Name: "2x", HFOVDeg: 38.1, BlurPx: 0.6, FullWell: 6000, ShakeScale: 2},
		},
		MinFocusMM: 150, DefocusKs: []float64{1130, 2260},
		DistanceMM: Range{100, 300}, YawDeg: Range{0, 20}, PitchDeg: Range{0, 20},
		RollDeg: Range{0, 30}, ShiftMM: Range{0, 5}, MotionPx: Range{0.2, 1.0},
		Exposure: Range{4, 16}, Readout: 16 * time.Millisecond, ReadNoise: 3,
		JPEGQuality: 85, CaptureRate: 30,
	}
}
