package camsim

import (
	"errors"
	"image"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func testFrame(v uint8) *image.Gray {
	g := image.NewGray(image.Rect(0, 0, 120, 120))
	for i := range g.Pix {
		g.Pix[i] = v
	}
	// a black square in the middle
	for y := 40; y < 80; y++ {
		for x := 40; x < 80; x++ {
			g.Pix[y*120+x] = 0
		}
	}
	return g
}

func idealCamera() Camera {
	return Camera{SensorW: 640, SensorH: 480, HFOVDeg: 60, Exposure: time.Millisecond,
		FullWell: 1e9, ReadNoise: 0}
}

func TestFrontalCaptureGeometry(t *testing.T) {
	s := &Scene{Display: PhoneDisplay(50), Frames: []*image.Gray{testFrame(255)}}
	cam := idealCamera()
	img, err := cam.Capture(s, Pose{DistanceMM: 100}, 0, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	// Focal length 320/tan(30°) = 554 px; the frame (50 mm) at 100 mm is
	// 277 px wide, so its 16.7 mm black square spans 92 px: ±46 px.
	c := img.Pix[240*img.Stride+320]
	edgeIn := img.Pix[240*img.Stride+320+43]
	edgeOut := img.Pix[240*img.Stride+320+49]
	if c > 10 || edgeIn > 10 || edgeOut < 200 {
		t.Fatalf("centre %d, inside %d, outside %d", c, edgeIn, edgeOut)
	}
	// The white page is ~90 % in linear light → sRGB ≈ 243.
	if w := img.Pix[240*img.Stride+320+100]; math.Abs(float64(w)-243) > 3 {
		t.Fatalf("white %d", w)
	}
}

func TestRollingShutterBlends(t *testing.T) {
	a, b := testFrame(255), testFrame(255)
	for i := range b.Pix {
		b.Pix[i] = 255 - a.Pix[i] // inverted square
	}
	s := &Scene{Display: PhoneDisplay(50), Frames: []*image.Gray{a, b}, FrameRate: 10}
	cam := idealCamera()
	cam.Readout = 50 * time.Millisecond
	// Frame change at 100 ms; capture from 60 ms: rows after the change show b.
	img, err := cam.Capture(s, Pose{DistanceMM: 100}, 60*time.Millisecond, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	// Rows start exposing at 60 + 50·y/480 ms: the code's rows (about
	// 200–280) start before 100 ms and show frame a (black square); a later
	// capture shows frame b (white square).
	if v := img.Pix[240*img.Stride+320]; v > 10 {
		t.Fatalf("frame a's black square: %d", v)
	}
	img, _ = cam.Capture(s, Pose{DistanceMM: 100}, 80*time.Millisecond, rand.New(rand.NewPCG(1, 1)))
	if v := img.Pix[240*img.Stride+320]; v < 200 { // row 240 starts at 105 ms
		t.Fatalf("rolling shutter: row 240 should show frame b, got %d", v)
	}
	if s.FrameAt(0) != 0 || s.FrameAt(100*time.Millisecond) != 1 || s.FrameAt(200*time.Millisecond) != 0 {
		t.Fatal("FrameAt")
	}
	// A long exposure straddling the change averages both frames.
	cam.Readout = 0
	cam.Exposure = 20 * time.Millisecond
	img, _ = cam.Capture(s, Pose{DistanceMM: 100}, 90*time.Millisecond, rand.New(rand.NewPCG(1, 1)))
	mid := img.Pix[240*img.Stride+320]
	if mid < 150 || mid > 220 { // 50 % of white in linear light → sRGB ≈ 0.45 → ~180
		t.Fatalf("blend %d", mid)
	}
}

func TestDeterministicAndNoisy(t *testing.T) {
	s := &Scene{Display: PhoneDisplay(50), Frames: []*image.Gray{testFrame(255)}}
	prof := CloseScan()
	su, err := prof.Draw(rand.New(rand.NewPCG(3, 3)), -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := su.Camera.Capture(s, su.Pose, 0, rand.New(rand.NewPCG(5, 5)))
	b, _ := su.Camera.Capture(s, su.Pose, 0, rand.New(rand.NewPCG(5, 5)))
	c, _ := su.Camera.Capture(s, su.Pose, 0, rand.New(rand.NewPCG(6, 6)))
	if string(a.Pix) != string(b.Pix) {
		t.Fatal("same seed, different image")
	}
	if string(a.Pix) == string(c.Pix) {
		t.Fatal("different seeds, identical image: no noise")
	}
}

func TestInvalidParameters(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	s := &Scene{Display: PhoneDisplay(50), Frames: []*image.Gray{testFrame(255)}}
	good := idealCamera()
	cases := []struct {
		cam  Camera
		pose Pose
		sc   *Scene
	}{
		{Camera{}, Pose{DistanceMM: 100}, s},
		{good, Pose{DistanceMM: 1}, s},
		{good, Pose{DistanceMM: 100, YawDeg: 89}, s},
		{good, Pose{DistanceMM: 100}, &Scene{Display: PhoneDisplay(50)}},
		{good, Pose{DistanceMM: 100}, &Scene{Display: Display{}, Frames: s.Frames}},
		{good, Pose{DistanceMM: 100}, &Scene{Display: PhoneDisplay(50), Frames: []*image.Gray{testFrame(1), image.NewGray(image.Rect(0, 0, 3, 3))}}},
		{good, Pose{DistanceMM: 100, ShiftXMM: 5000}, s}, // out of view
	}
	for i, c := range cases {
		if _, err := c.cam.Capture(c.sc, c.pose, 0, rng); !errors.Is(err, ErrParams) {
			t.Errorf("case %d: %v", i, err)
		}
	}
	if _, err := (Profile{}).Draw(rng, -1, 0); !errors.Is(err, ErrParams) {
		t.Error("profile without lens")
	}
}

// TestPanelStructure: a panel's subpixel mask keeps the mean luminance (a
// white frame seen from far enough to average the pixels is as bright as on
// an ideal display), while a camera close enough to resolve the subpixels
// sees their structure (a strong column pattern).
func TestPanelStructure(t *testing.T) {
	white := testFrame(255)
	for i := range white.Pix {
		white.Pix[i] = 255
	}
	cam := idealCamera()
	ideal := PhoneDisplay(50)
	ideal.PixelPitchMM = 0
	panel := PhoneDisplay(50)
	mean := func(d Display, dist float64) (float64, float64) {
		img, err := cam.Capture(&Scene{Display: d, Frames: []*image.Gray{white}}, Pose{DistanceMM: dist, ShiftXMM: 15}, 0, rand.New(rand.NewPCG(1, 1)))
		if err != nil {
			t.Fatal(err)
		}
		// A 20-pixel run in the white quiet area left of the square.
		var s, s2 float64
		for x := 0; x < 20; x++ {
			v := float64(img.Pix[240*img.Stride+320+x])
			s += v
			s2 += v * v
		}
		m := s / 20
		return m, math.Sqrt(s2/20 - m*m)
	}
	mi, _ := mean(ideal, 200)
	mp, sdp := mean(panel, 200)
	if math.Abs(mi-mp) > 4 || sdp > 6 {
		t.Fatalf("far: ideal %.1f, panel %.1f ± %.1f", mi, mp, sdp)
	}
	// A narrow lens at 60 mm: a panel pixel spans about 3.4 camera pixels.
	cam.HFOVDeg = 10
	_, sdClose := mean(panel, 60)
	if sdClose < 10 {
		t.Fatalf("close up the panel's subpixels are invisible (sd %.1f)", sdClose)
	}
}

// TestSourceScene: an endless Source is shown frame by frame, never looped.
func TestSourceScene(t *testing.T) {
	calls := map[int]bool{}
	s := &Scene{Display: PhoneDisplay(50), FrameRate: 10, Source: func(k int) *image.Gray {
		calls[k] = true
		return testFrame(255)
	}}
	if k := s.FrameAt(2500 * time.Millisecond); k != 25 {
		t.Fatalf("frame at 2.5 s: %d", k)
	}
	cam := idealCamera()
	if _, err := cam.Capture(s, Pose{DistanceMM: 100}, 1234*time.Millisecond, rand.New(rand.NewPCG(1, 1))); err != nil {
		t.Fatal(err)
	}
	if !calls[12] {
		t.Fatalf("frame 12 not requested: %v", calls)
	}
	bad := &Scene{Display: PhoneDisplay(50), FrameRate: 10, Source: func(k int) *image.Gray {
		if k == 0 {
			return testFrame(255)
		}
		return image.NewGray(image.Rect(0, 0, 5, 5))
	}}
	if _, err := cam.Capture(bad, Pose{DistanceMM: 100}, time.Second, rand.New(rand.NewPCG(1, 1))); !errors.Is(err, ErrParams) {
		t.Fatalf("frame of another size: %v", err)
	}
}
