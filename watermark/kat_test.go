package watermark

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

type katFile struct {
	Handles []struct {
		T0     string `json:"t0"`
		Handle string `json:"handle"`
	} `json:"handles"`
	Shares []struct {
		Handle  string `json:"handle"`
		Index   byte   `json:"index"`
		Value   string `json:"value"`
		SlotKey string `json:"slot_key"`
		Slot    int64  `json:"slot"`
		Tag     string `json:"tag"`
		Packet  string `json:"packet"`
	} `json:"shares"`
	Bound []struct {
		Handle        string `json:"handle"`
		Index         byte   `json:"index"`
		Value         string `json:"value"`
		SlotKey       string `json:"slot_key"`
		Master        string `json:"master"`
		Scanner       string `json:"scanner"`
		Slot          int64  `json:"slot"`
		ChallengeKey  string `json:"challenge_key"`
		Nonce         string `json:"nonce"`
		ChallengeText string `json:"challenge_text"`
		Tag           string `json:"tag"`
		Packet        string `json:"packet"`
	} `json:"bound_shares"`
}

// The vectors were computed independently with Python's hmac/hashlib/base64
// and zlib.crc32 (see testdata/README).
func TestKnownAnswers(t *testing.T) {
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var kf katFile
	if err := json.Unmarshal(raw, &kf); err != nil {
		t.Fatal(err)
	}
	if len(kf.Handles) == 0 || len(kf.Shares) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range kf.Handles {
		t0, _ := hex.DecodeString(v.T0)
		h, err := Handle(t0)
		if err != nil || h != v.Handle {
			t.Errorf("Handle(%s) = %q, %v; want %q", v.T0, h, err, v.Handle)
		}
		if err := ParseHandle(h); err != nil {
			t.Errorf("ParseHandle(%q): %v", h, err)
		}
	}
	for _, v := range kf.Shares {
		val, _ := hex.DecodeString(v.Value)
		key, _ := hex.DecodeString(v.SlotKey)
		st := NewStamp(key, v.Handle, v.Index, v.Slot)
		if hex.EncodeToString(st.Tag[:]) != v.Tag || st.Slot != byte(v.Slot) || st.Index != v.Index {
			t.Errorf("stamp = %+v, want tag %s", st, v.Tag)
		}
		pkt := marshalShare(v.Handle, Share{Index: v.Index, Value: val, Stamp: st})
		if hex.EncodeToString(pkt) != v.Packet {
			t.Errorf("packet = %x want %s", pkt, v.Packet)
		}
		s, err := unmarshalShare(v.Handle, pkt, len(val))
		if err != nil || s.Index != v.Index || hex.EncodeToString(s.Value) != v.Value || s.Stamp != st {
			t.Errorf("unmarshal: %+v %v", s, err)
		}
		// Every single-bit corruption is caught, and so is moving the share
		// under another code.
		for i := range 8 * len(pkt) {
			c := append([]byte(nil), pkt...)
			c[i/8] ^= 1 << (i % 8)
			if _, err := unmarshalShare(v.Handle, c, len(val)); !errors.Is(err, ErrBadShare) {
				t.Fatalf("bit %d flip accepted", i)
			}
		}
		if _, err := unmarshalShare(v.Handle+"A", pkt, len(val)); !errors.Is(err, ErrBadShare) {
			t.Fatal("share accepted under another handle")
		}
	}
}

