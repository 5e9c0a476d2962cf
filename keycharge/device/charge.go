package device

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// ChargeHash is the consistency check value of a charge: SHA-256 over a
// domain label, the charge ID and, in charge order (the "coding" both sides
// agree on), every key's ID, length and SHA-256 digest, each
// length-prefixed, then the key count — a hash list, so that a side that
// already knows the keys' digests (the platform, for keys it pooled in
// advance) can check a charge without re-reading megabytes of key. The
// charger, the device and the platform compute it independently.
type ChargeHash struct {
	h hash.Hash
	n uint64
}

// NewChargeHash starts the hash of charge chargeID.
func NewChargeHash(chargeID string) *ChargeHash {
	c := &ChargeHash{h: sha256.New()}
	c.h.Write([]byte("qshield qkc charge v2\x00"))
	c.str(chargeID)
	return c
}

func (c *ChargeHash) str(s string) {
	var l [2]byte
	binary.BigEndian.PutUint16(l[:], uint16(len(s)))
	c.h.Write(l[:])
	c.h.Write([]byte(s))
}

// KeyDigest is the per-key digest used by ChargeHash.
func KeyDigest(key []byte) []byte {
	d := sha256.Sum256(key)
	return d[:]
}

// Add appends one key.
func (c *ChargeHash) Add(id string, key []byte) { c.AddDigest(id, len(key), KeyDigest(key)) }

// AddDigest appends one key given its length and KeyDigest.
func (c *ChargeHash) AddDigest(id string, length int, digest []byte) {
	c.str(id)
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(length))
	c.h.Write(l[:])
	c.h.Write(digest)
	c.n++
}

// Sum returns the hash (it does not change the state).
func (c *ChargeHash) Sum() []byte {
	st, _ := c.h.(encoding.BinaryMarshaler).MarshalBinary()
	cl := sha256.New()
	_ = cl.(encoding.BinaryUnmarshaler).UnmarshalBinary(st)
	var l [8]byte
	binary.BigEndian.PutUint64(l[:], c.n)
	cl.Write(l[:])
	return cl.Sum(nil)
}

// PendingCharge describes a staged, uncommitted charge.
type PendingCharge struct {
	ID    string
	Keys  int
	Bytes int64
	Hash  []byte
}

// Pending returns the staged charge, or nil.
func (d *Device) Pending() *PendingCharge {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.meta.Pending
	if p == nil {
		return nil
	}
	return &PendingCharge{ID: p.Charge, Keys: len(p.Keys), Bytes: p.Bytes, Hash: slices.Clone(p.Hash)}
}

// ChargeWriter writes the keys of one charge into a new key file. Nothing is
// visible in the device until Stage, and nothing is usable until
// CommitCharge.
type ChargeWriter struct {
	d      *Device
	charge string
	f      *os.File
	name   string
	fileID []byte
	w      *keyFileWriter
	keys   []*keyRec
	seen   map[string]bool
	hash   *ChargeHash
	done   bool
}

// BeginCharge starts writing charge chargeID. It fails with ErrPending while
// another charge is staged (recover it first).
func (d *Device) BeginCharge(chargeID string) (*ChargeWriter, error) {
	if !ValidID(chargeID) {
		return nil, fmt.Errorf("%w: charge ID %q", ErrInvalid, chargeID)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return nil, err
	}
	if d.meta.Pending != nil {
		return nil, fmt.Errorf("%w: charge %s", ErrPending, d.meta.Pending.Charge)
	}
	if d.cert == nil {
		return nil, ErrNoCertificate
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	name := keyPrefix + hex.EncodeToString(id) + keySuffix
	f, err := os.CreateTemp(d.dir, name+tmpMarker+"*")
	if err != nil {
		return nil, fmt.Errorf("device: create key file: %w", err)
	}
	w, err := newKeyFileWriter(f, d.dek, id)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	seen := map[string]bool{}
	for _, k := range d.meta.Keys {
		seen[k.ID] = true
	}
	return &ChargeWriter{d: d, charge: chargeID, f: f, name: name, fileID: id, w: w, seen: seen, hash: NewChargeHash(chargeID)}, nil
}

// Add appends one key. Key IDs must be new to the device.
func (c *ChargeWriter) Add(id string, key []byte) error {
	if c.done {
		return ErrClosed
	}
	if !ValidKeyID(id) || len(key) == 0 || len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key %q of %d bytes", ErrInvalid, id, len(key))
	}
	if c.seen[id] {
		return fmt.Errorf("%w: key ID %s already on the device", ErrInvalid, id)
	}
	off := c.w.size
	if err := c.w.Write(key); err != nil {
		return err
	}
	c.seen[id] = true
	c.keys = append(c.keys, &keyRec{ID: id, File: c.name, Off: off, Len: len(key), Charge: c.charge})
	c.hash.Add(id, key)
	return nil
}

