// Package camsim simulates the screen-to-camera channel: a phone screen showing
// a looping sequence of frames, filmed or photographed by a camera.
//
// Model, in order of the light's path:
//
//   - Display: pixel value v emits Black + (White−Black)·(v/255)^Gamma cd/m²,
//     plus reflected ambient light (veiling glare) everywhere on the screen.
//     The frame sits on a white app page (ScreenWMM×ScreenHMM) and the phone's
//     bezel and surroundings are dark. With PixelPitchMM set, the frame is
//     resampled onto the panel's pixels (nearest for an app's crisp modules,
//     bilinear for a photo or video player) and each panel pixel emits
//     through a 3×3 subpixel mask (RGBStripe: Rec. 709 luma shares of the
//     R, G, B stripes and a black-matrix row), so the camera's pixel grid
//     aliases against the panel's: moiré, in direct scans and re-captures
//     alike.
//   - Geometry: a pinhole camera (horizontal field of view over the sensor
//     width) looks at the screen plane rotated by yaw, pitch and roll at a
//     distance, offset from the optical axis: an exact homography, evaluated
//     per output pixel.
//   - Optics and sensor: the point-spread function is a Gaussian of sigma
//     BlurPx (lens and demosaicing) combined with defocus (fixed-focus lenses:
//     DefocusK·|1/d − 1/FocusMM|) and the pixel aperture (box, variance 1/12);
//     it is applied on the screen plane in linear light after area
//     down-sampling where a camera pixel covers several screen pixels. Motion
//     blur is a line of MotionPx pixels in a random direction.
//   - Exposure and timing: rolling shutter — row y starts exposing at
//     Readout·y/SensorH after the frame start — and each row integrates the
//     display over its exposure window, blending two loop frames when the
//     display changes during it (LightSync-style capture of a changing screen).
//   - Noise and tone: auto-exposure maps the screen's white to 90 % of full
//     scale; FullWell electrons at white give shot noise, plus read noise;
//     the sRGB transfer curve (with its linear toe) encodes 8 bits.
//   - Compression: JPEG (image/jpeg) at JPEGQuality, over the block-aligned
//     region around the code (JPEG blocks are independent, so the pixels there
//     are those of a full-frame encode).
//
// # Profiles
//
// Profiles are physically motivated, not tuned to flatter the scheme; every
// number and its source is in the profile's doc comment:
//
//   - RecaptureVideo: a thief filming the payer's screen at 10–30 cm in
//     1080p30 with a phone's 1x or 2x lens (minimum focus 15 cm), to show the
//     video on ReplayDisplay to a merchant scanner (a live relay, or a replay
//     later; see package trial).
//   - CloseScan: a merchant's counter-top scan box, 1280×720 at 30 frames/s,
//     70° field of view, fixed focus at 15 cm, phone held 10–20 cm away at up
//     to 20° tilt, any roll, hand motion up to 1.5 px, MJPEG at quality 85.
//   - OnSiteTheft: a current phone (12 MP, 1x/2x/3x lenses) at 1–3 m, 10–45°
//     off-axis, hand-held burst of 1–5 photos at 10/s, exposure set on the
//     screen, JPEG 90; the thief keeps the crop around the code.
//   - Collaborative theft: the on-site photos shown zoomed on another phone
//     (ReplayDisplay) and filmed by the CloseScan scanner (see package trial).
//
// What is not modelled, and which way it leans: PenTile subpixel layouts
// (coarser than the RGB stripe modelled: favours the thief), OLED PWM
// flicker at reduced brightness (favours the thief), the video codec's
// inter-frame coding (stood in for by per-frame JPEG; either way), phone
// denoising/sharpening (either way, small),
// reflections of bright objects on the screen (favours the thief), screen
// brightness falling off at oblique viewing angles (favours the thief), hand
// movement within one burst (favours the thief), the payer covering the
// screen with a hand (favours the thief).
package camsim
