package device

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var fastOpts = Options{KDF: KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}, MaxPINTries: 3, MaxPUKTries: 2, SegmentLease: -1}

var (
	pin = []byte("123456")
	puk = []byte("87654321")
)

func newDevice(t *testing.T) (string, *Device) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ukey")
	if err := Manufacture(dir, Info{Serial: "SN-0001", Model: "UKEY-1", Kind: "ukey"}, pin, puk, fastOpts); err != nil {
		t.Fatal(err)
	}
	d, err := Open(dir, pin, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return dir, d
}

// selfCert makes a certificate for the device key (the platform CA's role in
// production; here only the key match matters).
func selfCert(t *testing.T, d *Device) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: d.Info().Serial}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, d.PublicKey(), d.Signer())
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func initialised(t *testing.T) (string, *Device) {
	dir, d := newDevice(t)
	if err := d.InstallCertificate(selfCert(t, d)); err != nil {
		t.Fatal(err)
	}
	return dir, d
}

func randKeys(n, size int) (ids []string, keys [][]byte) {
	for i := 0; i < n; i++ {
		k := make([]byte, size)
		rand.Read(k)
		ids = append(ids, fmt.Sprintf("key-%d-%x", i, k[:4]))
		keys = append(keys, k)
	}
	return
}

func charge(t *testing.T, d *Device, id string, ids []string, keys [][]byte) []byte {
	t.Helper()
	w, err := d.BeginCharge(id)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ids {
		if err := w.Add(ids[i], keys[i]); err != nil {
			t.Fatal(err)
		}
	}
	h, err := w.Stage()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestManufactureOpenSign(t *testing.T) {
	dir, d := newDevice(t)
	if d.Info().Serial != "SN-0001" {
		t.Fatal(d.Info())
	}
	digest := sha256.Sum256([]byte("challenge"))
	sig, err := d.Signer().Sign(rand.Reader, digest[:], nil)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(d.PublicKey(), digest[:], sig) {
		t.Fatal("signature does not verify")
	}
	// The private keys are nowhere in the files in clear.
	skDER, _ := x509.MarshalPKCS8PrivateKey(d.key)
	dkDER, _ := x509.MarshalPKCS8PrivateKey(d.dec)
	for _, n := range []string{StoreFile, CounterFile} {
		b, _ := os.ReadFile(filepath.Join(dir, n))
		if bytes.Contains(b, skDER[len(skDER)-32:]) || bytes.Contains(b, dkDER[len(dkDER)-32:]) {
			t.Fatalf("%s holds a private key in clear", n)
		}
	}
	if err := Manufacture(dir, Info{Serial: "SN-0001", Kind: "ukey"}, pin, puk, fastOpts); !errors.Is(err, ErrExists) {
		t.Fatalf("second manufacture: %v", err)
	}
	// Reopen: same key.
	d2, err := Open(dir, pin, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if !d2.PublicKey().Equal(d.PublicKey()) || !d2.EncryptionPublicKey().Equal(d.EncryptionPublicKey()) {
		t.Fatal("key changed")
	}
	// Separate keys (#12): the signing key never decrypts. A message
	// encrypted to it does not open (it did when the device had one key).
	if d.EncryptionPublicKey().Equal(d.PublicKey()) {
		t.Fatal("one key for signing and decryption")
	}
	if ct, err := Encrypt(d.PublicKey(), []byte("to the signing key")); err != nil {
		t.Fatal(err)
	} else if _, err := d2.Decrypt(ct); !errors.Is(err, ErrInvalid) {
		t.Fatalf("decrypted with the signing key: %v", err)
	}
	// ECIES round trip.
	ct, err := Encrypt(d.EncryptionPublicKey(), []byte("secret for the device"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := d2.Decrypt(ct)
	if err != nil || string(m) != "secret for the device" {
		t.Fatalf("decrypt: %q %v", m, err)
	}
	ct[len(ct)-1] ^= 1
	if _, err := d2.Decrypt(ct); err == nil {
		t.Fatal("tampered ciphertext decrypted")
	}
}

func TestInvalidInputs(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		info     Info
		pin, puk []byte
	}{
		{Info{Serial: "", Kind: "ukey"}, pin, puk},
		{Info{Serial: "a/b", Kind: "ukey"}, pin, puk},
		{Info{Serial: "ok", Kind: "ukey"}, []byte("12"), puk},
		{Info{Serial: "ok", Kind: "ukey"}, pin, []byte("1")},
	} {
		if err := Manufacture(filepath.Join(dir, "x"), c.info, c.pin, c.puk, fastOpts); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", c.info, err)
		}
	}
	if _, err := Open(filepath.Join(dir, "none"), pin, fastOpts); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
}

func TestWrongPINLockoutAndPUK(t *testing.T) {
	dir, d := newDevice(t)
	d.Close()
	for i := 0; i < fastOpts.MaxPINTries; i++ {
		_, err := Open(dir, []byte("000000"), fastOpts)
		var pe *PINError
		if !errors.As(err, &pe) {
			t.Fatalf("try %d: %v", i, err)
		}
		if pe.Left != fastOpts.MaxPINTries-i-1 {
			t.Fatalf("try %d: left %d", i, pe.Left)
		}
	}
	// Locked: even the right PIN is refused.
	if _, err := Open(dir, pin, fastOpts); !errors.Is(err, ErrLocked) {
		t.Fatalf("right PIN on a locked device: %v", err)
	}
	// Deleting the counter file does not help (fail closed).
	os.Remove(filepath.Join(dir, CounterFile))
	if _, err := Open(dir, pin, fastOpts); !errors.Is(err, ErrLocked) {
		t.Fatalf("deleted counter: %v", err)
	}
	// With the counter file gone the PUK gets one last try (deleting the
	// file must not reset the PUK counter either): the right PUK works.
	if err := Unlock(dir, puk, []byte("111111"), fastOpts); err != nil {
		t.Fatalf("PUK: %v", err)
	}
	if _, err := Open(dir, pin, fastOpts); !errors.Is(err, ErrWrongPIN) {
		t.Fatalf("old PIN after PUK reset: %v", err)
	}
	d2, err := Open(dir, []byte("111111"), fastOpts)
	if err != nil {
		t.Fatalf("new PIN: %v", err)
	}
	d2.Close()
	// The PUK still works after the PIN change (its wrap does not cover the PIN salt).
	if err := Unlock(dir, puk, []byte("222222"), fastOpts); err != nil {
		t.Fatal(err)
	}
	// Wrong PUKs are counted; too many block the device for good.
	if err := Unlock(dir, []byte("wrongpuk"), []byte("111111"), fastOpts); !errors.Is(err, ErrWrongPUK) {
		t.Fatalf("wrong PUK: %v", err)
	}
	for i := 0; i < fastOpts.MaxPUKTries; i++ {
		Unlock(dir, []byte("badbadbad"), []byte("333333"), fastOpts)
	}
	if err := Unlock(dir, puk, []byte("333333"), fastOpts); !errors.Is(err, ErrBlocked) {
		t.Fatalf("blocked: %v", err)
	}
	if _, err := Open(dir, []byte("222222"), fastOpts); !errors.Is(err, ErrBlocked) {
		t.Fatalf("open blocked: %v", err)
	}
}

// The counter is written before the PIN check: a process killed during the
// KDF leaves the increment behind. Simulated by checking the file after a
// failed attempt and after a counter file from another device is swapped in.
// Deleting the counter file and guessing the PUK: one try, then blocked.
func TestDeletedCounterGivesOnePUKTry(t *testing.T) {
	dir, d := newDevice(t)
	d.Close()
	os.Remove(filepath.Join(dir, CounterFile))
	if err := Unlock(dir, []byte("guess123"), []byte("111111"), fastOpts); !errors.Is(err, ErrBlocked) {
		t.Fatalf("PUK guess after deleting the counter: %v", err)
	}
	if err := Unlock(dir, puk, []byte("111111"), fastOpts); !errors.Is(err, ErrBlocked) {
		t.Fatalf("device not blocked: %v", err)
	}
}

func TestCounterPersistsAndIsBound(t *testing.T) {
	dir, d := newDevice(t)
	d.Close()
	Open(dir, []byte("999999"), fastOpts)
	b, _ := os.ReadFile(filepath.Join(dir, CounterFile))
	c, err := parseCounters(b)
	if err != nil || c.pinFail != 1 {
		t.Fatalf("counter after a wrong PIN: %+v %v", c, err)
	}
	dir2, d2 := newDevice(t)
	d2.Close()
	other, _ := os.ReadFile(filepath.Join(dir2, CounterFile))
	os.WriteFile(filepath.Join(dir, CounterFile), other, 0o600)
	if _, err := Open(dir, pin, fastOpts); !errors.Is(err, ErrLocked) {
		t.Fatalf("foreign counter file: %v", err)
	}
}

func TestChargeStageCommitTake(t *testing.T) {
	dir, d := initialised(t)
	ids, keys := randKeys(40, 5000) // 200 kB: several chunks, keys across chunk borders
	h := charge(t, d, "chg-1", ids, keys)
	if d.Remaining() != 0 || d.Pending() == nil || d.Pending().Keys != 40 {
		t.Fatal("staged keys must not be usable")
	}
	if _, err := d.TakeSegment(32); !errors.Is(err, ErrExhausted) {
		t.Fatal(err)
	}
	if _, err := d.BeginCharge("chg-2"); !errors.Is(err, ErrPending) {
		t.Fatalf("second charge while pending: %v", err)
	}
	bad := bytes.Clone(h)
	bad[0] ^= 1
	if err := d.CommitCharge("chg-1", bad); !errors.Is(err, ErrHashMismatch) {
		t.Fatal(err)
	}
	// Independent hash.
	ch := NewChargeHash("chg-1")
	for i := range ids {
		ch.Add(ids[i], keys[i])
	}
	if !bytes.Equal(ch.Sum(), h) {
		t.Fatal("charge hash differs from an independent computation")
	}
	if err := d.CommitCharge("chg-1", h); err != nil {
		t.Fatal(err)
	}
	if d.Remaining() != 200000 {
		t.Fatal(d.Remaining())
	}
	// Segments come out in order, exactly the charged bytes, never twice.
	var got []byte
	for i := 0; i < 3; i++ {
		s, err := d.TakeSegment(2000)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, s.Key...)
		if s.KeyID != ids[i/2] {
			t.Fatalf("segment %d from %s", i, s.KeyID)
		}
	}
	// third segment: key 0 had 1000 left (skipped), so from key 1.
	want := append(append(append([]byte(nil), keys[0][:2000]...), keys[0][2000:4000]...), keys[1][:2000]...)
	if !bytes.Equal(got, want) {
		t.Fatal("segment bytes differ from the charged key")
	}
	// Reopen: usage persisted.
	d.Close()
	d2, err := Open(dir, pin, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	s, _ := d2.TakeSegment(2000)
	if s.KeyID != ids[1] || s.Offset != 2000 || !bytes.Equal(s.Key, keys[1][2000:4000]) {
		t.Fatalf("after reopen: %s@%d", s.KeyID, s.Offset)
	}
	if d2.Remaining() != 200000-5000-4000 {
		t.Fatal(d2.Remaining())
	}
	if len(d2.Charges()) != 1 {
		t.Fatal(d2.Charges())
	}
}

func TestDiscardAndSweep(t *testing.T) {
	dir, d := initialised(t)
	ids, keys := randKeys(3, 100)
	charge(t, d, "chg-x", ids, keys)
	if err := d.DiscardCharge("chg-x"); err != nil {
		t.Fatal(err)
	}
	// A crash mid-charge leaves a temporary file: swept on next open.
	w, _ := d.BeginCharge("chg-y")
	w.Add("a", []byte("key"))
	d.Close()
	d2, err := Open(dir, pin, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), keyPrefix) {
			t.Fatalf("leftover %s", e.Name())
		}
	}
	if d2.Pending() != nil || d2.Remaining() != 0 {
		t.Fatal("state after discard")
	}
}

