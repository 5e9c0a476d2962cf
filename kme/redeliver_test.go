package kme

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestRedeliverWithin: with RedeliverWithin set, a key the slave SAE
// fetched is kept and a repeated dec_keys by the same SAE pair (after a
// restart too: a slave that died before storing the key asks again) gets
// the same bytes; no other SAE gets it; it no longer counts as reserved;
// once the time has passed SweepDelivered deletes it and dec_keys answers
// "not found". Without RedeliverWithin the second dec_keys fails (the
// crash window this closes).
func TestRedeliverWithin(t *testing.T) {
	for _, b := range sqldbtest.Backends() {
		for _, window := range []time.Duration{0, time.Hour} {
			t.Run(b.Name+"/"+window.String(), func(t *testing.T) { testRedeliver(t, sqldbtest.Open(t, b), window) })
		}
	}
}

func testRedeliver(t *testing.T, db *sqldb.DB, window time.Duration) {
	e := startEnv(t, db, func(c *PairConfig) { c.B.RedeliverWithin = window })
	e.fill(4)
	A, B := e.p.AURL, e.p.BURL
	r := e.do("SAE_A1", "GET", A, "/api/v1/keys/SAE_B1/enc_keys?number=1&size=512", "")
	if r.status != 200 {
		t.Fatalf("enc_keys: %d %s", r.status, r.body)
	}
	var c etsi014.KeyContainer
	if err := json.Unmarshal(r.body, &c); err != nil || len(c.Keys) != 1 {
		t.Fatalf("enc_keys answer %s", r.body)
	}
	id, key := c.Keys[0].KeyID, c.Keys[0].Key
	dec := func(slave, master string) rawResp {
		return e.do(slave, "GET", B, "/api/v1/keys/"+master+"/dec_keys?key_ID="+id, "")
	}
	same := func(r rawResp, what string) {
		t.Helper()
		var d etsi014.KeyContainer
		if r.status != 200 || json.Unmarshal(r.body, &d) != nil || len(d.Keys) != 1 || d.Keys[0].Key != key || d.Keys[0].KeyID != id {
			t.Fatalf("%s (window %v): %d %s", what, window, r.status, r.body)
		}
	}
	same(dec("SAE_B1", "SAE_A1"), "first dec_keys")
	if window == 0 {
		if r := dec("SAE_B1", "SAE_A1"); r.status != 400 {
			t.Fatalf("a delivered key again without RedeliverWithin: %d %s", r.status, r.body)
		}
		return
	}
	same(dec("SAE_B1", "SAE_A1"), "dec_keys again")
	if r := dec("SAE_B2", "SAE_A1"); r.status != 401 {
		t.Fatalf("another slave SAE asked for the delivered key: %d %s", r.status, r.body)
	}
	if got := e.p.B.Counters(); got.ReservedKeys != 0 || got.DeliveredSlave != 1 {
		t.Fatalf("counters after redelivery: %+v", got)
	}
	e.restart()
	B = e.p.BURL
	same(dec("SAE_B1", "SAE_A1"), "dec_keys after a restart")
	if n, err := e.p.B.SweepDelivered(context.Background()); err != nil || n != 0 {
		t.Fatalf("swept %d units (%v) within the window", n, err)
	}
	// Two hours later.
	if _, err := db.Exec(db.Rebind(`UPDATE kme_keys SET reserved_at = reserved_at - ? WHERE state = 2`), int64(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	e.restart()
	B = e.p.BURL
	if n, err := e.p.B.SweepDelivered(context.Background()); err != nil || n != 2 {
		t.Fatalf("swept %d units (%v), want the key's 2", n, err)
	}
	if r := dec("SAE_B1", "SAE_A1"); r.status != 400 {
		t.Fatalf("dec_keys after the window: %d %s", r.status, r.body)
	}
	var left int
	if err := db.QueryRow(db.Rebind(`SELECT COUNT(*) FROM kme_keys WHERE state <> 0`)).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d rows left reserved or delivered (%v)", left, err)
	}
}
