package keycharge_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"github.com/qshield/qshield/internal/lab"
	"github.com/qshield/qshield/keycharge"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/keycharge/channel"
	"github.com/qshield/qshield/keycharge/device"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

var (
	testPIN  = []byte("246810")
	testPUK  = []byte("13579111")
	fastOpts = device.Options{KDF: device.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}, MaxPINTries: 3, MaxPUKTries: 3}
)

type env struct {
	t   *testing.T
	ctx context.Context
	db  *sqldb.DB
	ca  *pki.CA
	log *audit.Log
	lab *lab.Keycharge
	dir string
}

func newCA(t testing.TB, db *sqldb.DB, name string) *pki.CA {
	t.Helper()
	enc, err := pki.RawKey(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.OpenOrCreateCA(context.Background(), db, name, pki.Options{}, enc)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func startEnv(t *testing.T, db *sqldb.DB, poolMB int) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, ctx: ctx, db: db, ca: newCA(t, db, "platform"), dir: t.TempDir()}
	var err error
	if e.log, err = audit.Open(ctx, db); err != nil {
		t.Fatal(err)
	}
	e.lab, err = lab.StartKeycharge(ctx, lab.KeychargeConfig{DB: db, CA: e.ca, Audit: e.log, PoolUnits: poolMB*128 + 256})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.lab.Close)
	if poolMB > 0 {
		if err := e.lab.Fill(ctx, int64(poolMB)<<20); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *env) provision(serial string) *device.Device {
	e.t.Helper()
	d, err := lab.Provision(e.ctx, e.lab.Admin, filepath.Join(e.dir, serial), device.Info{Serial: serial, Model: "QK-UKEY", Kind: "ukey"}, testPIN, testPUK, fastOpts, "admin-zhang", "user-"+serial)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(d.Close)
	return d
}