func TestTamperDetected(t *testing.T) {
	dir, d := initialised(t)
	ids, keys := randKeys(3, 100)
	h := charge(t, d, "c1", ids, keys)
	d.CommitCharge("c1", h)
	d.Close()
	// Flip a byte in the key file.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), keyPrefix) {
			p := filepath.Join(dir, e.Name())
			b, _ := os.ReadFile(p)
			b[len(b)-5] ^= 1
			os.WriteFile(p, b, 0o600)
		}
	}
	if _, err := Open(dir, pin, fastOpts); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("tampered key file: %v", err)
	}
	// Tamper with the header's KDF parameters: authenticated.
	dir2, d2 := newDevice(t)
	d2.Close()
	p := filepath.Join(dir2, StoreFile)
	b, _ := os.ReadFile(p)
	b[8+16+3] ^= 1 // time parameter
	os.WriteFile(p, b, 0o600)
	if _, err := Open(dir2, pin, fastOpts); err == nil {
		t.Fatal("tampered header accepted")
	}
}

// With a lease, segments come from memory between metadata writes, never
// overlap, and a reopen (crash, unplug) skips the unused rest of the lease.
func TestSegmentLease(t *testing.T) {
	opts := fastOpts
	opts.SegmentLease = 4096
	dir := filepath.Join(t.TempDir(), "lease")
	if err := Manufacture(dir, Info{Serial: "L1", Kind: "ukey"}, pin, puk, opts); err != nil {
		t.Fatal(err)
	}
	d, err := Open(dir, pin, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.InstallCertificate(selfCert(t, d)); err != nil {
		t.Fatal(err)
	}
	ids, keys := randKeys(2, 10000)
	d.CommitCharge("c", charge(t, d, "c", ids, keys))
	seen := map[int]bool{}
	var st0 []byte
	for i := 0; i < 64; i++ {
		s, err := d.TakeSegment(64)
		if err != nil {
			t.Fatal(err)
		}
		if s.KeyID != ids[0] || seen[s.Offset] || !bytes.Equal(s.Key, keys[0][s.Offset:s.Offset+64]) {
			t.Fatalf("segment %d: %s@%d", i, s.KeyID, s.Offset)
		}
		seen[s.Offset] = true
		if i == 0 {
			st0, _ = os.ReadFile(filepath.Join(dir, StoreFile))
		}
	}
	if st1, _ := os.ReadFile(filepath.Join(dir, StoreFile)); !bytes.Equal(st0, st1) {
		t.Fatal("metadata rewritten inside a lease")
	}
	if d.Remaining() != 20000-64*64 {
		t.Fatalf("remaining %d", d.Remaining())
	}
	s, _ := d.TakeSegment(64) // new lease
	if s.Offset != 4096 {
		t.Fatalf("second lease starts at %d", s.Offset)
	}
	d.Close()
	d2, err := Open(dir, pin, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	s, _ = d2.TakeSegment(64)
	if s.Offset != 8192 || s.KeyID != ids[0] {
		t.Fatalf("after reopen: %s@%d (the rest of the lease must be skipped)", s.KeyID, s.Offset)
	}
}

// Red-team finding (low): the PIN and PUK could be 4 characters.
func TestShortPINRefused(t *testing.T) {
	for _, c := range []struct{ pin, puk string }{{"1234", "12345678"}, {"12345", "12345678"}, {"123456", "1234"}} {
		err := Manufacture(t.TempDir(), Info{Serial: "SN-PIN", Kind: "ukey"}, []byte(c.pin), []byte(c.puk), fastOpts)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("PIN %q, PUK %q: %v", c.pin, c.puk, err)
		}
	}
	if err := Manufacture(t.TempDir(), Info{Serial: "SN-PIN", Kind: "ukey"}, []byte("123456"), []byte("12345678"), fastOpts); err != nil {
		t.Fatal(err)
	}
}

// A store made before signing and decryption were separated (no "dk") gets
// its own decryption key when opened, kept from then on.
func TestOldStoreGetsDecryptionKey(t *testing.T) {
	dir, d := newDevice(t)
	d.mu.Lock()
	d.meta.DecKey = nil
	if err := d.saveLocked(); err != nil {
		t.Fatal(err)
	}
	d.mu.Unlock()
	d.Close()
	d1, err := Open(dir, pin, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	enc := d1.EncryptionPublicKey()
	d1.Close()
	if enc.Equal(d1.PublicKey()) {
		t.Fatal("old store decrypts with its signing key")
	}
	d2, err := Open(dir, pin, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if !d2.EncryptionPublicKey().Equal(enc) {
		t.Fatal("decryption key not kept")
	}
	ct, _ := Encrypt(enc, []byte("x"))
	if m, err := d2.Decrypt(ct); err != nil || string(m) != "x" {
		t.Fatalf("decrypt: %v", err)
	}
}
