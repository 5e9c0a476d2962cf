package device

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Sentinel errors.
var (
	ErrWrongPIN       = errors.New("device: wrong PIN")
	ErrWrongPUK       = errors.New("device: wrong PUK")
	ErrLocked         = errors.New("device: locked after too many wrong PINs; unlock with the PUK")
	ErrBlocked        = errors.New("device: blocked for good after too many wrong PUKs")
	ErrCorrupt        = errors.New("device: store corrupt or tampered with")
	ErrExists         = errors.New("device: a store already exists in this directory")
	ErrNotFound       = errors.New("device: no store in this directory")
	ErrInvalid        = errors.New("device: invalid input")
	ErrPending        = errors.New("device: a charge is pending; recover it first")
	ErrNoPending      = errors.New("device: no such pending charge")
	ErrHashMismatch   = errors.New("device: charge hash does not match the keys written")
	ErrExhausted      = errors.New("device: not enough charged key left")
	ErrClosed         = errors.New("device: closed")
	ErrNoCertificate  = errors.New("device: not initialised (no certificate)")
	ErrCertificateKey = errors.New("device: certificate is not for this device's key")
)

// Options tune a store. The zero value means the defaults.
type Options struct {
	KDF         KDFParams // zero: DefaultKDF (only used by Manufacture and PIN changes)
	MaxPINTries int       // default 5
	MaxPUKTries int       // default 10
	// SegmentLease is how much of a key TakeSegment reserves per metadata
	// write (default 4096 bytes; negative: none, every segment is written).
	SegmentLease int
}

func (o Options) withDefaults() Options {
	if o.KDF == (KDFParams{}) {
		o.KDF = DefaultKDF
	}
	if o.MaxPINTries <= 0 {
		o.MaxPINTries = 5
	}
	if o.MaxPUKTries <= 0 {
		o.MaxPUKTries = 10
	}
	if o.SegmentLease == 0 {
		o.SegmentLease = 4096
	}
	return o
}

// Info identifies a device.
type Info struct {
	Serial string `json:"serial"`
	Model  string `json:"model,omitempty"`
	Kind   string `json:"kind"`
}

// Validate checks the fields (printable, bounded).
func (i Info) Validate() error {
	if !ValidID(i.Serial) {
		return fmt.Errorf("%w: serial %q (1-64 characters of A-Z a-z 0-9 . _ -)", ErrInvalid, i.Serial)
	}
	if len(i.Model) > 128 || !utf8.ValidString(i.Model) || len(i.Kind) > 64 || !utf8.ValidString(i.Kind) {
		return fmt.Errorf("%w: model or kind too long or not UTF-8", ErrInvalid)
	}
	return nil
}

