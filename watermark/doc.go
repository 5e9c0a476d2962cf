// Package watermark implements watermarked dynamic payment codes (qshield seed
// 003): a payer's phone loops n QR-code frames of one public handle T1; each
// frame's module rings carry one Shamir share of the secret token T0; a merchant
// scanner filming the loop from 10–20 cm collects t distinct shares within a
// fraction of a second and recovers T0, while a photo — or a short burst, or a
// photo of a photo — does not.
//
// # Threat model
//
// The server issues T0 (16–32 random bytes; 16 by default) to the payer's phone,
// bound to the payer's account, single use, valid for at most 60 s (see Issuer
// and Verifier; the platform's issuer draws again the few T0 whose frames do
// not all read back from a clean screen, see ReadabilityCheck). The thief can
// see the screen: read every QR code, photograph it from a distance (on-site
// theft), or have an accomplice show the photos on another screen to a
// merchant scanner elsewhere (collaborative theft). The thief knows this
// package and its parameters. The goal: reading the code must
// not let the thief pay.
//
//   - T1 = "QSW1:" ‖ base32(HMAC-SHA256(key = T0, "qshield/watermark/v1/handle")[:16]).
//     T1 is what every standard decoder reads. It is a pseudo-random function
//     of T0: it reveals nothing about T0, and the server, which issued T0,
//     computes it in advance to index its record. Submitting T1 alone pays
//     nothing; guessing T0 from T1 is a 128-bit search.
//   - W = T0 is split by (t, n) Shamir sharing over GF(2^8) (package shamir).
//     Fewer than t shares carry no information about T0.
//   - Each share is packed as index ‖ slot ‖ value ‖ tag ‖ CRC-32 (the CRC
//     also covers T1, so a share cannot be moved under another code), coded
//     with the K = 7, rate-1/2 convolutional code (package convcode) and
//     spread over the data modules by a fixed interleaver, one share per
//     frame.
//   - Time binding (slot.go): slot is the low byte of the 1 s time slot in
//     which the phone shows the frame, tag a 24-bit HMAC-SHA256 of (T1,
//     index, full slot) under the code's slot key K, issued with T0 and never
//     displayed. The phone's loop restamps every frame as its slot clock
//     (set from the server's time at issue) advances. The scanner forwards the
//     stamps with T0; the server needs t authentic stamps whose slots lie
//     within DefaultWindow of its receipt (ended ≤ 2 s before, start ≤ 2 s
//     after). A recording replayed later than that — at this scanner or
//     another, however good — fails even inside the code's 60 s life: its
//     stamps are old and K, unlike T0, cannot be rebuilt from the frames.
//   - Scanner challenges (challenge.go; issue 18, the standard fix for a
//     relay: bind the response to the verifier's fresh challenge). A
//     camera relay carries light one way, from the payer's screen to the
//     far scanner. So each registered scanner shows, towards the payer, a
//     challenge N(s) = HMAC(C, s)[:8] that rotates every slot, C being its
//     challenge key (derived from the platform's master key and its
//     certificate name). The payer's front camera, which faces the scanner
//     while the code is shown, reads it; from then on the phone's stamps
//     are HMAC_K(T1, index, s, N(s)) with a bound flag (the top bit of the
//     packet's index byte: no extra bits, so no cost in signal). The server
//     recomputes N for the scanner that submits the claim (its certificate)
//     and requires MinBoundStamps (2) fresh stamps bound to it; every bound
//     stamp must verify. Shares the phone bound to scanner A, or to no
//     scanner, are worthless at scanner B even a millisecond later: the
//     thief would have to guess 48 bits of tag (one try per share index per
//     claim; refused claims say nothing about which stamp failed). Turned
//     on by the platform's master key (Verifier.ChallengeMaster,
//     service.Config.ChallengeMaster); without it the time binding alone
//     applies.
//   - The server accepts a claim once, before expiry, comparing SHA-256(T0) in
//     constant time with its record (it stores no T0), checking the stamps and
//     the amount against the limit the payer set when the code was issued.
//     A refused claim does not consume the code, so knowing T1, or holding an
//     old recording, does not let a thief burn the payer's code either.
//
// What stops the thief is time, direction, physics and the threshold, not
// secrecy of the layout. A recording is worth nothing once the window has
// passed, and, with scanner challenges, worth nothing at any scanner other
// than the one the phone was held to, even live: a close re-capture relayed
// to another merchant's scanner within the window fails on the binding
// (measured: 0 of 1,000 relays of the phone's exact frames, the best any
// camera could do, and 0 of the camsim re-captures; see BENCHMARKS.md).
// What remains:
//   - A two-way live relay: besides filming the screen, the thief shows the
//     far scanner's current challenge to the payer's front camera, from a
//     few centimetres, while the payer shows the code away from any scanner
//     (a phone that reads two different challenges within two slots binds
//     to neither: ChallengeTracker). The money then goes to the far
//     merchant's registered account, which is where such a fraud is traced.
//   - A dishonest merchant can compute its own scanner's future challenges
//     and needs no live relay for that half; the same two conditions (an
//     emitter in the payer's front camera's view, no real scanner in view)
//     apply.
//   - The challenge channel (scanner display → front camera) is modelled by
//     its delay only; camsim does not render it.
//
// Without challenges, a single photo holds one frame (or two blended ones):
// one share at most; a burst must capture t distinct frames, each at a
// resolution where the ring signal survives (about 6 pixels per module or
// more). The honest limits, measured by `qshield experiment watermark`: a 1x
// phone lens from 1 m or more gets almost no shares; a 1x lens at 0.5 m, a 2x
// lens within about 1 m or a 3x lens within about 2 m does. Resampling to
// 30 % of the size or less can still leave a readable ring at some phases in
// a thief's own software; the merchant scanner's rule (shares read at 5
// px/module or more, MinModulePx) refuses every such frame, and with
// challenges a T0 rebuilt in a thief's software pays nowhere anyway (its
// stamps are not bound to the scanner the thief would use).
//
// # Embedding
//
// Every frame is the same QR code of T1: fixed version (3), error-correction
// level (M) and mask (2), so module positions are identical across the loop
// (gozxing's encoder accepts fixed version and mask hints; the code is a
// standard QR symbol that zbar and ZXing read from every frame). Each module is
// ModulePx pixels (a multiple of 3). Its centre third always has the QR colour:
// the "QR bit" every decoder samples. Function patterns (finders, timing,
// alignment, format) are solid. The outer ring of a data module carries one
// coded bit: 0 leaves the ring solid, 1 moves it Depth (0.2) of the way, in
// linear light, towards the opposite colour (a grey ring around a black or
// white centre, as in halftone QR codes).
//
// # Extraction
//
// The scanner decodes T1 with gozxing (retrying a 45°-rotated copy, where
// ZXing's detector is weak, and a half-size copy, which helps very crisp or
// very large codes), rebuilds the detector's module-to-image
// perspective transform from its finder and alignment points, and samples each
// data module's centre and ring in linear light (undoing the camera's sRGB
// tone curve). The decision feature is ring − ½·centre, signed by the module's
// colour (known from regenerating the QR matrix of T1). A least-squares fit per
// colour on the number of opposite-colour neighbours and on the position
// removes inter-symbol interference from blur and illumination gradients; a
// one-step 2-means per colour sets threshold and scale. The soft values of a
// coded bit's modules are summed, Viterbi-decoded and the CRC checked.
//
// Why the signal is semi-robust: the ring is a detail at one third of a module.
// Once the capture's blur spans about a third of a module (distance, a short
// lens, defocus, motion, a second screen-camera pass) the ring merges with its
// centre and neighbours and the soft bits drown. A close scanner sees 7–14
// pixels per module; a 1x phone lens at 1 m sees about 4.5, at 3 m 1.5.
//
// # Display
//
// The loop runs at FrameRate (15 frames/s by default, a divisor of the 60 Hz
// refresh, half the 30 frames/s of a typical scanner so every frame is seen
// unblended at least once). With t = 6 of n = 10, a scanner needs 6 distinct
// frames: about 0.4 s. Frames are exported as PNG files and as an animated GIF.
package watermark