func (e *env) charger(fault func(string) error) *keycharge.Charger {
	e.t.Helper()
	c, err := e.lab.NewCharger(fault)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// consistent checks the invariant of charging: the platform holds exactly
// the device's committed keys (same IDs, bytes and usage) and no charge of
// the device is open on either side.
func (e *env) consistent(d *device.Device) {
	e.t.Helper()
	dd, err := d.Digest()
	if err != nil {
		e.t.Fatal(err)
	}
	pd, err := e.lab.QKMP.DeviceDigest(e.ctx, d.Info().Serial)
	if err != nil {
		e.t.Fatal(err)
	}
	if !bytes.Equal(dd, pd) {
		e.t.Fatalf("device and platform disagree: device %d keys (%d bytes), platform digest differs", len(d.Keys()), d.Remaining())
	}
	if d.Pending() != nil {
		e.t.Fatalf("device still has pending charge %s", d.Pending().ID)
	}
	var open int
	e.db.QueryRowContext(e.ctx, e.db.Rebind(`SELECT COUNT(*) FROM keycharge_charges WHERE serial = ? AND state IN ('challenged','pending')`), d.Info().Serial).Scan(&open)
	if open != 0 {
		e.t.Fatalf("%d open charges on the platform", open)
	}
}

func TestLifecycle(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, 0)
		ctx := e.ctx
		admin := e.lab.Admin
		dir := filepath.Join(e.dir, "SN-L1")
		if err := device.Manufacture(dir, device.Info{Serial: "SN-L1", Kind: "ukey"}, testPIN, testPUK, fastOpts); err != nil {
			t.Fatal(err)
		}
		// Only administrators may register.
		if _, err := e.lab.Charger.Register(ctx, keycharge.RegisterRequest{Serial: "SN-L1"}); !errors.Is(err, keycharge.ErrForbidden) {
			t.Fatalf("charger registers a device: %v", err)
		}
		if _, err := e.lab.Phone.Register(ctx, keycharge.RegisterRequest{Serial: "SN-L1"}); !errors.Is(err, keycharge.ErrUnauthenticated) {
			t.Fatalf("anonymous registers a device: %v", err)
		}
		if _, err := admin.Register(ctx, keycharge.RegisterRequest{Serial: "SN-L1", Model: "UKEY"}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Register(ctx, keycharge.RegisterRequest{Serial: "SN-L1"}); !errors.Is(err, keycharge.ErrExists) {
			t.Fatalf("duplicate: %v", err)
		}
		// Illegal transitions from manufactured change nothing.
		for _, a := range []keycharge.Action{keycharge.ActDistribute, keycharge.ActBind, keycharge.ActActivate, keycharge.ActFreeze, keycharge.ActReportLost, keycharge.ActUnfreeze} {
			_, err := admin.Transition(ctx, "SN-L1", keycharge.TransitionRequest{Action: a, Administrator: "x", User: "y"})
			if !errors.Is(err, keycharge.ErrTransition) {
				t.Fatalf("%s from manufactured: %v", a, err)
			}
		}
		if _, err := admin.Transition(ctx, "SN-L1", keycharge.TransitionRequest{Action: "explode"}); !errors.Is(err, keycharge.ErrInvalid) {
			t.Fatal(err)
		}
		dev, err := device.Open(dir, testPIN, fastOpts)
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		// Initialise with a proof from another key: refused.
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pubDER, _ := x509.MarshalPKIXPublicKey(dev.PublicKey())
		encDER, _ := x509.MarshalPKIXPublicKey(dev.EncryptionPublicKey())
		badProof, _ := ecdsa.SignASN1(rand.Reader, other, keycharge.InitialiseDigest("SN-L1", pubDER, encDER))
		if _, err := admin.Transition(ctx, "SN-L1", keycharge.TransitionRequest{Action: keycharge.ActInitialise, PublicKey: pubDER, EncryptionKey: encDER, Proof: badProof}); !errors.Is(err, keycharge.ErrBadSignature) {
			t.Fatalf("initialise without proof of possession: %v", err)
		}
		// One key for signing and decryption (or none for decryption): refused.
		for name, enc := range map[string][]byte{"the signing key again": pubDER, "no encryption key": nil} {
			proof, _ := dev.Signer().Sign(rand.Reader, keycharge.InitialiseDigest("SN-L1", pubDER, enc), nil)
			if _, err := admin.Transition(ctx, "SN-L1", keycharge.TransitionRequest{Action: keycharge.ActInitialise, PublicKey: pubDER, EncryptionKey: enc, Proof: proof}); !errors.Is(err, keycharge.ErrInvalid) {
				t.Fatalf("initialise with %s as encryption key: %v", name, err)
			}
		}
		if err := keycharge.Initialise(ctx, admin, dev); err != nil {
			t.Fatal(err)
		}
		got, _ := admin.Device(ctx, "SN-L1")
		if got.State != keycharge.StateInitialised || got.CertSerial != dev.Certificate().SerialNumber.Text(16) {
			t.Fatalf("after initialise: %+v", got)
		}
		if info, err := e.ca.Verify(ctx, dev.Certificate(), pki.RoleDevice, time.Time{}); err != nil || info.Serial != "SN-L1" {
			t.Fatalf("device certificate: %v %+v", err, info)
		}
		// The certificate registers both keys, each for its own use: what is
		// encrypted to the registered encryption key opens, what is
		// encrypted to the certificate's (signing) key does not.
		encKey, err := keycharge.DeviceEncryptionKey(dev.Certificate())
		if err != nil || !encKey.Equal(dev.EncryptionPublicKey()) || encKey.Equal(dev.PublicKey()) {
			t.Fatalf("registered encryption key: %v", err)
		}
		if ct, _ := device.Encrypt(encKey, []byte("k")); ct == nil {
			t.Fatal("encrypt to the registered key")
		} else if m, err := dev.Decrypt(ct); err != nil || string(m) != "k" {
			t.Fatalf("decrypt for the registered key: %v", err)
		}
		ct, _ := device.Encrypt(dev.Certificate().PublicKey.(*ecdsa.PublicKey), []byte("k"))
		if _, err := dev.Decrypt(ct); err == nil {
			t.Fatal("a message encrypted to the signing key was decrypted")
		}
		steps := []struct {
			tr   keycharge.TransitionRequest
			want keycharge.State
		}{
			{keycharge.TransitionRequest{Action: keycharge.ActDistribute, Administrator: "admin-li"}, keycharge.StateDistributed},
			{keycharge.TransitionRequest{Action: keycharge.ActBind, User: "alice"}, keycharge.StateBound},
			{keycharge.TransitionRequest{Action: keycharge.ActActivate}, keycharge.StateActive},
			{keycharge.TransitionRequest{Action: keycharge.ActFreeze}, keycharge.StateFrozen},
			{keycharge.TransitionRequest{Action: keycharge.ActUnfreeze}, keycharge.StateActive},
			{keycharge.TransitionRequest{Action: keycharge.ActReportLost, Reason: "phone stolen"}, keycharge.StateLost},
			{keycharge.TransitionRequest{Action: keycharge.ActUnfreeze, Reason: "found"}, keycharge.StateActive},
			{keycharge.TransitionRequest{Action: keycharge.ActCancel}, keycharge.StateCancelled},
		}
		for _, s := range steps {
			res, err := admin.Transition(ctx, "SN-L1", s.tr)
			if err != nil || res.Device.State != s.want {
				t.Fatalf("%s: %v %+v", s.tr.Action, err, res)
			}
		}
		// Cancelled is final, and the certificate is revoked.
		for _, a := range keycharge.Actions() {
			if _, err := admin.Transition(ctx, "SN-L1", keycharge.TransitionRequest{Action: a, Administrator: "x", User: "y"}); !errors.Is(err, keycharge.ErrTransition) && !errors.Is(err, keycharge.ErrInvalid) {
				t.Fatalf("%s after cancel: %v", a, err)
			}
		}
		if _, err := e.ca.Verify(ctx, dev.Certificate(), pki.RoleDevice, time.Time{}); !errors.Is(err, pki.ErrRevoked) {
			t.Fatalf("cancelled device certificate: %v", err)
		}
		// Every transition is in the audit trail, which verifies.
		recs, err := admin.AuditSearch(ctx, "keycharge.device.*", "SN-L1", 1000)
		if err != nil {
			t.Fatal(err)
		}
		var ok, denied int
		for _, r := range recs {
			if r.Outcome == audit.OutcomeSuccess {
				ok++
			} else {
				denied++
			}
		}
		if ok != 10 || denied < 6 {
			t.Fatalf("audit: %d successes, %d denials", ok, denied)
		}
		stats, err := admin.AuditStats(ctx, "event,resource,day")
		if err != nil || len(stats) == 0 {
			t.Fatalf("stats: %v %v", stats, err)
		}
		rep, err := e.log.Verify(ctx)
		if err != nil || !rep.OK {
			t.Fatalf("audit verify: %+v %v", rep, err)
		}
	})
}

