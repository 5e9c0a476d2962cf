package kme

import (
	"encoding/base64"
	"encoding/json"
	"strings"

	"github.com/qshield/qshield/kme/internal/plainjson"
)

// Fast paths for the two JSON bodies of a 128-key exchange: the Key IDs of
// POST dec_keys as the standard client sends them, and the Key container
// of every answer. encoding/json decodes each key_IDs element into a map of
// raw messages and encodes a container by reflection, which together cost
// more CPU than the SQL of the request. The fast paths handle only the
// compact canonical form and report false for anything else, which then
// takes the general path, so that every answer — and every refusal — stays
// exactly what the general path gives (FuzzParseKeyIDsFast checks it).

const (
	keyIDsOpen  = `{"key_IDs":[`
	keyIDOpen   = `{"key_ID":"`
	keyIDClose  = `"}`
	keyIDsClose = `]}`
)

// parseKeyIDsFast parses body when it is exactly
// {"key_IDs":[{"key_ID":"<UUID>"},…]} with at least one element, distinct
// UUIDs and no white space; ok is false for anything else.
func parseKeyIDsFast(body []byte) (ids []string, ok bool) {
	s := string(body) // one copy; the IDs below are substrings of it or lower-cased copies
	rest, ok := strings.CutPrefix(s, keyIDsOpen)
	if !ok {
		return nil, false
	}
	ids = make([]string, 0, min(strings.Count(rest, keyIDOpen), 4096))
	for {
		if rest, ok = strings.CutPrefix(rest, keyIDOpen); !ok || len(rest) < 36+len(keyIDClose) {
			return nil, false
		}
		id, ok := parseUUID(rest[:36])
		if !ok {
			return nil, false
		}
		if rest, ok = strings.CutPrefix(rest[36:], keyIDClose); !ok {
			return nil, false
		}
		ids = append(ids, id)
		if rest == keyIDsClose {
			break
		}
		if rest, ok = strings.CutPrefix(rest, ","); !ok {
			return nil, false
		}
	}
	// Duplicates are refused by the general path, with its message.
	if len(ids) <= 16 {
		for i := range ids {
			for j := range i {
				if ids[i] == ids[j] {
					return nil, false
				}
			}
		}
	} else {
		seen := make(map[string]struct{}, len(ids))
		for _, id := range ids {
			if _, dup := seen[id]; dup {
				return nil, false
			}
			seen[id] = struct{}{}
		}
	}
	return ids, true
}

// appendKeyContainer appends the Key container of keys, as json.Marshal
// writes an etsi014.KeyContainer holding them (key IDs are canonical
// UUIDs, which need no escaping; base64 neither); ok is false if an ID is
// not canonical, and the caller then uses json.Marshal.
func appendKeyContainer(b []byte, keys []Delivered) ([]byte, bool) {
	b = append(b, `{"keys":[`...)
	for i, d := range keys {
		if c, ok := parseUUID(d.ID); !ok || c != d.ID {
			return nil, false
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"key_ID":"`...)
		b = append(b, d.ID...)
		b = append(b, `","key":"`...)
		b = base64.StdEncoding.AppendEncode(b, d.Key)
		b = append(b, `"}`...)
	}
	return append(b, `]}`...), true
}

// keyContainerJSON encodes the Key container of keys.
func keyContainerJSON(keys []Delivered) ([]byte, error) {
	n := 16
	for _, d := range keys {
		n += 24 + len(d.ID) + base64.StdEncoding.EncodedLen(len(d.Key))
	}
	if b, ok := appendKeyContainer(make([]byte, 0, n), keys); ok {
		return b, nil
	}
	return json.Marshal(keyContainerOf(keys))
}

// parseReserveFast reads a reserve request in the form the peer KME's
// json.Marshal writes it:
//
//	{"master_SAE_ID":"…","slave_SAE_ID":"…","mode":"…","keys":[{"key_ID":"…","size":N,"units":["…",…],"cut":N},…]}
//
// (size and cut optional, strings of printable ASCII without escapes, at
// least one key and one unit each); ok is false for anything else, which
// the JSON decoder then reads (FuzzParseReserveFast checks that both
// agree). The decoder's reflection over 128 keys was a tenth of the peer's
// CPU for a reservation.
func parseReserveFast(body []byte) (req *reserveRequest, ok bool) {
	s := string(body)
	req = &reserveRequest{}
	var rest string
	if rest, ok = strings.CutPrefix(s, `{"master_SAE_ID":"`); !ok {
		return nil, false
	}
	if req.Master, rest, ok = plainjson.String(rest); !ok {
		return nil, false
	}
	if rest, ok = strings.CutPrefix(rest, `,"slave_SAE_ID":"`); !ok {
		return nil, false
	}
	if req.Slave, rest, ok = plainjson.String(rest); !ok {
		return nil, false
	}
	if rest, ok = strings.CutPrefix(rest, `,"mode":"`); !ok {
		return nil, false
	}
	if req.Mode, rest, ok = plainjson.String(rest); !ok {
		return nil, false
	}
	if rest, ok = strings.CutPrefix(rest, `,"keys":[`); !ok {
		return nil, false
	}
	req.Keys = make([]syncKey, 0, min(strings.Count(rest, `{"key_ID":"`), 4096))
	for {
		var k syncKey
		if rest, ok = strings.CutPrefix(rest, `{"key_ID":"`); !ok {
			return nil, false
		}
		if k.KeyID, rest, ok = plainjson.String(rest); !ok {
			return nil, false
		}
		if r, found := strings.CutPrefix(rest, `,"size":`); found {
			if k.Size, rest, ok = plainJSONCount(r); !ok {
				return nil, false
			}
		}
		if rest, ok = strings.CutPrefix(rest, `,"units":[`); !ok {
			return nil, false
		}
		for {
			var u string
			if rest, ok = strings.CutPrefix(rest, `"`); !ok {
				return nil, false
			}
			if u, rest, ok = plainjson.String(rest); !ok {
				return nil, false
			}
			k.Units = append(k.Units, u)
			if r, found := strings.CutPrefix(rest, `]`); found {
				rest = r
				break
			}
			if rest, ok = strings.CutPrefix(rest, `,`); !ok {
				return nil, false
			}
		}
		if r, found := strings.CutPrefix(rest, `,"cut":`); found {
			if k.Cut, rest, ok = plainJSONCount(r); !ok {
				return nil, false
			}
		}
		if rest, ok = strings.CutPrefix(rest, `}`); !ok {
			return nil, false
		}
		req.Keys = append(req.Keys, k)
		if rest == `]}` {
			return req, true
		}
		if rest, ok = strings.CutPrefix(rest, `,`); !ok {
			return nil, false
		}
	}
}

// plainJSONCount reads a JSON number of 1 to 9 decimal digits without a
// leading zero (or 0) at the start of s.
func plainJSONCount(s string) (n int, rest string, ok bool) {
	i := 0
	for i < len(s) && i < 10 && s[i] >= '0' && s[i] <= '9' {
		n = n*10 + int(s[i]-'0')
		i++
	}
	if i == 0 || i > 9 || (s[0] == '0' && i > 1) {
		return 0, "", false
	}
	return n, s[i:], true
}
