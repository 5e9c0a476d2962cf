package kme

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func checkErr(t *testing.T, e *apiError) {
	if e.status != http.StatusBadRequest {
		t.Fatalf("parse error with status %d, want 400: %s", e.status, e.message)
	}
	// The error body must stay valid JSON whatever the input.
	b, err := json.Marshal(map[string]any{"message": e.message, "details": e.details})
	if err != nil || !json.Valid(b) {
		t.Fatalf("error body not encodable: %v", err)
	}
}

func FuzzParseKeyRequest(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"number": 3, "size": 1024}`, `{"number": 1.5}`, `{"size": "8"}`, `{"number": null, "size": null}`,
		`{"additional_slave_SAE_IDs": ["A"]}`, `{"additional_slave_SAE_IDs": []}`,
		`{"extension_mandatory": [{"abc_route_type": "direct"}], "extension_optional": [{"abc_max_age": 30000}]}`,
		`{"number": 2} x`, `[]`, `null`, ``, `{"Number": 1}`, `{"number": 99999999999999999999}`, `{"number": -0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		n, size, e := parseKeyRequest(body, 256)
		if e != nil {
			checkErr(t, e)
			return
		}
		if n < 0 || size < 0 || n > 999999999 || size > 999999999 {
			t.Fatalf("accepted out-of-range number %d size %d", n, size)
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
	})
}

func FuzzParseKeyIDs(f *testing.F) {
	for _, s := range []string{
		`{"key_IDs": [{"key_ID": "bc490419-7d60-487f-adc1-4ddcc177c139"}]}`,
		`{"key_IDs": [{"key_ID": "BC490419-7D60-487F-ADC1-4DDCC177C139", "key_ID_extension": {"x": 1}}], "key_IDs_extension": [1]}`,
		`{"key_IDs": [{"key_ID": "bc490419-7d60-487f-adc1-4ddcc177c139"}, {"key_ID": "bc490419-7d60-487f-adc1-4ddcc177c139"}]}`,
		`{"key_IDs": []}`, `{"key_IDs": [{}]}`, `{"key_IDs": [1]}`, `{"key_IDs": "x"}`, `{}`, `{"key_ids": []}`, `{"key_IDs": [{"key_ID": 5}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ids, e := parseKeyIDs(body)
		if e != nil {
			checkErr(t, e)
			return
		}
		if len(ids) == 0 {
			t.Fatal("accepted an empty key ID list")
		}
		seen := map[string]bool{}
		for _, id := range ids {
			if c, ok := parseUUID(id); !ok || c != id {
				t.Fatalf("accepted non-canonical key ID %q", id)
			}
			if seen[id] {
				t.Fatalf("accepted duplicate %q", id)
			}
			seen[id] = true
		}
	})
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"", "number=2&size=512", "number=0", "size=abc", "number=1&number=2", "key_ID=bc490419-7d60-487f-adc1-4ddcc177c139",
		"key_ID=%zz", "x=1", "number=+5", "size=%2D8", ";", "key_ID=bc490419-7d60-487f-adc1-4ddcc177c139&key_ID=a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		n, size, e := parseEncQuery(q, 256)
		if e != nil {
			checkErr(t, e)
		} else if n < 0 || size < 0 {
			t.Fatalf("negative number %d or size %d from %q", n, size, q)
		}
		ids, e := parseDecQuery(q)
		if e != nil {
			checkErr(t, e)
		} else if c, ok := parseUUID(ids[0]); len(ids) != 1 || !ok || c != ids[0] {
			t.Fatalf("dec query %q gave %v", q, ids)
		}
	})
}

func FuzzParseUUID(f *testing.F) {
	f.Add("bc490419-7d60-487f-adc1-4ddcc177c139")
	f.Add("bc490419x7d60-487f-adc1-4ddcc177c139")
	f.Fuzz(func(t *testing.T, s string) {
		c, ok := parseUUID(s)
		if !ok {
			return
		}
		if !strings.EqualFold(c, s) || formatUUID(uuidBytes(c)) != c {
			t.Fatalf("%q → %q does not round-trip", s, c)
		}
	})
}

// FuzzParseKeyIDsFast checks the fast path of parseKeyIDs against the
// general one: whatever it accepts, the general path accepts with the same
// IDs in the same order (and whatever it declines goes to the general path,
// so refusals are the general path's own).
func FuzzParseKeyIDsFast(f *testing.F) {
	for _, s := range []string{
		`{"key_IDs":[{"key_ID":"bc490419-7d60-487f-adc1-4ddcc177c139"}]}`,
		`{"key_IDs":[{"key_ID":"BC490419-7D60-487F-ADC1-4DDCC177C139"},{"key_ID":"0b8c4d2e-1f3a-4b5c-8d6e-7f8091a2b3c4"}]}`,
		`{"key_IDs":[{"key_ID":"bc490419-7d60-487f-adc1-4ddcc177c139"},{"key_ID":"BC490419-7D60-487F-ADC1-4DDCC177C139"}]}`,
		`{"key_IDs":[{"key_ID":"bc490419-7d60-487f-adc1-4ddcc177c139"}]}x`,
		`{"key_IDs":[{"key_ID":"bc490419-7d60-487f-adc1-4ddcc177c13\u0039"}]}`,
		`{"key_IDs":[]}`, `{"key_IDs":[{"key_ID":"bc490419-7d60-487f-adc1-4ddcc177c139"},]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := parseKeyIDsFast(body)
		if !ok {
			return
		}
		slow, e := parseKeyIDsJSON(body)
		if e != nil {
			t.Fatalf("fast path accepted %q, the general path refuses it: %v", body, e)
		}
		if !slices.Equal(fast, slow) {
			t.Fatalf("fast path read %q, the general path %q", fast, slow)
		}
	})
}