func TestChargeAndChannel(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, 3)
		ctx := e.ctx
		dev := e.provision("SN-C1")
		c := e.charger(nil)
		res, err := c.Charge(ctx, dev, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if res.Bytes != 1<<20 || res.Keys != 128 || dev.Remaining() != 1<<20 {
			t.Fatalf("charge: %+v, device holds %d", res, dev.Remaining())
		}
		e.consistent(dev)
		d, _ := e.lab.Admin.Device(ctx, "SN-C1")
		if d.Remaining != 1<<20 {
			t.Fatalf("platform remaining %d", d.Remaining)
		}
		keys, err := e.lab.Admin.Keys(ctx, "SN-C1", 0)
		if err != nil || len(keys) != 128 || keys[0].Distributed.IsZero() || keys[0].Extracted.IsZero() || keys[0].State != "active" {
			t.Fatalf("keys: %v %+v", err, keys[:1])
		}
		// The keys on the platform are encrypted at rest.
		var sealed []byte
		db.QueryRowContext(ctx, db.Rebind(`SELECT sealed FROM keycharge_keys WHERE key_id = ?`), keys[0].KeyID).Scan(&sealed)
		seg, _ := dev.TakeSegment(16) // consume (and see) the first 16 bytes
		if bytes.Contains(sealed, seg.Key) {
			t.Fatal("key stored in clear")
		}
		// Channel, both algorithms.
		for _, alg := range []channel.Alg{channel.AES256GCM, channel.SM4GCM} {
			ph := &keycharge.Phone{Device: dev, Platform: e.lab.Phone, Alg: alg}
			s, err := ph.Open(ctx)
			if err != nil {
				t.Fatalf("%s open: %v", alg, err)
			}
			if s.Remaining <= 0 || s.Remaining > 1<<20 {
				t.Fatalf("remaining %d", s.Remaining)
			}
			for i := 0; i < 3; i++ {
				msg := []byte(fmt.Sprintf("payment %d via %s", i, alg))
				out, err := s.Send(ctx, msg)
				if err != nil || !bytes.Equal(out, msg) {
					t.Fatalf("%s send: %q %v", alg, out, err)
				}
			}
		}
		// Replaying a frame is refused.
		ph := &keycharge.Phone{Device: dev, Platform: e.lab.Phone}
		s, err := ph.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f, _ := s.Channel().Seal([]byte("once"))
		if _, err := e.lab.Phone.ChannelMessage(ctx, f); err != nil {
			t.Fatal(err)
		}
		if _, err := e.lab.Phone.ChannelMessage(ctx, f); !errors.Is(err, keycharge.ErrKeyUsed) {
			t.Fatalf("replayed frame: %v", err)
		}
		// A second charge adds to the pool; usage on both sides stays equal
		// (the device marked the 16 bytes it took itself; the QSSC's mark for
		// that key is at least as high after the sessions on the same key).
		if _, err := c.Charge(ctx, dev, 512<<10); err != nil {
			t.Fatal(err)
		}
		if got := len(dev.Charges()); got != 2 {
			t.Fatalf("%d charges", got)
		}
	})
}

