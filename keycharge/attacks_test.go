package keycharge_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"github.com/qshield/qshield/keycharge"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/keycharge/channel"
	"github.com/qshield/qshield/keycharge/device"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// A tampered or deleted keycharge audit record is detected by Verify.
func TestAuditTamperDetected(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, 1)
		ctx := e.ctx
		dev := e.provision("SN-AU")
		if _, err := e.charger(nil).Charge(ctx, dev, 64<<10); err != nil {
			t.Fatal(err)
		}
		recs, err := e.log.Search(ctx, audit.Query{Event: "keycharge.charge.commit"})
		if err != nil || len(recs) != 1 {
			t.Fatalf("commit record: %v %d", err, len(recs))
		}
		seq := recs[0].Seq
		if rep, _ := e.log.Verify(ctx); !rep.OK {
			t.Fatalf("clean chain: %+v", rep.Problems)
		}
		// Tamper: claim the charge was bigger.
		if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE audit_log SET details = REPLACE(details, '"keys":"8"', '"keys":"800"') WHERE seq = ?`), seq); err != nil {
			t.Fatal(err)
		}
		rep, err := e.log.Verify(ctx)
		if err != nil || rep.OK || len(rep.Problems) == 0 || rep.Problems[0].Seq != seq {
			t.Fatalf("tampered record not found: %+v %v", rep, err)
		}
		// Delete the lifecycle record of the activation.
		act, _ := e.log.Search(ctx, audit.Query{Event: "keycharge.device.activate"})
		if _, err := db.ExecContext(ctx, db.Rebind(`DELETE FROM audit_log WHERE seq = ?`), act[0].Seq); err != nil {
			t.Fatal(err)
		}
		rep, _ = e.log.Verify(ctx)
		found := false
		for _, p := range rep.Problems {
			if p.Kind == audit.ProblemDeleted && p.Seq == act[0].Seq {
				found = true
			}
		}
		if !found {
			t.Fatalf("deleted record not reported: %+v", rep.Problems)
		}
	})
}

// Bad input through HTTP gets a problem and changes nothing.
func TestHTTPBadInput(t *testing.T) {
	e := startEnv(t, sqldbtest.Open(t, sqldbtest.Backends()[0]), 0)
	ctx := e.ctx
	e.provision("SN-BI")
	before := dbState(t, e)
	tc := e.ca.ClientTLS(ctx, e.lab.AdminCert, "127.0.0.1")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	for _, c := range []struct{ method, path, ctype, body string }{
		{"POST", "/v1/keycharge/devices", "application/json", `{"serial":`},
		{"POST", "/v1/keycharge/devices", "application/json", `{"serial":"a/b"}`},
		{"POST", "/v1/keycharge/devices", "application/json", `{"serial":"X","extra":1}`},
		{"POST", "/v1/keycharge/devices", "text/plain", `{"serial":"X"}`},
		{"POST", "/v1/keycharge/devices/SN-BI/transitions", "application/json", `{"action":"activate"}`},
		{"POST", "/v1/keycharge/devices/SN-BI/transitions", "application/json", `{"action":"bind","user":""}`},
		{"POST", "/v1/keycharge/devices/SN-BI/transitions", "application/json", `{"action":"initialise","public_key":"AAAA","proof":"AAAA"}`},
		{"POST", "/v1/keycharge/charges", "application/json", `{"serial":"SN-BI","volume":-1}`},
		{"POST", "/v1/keycharge/charges", "application/json", `{"serial":"SN-BI","volume":1000000000000}`},
		{"POST", "/v1/keycharge/charges/nope/commit", "application/json", `{"master_sae":"x","key_ids":["a"],"hash":"AAAA"}`},
		{"POST", "/v1/keycharge/charges/nope/abort", "application/json", `{}`},
		{"POST", "/v1/keycharge/pool", "application/json", `{"master_sae":"x","key_ids":[]}`},
		{"POST", "/v1/keycharge/channel/open", "application/json", `{"serial":"SN-BI","key_id":"k","offset":-5}`},
		{"POST", "/v1/keycharge/channel/message", "application/octet-stream", "QKCH garbage"},
		{"POST", "/v1/keycharge/channel/message", "application/json", "{}"},
		{"GET", "/v1/keycharge/audit/stats?by=color", "", ""},
		{"GET", "/v1/keycharge/nothing", "", ""},
	} {
		req, _ := http.NewRequestWithContext(ctx, c.method, e.lab.URL+c.path, strings.NewReader(c.body))
		if c.ctype != "" {
			req.Header.Set("Content-Type", c.ctype)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 || !strings.Contains(resp.Header.Get("Content-Type"), "problem+json") {
			t.Errorf("%s %s %q: %d %s", c.method, c.path, c.body, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if after := dbState(t, e); after != before {
		t.Fatalf("bad input changed the database:\n%s\n%s", before, after)
	}
}

func dbState(t *testing.T, e *env) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{`SELECT COUNT(*) FROM keycharge_devices`, `SELECT COUNT(*) FROM keycharge_charges`, `SELECT COUNT(*) FROM keycharge_keys`, `SELECT state FROM keycharge_devices WHERE serial = 'SN-BI'`} {
		var v string
		e.db.QueryRowContext(e.ctx, q).Scan(&v)
		b.WriteString(v + ";")
	}
	return b.String()
}

// Keys from prefetched pools: charge, interrupted charge, pool reset.
func TestChargeFromPool(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, 4)
		ctx := e.ctx
		dev := e.provision("SN-PO")
		crash := true
		c := e.charger(func(p string) error {
			if crash && p == keycharge.FaultAfterStage {
				return errCrash
			}
			return nil
		})
		if _, err := c.Prefetch(ctx, 1<<20); err != nil {
			t.Fatal(err)
		}
		if c.Pooled() != 1<<20 {
			t.Fatalf("pooled %d", c.Pooled())
		}
		st, _ := e.lab.QKMP.PoolStatus(ctx, "charger-1")
		if st.Bytes != 1<<20 {
			t.Fatalf("platform pool %+v", st)
		}
		// Interrupted after staging: recovery discards; the pooled keys are
		// never assigned to anyone.
		if _, err := c.Charge(ctx, dev, 512<<10); !errors.Is(err, errCrash) {
			t.Fatal(err)
		}
		crash = false
		res, err := c.Charge(ctx, dev, 512<<10)
		if err != nil {
			t.Fatal(err)
		}
		if res.Recovered != keycharge.RecoverDiscarded || c.Pooled() != 0 {
			t.Fatalf("recovered %s, pool %d", res.Recovered, c.Pooled())
		}
		e.consistent(dev)
		// Direct and pooled keys mixed in one charge.
		if _, err := c.Prefetch(ctx, 256<<10); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Charge(ctx, dev, 512<<10); err != nil {
			t.Fatal(err)
		}
		e.consistent(dev)
		if dev.Remaining() != 1<<20 {
			t.Fatalf("device holds %d", dev.Remaining())
		}
		// Another charger cannot use this charger's pool: it would need the keys.
		st, _ = e.lab.QKMP.ResetPool(ctx, keycharge.Principal{Name: "charger-1", Role: "client", Kind: "charger"})
		if st.Keys != 0 {
			t.Fatalf("pool after reset: %+v", st)
		}
	})
}

// The device certificate's key cannot be swapped: a certificate for another
// key is refused by the device.
func TestDeviceRefusesForeignCertificate(t *testing.T) {
	e := startEnv(t, sqldbtest.Open(t, sqldbtest.Backends()[0]), 0)
	a := e.provision("SN-A1")
	b := e.provision("SN-B1")
	if err := a.InstallCertificate(b.Certificate()); !errors.Is(err, device.ErrCertificateKey) {
		t.Fatal(err)
	}
}

// corruptingKME flips a bit of one delivered key: the charger writes a key
// the QSSC does not have.
type corruptingKME struct{ keycharge.KeySource }

func (c corruptingKME) EncKeys(ctx context.Context, slave string, n, bits int) ([]etsi014.KeyMaterial, error) {
	ks, err := c.KeySource.EncKeys(ctx, slave, n, bits)
	if err == nil && len(ks) > 0 {
		ks[len(ks)-1].Key[0] ^= 1
	}
	return ks, err
}

// The consistency check catches a charge whose bytes differ from the QSSC's:
// the platform refuses it and the device discards it.
func TestConsistencyCheckCatchesCorruption(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, 2)
		ctx := e.ctx
		dev := e.provision("SN-HC")
		bad, err := keycharge.NewCharger(keycharge.ChargerConfig{Platform: e.lab.Charger, KME: corruptingKME{e.lab.KMEA}, MasterSAE: "charger-1"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bad.Charge(ctx, dev, 128<<10); !errors.Is(err, keycharge.ErrHashMismatch) {
			t.Fatalf("corrupted charge: %v", err)
		}
		if dev.Remaining() != 0 || dev.Pending() != nil {
			t.Fatalf("device kept a refused charge: %d bytes, pending %v", dev.Remaining(), dev.Pending())
		}
		e.consistent(dev)
		// Pooled keys too.
		if _, err := bad.Prefetch(ctx, 128<<10); err != nil {
			t.Fatal(err)
		}
		if _, err := bad.Charge(ctx, dev, 128<<10); !errors.Is(err, keycharge.ErrHashMismatch) {
			t.Fatalf("corrupted pooled charge: %v", err)
		}
		e.consistent(dev)
		if st, _ := e.lab.QKMP.PoolStatus(ctx, "charger-1"); st.Keys != 0 {
			t.Fatalf("pooled keys of a failed charge survive: %+v", st)
		}
	})
}

// Forged channel openings: a counterfeit device's signature, or a genuine
// signature without the key (wrong MAC), are refused and burn no key.
func TestChannelForgery(t *testing.T) {
	e := startEnv(t, sqldbtest.Open(t, sqldbtest.Backends()[0]), 1)
	ctx := e.ctx
	dev := e.provision("SN-FG")
	if _, err := e.charger(nil).Charge(ctx, dev, 64<<10); err != nil {
		t.Fatal(err)
	}
	keyID := dev.Keys()[0].ID
	fake := filepath.Join(e.dir, "fake-fg")
	if err := device.Manufacture(fake, device.Info{Serial: "SN-FG", Kind: "ukey"}, testPIN, testPUK, fastOpts); err != nil {
		t.Fatal(err)
	}
	fd, err := device.Open(fake, testPIN, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	mk := func(signer *device.Device, segment []byte) channel.OpenRequest {
		req := channel.OpenRequest{Serial: "SN-FG", KeyID: keyID, Offset: 0, Alg: channel.AES256GCM, ClientNonce: make([]byte, channel.NonceLen), TimeMillis: time.Now().UnixMilli()}
		sig, err := signer.Signer().Sign(rand.Reader, req.Digest(), crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		req.Signature = sig
		req.MAC = req.RequestMAC(channel.AuthKey(segment))
		return req
	}
	if _, err := e.lab.Phone.OpenChannel(ctx, mk(fd, make([]byte, channel.SegmentLen))); !errors.Is(err, keycharge.ErrBadSignature) {
		t.Fatalf("counterfeit signature: %v", err)
	}
	if _, err := e.lab.Phone.OpenChannel(ctx, mk(dev, make([]byte, channel.SegmentLen))); !errors.Is(err, keycharge.ErrBadSignature) {
		t.Fatalf("genuine signature, wrong key: %v", err)
	}
	// Stale request (replayed later): refused on time.
	old := mk(dev, make([]byte, channel.SegmentLen))
	old.TimeMillis -= int64(time.Hour / time.Millisecond)
	if _, err := e.lab.Phone.OpenChannel(ctx, old); !errors.Is(err, keycharge.ErrInvalid) {
		t.Fatalf("stale request: %v", err)
	}
	keys, _ := e.lab.Admin.Keys(ctx, "SN-FG", 1)
	if keys[0].Used != 0 {
		t.Fatalf("forged openings burnt %d bytes of key", keys[0].Used)
	}
	// The genuine device still opens at offset 0.
	s, err := (&keycharge.Phone{Device: dev, Platform: e.lab.Phone}).Open(ctx)
	if err != nil || s.Offset != 0 {
		t.Fatalf("genuine open: %v", err)
	}
}