// TestKnownAnswersBound: scanner challenges and bound shares (testdata/README).
func TestKnownAnswersBound(t *testing.T) {
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var kf katFile
	if err := json.Unmarshal(raw, &kf); err != nil {
		t.Fatal(err)
	}
	if len(kf.Bound) == 0 {
		t.Fatal("no bound vectors")
	}
	for _, v := range kf.Bound {
		master, _ := hex.DecodeString(v.Master)
		key, _ := hex.DecodeString(v.SlotKey)
		val, _ := hex.DecodeString(v.Value)
		ck, err := ScannerChallengeKey(master, v.Scanner)
		if err != nil || hex.EncodeToString(ck) != v.ChallengeKey {
			t.Fatalf("challenge key %x %v, want %s", ck, err, v.ChallengeKey)
		}
		c := ChallengeAt(ck, v.Slot)
		if hex.EncodeToString(c.Nonce[:]) != v.Nonce || c.String() != v.ChallengeText {
			t.Errorf("challenge %x %q, want %s %q", c.Nonce, c.String(), v.Nonce, v.ChallengeText)
		}
		st := NewBoundStamp(key, v.Handle, v.Index, c)
		if hex.EncodeToString(st.Tag[:]) != v.Tag || !st.Bound || st.Slot != byte(v.Slot) {
			t.Errorf("bound stamp %+v, want tag %s", st, v.Tag)
		}
		pkt := marshalShare(v.Handle, Share{Index: v.Index, Value: val, Stamp: st})
		if hex.EncodeToString(pkt) != v.Packet {
			t.Errorf("packet = %x want %s", pkt, v.Packet)
		}
		s, err := unmarshalShare(v.Handle, pkt, len(val))
		if err != nil || s.Index != v.Index || s.Stamp != st {
			t.Errorf("unmarshal: %+v %v", s, err)
		}
	}
}

func TestHandleErrors(t *testing.T) {
	for _, n := range []int{0, 15, 33} {
		if _, err := Handle(make([]byte, n)); !errors.Is(err, ErrToken) {
			t.Errorf("len %d: %v", n, err)
		}
	}
	for _, s := range []string{"", "QSW1:", "QSW2:AAAAAAAAAAAAAAAAAAAAAAAAAA", "QSW1:AAAA", "QSW1:aaaaaaaaaaaaaaaaaaaaaaaaaa", "http://example.com"} {
		if err := ParseHandle(s); !errors.Is(err, ErrForeignCode) {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func TestParamsValidate(t *testing.T) {
	ok := DefaultParams()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(*Params){
		func(p *Params) { p.Threshold = 1 },
		func(p *Params) { p.Shares = p.Threshold - 1 },
		func(p *Params) { p.Shares = 256 },
		func(p *Params) { p.TokenLen = 8 },
		func(p *Params) { p.TokenLen = 32 }, // does not fit version 3
		func(p *Params) { p.Version = 1 },
		func(p *Params) { p.ECLevel = "X" },
		func(p *Params) { p.Mask = 8 },
		func(p *Params) { p.ModulePx = 10 },
		func(p *Params) { p.QuietZone = 0 },
		func(p *Params) { p.Depth = 0 },
		func(p *Params) { p.Depth = 0.6 },
		func(p *Params) { p.FrameRate = 0 },
	}
	for i, f := range bad {
		p := DefaultParams()
		f(&p)
		if err := p.Validate(); !errors.Is(err, ErrParams) {
			t.Errorf("case %d: %v", i, err)
		}
	}
	p := DefaultParams()
	p.TokenLen, p.Version = 32, 4
	if err := p.Validate(); err != nil {
		t.Errorf("32-byte tokens on version 4: %v", err)
	}
}

func FuzzUnmarshalShare(f *testing.F) {
	f.Add("QSW1:X", []byte{1, 2, 3})
	f.Add("QSW1:X", marshalShare("QSW1:X", Share{Index: 1, Value: make([]byte, 16), Stamp: Stamp{Index: 1, Slot: 7}}))
	f.Fuzz(func(t *testing.T, h string, b []byte) {
		s, err := unmarshalShare(h, b, 16)
		if err == nil {
			if s.Index == 0 || s.Stamp.Index != s.Index || len(s.Value) != 16 {
				t.Fatalf("accepted invalid share %+v", s)
			}
			if string(marshalShare(h, s)) != string(b) {
				t.Fatal("round trip differs")
			}
		}
	})
}

func FuzzParseHandle(f *testing.F) {
	h, _ := Handle(make([]byte, 16))
	f.Add(h)
	f.Add("QSW1:")
	f.Fuzz(func(t *testing.T, s string) {
		// Invariant: an accepted handle is exactly the prefix and the
		// canonical encoding of a 128-bit value (no second spelling).
		if ParseHandle(s) != nil {
			return
		}
		b, err := handleEnc.DecodeString(strings.TrimPrefix(s, HandlePrefix))
		if err != nil || len(b) != handleLen || HandlePrefix+handleEnc.EncodeToString(b) != s {
			t.Fatalf("accepted handle %q is not canonical", s)
		}
	})
}
