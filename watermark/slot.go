package watermark

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Time binding. Every frame's share carries a Stamp: the low byte of the time
// slot (SlotDuration long) in which the phone showed it and a TagLen-byte tag,
// HMAC-SHA256 under the code's slot key K of (T1, share index, full slot
// number). K is issued with T0 and never displayed: a thief who rebuilds T0
// from a recording holds old stamps but cannot make fresh ones. The scanner
// forwards the stamps of the shares it read with T0; the server, which keeps
// K in the code's record, accepts only if at least t of them have valid tags
// and slots within Window of its receipt time. A recording replayed later
// than the window, at this scanner or another, therefore fails even while
// the code is otherwise valid.
//
// Why K is not derived from T0: T0 is exactly what the watermark gives to
// whoever films t frames, so a key derived from it would let the thief stamp
// any slot. K is "derived from the token" only in the sense that it is
// issued with it and bound to its record.

// SlotDuration is the length of one time slot.
const SlotDuration = time.Second

// SlotKeyLen is the length of a code's slot key K.
const SlotKeyLen = 16

// Errors of the time binding.
var (
	// ErrStale reports a reconstruction whose shares were not shown within
	// the acceptance window of its receipt (a replayed recording).
	ErrStale = errors.New("watermark: shares are not fresh (replayed recording?)")
	// ErrBadStamp reports a stamp whose tag does not verify.
	ErrBadStamp = errors.New("watermark: share stamp does not verify")
	// ErrOverLimit reports a charge above the limit the payer set for the code.
	ErrOverLimit = errors.New("watermark: amount exceeds the payer's limit for this code")
)

// Stamp is the time binding of one displayed share.
type Stamp struct {
	Index byte `json:"index"` // share index (1..127)
	Slot  byte `json:"slot"`  // low 8 bits of the slot number
	// Bound is set when the tag also covers the challenge the scanner in
	// front of the phone showed in that slot (see challenge.go); on the
	// wire it is the top bit of the share's index byte.
	Bound bool         `json:"bound,omitempty"`
	Tag   [TagLen]byte `json:"tag"`
}

// NewSlotKey returns a fresh slot key from r (crypto/rand when nil).
func NewSlotKey(r io.Reader) ([]byte, error) {
	if r == nil {
		r = rand.Reader
	}
	k := make([]byte, SlotKeyLen)
	if _, err := io.ReadFull(r, k); err != nil {
		return nil, fmt.Errorf("watermark: reading randomness: %w", err)
	}
	return k, nil
}

// SlotAt returns the slot number of time t (Unix time in whole slots).
func SlotAt(t time.Time) int64 {
	ms := t.UnixMilli()
	d := SlotDuration.Milliseconds()
	s := ms / d
	if ms < 0 && ms%d != 0 {
		s--
	}
	return s
}

// SlotStart returns the start time of slot s.
func SlotStart(s int64) time.Time { return time.UnixMilli(s * SlotDuration.Milliseconds()) }

// slotTag computes the tag of (t1, index, slot) under key.
func slotTag(key []byte, t1 string, index byte, slot int64) [TagLen]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("qshield/watermark/v1/slot\x00"))
	m.Write([]byte(t1))
	var b [9]byte
	b[0] = index
	binary.BigEndian.PutUint64(b[1:], uint64(slot))
	m.Write(b[:])
	var tag [TagLen]byte
	copy(tag[:], m.Sum(nil))
	return tag
}

// NewStamp returns the stamp of share index of code t1 shown in slot.
func NewStamp(key []byte, t1 string, index byte, slot int64) Stamp {
	return Stamp{Index: index, Slot: byte(slot), Tag: slotTag(key, t1, index, slot)}
}

// resolveSlot returns the full slot number with low byte low nearest to ref.
func resolveSlot(low byte, ref int64) int64 {
	s := ref - int64(byte(ref)) + int64(low)
	switch {
	case s-ref > 128:
		s -= 256
	case ref-s > 128:
		s += 256
	}
	return s
}

