package kme

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/qshield/qshield/qkd"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestSpecByHand speaks ETSI GS QKD 014 with hand-written requests and checks
// the exact member names of the answers: what a client written by someone
// else sees.
func TestSpecByHand(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, nil)
		e.fill(10)
		A, B := e.p.AURL, e.p.BURL

		r := e.do("SAE_A1", "GET", A, "/api/v1/keys/SAE_B1/status", "")
		if r.status != 200 || !strings.HasPrefix(r.ctype, "application/json") {
			t.Fatalf("status: %d %s %s", r.status, r.ctype, r.body)
		}
		st := r.json(t)
		want := map[string]any{
			"source_KME_ID": "KME_A", "target_KME_ID": "KME_B", "master_SAE_ID": "SAE_A1", "slave_SAE_ID": "SAE_B1",
			"key_size": 256.0, "stored_key_count": 10.0, "max_key_count": 1000.0, "max_key_per_request": 128.0,
			"max_key_size": 1024.0, "min_key_size": 64.0, "max_SAE_ID_count": 0.0,
		}
		for k, v := range want {
			if st[k] != v {
				t.Errorf("status %s = %v, want %v", k, st[k], v)
			}
		}
		for k := range st {
			if _, ok := want[k]; !ok && k != "status_extension" {
				t.Errorf("status has unexpected member %q", k)
			}
		}

		// Get key, GET form with defaults.
		r = e.do("SAE_A1", "GET", A, "/api/v1/keys/SAE_B1/enc_keys", "")
		if r.status != 200 {
			t.Fatalf("GET enc_keys: %d %s", r.status, r.body)
		}
		var c1 struct {
			Keys []map[string]any `json:"keys"`
		}
		json.Unmarshal(r.body, &c1)
		if len(c1.Keys) != 1 {
			t.Fatalf("GET enc_keys returned %s", r.body)
		}
		id1, _ := c1.Keys[0]["key_ID"].(string)
		k1, _ := base64.StdEncoding.DecodeString(c1.Keys[0]["key"].(string))
		if len(k1) != 32 || len(id1) != 36 {
			t.Fatalf("key %q of %d bytes", id1, len(k1))
		}

		// Get key, GET form with a query, and POST with a Key request.
		r = e.do("SAE_A1", "GET", A, "/api/v1/keys/SAE_B1/enc_keys?number=2&size=512", "")
		if r.status != 200 {
			t.Fatalf("GET enc_keys?number=2&size=512: %d %s", r.status, r.body)
		}
		var c2 etsi014.KeyContainer
		json.Unmarshal(r.body, &c2)
		if len(c2.Keys) != 2 {
			t.Fatalf("want 2 keys: %s", r.body)
		}
		r = e.do("SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", `{"number": 2, "size": 64, "extension_optional": [{"abc_max_age": 30000}]}`)
		if r.status != 200 {
			t.Fatalf("POST enc_keys: %d %s", r.status, r.body)
		}
		var c3 etsi014.KeyContainer
		json.Unmarshal(r.body, &c3)
		if len(c3.Keys) != 2 {
			t.Fatalf("want 2 keys: %s", r.body)
		}
		for _, k := range c3.Keys {
			if b, _ := base64.StdEncoding.DecodeString(k.Key); len(b) != 8 {
				t.Fatalf("64-bit key is %d bytes", len(b))
			}
		}
		// 1 + 2×2 units and 2×64 bits used at both sites: 4.5 keys of
		// 256 bits left (the two 64-bit keys were carved from one unit).
		if a, b := e.p.A.Stored(), e.p.B.Stored(); a != 4 || b != 4 {
			t.Fatalf("stored A=%d B=%d, want 4 and 4", a, b)
		}
		if a, b := e.p.A.StoredBits(), e.p.B.StoredBits(); a != 4*256+128 || b != a {
			t.Fatalf("stored bits A=%d B=%d, want 1152", a, b)
		}

		// Get key with key IDs at the slave's KME: GET with one, POST with several.
		r = e.do("SAE_B1", "GET", B, "/api/v1/keys/SAE_A1/dec_keys?key_ID="+id1, "")
		if r.status != 200 {
			t.Fatalf("GET dec_keys: %d %s", r.status, r.body)
		}
		var d1 etsi014.KeyContainer
		json.Unmarshal(r.body, &d1)
		if got, _ := base64.StdEncoding.DecodeString(d1.Keys[0].Key); !bytes.Equal(got, k1) || d1.Keys[0].KeyID != id1 {
			t.Fatal("slave got a different key")
		}
		body := fmt.Sprintf(`{"key_IDs": [{"key_ID": %q}, {"key_ID": %q, "key_ID_extension": null}, {"key_ID": %q}]}`,
			c2.Keys[1].KeyID, c2.Keys[0].KeyID, strings.ToUpper(c3.Keys[0].KeyID))
		r = e.do("SAE_B1", "POST", B, "/api/v1/keys/SAE_A1/dec_keys", body)
		if r.status != 200 {
			t.Fatalf("POST dec_keys: %d %s", r.status, r.body)
		}
		var d2 etsi014.KeyContainer
		json.Unmarshal(r.body, &d2)
		if len(d2.Keys) != 3 || d2.Keys[0].KeyID != c2.Keys[1].KeyID || d2.Keys[0].Key != c2.Keys[1].Key ||
			d2.Keys[1].Key != c2.Keys[0].Key || d2.Keys[2].Key != c3.Keys[0].Key {
			t.Fatalf("dec_keys answer does not match: %s", r.body)
		}
		var raw map[string][]map[string]any
		json.Unmarshal(r.body, &raw)
		for _, k := range raw["keys"] {
			for name := range k {
				if name != "key_ID" && name != "key" {
					t.Errorf("key has unexpected member %q", name)
				}
			}
		}
		// Delivered once to each: the slave cannot fetch again, the bytes are gone.
		r = e.do("SAE_B1", "GET", B, "/api/v1/keys/SAE_A1/dec_keys?key_ID="+id1, "")
		if r.status != 400 {
			t.Fatalf("second dec_keys: %d %s", r.status, r.body)
		}
		for _, id := range []string{id1, c2.Keys[0].KeyID, c2.Keys[1].KeyID, c3.Keys[0].KeyID} {
			var n int
			db.QueryRow(db.Rebind(`SELECT COUNT(*) FROM kme_keys WHERE key_id = ? OR group_id = ?`), id, id).Scan(&n)
			if n != 0 {
				t.Fatalf("key %s still has %d rows after delivery to both SAEs", id, n)
			}
		}
		// c3.Keys[1] is still waiting for the slave at B only.
		if got := e.p.B.ReservedKeyIDs(); !slices.Equal(got, []string{c3.Keys[1].KeyID}) {
			t.Fatalf("reserved at B: %v", got)
		}
		if got := e.p.A.ReservedKeyIDs(); len(got) != 0 {
			t.Fatalf("reserved at A: %v", got)
		}
	})
}