// Hash is the charge hash over the keys added so far.
func (c *ChargeWriter) Hash() []byte { return c.hash.Sum() }

// Abort drops the charge (nothing was recorded).
func (c *ChargeWriter) Abort() {
	if c.done {
		return
	}
	c.done = true
	c.f.Close()
	os.Remove(c.f.Name())
}

// Stage syncs the key file into place and records the charge as pending in
// the device metadata (the keys are still unusable). It returns the charge
// hash.
func (c *ChargeWriter) Stage() ([]byte, error) {
	if c.done {
		return nil, ErrClosed
	}
	c.done = true
	tmp := c.f.Name()
	fail := func(err error) ([]byte, error) {
		c.f.Close()
		os.Remove(tmp)
		return nil, err
	}
	if len(c.keys) == 0 {
		return fail(fmt.Errorf("%w: a charge needs at least one key", ErrInvalid))
	}
	sum, err := c.w.finish()
	if err != nil {
		return fail(err)
	}
	if err := c.f.Sync(); err != nil {
		return fail(fmt.Errorf("device: sync key file: %w", err))
	}
	if err := c.f.Close(); err != nil {
		return fail(fmt.Errorf("device: close key file: %w", err))
	}
	final := filepath.Join(c.d.dir, c.name)
	if err := os.Rename(tmp, final); err != nil {
		return fail(fmt.Errorf("device: rename key file: %w", err))
	}
	if err := syncDir(c.d.dir); err != nil {
		os.Remove(final)
		return nil, err
	}
	h := c.hash.Sum()
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		os.Remove(final)
		return nil, err
	}
	if d.meta.Pending != nil {
		os.Remove(final)
		return nil, ErrPending
	}
	d.meta.Pending = &pending{Charge: c.charge, File: &keyFile{Name: c.name, ID: c.fileID, Size: c.w.size, Hash: sum, Charge: c.charge},
		Keys: c.keys, Hash: h, Bytes: c.w.size}
	if err := d.saveLocked(); err != nil {
		d.meta.Pending = nil
		os.Remove(final)
		return nil, err
	}
	return h, nil
}

// CommitCharge makes the pending charge chargeID usable, after the platform
// confirmed (consistency check passed and charge recorded) with hash.
func (d *Device) CommitCharge(chargeID string, hash []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	p := d.meta.Pending
	if p == nil || p.Charge != chargeID {
		return fmt.Errorf("%w: %s", ErrNoPending, chargeID)
	}
	if subtle.ConstantTimeCompare(p.Hash, hash) != 1 {
		return ErrHashMismatch
	}
	old := d.meta
	m := *old
	m.Files = append(slices.Clone(old.Files), p.File)
	m.Keys = append(slices.Clone(old.Keys), p.Keys...)
	m.Charges = append(slices.Clone(old.Charges), &ChargeLog{ID: p.Charge, Keys: len(p.Keys), Bytes: p.Bytes, Hash: p.Hash, At: time.Now().UTC()})
	m.Pending = nil
	d.meta = &m
	if err := d.saveLocked(); err != nil {
		d.meta = old
		return err
	}
	return nil
}

// DiscardCharge drops the pending charge chargeID (the platform did not
// record it) and deletes its key file.
func (d *Device) DiscardCharge(chargeID string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	p := d.meta.Pending
	if p == nil || p.Charge != chargeID {
		return fmt.Errorf("%w: %s", ErrNoPending, chargeID)
	}
	d.meta.Pending = nil
	if err := d.saveLocked(); err != nil {
		d.meta.Pending = p
		return err
	}
	os.Remove(filepath.Join(d.dir, p.File.Name))
	return syncDir(d.dir)
}

// KeyInfo describes one charged key (no key bytes).
type KeyInfo struct {
	ID     string `json:"id"`
	Len    int    `json:"len"`
	Used   int    `json:"used"`
	Charge string `json:"charge"`
}

// Keys lists the usable (committed) keys in charge order; Used counts
// leased bytes (see TakeSegment) as used.
func (d *Device) Keys() []KeyInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]KeyInfo, len(d.meta.Keys))
	for i, k := range d.meta.Keys {
		out[i] = KeyInfo{ID: k.ID, Len: k.Len, Used: k.Used, Charge: k.Charge}
	}
	return out
}

// Charges returns the committed charges.
func (d *Device) Charges() []ChargeLog {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]ChargeLog, len(d.meta.Charges))
	for i, c := range d.meta.Charges {
		out[i] = *c
	}
	return out
}