// Window is how far from the server's receipt time a share's slot may lie.
type Window struct {
	// MaxAge is how long after its slot ended a share is still accepted:
	// capture, processing and network time plus the phone clock's lag.
	MaxAge time.Duration
	// MaxLead is how far the slot's start may lie ahead of the receipt time
	// (the phone's clock running ahead of the server's).
	MaxLead time.Duration
}

// DefaultWindow accepts shares shown until 2 s before receipt and slots
// starting up to 2 s ahead: the phone sets its slot clock from the server's
// time at issue (CodeResponse.ServerTime), so the remaining skew is about half
// a round trip; the experiment measures honest payments with up to ±2 s.
func DefaultWindow() Window { return Window{MaxAge: 2 * time.Second, MaxLead: 2 * time.Second} }

// Binding says how CheckStamps treats scanner challenges.
type Binding struct {
	// ScannerKey is the challenge key of the scanner that submitted the
	// claim (nil: none known, so bound stamps cannot verify).
	ScannerKey []byte
	// Require refuses claims with fewer than MinBoundStamps fresh stamps
	// bound to that scanner's challenge (ErrUnbound): the defence against a
	// live relay.
	Require bool
}

// CheckStamps verifies that at least threshold distinct shares of code t1
// carry valid tags under key for slots within w of now, and, when b.Require
// is set, that at least MinBoundStamps of them are bound to the challenge
// b.ScannerKey showed in their slot (every bound stamp must verify against
// that scanner's challenge). Any stamp with an invalid tag fails the whole check
// (ErrBadStamp): honest scanners only forward stamps whose share passed its
// CRC, one per index (a repeated index is refused, so a guesser gets one try
// per index per claim). Too few fresh stamps is ErrStale; too few fresh
// bound ones, when binding is required, ErrUnbound. The error never says which
// stamp failed beyond its index, nor how many verified.
func CheckStamps(key []byte, t1 string, threshold int, stamps []Stamp, now time.Time, w Window, b Binding) error {
	if len(key) != SlotKeyLen {
		return fmt.Errorf("%w: no slot key on record", ErrBadStamp)
	}
	if len(stamps) > 255 {
		return fmt.Errorf("%w: %d stamps", ErrBadStamp, len(stamps))
	}
	if b.Require && len(b.ScannerKey) == 0 {
		return fmt.Errorf("%w: no challenge key for the scanner", ErrUnbound)
	}
	ref := SlotAt(now)
	var seen [256]bool
	fresh, bound := 0, 0
	for _, st := range stamps {
		if st.Index == 0 || st.Index > maxShareIndex {
			return fmt.Errorf("%w: share index %d", ErrBadStamp, st.Index)
		}
		if seen[st.Index] {
			return fmt.Errorf("%w: share %d stamped twice", ErrBadStamp, st.Index)
		}
		seen[st.Index] = true
		slot := resolveSlot(st.Slot, ref)
		var want [TagLen]byte
		if st.Bound {
			if len(b.ScannerKey) == 0 {
				return fmt.Errorf("%w: share %d is bound to a scanner challenge, and no scanner key is known", ErrBadStamp, st.Index)
			}
			want = boundTag(key, t1, st.Index, ChallengeAt(b.ScannerKey, slot))
		} else {
			want = slotTag(key, t1, st.Index, slot)
		}
		if !hmac.Equal(want[:], st.Tag[:]) {
			return fmt.Errorf("%w: share %d", ErrBadStamp, st.Index)
		}
		start := SlotStart(slot)
		if now.Sub(start.Add(SlotDuration)) > w.MaxAge || start.Sub(now) > w.MaxLead {
			continue
		}
		fresh++
		if st.Bound {
			bound++
		}
	}
	if fresh < threshold {
		return fmt.Errorf("%w: too few shares within the window", ErrStale)
	}
	if b.Require && bound < MinBoundStamps {
		return fmt.Errorf("%w: fewer than %d fresh shares bound to it", ErrUnbound, MinBoundStamps)
	}
	return nil
}