func TestErrorPathsChangeNothing(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, nil)
		e.fill(20)
		A, B := e.p.AURL, e.p.BURL
		// One key waiting for SAE_B1 from SAE_A1.
		c := etsi014.New(A, e.tls["SAE_A1"])
		ks, err := c.EncKeys(context.Background(), "SAE_B1", 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		pending := ks[0].ID
		// One key already delivered to both.
		ks2, err := c.EncKeys(context.Background(), "SAE_B1", 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := etsi014.New(B, e.tls["SAE_B1"]).DecKeys(context.Background(), "SAE_A1", ks2[0].ID); err != nil {
			t.Fatal(err)
		}
		done := ks2[0].ID
		unknown := "550e8400-e29b-41d4-a716-446655440000"
		cases := []struct {
			name, sae, method, base, path, body string
			status                              int
			msg                                 string
		}{
			{"no client certificate", "none", "GET", A, "/api/v1/keys/SAE_B1/enc_keys", "", 401, "client certificate"},
			{"no client certificate status", "none", "GET", A, "/api/v1/keys/SAE_B1/status", "", 401, "client certificate"},
			{"unregistered master SAE", "SAE_X", "GET", A, "/api/v1/keys/SAE_B1/enc_keys", "", 401, "not attached"},
			{"master SAE at the other KME", "SAE_B1", "GET", A, "/api/v1/keys/SAE_A2/enc_keys", "", 401, "not attached"},
			{"unknown slave SAE", "SAE_A1", "GET", A, "/api/v1/keys/SAE_Z/enc_keys", "", 401, "not reachable"},
			{"unknown slave SAE status", "SAE_A1", "GET", A, "/api/v1/keys/SAE_Z/status", "", 401, "not reachable"},
			{"slave is self", "SAE_A1", "GET", A, "/api/v1/keys/SAE_A1/enc_keys", "", 400, "differ"},
			{"wrong slave SAE for key", "SAE_B2", "GET", B, "/api/v1/keys/SAE_A1/dec_keys?key_ID=" + pending, "", 401, "not shared"},
			{"wrong master SAE for key", "SAE_B1", "GET", B, "/api/v1/keys/SAE_A2/dec_keys?key_ID=" + pending, "", 401, "not shared"},
			{"slave fetches at the master's KME", "SAE_B1", "GET", A, "/api/v1/keys/SAE_A1/dec_keys?key_ID=" + pending, "", 401, "not attached"},
			{"master fetches its own key", "SAE_A1", "GET", A, "/api/v1/keys/SAE_A1/dec_keys?key_ID=" + pending, "", 400, "not found"},
			{"unknown key ID", "SAE_B1", "GET", B, "/api/v1/keys/SAE_A1/dec_keys?key_ID=" + unknown, "", 400, "not found"},
			{"already delivered key ID", "SAE_B1", "GET", B, "/api/v1/keys/SAE_A1/dec_keys?key_ID=" + done, "", 400, "not found"},
			{"one unknown among good IDs", "SAE_B1", "POST", B, "/api/v1/keys/SAE_A1/dec_keys", `{"key_IDs":[{"key_ID":"` + pending + `"},{"key_ID":"` + unknown + `"}]}`, 400, "not found"},
			{"duplicate key ID", "SAE_B1", "POST", B, "/api/v1/keys/SAE_A1/dec_keys", `{"key_IDs":[{"key_ID":"` + pending + `"},{"key_ID":"` + pending + `"}]}`, 400, "twice"},
			{"key ID not a UUID", "SAE_B1", "GET", B, "/api/v1/keys/SAE_A1/dec_keys?key_ID=abc", "", 400, "UUID"},
			{"two key_ID in GET", "SAE_B1", "GET", B, "/api/v1/keys/SAE_A1/dec_keys?key_ID=" + pending + "&key_ID=" + unknown, "", 400, "exactly one"},
			{"no key_ID in GET", "SAE_B1", "GET", B, "/api/v1/keys/SAE_A1/dec_keys", "", 400, "exactly one"},
			{"empty key_IDs", "SAE_B1", "POST", B, "/api/v1/keys/SAE_A1/dec_keys", `{"key_IDs":[]}`, 400, "empty"},
			{"size not multiple of 8", "SAE_A1", "GET", A, "/api/v1/keys/SAE_B1/enc_keys?size=100", "", 400, "multiple of 8"},
			{"size not multiple of 8 POST", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", `{"size": 257}`, 400, "multiple of 8"},
			{"size beyond max", "SAE_A1", "GET", A, "/api/v1/keys/SAE_B1/enc_keys?size=1032", "", 400, "max_key_size"},
			{"size below min", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", `{"size": 56}`, 400, "min_key_size"},
			{"number beyond max", "SAE_A1", "GET", A, "/api/v1/keys/SAE_B1/enc_keys?number=129", "", 400, "max_key_per_request"},
			{"number beyond max POST", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", `{"number": 1000}`, 400, "max_key_per_request"},
			{"number zero", "SAE_A1", "GET", A, "/api/v1/keys/SAE_B1/enc_keys?number=0", "", 400, "at least 1"},
			{"number negative", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", `{"number": -1}`, 400, "positive integer"},
			{"number not integer", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", `{"number": 1.5}`, 400, "positive integer"},
			{"number as string", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", `{"number": "2"}`, 400, "positive integer"},
			{"malformed JSON", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", `{"number": 2`, 400, "malformed JSON"},
			{"malformed JSON dec", "SAE_B1", "POST", B, "/api/v1/keys/SAE_A1/dec_keys", `{"key_IDs": [`, 400, "malformed JSON"},
			{"trailing data", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", `{"number": 2} {}`, 400, "after the object"},
			{"JSON array body", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", `[1]`, 400, "malformed JSON"},
			{"empty body", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", ``, 400, "empty"},
			{"unknown member", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", `{"numbr": 2}`, 400, "unknown member"},
			{"wrong-case member", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", `{"Number": 2}`, 400, "unknown member"},
			{"multicast", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", `{"additional_slave_SAE_IDs": ["SAE_B2"]}`, 400, "multicast"},
			{"mandatory extension", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys", `{"extension_mandatory": [{"abc_route_type": "direct"}]}`, 400, "abc_route_type"},
			{"unknown query parameter", "SAE_A1", "GET", A, "/api/v1/keys/SAE_B1/enc_keys?count=2", "", 400, "unknown parameter"},
			{"query on POST", "SAE_A1", "POST", A, "/api/v1/keys/SAE_B1/enc_keys?number=2", `{}`, 400, "JSON body"},
			{"not enough key", "SAE_A1", "GET", A, "/api/v1/keys/SAE_B1/enc_keys?number=100", "", 503, "not enough key"},
			{"not enough key for size", "SAE_A1", "GET", A, "/api/v1/keys/SAE_B1/enc_keys?number=5&size=1024", "", 503, "not enough key"},
			{"unknown call", "SAE_A1", "GET", A, "/api/v1/keys/SAE_B1/keys", "", 404, "no such call"},
			{"wrong method", "SAE_A1", "DELETE", A, "/api/v1/keys/SAE_B1/enc_keys", "", 405, "not allowed"},
			{"SAE may not sync", "SAE_A1", "POST", B, "/api/v1/kme-sync/reserve", `{}`, 401, "peer KME"},
			{"SAE certificate named like the peer KME may not sync", "fake KME_A", "POST", B, "/api/v1/kme-sync/release", `{"keys":[{"key_ID":"` + pending + `","units":["` + pending + `"]}]}`, 401, "peer KME"},
			{"SAE name on a client-role certificate", "client-role SAE", "GET", A, "/api/v1/keys/SAE_B1/enc_keys", "", 401, "only an SAE"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := e.snap()
				r := e.do(tc.sae, tc.method, tc.base, tc.path, tc.body)
				if r.status != tc.status {
					t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
				}
				if !strings.HasPrefix(r.ctype, "application/json") {
					t.Errorf("content type %q", r.ctype)
				}
				m := r.json(t)
				msg, ok := m["message"].(string)
				if !ok || !strings.Contains(msg, tc.msg) {
					t.Errorf("message %q does not contain %q", m["message"], tc.msg)
				}
				for k, v := range m {
					switch k {
					case "message":
					case "details":
						arr, ok := v.([]any)
						if !ok {
							t.Errorf("details is %T, want an array", v)
						}
						for _, d := range arr {
							if _, ok := d.(map[string]any); !ok {
								t.Errorf("details element %T, want an object", d)
							}
						}
					default:
						t.Errorf("error body has unexpected member %q", k)
					}
				}
				if after := e.snap(); !after.equal(before) {
					t.Errorf("the request changed the key pools:\nbefore %+v\nafter  %+v", before, after)
				}
			})
		}
		// The pending key is still deliverable exactly once to its slave.
		got, err := etsi014.New(B, e.tls["SAE_B1"]).DecKeys(context.Background(), "SAE_A1", pending)
		if err != nil || !bytes.Equal(got[0].Key, ks[0].Key) {
			t.Fatalf("pending key after the error cases: %v", err)
		}
	})
}

func TestClientAndLocalPair(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, nil)
		e.fill(50)
		ctx := context.Background()
		a1 := etsi014.New(e.p.AURL, e.tls["SAE_A1"])
		a2 := etsi014.New(e.p.AURL, e.tls["SAE_A2"])
		st, err := a1.Status(ctx, "SAE_A2")
		if err != nil || st.TargetKMEID != "KME_A" || st.StoredKeyCount != 50 {
			t.Fatalf("status %+v %v", st, err)
		}
		// Both SAEs at site A: B discards its copies.
		ks, err := a1.EncKeys(ctx, "SAE_A2", 4, 768)
		if err != nil {
			t.Fatal(err)
		}
		if e.p.A.Stored() != 50-12 || e.p.B.Stored() != 50-12 {
			t.Fatalf("stored A=%d B=%d", e.p.A.Stored(), e.p.B.Stored())
		}
		if !slices.Equal(sorted(e.p.A.AvailableIDs()), sorted(e.p.B.AvailableIDs())) {
			t.Fatal("pools differ after a local-pair request")
		}
		ids := make([]string, len(ks))
		for i, k := range ks {
			ids[i] = k.ID
			if len(k.Key) != 96 {
				t.Fatalf("768-bit key has %d bytes", len(k.Key))
			}
		}
		// SAE_B1 may not take them, SAE_A2 may, once.
		if _, err := etsi014.New(e.p.AURL, e.tls["SAE_B1"]).DecKeys(ctx, "SAE_A1", ids...); !errors.Is(err, etsi014.ErrUnauthorized) {
			t.Fatalf("foreign SAE: %v", err)
		}
		got, err := a2.DecKeys(ctx, "SAE_A1", ids...)
		if err != nil {
			t.Fatal(err)
		}
		for i := range ks {
			if !bytes.Equal(got[i].Key, ks[i].Key) {
				t.Fatal("slave key differs")
			}
		}
		if _, err := a2.DecKeys(ctx, "SAE_A1", ids[0]); !errors.Is(err, etsi014.ErrBadRequest) {
			t.Fatalf("second delivery: %v", err)
		}
		var n int
		db.QueryRow(`SELECT COUNT(*) FROM kme_keys WHERE state <> 0`).Scan(&n)
		if n != 0 {
			t.Fatalf("%d reserved rows left", n)
		}
		// Client errors carry the status and message.
		_, err = a1.EncKeys(ctx, "SAE_B1", 1, 100)
		var ee *etsi014.Error
		if !errors.As(err, &ee) || ee.StatusCode != 400 || !strings.Contains(ee.Message, "multiple of 8") {
			t.Fatalf("typed error: %v", err)
		}
	})
}

// TestPairsIsolated: two SAE pairs share the pools but never each other's keys.
func TestPairsIsolated(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, nil)
		e.fill(20)
		ctx := context.Background()
		k1, err := etsi014.New(e.p.AURL, e.tls["SAE_A1"]).EncKeys(ctx, "SAE_B1", 2, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Master at B this time (B takes from the other end of the pool).
		k2, err := etsi014.New(e.p.BURL, e.tls["SAE_B2"]).EncKeys(ctx, "SAE_A2", 2, 0)
		if err != nil {
			t.Fatal(err)
		}
		b1 := etsi014.New(e.p.BURL, e.tls["SAE_B1"])
		b2 := etsi014.New(e.p.BURL, e.tls["SAE_B2"])
		a2 := etsi014.New(e.p.AURL, e.tls["SAE_A2"])
		if _, err := b2.DecKeys(ctx, "SAE_A1", k1[0].ID); !errors.Is(err, etsi014.ErrUnauthorized) {
			t.Fatalf("B2 took A1→B1's key: %v", err)
		}
		if _, err := a2.DecKeys(ctx, "SAE_A1", k1[0].ID); !errors.Is(err, etsi014.ErrBadRequest) {
			// The key is not at KME A at all (delivered to the master, deleted there).
			t.Fatalf("A2 asking KME A for a key held at KME B: %v", err)
		}
		if _, err := b1.DecKeys(ctx, "SAE_B2", k2[0].ID); !errors.Is(err, etsi014.ErrBadRequest) {
			t.Fatalf("B1 asking KME B for B2→A2's key: %v", err)
		}
		got, err := a2.DecKeys(ctx, "SAE_B2", k2[1].ID, k2[0].ID)
		if err != nil || !bytes.Equal(got[0].Key, k2[1].Key) || !bytes.Equal(got[1].Key, k2[0].Key) {
			t.Fatalf("A2: %v", err)
		}
		got, err = b1.DecKeys(ctx, "SAE_A1", k1[0].ID, k1[1].ID)
		if err != nil || !bytes.Equal(got[0].Key, k1[0].Key) {
			t.Fatalf("B1: %v", err)
		}
		if !slices.Equal(sorted(e.p.A.AvailableIDs()), sorted(e.p.B.AvailableIDs())) || e.p.A.Stored() != 16 {
			t.Fatalf("pools disagree: %d %d", e.p.A.Stored(), e.p.B.Stored())
		}
	})
}

// TestRestartKeepsPoolsInAgreement restarts the KMEs with keys available,
// keys waiting for a slave, and a block that reached only one side.
func TestRestartKeepsPoolsInAgreement(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, nil)
		e.fill(30)
		ctx := context.Background()
		ks, err := etsi014.New(e.p.AURL, e.tls["SAE_A1"]).EncKeys(ctx, "SAE_B1", 3, 512)
		if err != nil {
			t.Fatal(err)
		}
		// A crash between the two deposits of a block: only A got it.
		lost := qkd.RandomKeys(5, 32)
		if err := e.p.A.Deposit(ctx, lost); err != nil {
			t.Fatal(err)
		}
		availB := sorted(e.p.B.AvailableIDs())
		e.restart()
		if got := sorted(e.p.B.AvailableIDs()); !slices.Equal(got, availB) {
			t.Fatal("B's pool changed across a restart")
		}
		if n, err := e.p.A.Reconcile(ctx); err != nil || n != 5 {
			t.Fatalf("reconcile removed %d (%v), want 5", n, err)
		}
		if n, err := e.p.B.Reconcile(ctx); err != nil || n != 0 {
			t.Fatalf("reconcile at B removed %d (%v), want 0", n, err)
		}
		if a, b := sorted(e.p.A.AvailableIDs()), sorted(e.p.B.AvailableIDs()); !slices.Equal(a, b) || len(a) != 24 {
			t.Fatalf("after restart: A has %d, B has %d units, equal=%v", len(a), len(b), slices.Equal(a, b))
		}
		// The keys waiting for the slave survived, once.
		b1 := etsi014.New(e.p.BURL, e.tls["SAE_B1"])
		got, err := b1.DecKeys(ctx, "SAE_A1", ks[2].ID, ks[0].ID, ks[1].ID)
		if err != nil || !bytes.Equal(got[0].Key, ks[2].Key) || !bytes.Equal(got[1].Key, ks[0].Key) {
			t.Fatalf("after restart: %v", err)
		}
		// Restart both again; requests from both sides keep the pools equal.
		e.restart()
		for i := 0; i < 3; i++ {
			if _, err := etsi014.New(e.p.BURL, e.tls["SAE_B2"]).EncKeys(ctx, "SAE_A1", 2, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := etsi014.New(e.p.AURL, e.tls["SAE_A2"]).EncKeys(ctx, "SAE_B2", 1, 0); err != nil {
				t.Fatal(err)
			}
		}
		if a, b := sorted(e.p.A.AvailableIDs()), sorted(e.p.B.AvailableIDs()); !slices.Equal(a, b) || len(a) != 15 {
			t.Fatalf("A has %d, B has %d units, equal=%v", len(a), len(b), slices.Equal(a, b))
		}
	})
}

// TestPeerDown: with the peer KME unreachable enc_keys answers 503 and the
// pool is unchanged.
func TestPeerDown(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := startEnv(t, db, nil)
	e.fill(5)
	e.p.B.Close() // B's store is closed: its sync endpoint answers 503
	before := e.p.A.AvailableIDs()
	r := e.do("SAE_A1", "GET", e.p.AURL, "/api/v1/keys/SAE_B1/enc_keys", "")
	if r.status != 503 {
		t.Fatalf("status %d %s", r.status, r.body)
	}
	if !slices.Equal(before, e.p.A.AvailableIDs()) {
		t.Fatal("pool changed")
	}
}

// TestMaxKeyCount: stored_key_count never exceeds max_key_count.
func TestMaxKeyCount(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := startEnv(t, db, func(c *PairConfig) { c.MaxKeyCount = 10 })
	ctx := context.Background()
	keys := qkd.RandomKeys(25, 32)
	if err := e.p.A.Deposit(ctx, keys); err != nil {
		t.Fatal(err)
	}
	if err := e.p.B.Deposit(ctx, keys); err != nil {
		t.Fatal(err)
	}
	st, err := etsi014.New(e.p.AURL, e.tls["SAE_A1"]).Status(ctx, "SAE_B1")
	if err != nil || st.StoredKeyCount != 10 || st.MaxKeyCount != 10 {
		t.Fatalf("%+v %v", st, err)
	}
	if !slices.Equal(e.p.A.AvailableIDs(), e.p.B.AvailableIDs()) {
		t.Fatal("the two sides kept different units")
	}
	// A sink blocks (back-pressure) while the pool is full.
	sa, _ := e.p.Sinks()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := sa(cctx, qkd.RandomKeys(1, 32)); !errors.Is(err, context.Canceled) {
		t.Fatalf("sink on a full pool: %v", err)
	}
}

// TestConcurrentNoKeyTwice: many SAEs in parallel from both sides; every key
// ID is delivered to exactly one master and its slave gets the same bytes.
func TestConcurrentNoKeyTwice(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, nil)
		e.fill(600)
		ctx := context.Background()
		type pairT struct{ master, slave, mURL, sURL string }
		pairs := []pairT{
			{"SAE_A1", "SAE_B1", e.p.AURL, e.p.BURL},
			{"SAE_A2", "SAE_B2", e.p.AURL, e.p.BURL},
			{"SAE_B1", "SAE_A2", e.p.BURL, e.p.AURL},
			{"SAE_B2", "SAE_A1", e.p.BURL, e.p.AURL},
		}
		var mu sync.Mutex
		seen := map[string]bool{}
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for w := 0; w < 8; w++ {
			pr := pairs[w%len(pairs)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				m := etsi014.New(pr.mURL, e.tls[pr.master])
				s := etsi014.New(pr.sURL, e.tls[pr.slave])
				for i := 0; i < 15; i++ {
					ks, err := m.EncKeys(ctx, pr.slave, 1+i%4, 0)
					if err != nil {
						errs <- err
						return
					}
					ids := make([]string, len(ks))
					for j, k := range ks {
						ids[j] = k.ID
						mu.Lock()
						if seen[k.ID] {
							errs <- fmt.Errorf("key %s handed out twice", k.ID)
						}
						seen[k.ID] = true
						mu.Unlock()
					}
					got, err := s.DecKeys(ctx, pr.master, ids...)
					if err != nil {
						errs <- err
						return
					}
					for j := range ks {
						if !bytes.Equal(got[j].Key, ks[j].Key) {
							errs <- fmt.Errorf("key %s differs at the slave", ks[j].ID)
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		a, b := sorted(e.p.A.AvailableIDs()), sorted(e.p.B.AvailableIDs())
		if !slices.Equal(a, b) || len(a) != 600-len(seen) {
			t.Fatalf("pools: A=%d B=%d delivered=%d", len(a), len(b), len(seen))
		}
		var n int
		db.QueryRow(`SELECT COUNT(*) FROM kme_keys`).Scan(&n)
		if n != 2*len(a) {
			t.Fatalf("%d rows, want %d", n, 2*len(a))
		}
	})
}

// TestAtRestEncrypted: the key bytes are not in the database in the clear,
// and a wrong master key is refused.
func TestAtRestEncrypted(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := startEnv(t, db, nil)
	keys := qkd.RandomKeys(3, 32)
	ctx := context.Background()
	if err := e.p.A.Deposit(ctx, keys); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT key_enc FROM kme_keys`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var b []byte
		rows.Scan(&b)
		for _, k := range keys {
			if bytes.Contains(b, k.Bytes[:16]) {
				t.Fatal("key bytes stored in the clear")
			}
		}
	}
	rows.Close()
	// Tampering with a stored ciphertext is detected.
	if _, err := db.Exec(`UPDATE kme_keys SET key_enc = key_enc || x'00' WHERE key_id = ?`, keys[0].ID); err != nil {
		t.Fatal(err)
	}
	cfg := e.p.A.Config()
	cfg.MasterKey = bytes.Repeat([]byte{1}, 32)
	if _, err := New(ctx, db, cfg); !errors.Is(err, ErrMasterKey) {
		t.Fatalf("wrong master key: %v", err)
	}
}

func TestUnitIDs(t *testing.T) {
	ns := "6ba7b810-9dad-11d1-80b4-00c04fd430c8" // RFC 9562 DNS namespace
	// RFC 9562 appendix A.4: UUIDv5 of "www.example.com" in the DNS namespace.
	if got := uuidV5(ns, []byte("www.example.com")); got != "2ed6657d-e927-568b-95e1-2665a8aea6a2" {
		t.Fatalf("uuidV5 = %s", got)
	}
	// Units are named v5(keyID, decimal index); a one-unit key keeps its ID.
	if got := unitID(ns, 0, 2); got != "6af613b6-569c-5c22-9c37-2ed93f31d3af" {
		t.Fatalf("unitID(ns, 0) = %s", got)
	}
	if got := unitID(ns, 1, 2); got != "b04965e6-a9bb-591f-8f8a-1adcb2c8dc39" {
		t.Fatalf("unitID(ns, 1) = %s", got)
	}
	if unitID(ns, 0, 1) != ns {
		t.Fatal("a one-unit key must keep its ID")
	}
	// The pieces of a cut are v5(unit, "head:"/"tail:" + decimal bits)
	// (values from Python's uuid.uuid5): both KMEs, of any version, must
	// derive the same names.
	for _, c := range []struct{ got, want string }{
		{headID(ns, 256), "12e03f5c-c44b-5b24-9067-d772bc06f254"},
		{tailID(ns, 256), "3f6767ff-8f25-571e-a0b7-9e4b9357538a"},
		{headID(ns, 65528), "ccf3dda8-acf7-5a19-bf6e-635e88db95cc"},
	} {
		if c.got != c.want {
			t.Fatalf("piece name %s, want %s", c.got, c.want)
		}
	}
}