// ValidID accepts 1–64 characters of [A-Za-z0-9._-] (serials, charge IDs).
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidKeyID accepts 1–128 printable ASCII characters (ETSI key IDs are UUIDs).
func ValidKeyID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for _, c := range []byte(s) {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// Limits on charged keys.
const (
	MaxKeyLen = 1 << 20
	minPINLen = 6 // red-team finding: a 4-character PIN fell to 10^4 guesses
	maxPINLen = 128
)

func checkPIN(what string, p []byte) error {
	if len(p) < minPINLen || len(p) > maxPINLen {
		return fmt.Errorf("%w: %s must be %d-%d bytes", ErrInvalid, what, minPINLen, maxPINLen)
	}
	return nil
}

// metadata is the encrypted body of the store.
type metadata struct {
	Version    int       `json:"v"`
	Info       Info      `json:"info"`
	Created    time.Time `json:"created"`
	PrivateKey []byte    `json:"sk"`
	// DecKey is the separate decryption key (PKCS #8); absent in stores
	// made before signing and decryption were separated (added on open).
	DecKey  []byte       `json:"dk,omitempty"`
	Cert    []byte       `json:"cert,omitempty"`
	Files   []*keyFile   `json:"files,omitempty"`
	Keys    []*keyRec    `json:"keys,omitempty"`
	Pending *pending     `json:"pending,omitempty"`
	Charges []*ChargeLog `json:"charges,omitempty"`
}

type keyFile struct {
	Name   string `json:"name"`
	ID     []byte `json:"id"`
	Size   int64  `json:"size"`
	Hash   []byte `json:"hash"`
	Charge string `json:"charge"`
}

type keyRec struct {
	ID     string `json:"id"`
	File   string `json:"file"`
	Off    int64  `json:"off"`
	Len    int    `json:"len"`
	Used   int    `json:"used"`
	Charge string `json:"charge"`
}

type pending struct {
	Charge string    `json:"charge"`
	File   *keyFile  `json:"file"`
	Keys   []*keyRec `json:"keys"`
	Hash   []byte    `json:"hash"`
	Bytes  int64     `json:"bytes"`
}

// ChargeLog is one committed charge as the device remembers it.
type ChargeLog struct {
	ID    string    `json:"id"`
	Keys  int       `json:"keys"`
	Bytes int64     `json:"bytes"`
	Hash  []byte    `json:"hash"`
	At    time.Time `json:"at"`
}

// parseMetadata decodes and validates a decrypted metadata body.
func parseMetadata(b []byte) (*metadata, error) {
	var m metadata
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", ErrCorrupt, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after metadata", ErrCorrupt)
	}
	if m.Version != 1 || m.Info.Validate() != nil || len(m.PrivateKey) == 0 {
		return nil, fmt.Errorf("%w: metadata fields", ErrCorrupt)
	}
	files := map[string]*keyFile{}
	for _, f := range m.Files {
		if f == nil || !validFileName(f.Name) || len(f.ID) != 16 || len(f.Hash) != 32 || f.Size < 0 || files[f.Name] != nil {
			return nil, fmt.Errorf("%w: key file entry", ErrCorrupt)
		}
		files[f.Name] = f
	}
	ids := map[string]bool{}
	checkKeys := func(keys []*keyRec, fs map[string]*keyFile) error {
		for _, k := range keys {
			if k == nil || !ValidKeyID(k.ID) || ids[k.ID] || k.Len <= 0 || k.Len > MaxKeyLen || k.Used < 0 || k.Used > k.Len || k.Off < 0 {
				return fmt.Errorf("%w: key entry", ErrCorrupt)
			}
			f := fs[k.File]
			if f == nil || k.Off+int64(k.Len) > f.Size {
				return fmt.Errorf("%w: key %s outside its file", ErrCorrupt, k.ID)
			}
			ids[k.ID] = true
		}
		return nil
	}
	if err := checkKeys(m.Keys, files); err != nil {
		return nil, err
	}
	if p := m.Pending; p != nil {
		if !ValidID(p.Charge) || p.File == nil || !validFileName(p.File.Name) || len(p.File.ID) != 16 || len(p.File.Hash) != 32 || files[p.File.Name] != nil || len(p.Hash) != 32 {
			return nil, fmt.Errorf("%w: pending charge entry", ErrCorrupt)
		}
		if err := checkKeys(p.Keys, map[string]*keyFile{p.File.Name: p.File}); err != nil {
			return nil, err
		}
	}
	for _, c := range m.Charges {
		if c == nil {
			return nil, fmt.Errorf("%w: charge log entry", ErrCorrupt)
		}
	}
	return &m, nil
}

func validFileName(s string) bool {
	if !strings.HasPrefix(s, keyPrefix) || !strings.HasSuffix(s, keySuffix) {
		return false
	}
	mid := strings.TrimSuffix(strings.TrimPrefix(s, keyPrefix), keySuffix)
	_, err := hex.DecodeString(mid)
	return err == nil && len(mid) == 32
}

// Device is an opened (PIN-verified) store.
type Device struct {
	dir string
	opt Options

	mu    sync.Mutex
	hdr   *header
	dek   []byte
	meta  *metadata
	key   *ecdsa.PrivateKey // signs only (certificate, channel, proofs)
	dec   *ecdsa.PrivateKey // decrypts only (ECIES)
	cert  *x509.Certificate
	lease *lease // reserved segment bytes (TakeSegment)
}