// A cloned device (a copy of the store taken before a session) replays the
// key segment the original already used: the QSSC refuses it.
func TestClonedDeviceReplay(t *testing.T) {
	e := startEnv(t, sqldbtest.Open(t, sqldbtest.Backends()[0]), 2)
	ctx := e.ctx
	dev := e.provision("SN-CL")
	if _, err := e.charger(nil).Charge(ctx, dev, 256<<10); err != nil {
		t.Fatal(err)
	}
	clone := filepath.Join(e.dir, "clone")
	copyDir(t, dev.Dir(), clone)
	if _, err := (&keycharge.Phone{Device: dev, Platform: e.lab.Phone}).Open(ctx); err != nil {
		t.Fatal(err)
	}
	cd, err := device.Open(clone, testPIN, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer cd.Close()
	_, err = (&keycharge.Phone{Device: cd, Platform: e.lab.Phone}).Open(ctx)
	if !errors.Is(err, keycharge.ErrKeyUsed) {
		t.Fatalf("clone replaying a used segment: %v", err)
	}
	// The refusal is audited.
	recs, _ := e.lab.Admin.AuditSearch(ctx, "keycharge.channel.open", "SN-CL", 100)
	if len(recs) < 2 || recs[len(recs)-1].Outcome != audit.OutcomeDenied {
		t.Fatalf("audit of the replay: %+v", recs)
	}
}

func TestCounterfeitDevice(t *testing.T) {
	e := startEnv(t, sqldbtest.Open(t, sqldbtest.Backends()[0]), 1)
	ctx := e.ctx
	dev := e.provision("SN-CF")
	// 1. Self-signed certificate for the same serial.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "SN-CF"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	// 2. A certificate from another CA (same structure, device role).
	otherCA := newCA(t, e.db, "rogue")
	iss, err := otherCA.Issue(ctx, pki.IssueRequest{Role: pki.RoleDevice, CommonName: "SN-CF", PublicKey: dev.PublicKey(), Device: &pki.DeviceInfo{Serial: "SN-CF", Kind: "ukey"}})
	if err != nil {
		t.Fatal(err)
	}
	// 3. A genuine platform certificate for another device's serial.
	dev2 := e.provision("SN-CF2")
	for name, cert := range map[string][]byte{"self-signed": der, "other CA": iss.DER, "other device": dev2.Certificate().Raw, "garbage": []byte("not a cert")} {
		_, err := e.lab.Charger.BeginCharge(ctx, keycharge.BeginRequest{Serial: "SN-CF", Volume: 1024, Certificate: cert})
		if !errors.Is(err, keycharge.ErrCounterfeit) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The right certificate but a signature from another key.
	b, err := e.lab.Charger.BeginCharge(ctx, keycharge.BeginRequest{Serial: "SN-CF", Volume: 1024, Certificate: dev.Certificate().Raw})
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := ecdsa.SignASN1(rand.Reader, key, keycharge.ChallengeDigest(b.ChargeID, "SN-CF", 1024, b.Challenge))
	if err := e.lab.Charger.AuthenticateCharge(ctx, b.ChargeID, sig); !errors.Is(err, keycharge.ErrBadSignature) {
		t.Fatalf("foreign signature: %v", err)
	}
	st, _ := e.lab.Charger.ChargeStatus(ctx, b.ChargeID)
	if st.State != keycharge.ChargeAborted {
		t.Fatalf("charge after a bad signature: %s", st.State)
	}
	// A counterfeit device store (its own key, self-made certificate) on the charger.
	fake := filepath.Join(e.dir, "fake")
	device.Manufacture(fake, device.Info{Serial: "SN-CF", Kind: "ukey"}, testPIN, testPUK, fastOpts)
	fd, _ := device.Open(fake, testPIN, fastOpts)
	defer fd.Close()
	tmpl.Subject.CommonName = "SN-CF"
	fder, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, fd.PublicKey(), fd.Signer())
	fc, _ := x509.ParseCertificate(fder)
	if err := fd.InstallCertificate(fc); err != nil {
		t.Fatal(err)
	}
	if _, err := e.charger(nil).Charge(ctx, fd, 1024); !errors.Is(err, keycharge.ErrCounterfeit) {
		t.Fatalf("counterfeit device charged: %v", err)
	}
	if fd.Remaining() != 0 {
		t.Fatal("counterfeit device holds key")
	}
}

func TestRefusedStates(t *testing.T) {
	e := startEnv(t, sqldbtest.Open(t, sqldbtest.Backends()[0]), 2)
	ctx := e.ctx
	dev := e.provision("SN-RS")
	c := e.charger(nil)
	if _, err := c.Charge(ctx, dev, 256<<10); err != nil {
		t.Fatal(err)
	}
	ph := &keycharge.Phone{Device: dev, Platform: e.lab.Phone}
	s, err := ph.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		act  keycharge.Action
		want keycharge.State
	}{{keycharge.ActFreeze, keycharge.StateFrozen}, {keycharge.ActReportLost, keycharge.StateLost}} {
		if _, err := e.lab.Admin.Transition(ctx, "SN-RS", keycharge.TransitionRequest{Action: step.act}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Charge(ctx, dev, 1024); !errors.Is(err, keycharge.ErrDeviceState) {
			t.Fatalf("%s device charged: %v", step.want, err)
		}
		if _, err := ph.Open(ctx); !errors.Is(err, keycharge.ErrDeviceState) {
			t.Fatalf("%s device connected: %v", step.want, err)
		}
		if _, err := s.Send(ctx, []byte("hi")); err == nil {
			t.Fatalf("%s device: open session still works", step.want)
		}
		keys, _ := e.lab.Admin.Keys(ctx, "SN-RS", 1)
		if keys[0].State != "frozen" || keys[0].Frozen == nil {
			t.Fatalf("keys of a %s device: %+v", step.want, keys[0])
		}
	}
	// Cancel the loss: works again, keys restored.
	if _, err := e.lab.Admin.Transition(ctx, "SN-RS", keycharge.TransitionRequest{Action: keycharge.ActUnfreeze}); err != nil {
		t.Fatal(err)
	}
	if _, err := ph.Open(ctx); err != nil {
		t.Fatalf("after unfreeze: %v", err)
	}
	keys, _ := e.lab.Admin.Keys(ctx, "SN-RS", 1)
	if keys[0].State != "active" || keys[0].Restored == nil {
		t.Fatalf("restored keys: %+v", keys[0])
	}
	if _, err := e.lab.Admin.Transition(ctx, "SN-RS", keycharge.TransitionRequest{Action: keycharge.ActCancel}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Charge(ctx, dev, 1024); err == nil {
		t.Fatal("cancelled device charged")
	}
	if _, err := ph.Open(ctx); !errors.Is(err, keycharge.ErrDeviceState) {
		t.Fatalf("cancelled device connected: %v", err)
	}
	var live int
	e.db.QueryRowContext(ctx, e.db.Rebind(`SELECT COUNT(*) FROM keycharge_keys WHERE serial = ? AND sealed IS NOT NULL`), "SN-RS").Scan(&live)
	if live != 0 {
		t.Fatalf("%d keys survive cancellation", live)
	}
}

func TestWrongPINReportedAndPUK(t *testing.T) {
	e := startEnv(t, sqldbtest.Open(t, sqldbtest.Backends()[0]), 1)
	ctx := e.ctx
	dev := e.provision("SN-PIN")
	dir := dev.Dir()
	dev.Close()
	c := e.charger(nil)
	for i := 0; i < fastOpts.MaxPINTries; i++ {
		if _, err := c.OpenDevice(ctx, dir, []byte("000000"), fastOpts); !errors.Is(err, device.ErrWrongPIN) && !errors.Is(err, device.ErrLocked) {
			t.Fatalf("try %d: %v", i, err)
		}
	}
	if _, err := c.OpenDevice(ctx, dir, testPIN, fastOpts); !errors.Is(err, device.ErrLocked) {
		t.Fatalf("locked device opened: %v", err)
	}
	d, _ := e.lab.Admin.Device(ctx, "SN-PIN")
	if d.PINFailures != fastOpts.MaxPINTries+1 {
		t.Fatalf("platform counted %d wrong PINs", d.PINFailures)
	}
	// PUK releases the device; the platform still refuses until the
	// administrator clears its count too (it knows about the attempts).
	if err := device.Unlock(dir, testPUK, []byte("975310"), fastOpts); err != nil {
		t.Fatal(err)
	}
	d2, err := c.OpenDevice(ctx, dir, []byte("975310"), fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	for i := 0; i < 2; i++ { // reach the platform limit (5)
		e.lab.Charger.ReportPINFailure(ctx, "SN-PIN")
	}
	if _, err := c.Charge(ctx, d2, 1024); !errors.Is(err, keycharge.ErrPINLocked) {
		t.Fatalf("charge with the platform count at the limit: %v", err)
	}
	if _, err := e.lab.Admin.Transition(ctx, "SN-PIN", keycharge.TransitionRequest{Action: keycharge.ActUnlockPIN}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Charge(ctx, d2, 1024); err != nil {
		t.Fatal(err)
	}
	e.consistent(d2)
}

var errCrash = errors.New("simulated crash")

// Charging interrupted at every fault point, then recovered on the next
// plug-in: device and platform agree, nothing is left open, and the device
// can be charged again.
func TestInterruptedCharge(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, 8)
		ctx := e.ctx
		for i, point := range keycharge.FaultPoints {
			t.Run(point, func(t *testing.T) {
				dev := e.provision(fmt.Sprintf("SN-F%d", i))
				crash := e.charger(func(p string) error {
					if p == point {
						return errCrash
					}
					return nil
				})
				_, err := crash.Charge(ctx, dev, 300<<10)
				if point != keycharge.FaultAfterDevice && !errors.Is(err, errCrash) {
					t.Fatalf("charge with a crash at %s: %v", point, err)
				}
				// "Replug": reopen the device from disk, as after a killed process.
				dir := dev.Dir()
				dev.Close()
				d2, err := device.Open(dir, testPIN, fastOpts)
				if err != nil {
					t.Fatal(err)
				}
				defer d2.Close()
				good := e.charger(nil)
				rec, err := good.Recover(ctx, d2)
				if err != nil {
					t.Fatal(err)
				}
				want := keycharge.RecoverNone
				switch point {
				case keycharge.FaultAfterStage:
					want = keycharge.RecoverDiscarded
				case keycharge.FaultAfterCommit:
					want = keycharge.RecoverCommitted
				}
				if rec != want {
					t.Fatalf("recovery after %s: %s, want %s", point, rec, want)
				}
				// Charges that were begun but never staged are still open on the
				// platform until the next charge supersedes them; check after it.
				if _, err := good.Charge(ctx, d2, 100<<10); err != nil {
					t.Fatal(err)
				}
				e.consistent(d2)
				wantBytes := int64(104 << 10) // 100 KiB rounds up to 13 keys of 8 KiB
				if point == keycharge.FaultAfterCommit || point == keycharge.FaultAfterDevice {
					wantBytes += 304 << 10
				}
				if d2.Remaining() != wantBytes {
					t.Fatalf("device holds %d bytes, want %d", d2.Remaining(), wantBytes)
				}
			})
		}
	})
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := lab.CopyStore(from, to); err != nil {
		t.Fatal(err)
	}
}

// A charger asking for larger keys than the KME's max_key_size adapts.
func TestChargerTunesToKME(t *testing.T) {
	e := startEnv(t, sqldbtest.Open(t, sqldbtest.Backends()[0]), 1)
	dev := e.provision("SN-TU")
	c, err := keycharge.NewCharger(keycharge.ChargerConfig{Platform: e.lab.Charger, KME: e.lab.KMEA, MasterSAE: "charger-1", KeyBits: 1 << 20, Batch: 1000})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Charge(e.ctx, dev, 100<<10)
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys != 13 || c.Config().KeyBits != 65536 || c.Config().Batch != 128 {
		t.Fatalf("keys %d, key bits %d, batch %d", res.Keys, c.Config().KeyBits, c.Config().Batch)
	}
	e.consistent(dev)
}

// Plug-in monitoring: a device is charged when it appears, once per plug-in.
func TestWatchPlugIn(t *testing.T) {
	e := startEnv(t, sqldbtest.Open(t, sqldbtest.Backends()[0]), 1)
	dev := e.provision("SN-W")
	src := dev.Dir()
	dev.Close()
	slot := filepath.Join(t.TempDir(), "slots")
	if err := os.MkdirAll(slot, 0o700); err != nil {
		t.Fatal(err)
	}
	results := make(chan error, 4)
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	c := e.charger(nil)
	done := make(chan error, 1)
	go func() {
		done <- c.Watch(ctx, keycharge.WatchConfig{Dir: slot, Every: 20 * time.Millisecond, Volume: 16 << 10, Options: fastOpts,
			PIN:      func(string, device.Info) ([]byte, error) { return append([]byte(nil), testPIN...), nil },
			OnResult: func(_ string, _ *keycharge.ChargeResult, err error) { results <- err }})
	}()
	for i := 0; i < 2; i++ {
		plugged := filepath.Join(slot, fmt.Sprintf("usb%d", i))
		if err := os.Rename(src, plugged); err != nil { // plug in
			t.Fatal(err)
		}
		select {
		case err := <-results:
			if err != nil {
				t.Fatalf("plug-in %d: %v", i, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("plug-in %d not detected", i)
		}
		if err := os.Rename(plugged, src); err != nil { // pull out
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	d, err := device.Open(src, testPIN, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if len(d.Charges()) != 2 || d.Remaining() != 32<<10 {
		t.Fatalf("%d charges, %d bytes", len(d.Charges()), d.Remaining())
	}
	select {
	case err := <-results:
		t.Fatalf("extra charge: %v", err)
	default:
	}
}