// TestKeyContainerJSON checks the hand-written Key container against
// json.Marshal of etsi014.KeyContainer, and that a non-canonical key ID
// takes json.Marshal.
func TestKeyContainerJSON(t *testing.T) {
	for n := range 130 {
		keys := make([]Delivered, n)
		for i := range keys {
			var id [16]byte
			rand.Read(id[:])
			keys[i] = Delivered{ID: formatUUID(id[:]), Key: make([]byte, 1+(i*37)%200)}
			rand.Read(keys[i].Key)
		}
		want, err := json.Marshal(keyContainerOf(keys))
		if err != nil {
			t.Fatal(err)
		}
		got, err := keyContainerJSON(keys)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%d keys:\n got %s\nwant %s", n, got, want)
		}
	}
	odd := []Delivered{{ID: `a"b<`, Key: []byte{1, 2, 3}}}
	if _, ok := appendKeyContainer(nil, odd); ok {
		t.Fatal("fast encoder took a non-canonical key ID")
	}
	got, _ := keyContainerJSON(odd)
	want, _ := json.Marshal(keyContainerOf(odd))
	if !bytes.Equal(got, want) {
		t.Fatalf("fallback: got %s, want %s", got, want)
	}
}

// FuzzParseReserveFast checks the fast reader of reserve requests against
// the JSON decoder the sync endpoint used alone before: whatever the fast
// path accepts, the decoder reads to the same request; and a request as
// the peer writes it (json.Marshal) takes the fast path.
func FuzzParseReserveFast(f *testing.F) {
	f.Add([]byte(`{"master_SAE_ID":"SAE_A","slave_SAE_ID":"SAE_B","mode":"slave","keys":[{"key_ID":"k1","size":256,"units":["u1"]},{"key_ID":"k2","size":256,"units":["u2","u3"],"cut":8}]}`))
	f.Add([]byte(`{"master_SAE_ID":"A","slave_SAE_ID":"B","mode":"discard","keys":[{"key_ID":"k","units":["u"],"cut":0}]}`))
	f.Add([]byte(`{"master_SAE_ID":"A","slave_SAE_ID":"B","mode":"x","keys":[{"key_ID":"k","size":012,"units":["u"]}]}`))
	f.Add([]byte(`{"master_SAE_ID":"A\u0041","slave_SAE_ID":"B","mode":"x","keys":[]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := parseReserveFast(body)
		if ok {
			slow, err := decodeReserveJSON(body)
			if err != nil {
				t.Fatalf("fast path accepted %q, the decoder refuses it: %v", body, err)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("fast path read %+v, the decoder %+v", fast, slow)
			}
		}
		// What the decoder reads, re-encoded as the peer would send it, must
		// take the fast path when its strings are plain.
		slow, err := decodeReserveJSON(body)
		if err != nil || len(slow.Keys) == 0 {
			return
		}
		enc, err := json.Marshal(slow)
		if err != nil {
			t.Fatal(err)
		}
		plain := !bytes.ContainsAny(enc, "\\")
		for _, k := range slow.Keys {
			plain = plain && len(k.Units) > 0 && k.Size >= 0 && k.Size < 1e9 && k.Cut >= 0 && k.Cut < 1e9
			for _, u := range append([]string{k.KeyID}, k.Units...) {
				for _, c := range []byte(u) {
					plain = plain && c >= 0x20 && c < 0x7f
				}
			}
		}
		for _, s := range []string{slow.Master, slow.Slave, slow.Mode} {
			for _, c := range []byte(s) {
				plain = plain && c >= 0x20 && c < 0x7f
			}
		}
		if again, ok := parseReserveFast(enc); plain && (!ok || !reflect.DeepEqual(again, slow)) {
			t.Fatalf("the peer's encoding %s did not take the fast path (ok %v)", enc, ok)
		}
	})
}
