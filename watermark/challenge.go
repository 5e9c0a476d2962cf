package watermark

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Scanner challenges: binding a code's shares to the scanner in front of the
// phone (issue 18: a close re-capture relayed live must not pay).
//
// The time binding (slot.go) makes a recording worthless a few seconds
// later, but a thief who films the payer's screen from 10–30 cm and shows the
// video live to a merchant scanner elsewhere stays inside that window, and one
// generation of re-capture at that distance keeps the ring signal (see
// BENCHMARKS.md). What physically separates the two is direction: a relay by
// camera carries light one way, from the payer's screen to the far scanner.
// So the scanner speaks first. Every registered scanner shows, on the side
// facing the payer (a small display or LED matrix beside its window), a
// challenge that changes every slot:
//
//	N(s) = HMAC-SHA256(C, "qshield/watermark/v1/challenge" ‖ s)[:ChallengeLen]
//
// where s is the slot of the scanner's (server-synchronised) clock and C the
// scanner's challenge key, derived by the platform from its master key and the
// scanner's certificate name (ScannerChallengeKey) and fetched by the scanner
// over its authenticated channel. The payer's phone reads the challenge with
// its front camera, which faces the scanner while the code is shown, and from
// then on stamps every frame's share with a bound tag, HMAC under the code's
// slot key K of (T1, index, s, N(s)), and sets the share's bound flag. The
// server, knowing which scanner submitted the claim (its client certificate),
// recomputes N for that scanner and accepts only bound stamps that verify
// under that scanner's challenges for slots within the window.
//
// A thief relaying the screen to scanner B holds shares bound to scanner A's
// challenge (or to none, if the payer was not at a scanner): they fail at B,
// and forging t bound tags without K is a t·24-bit guess. To succeed the thief
// must carry B's challenge the other way, live, into the payer's front camera
// — a second, active relay aimed at the payer's phone — and the phone must not
// see any other scanner's challenge meanwhile (a phone that sees two different
// challenges within a slot stamps with neither). What remains is documented
// in the package doc.

// MinBoundStamps is how many of a claim's t fresh stamps must be bound to
// the submitting scanner's challenge (the others may be unbound: frames the
// phone showed before it read the challenge, still fresh by the time
// binding). A relay never carries a stamp bound to the far scanner, so one
// would do; two make a blind guess 2·8·TagLen = 48 bits, with one try per
// share index per claim, while the honest scan needs only two frames after
// the phone has read the challenge instead of t.
const MinBoundStamps = 2

// ChallengeLen is the length of a challenge nonce.
const ChallengeLen = 8

// ChallengeKeyLen is the length of a scanner's challenge key and of the
// platform's master key it is derived from (at least).
const ChallengeKeyLen = 32

// ChallengePrefix starts the text a scanner shows (as a QR code) for its
// current challenge.
const ChallengePrefix = "QSC1:"

// ErrChallenge reports a malformed challenge text or key.
var ErrChallenge = errors.New("watermark: invalid scanner challenge")

// ErrUnbound reports a claim whose stamps are not bound to the submitting
// scanner's challenge (the phone did not see this scanner).
var ErrUnbound = errors.New("watermark: shares are not bound to this scanner's challenge")

// ErrWrongScanner reports a claim whose bound stamps were made for the
// challenge of another scanner than the one that submitted it (BoundTo): the
// payer's phone was held to that scanner, and its code was relayed here.
var ErrWrongScanner = errors.New("watermark: shares are bound to another scanner's challenge")

// Challenge is what a scanner shows during one slot.
type Challenge struct {
	Slot  int64
	Nonce [ChallengeLen]byte
}

// ScannerChallengeKey derives scanner's challenge key from the platform's
// master key (at least ChallengeKeyLen bytes).
func ScannerChallengeKey(master []byte, scanner string) ([]byte, error) {
	if len(master) < ChallengeKeyLen {
		return nil, fmt.Errorf("%w: master key of %d bytes, want at least %d", ErrChallenge, len(master), ChallengeKeyLen)
	}
	if scanner == "" {
		return nil, fmt.Errorf("%w: empty scanner name", ErrChallenge)
	}
	m := hmac.New(sha256.New, master)
	m.Write([]byte("qshield/watermark/v1/scanner-challenge-key\x00"))
	m.Write([]byte(scanner))
	return m.Sum(nil), nil
}

// ChallengeAt returns the challenge a scanner with key shows in slot.
func ChallengeAt(key []byte, slot int64) Challenge {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("qshield/watermark/v1/challenge\x00"))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(slot))
	m.Write(b[:])
	c := Challenge{Slot: slot}
	copy(c.Nonce[:], m.Sum(nil))
	return c
}

var chEnc = base32.StdEncoding.WithPadding(base32.NoPadding)

// String returns the text the scanner shows: ChallengePrefix and the base32
// form of slot (8 bytes, big endian) ‖ nonce.
func (c Challenge) String() string {
	var b [8 + ChallengeLen]byte
	binary.BigEndian.PutUint64(b[:8], uint64(c.Slot))
	copy(b[8:], c.Nonce[:])
	return ChallengePrefix + chEnc.EncodeToString(b[:])
}