// Manufacture creates a new store in dir (created if missing, must not hold
// a store): it generates the device key pair inside the store, a random data
// key, and protects it with pin and puk. The device has no certificate yet.
func Manufacture(dir string, info Info, pin, puk []byte, opts Options) error {
	opts = opts.withDefaults()
	if err := info.Validate(); err != nil {
		return err
	}
	if err := checkPIN("PIN", pin); err != nil {
		return err
	}
	if err := checkPIN("PUK", puk); err != nil {
		return err
	}
	if err := opts.KDF.check(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("device: create %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, StoreFile)); err == nil {
		return fmt.Errorf("%w: %s", ErrExists, dir)
	}
	sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("device: generate key pair: %w", err)
	}
	skDER, err := x509.MarshalPKCS8PrivateKey(sk)
	if err != nil {
		return fmt.Errorf("device: encode key: %w", err)
	}
	dk, dkDER, err := newDecKey()
	if err != nil {
		return err
	}
	h := &header{kdf: opts.KDF}
	dek := make([]byte, 32)
	for _, b := range [][]byte{h.storeID[:], h.pinSalt[:], h.pukSalt[:], dek} {
		if _, err := rand.Read(b); err != nil {
			return err
		}
	}
	if h.pinWrap, err = wrapKey(opts.KDF.derive(pin, h.pinSalt[:]), dek, wrapAD(h, "pin")); err != nil {
		return err
	}
	if h.pukWrap, err = wrapKey(opts.KDF.derive(puk, h.pukSalt[:]), dek, wrapAD(h, "puk")); err != nil {
		return err
	}
	d := &Device{dir: dir, opt: opts, hdr: h, dek: dek, key: sk, dec: dk,
		meta: &metadata{Version: 1, Info: info, Created: time.Now().UTC(), PrivateKey: skDER, DecKey: dkDER}}
	ib, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := writeAtomic(dir, InfoFile, ib); err != nil {
		return err
	}
	// Counter first: a store without a counter file reads as locked.
	if err := writeAtomic(dir, CounterFile, (&counters{storeID: h.storeID}).marshal()); err != nil {
		return err
	}
	return d.saveLocked()
}

// Open verifies pin and returns the unlocked device. The wrong-PIN counter
// is incremented and synced before the PIN is checked and reset after a
// correct one. Errors: ErrNotFound, ErrLocked, ErrBlocked, ErrWrongPIN
// (wrapped in *PINError with the tries left), ErrCorrupt.
func Open(dir string, pin []byte, opts Options) (*Device, error) {
	opts = opts.withDefaults()
	h, body, err := readStore(dir)
	if err != nil {
		return nil, err
	}
	c, err := readCounters(dir, h)
	if err != nil {
		return nil, err
	}
	if int(c.pukFail) >= opts.MaxPUKTries {
		return nil, ErrBlocked
	}
	if int(c.pinFail) >= opts.MaxPINTries {
		return nil, ErrLocked
	}
	c.pinFail++
	if err := writeAtomic(dir, CounterFile, c.marshal()); err != nil {
		return nil, err
	}
	dek, err := unwrapKey(h.kdf.derive(pin, h.pinSalt[:]), h.pinWrap, wrapAD(h, "pin"))
	if err != nil {
		left := opts.MaxPINTries - int(c.pinFail)
		if left <= 0 {
			return nil, &PINError{Left: 0, Err: ErrLocked}
		}
		return nil, &PINError{Left: left, Err: ErrWrongPIN}
	}
	c.pinFail = 0
	if err := writeAtomic(dir, CounterFile, c.marshal()); err != nil {
		return nil, err
	}
	return load(dir, opts, h, dek, body)
}

// PINError is a failed PIN or PUK check with the tries left.
type PINError struct {
	Left int
	Err  error
}

func (e *PINError) Error() string { return fmt.Sprintf("%v (%d tries left)", e.Err, e.Left) }
func (e *PINError) Unwrap() error { return e.Err }

