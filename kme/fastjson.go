package kme

import (
	"encoding/base64"
	"encoding/json"
	"strings"
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