// ParseChallenge parses the text of a scanner's challenge (what the phone's
// front camera read).
func ParseChallenge(s string) (Challenge, error) {
	rest, ok := strings.CutPrefix(s, ChallengePrefix)
	if !ok {
		return Challenge{}, fmt.Errorf("%w: missing prefix", ErrChallenge)
	}
	b, err := chEnc.DecodeString(rest)
	if err != nil || len(b) != 8+ChallengeLen {
		return Challenge{}, fmt.Errorf("%w: malformed text", ErrChallenge)
	}
	// 16 bytes take 26 base32 digits, the last two bits padding that the
	// decoder ignores: only the canonical spelling is accepted.
	if chEnc.EncodeToString(b) != rest {
		return Challenge{}, fmt.Errorf("%w: non-canonical text", ErrChallenge)
	}
	c := Challenge{Slot: int64(binary.BigEndian.Uint64(b[:8]))}
	copy(c.Nonce[:], b[8:])
	return c, nil
}

// boundTag computes the tag of share index of t1 shown in challenge c's slot
// under slot key key.
func boundTag(key []byte, t1 string, index byte, c Challenge) [TagLen]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("qshield/watermark/v1/bound\x00"))
	m.Write([]byte(t1))
	var b [9]byte
	b[0] = index
	binary.BigEndian.PutUint64(b[1:], uint64(c.Slot))
	m.Write(b[:])
	m.Write(c.Nonce[:])
	var tag [TagLen]byte
	copy(tag[:], m.Sum(nil))
	return tag
}

// NewBoundStamp returns the stamp of share index of code t1 shown while the
// phone held scanner challenge c (its slot is the challenge's).
func NewBoundStamp(key []byte, t1 string, index byte, c Challenge) Stamp {
	return Stamp{Index: index, Slot: byte(c.Slot), Bound: true, Tag: boundTag(key, t1, index, c)}
}

// ChallengeTracker is the phone's side of the challenge: it is told every
// challenge the front camera reads and answers which one, if any, the loop
// should bind its frames to. A phone that has read two different challenges
// for the same or neighbouring slots within Hold (two scanners in view, or
// an emitter aimed at the phone beside a real scanner) binds to neither
// until Hold has passed without a conflict. Not safe for concurrent use.
type ChallengeTracker struct {
	// Hold is how long a read challenge stays current (0: 2 slots).
	Hold time.Duration

	last     Challenge
	lastAt   time.Time
	conflict time.Time
	have     bool
}

func (ct *ChallengeTracker) hold() time.Duration {
	if ct.Hold > 0 {
		return ct.Hold
	}
	return 2 * SlotDuration
}

// Observe records challenge c read at phone time at.
func (ct *ChallengeTracker) Observe(c Challenge, at time.Time) {
	// The phone cannot check a nonce (it does not know the scanner's key):
	// a later slot is taken as the same scanner's rotation; within Hold,
	// another nonce for the same slot, or a step back, means two sources
	// (two scanners interleaving step back and forth).
	if ct.have && at.Sub(ct.lastAt) < ct.hold() && c != ct.last && c.Slot <= ct.last.Slot {
		ct.conflict = at
	}
	ct.last, ct.lastAt, ct.have = c, at, true
}

// Current returns the challenge to bind frames shown at phone time at.
func (ct *ChallengeTracker) Current(at time.Time) (Challenge, bool) {
	if !ct.have || at.Sub(ct.lastAt) >= ct.hold() || at.Before(ct.lastAt) {
		return Challenge{}, false
	}
	if !ct.conflict.IsZero() && at.Sub(ct.conflict) < ct.hold() {
		return Challenge{}, false
	}
	return ct.last, true
}

// BoundTo reports whether at least MinBoundStamps of stamps, shares of code
// t1 under slot key key, are bound to the challenges of the scanner whose
// challenge key is scannerKey, for slots within w of now. It tells a claim
// relayed from that scanner (ErrWrongScanner) from one whose bound tags are
// merely wrong: a stamp bound to no scanner in particular matches one with
// probability 2^-24, so MinBoundStamps matching stamps of one claim are
// 2^-48 per scanner tried, and only the holder of K (the phone) can make
// them. It checks only, it accepts nothing: the claim was refused already.
// Only the first MinBoundStamps+2 fresh bound stamps are tried (an honest
// phone binds all of them to the one scanner it faces), so trying every
// registered scanner costs a few HMACs each.
func BoundTo(key []byte, t1 string, stamps []Stamp, now time.Time, w Window, scannerKey []byte) bool {
	if len(key) != SlotKeyLen || len(scannerKey) == 0 {
		return false
	}
	ref := SlotAt(now)
	n, tried := 0, 0
	var seen [256]bool
	for _, st := range stamps {
		if tried == MinBoundStamps+2 {
			break
		}
		if !st.Bound || st.Index == 0 || st.Index > maxShareIndex || seen[st.Index] {
			continue
		}
		seen[st.Index] = true
		slot := resolveSlot(st.Slot, ref)
		start := SlotStart(slot)
		if now.Sub(start.Add(SlotDuration)) > w.MaxAge || start.Sub(now) > w.MaxLead {
			continue
		}
		tried++
		want := boundTag(key, t1, st.Index, ChallengeAt(scannerKey, slot))
		if hmac.Equal(want[:], st.Tag[:]) {
			n++
		}
	}
	return n >= MinBoundStamps
}