// Unlock releases a locked device with the administrator unlock code and
// sets newPIN. Wrong PUKs are counted (ErrBlocked after MaxPUKTries).
func Unlock(dir string, puk, newPIN []byte, opts Options) error {
	opts = opts.withDefaults()
	if err := checkPIN("new PIN", newPIN); err != nil {
		return err
	}
	h, body, err := readStore(dir)
	if err != nil {
		return err
	}
	c, err := readCounters(dir, h)
	if errors.Is(err, ErrLocked) {
		// Missing or foreign counter file: deleting it must not reset the
		// PUK counter, so the PUK gets one last try.
		c = &counters{storeID: h.storeID, pukFail: uint32(opts.MaxPUKTries - 1)}
	} else if err != nil {
		return err
	}
	if int(c.pukFail) >= opts.MaxPUKTries {
		return ErrBlocked
	}
	c.pukFail++
	if err := writeAtomic(dir, CounterFile, c.marshal()); err != nil {
		return err
	}
	dek, err := unwrapKey(h.kdf.derive(puk, h.pukSalt[:]), h.pukWrap, wrapAD(h, "puk"))
	if err != nil {
		left := opts.MaxPUKTries - int(c.pukFail)
		if left <= 0 {
			return &PINError{Left: 0, Err: ErrBlocked}
		}
		return &PINError{Left: left, Err: ErrWrongPUK}
	}
	d, err := load(dir, opts, h, dek, body)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.ChangePIN(newPIN); err != nil {
		return err
	}
	return writeAtomic(dir, CounterFile, (&counters{storeID: h.storeID}).marshal())
}

// Peek reads the device's identity without the PIN, as a card's hardware
// serial can be read before login. It is an unauthenticated hint (used to
// report wrong PINs to the platform); after Open, Info is authoritative.
func Peek(dir string) (Info, error) {
	var i Info
	b, err := readLimited(filepath.Join(dir, InfoFile), 4096)
	if errors.Is(err, os.ErrNotExist) {
		return i, fmt.Errorf("%w: %s", ErrNotFound, dir)
	}
	if err != nil {
		return i, fmt.Errorf("device: read info: %w", err)
	}
	return parseInfo(b)
}

func parseInfo(b []byte) (Info, error) {
	var i Info
	if err := json.Unmarshal(b, &i); err != nil {
		return Info{}, fmt.Errorf("%w: info file: %v", ErrCorrupt, err)
	}
	if err := i.Validate(); err != nil {
		return Info{}, fmt.Errorf("%w: info file: %v", ErrCorrupt, err)
	}
	return i, nil
}

func readStore(dir string) (*header, []byte, error) {
	data, err := readLimited(filepath.Join(dir, StoreFile), maxBodyLen+headerLen+64)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, dir)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("device: read store: %w", err)
	}
	return parseStore(data)
}

func readCounters(dir string, h *header) (*counters, error) {
	b, err := readLimited(filepath.Join(dir, CounterFile), 1024)
	if err != nil {
		return nil, fmt.Errorf("%w (PIN counter unreadable: %v)", ErrLocked, err)
	}
	c, err := parseCounters(b)
	if err != nil || c.storeID != h.storeID {
		return nil, fmt.Errorf("%w (PIN counter missing, malformed or from another device)", ErrLocked)
	}
	return c, nil
}

func load(dir string, opts Options, h *header, dek, body []byte) (*Device, error) {
	pt, err := openBody(h, dek, body)
	if err != nil {
		return nil, err
	}
	m, err := parseMetadata(pt)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(m.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("%w: private key: %v", ErrCorrupt, err)
	}
	sk, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: private key type %T", ErrCorrupt, k)
	}
	d := &Device{dir: dir, opt: opts, hdr: h, dek: dek, meta: m, key: sk}
	if len(m.DecKey) > 0 {
		k, err := x509.ParsePKCS8PrivateKey(m.DecKey)
		if err != nil {
			return nil, fmt.Errorf("%w: decryption key: %v", ErrCorrupt, err)
		}
		if d.dec, ok = k.(*ecdsa.PrivateKey); !ok || d.dec.Curve != elliptic.P256() || d.dec.PublicKey.Equal(&sk.PublicKey) {
			return nil, fmt.Errorf("%w: decryption key", ErrCorrupt)
		}
	}
	if len(m.Cert) > 0 {
		if d.cert, err = x509.ParseCertificate(m.Cert); err != nil {
			return nil, fmt.Errorf("%w: certificate: %v", ErrCorrupt, err)
		}
	}
	for _, f := range m.Files {
		if err := verifyKeyFile(dir, f); err != nil {
			return nil, err
		}
	}
	if m.Pending != nil {
		if err := verifyKeyFile(dir, m.Pending.File); err != nil {
			return nil, err
		}
	}
	if d.dec == nil {
		// A store from before the keys were separated: give it its own
		// decryption key now (its certificate registers none, so the
		// device must be initialised again before anything is sent to it).
		var dkDER []byte
		if d.dec, dkDER, err = newDecKey(); err != nil {
			return nil, err
		}
		d.meta.DecKey = dkDER
		if err := d.saveLocked(); err != nil {
			return nil, err
		}
	}
	d.sweep()
	return d, nil
}