// Remaining is the unused committed key volume in bytes.
func (d *Device) Remaining() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var n int64
	for _, k := range d.meta.Keys {
		n += int64(k.Len - k.Used)
	}
	if d.lease != nil {
		n += int64(d.lease.end - d.lease.next)
	}
	return n
}

// Segment is a piece of charged key handed out once.
type Segment struct {
	KeyID  string
	Offset int
	Key    []byte
}

// TakeSegment hands out the next n unused bytes of one charged key and
// marks them used — persisted before it returns, so a segment is never
// handed out twice, even across crashes. Keys with fewer than n bytes left
// are skipped (their tail is marked used).
//
// To spare a metadata rewrite per segment, the device reserves a lease of
// Options.SegmentLease bytes (default 4 KiB) of one key at a time: the
// lease is marked used on disk first, and segments are then handed out of
// it from memory. A crash or Close wastes the rest of the lease — never
// hands it out again.
func (d *Device) TakeSegment(n int) (Segment, error) {
	if n <= 0 || n > MaxKeyLen {
		return Segment{}, fmt.Errorf("%w: segment length %d", ErrInvalid, n)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return Segment{}, err
	}
	if l := d.lease; l != nil && l.end-l.next >= n {
		kb, err := d.readKeyLocked(l.key, l.next, n)
		if err != nil {
			return Segment{}, err
		}
		seg := Segment{KeyID: l.key.ID, Offset: l.next, Key: kb}
		l.next += n
		return seg, nil
	}
	d.lease = nil
	idx := -1
	for i, k := range d.meta.Keys {
		if k.Len-k.Used >= n {
			idx = i
			break
		}
	}
	if idx < 0 {
		return Segment{}, ErrExhausted
	}
	k := d.meta.Keys[idx]
	kb, err := d.readKeyLocked(k, k.Used, n)
	if err != nil {
		return Segment{}, err
	}
	reserve := n
	if d.opt.SegmentLease > n {
		reserve = min(d.opt.SegmentLease, k.Len-k.Used)
	}
	// Mark used: this key from Used to Used+reserve, and the short tails
	// of the keys skipped before it.
	type undo struct {
		k    *keyRec
		used int
	}
	var undos []undo
	for _, s := range d.meta.Keys[:idx] {
		if s.Used < s.Len {
			undos = append(undos, undo{s, s.Used})
			s.Used = s.Len
		}
	}
	seg := Segment{KeyID: k.ID, Offset: k.Used, Key: kb}
	undos = append(undos, undo{k, k.Used})
	k.Used += reserve
	if err := d.saveLocked(); err != nil {
		for _, u := range undos {
			u.k.Used = u.used
		}
		return Segment{}, err
	}
	if reserve > n {
		d.lease = &lease{key: k, next: seg.Offset + n, end: k.Used}
	}
	return seg, nil
}

// lease is the reserved, not yet handed out, part of one key.
type lease struct {
	key       *keyRec
	next, end int
}

func (d *Device) readKeyLocked(k *keyRec, off, n int) ([]byte, error) {
	var kf *keyFile
	for _, f := range d.meta.Files {
		if f.Name == k.File {
			kf = f
		}
	}
	if kf == nil {
		return nil, fmt.Errorf("%w: key file of %s missing", ErrCorrupt, k.ID)
	}
	r, err := openKeyFile(d.dir, kf, d.dek)
	if err != nil {
		return nil, err
	}
	return r.readRange(k.Off+int64(off), n)
}

// Digest is SHA-256 over every committed key (sorted by ID: ID, length,
// used, bytes). The platform computes the same over its copy
// (keycharge.QKMP.DeviceDigest), so tests and operators can check that the
// two hold exactly the same key with the same usage.
func (d *Device) Digest() ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return nil, err
	}
	keys := slices.Clone(d.meta.Keys)
	slices.SortFunc(keys, func(a, b *keyRec) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	dg := NewDigest()
	for _, k := range keys {
		kb, err := d.readKeyLocked(k, 0, k.Len)
		if err != nil {
			return nil, err
		}
		dg.Add(k.ID, k.Used, kb)
	}
	return dg.Sum(), nil
}

// Digester accumulates a Digest; callers add keys sorted by ID.
type Digester struct{ c *ChargeHash }

// NewDigest starts a digest.
func NewDigest() *Digester { return &Digester{c: NewChargeHash("digest")} }

// Add adds one key with its used count.
func (k *Digester) Add(id string, used int, key []byte) {
	var u [4]byte
	binary.BigEndian.PutUint32(u[:], uint32(used))
	k.c.h.Write(u[:])
	k.c.Add(id, key)
}

// Sum returns the digest.
func (k *Digester) Sum() []byte { return k.c.Sum() }