// newDecKey generates a P-256 decryption key and its PKCS #8 encoding.
func newDecKey() (*ecdsa.PrivateKey, []byte, error) {
	dk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("device: generate decryption key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(dk)
	if err != nil {
		return nil, nil, fmt.Errorf("device: encode decryption key: %w", err)
	}
	return dk, der, nil
}

// sweep removes temporary files and key files the metadata does not
// reference (left by a crash mid-charge).
func (d *Device) sweep() {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return
	}
	keep := map[string]bool{}
	for _, f := range d.meta.Files {
		keep[f.Name] = true
	}
	if d.meta.Pending != nil {
		keep[d.meta.Pending.File.Name] = true
	}
	for _, e := range ents {
		n := e.Name()
		if strings.Contains(n, tmpMarker) || (strings.HasPrefix(n, keyPrefix) && strings.HasSuffix(n, keySuffix) && !keep[n]) {
			os.Remove(filepath.Join(d.dir, n))
		}
	}
}

// saveLocked rewrites the store file (d.mu held).
func (d *Device) saveLocked() error {
	body, err := json.Marshal(d.meta)
	if err != nil {
		return fmt.Errorf("device: encode metadata: %w", err)
	}
	data, err := sealBody(d.hdr, d.dek, body)
	if err != nil {
		return err
	}
	return writeAtomic(d.dir, StoreFile, data)
}

func (d *Device) check() error {
	if d.dek == nil {
		return ErrClosed
	}
	return nil
}

// Close forgets the data key.
func (d *Device) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.dek)
	d.dek = nil
}

// Dir is the device directory.
func (d *Device) Dir() string { return d.dir }

// Info returns the device identity.
func (d *Device) Info() Info { return d.meta.Info }

// PublicKey returns the device's signing public key (its certificate's).
func (d *Device) PublicKey() *ecdsa.PublicKey { return &d.key.PublicKey }

// EncryptionPublicKey returns the public key of the device's separate
// decryption key: what Encrypt takes (registered in the device certificate,
// see keycharge.DeviceEncryptionKey).
func (d *Device) EncryptionPublicKey() *ecdsa.PublicKey { return &d.dec.PublicKey }

// Signer returns a crypto.Signer over the device key; it exposes Public and
// Sign only (no way to read the private key).
func (d *Device) Signer() crypto.Signer { return &signer{d: d} }

type signer struct{ d *Device }

func (s *signer) Public() crypto.PublicKey { return &s.d.key.PublicKey }
func (s *signer) Sign(r io.Reader, digest []byte, o crypto.SignerOpts) ([]byte, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	if err := s.d.check(); err != nil {
		return nil, err
	}
	return s.d.key.Sign(r, digest, o)
}

// Certificate returns the device certificate (nil before initialisation).
func (d *Device) Certificate() *x509.Certificate {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cert
}

// InstallCertificate stores the certificate the platform CA issued for this
// device's key.
func (d *Device) InstallCertificate(cert *x509.Certificate) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&d.key.PublicKey) {
		return ErrCertificateKey
	}
	old := d.meta.Cert
	d.meta.Cert = cert.Raw
	if err := d.saveLocked(); err != nil {
		d.meta.Cert = old
		return err
	}
	d.cert = cert
	return nil
}

// ChangePIN re-wraps the data key under newPIN (fresh salt).
func (d *Device) ChangePIN(newPIN []byte) error {
	if err := checkPIN("PIN", newPIN); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	h := *d.hdr
	if _, err := rand.Read(h.pinSalt[:]); err != nil {
		return err
	}
	// The PUK wrap's additional data does not cover the PIN salt, so it stays valid.
	var err error
	if h.pinWrap, err = wrapKey(h.kdf.derive(newPIN, h.pinSalt[:]), d.dek, wrapAD(&h, "pin")); err != nil {
		return err
	}
	old := d.hdr
	d.hdr = &h
	if err := d.saveLocked(); err != nil {
		d.hdr = old
		return err
	}
	return nil
}
