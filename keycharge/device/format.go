package device

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/crypto/argon2"
)

// File names inside a device directory.
const (
	StoreFile   = "qkmsd.store"
	CounterFile = "qkmsd.pinctr"
	InfoFile    = "qkmsd.info"
	keyPrefix   = "keys-"
	keySuffix   = ".dat"
	tmpMarker   = ".tmp-"
)

var (
	storeMagic   = [8]byte{'Q', 'K', 'M', 'S', 'D', 'v', '1', '\n'}
	counterMagic = [8]byte{'Q', 'K', 'M', 'S', 'D', 'c', 't', 'r'}
	keyMagic     = [8]byte{'Q', 'K', 'M', 'S', 'D', 'k', 'e', 'y'}
)

// KDFParams are argon2id parameters (RFC 9106).
type KDFParams struct {
	Time      uint32 // passes
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKDF is RFC 9106's second recommended option scaled to 64 MiB.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 2}

// Limits accepted when parsing a header (so a crafted file cannot make Open
// allocate gigabytes or spin for hours).
const (
	minKDFMem   = 8 * 1024
	maxKDFMem   = 1 << 20 // 1 GiB
	maxKDFTime  = 16
	maxThreads  = 16
	maxBodyLen  = 64 << 20
	wrapLen     = 12 + 32 + 16
	headerFixed = 8 + 16 + 4 + 4 + 1 + 16 + 16 // magic, store id, kdf, salts
	headerLen   = headerFixed + 2*wrapLen
)

func (p KDFParams) check() error {
	if p.Time < 1 || p.Time > maxKDFTime || p.MemoryKiB < minKDFMem || p.MemoryKiB > maxKDFMem || p.Threads < 1 || p.Threads > maxThreads {
		return fmt.Errorf("%w: KDF parameters t=%d m=%dKiB p=%d out of range", ErrCorrupt, p.Time, p.MemoryKiB, p.Threads)
	}
	return nil
}

func (p KDFParams) derive(secret, salt []byte) []byte {
	return argon2.IDKey(secret, salt, p.Time, p.MemoryKiB, p.Threads, 32)
}

// header is the plaintext (authenticated) head of the store file.
type header struct {
	storeID [16]byte
	kdf     KDFParams
	pinSalt [16]byte
	pukSalt [16]byte
	pinWrap [wrapLen]byte
	pukWrap [wrapLen]byte
}

func (h *header) fixed() []byte {
	b := make([]byte, 0, headerFixed)
	b = append(b, storeMagic[:]...)
	b = append(b, h.storeID[:]...)
	b = binary.BigEndian.AppendUint32(b, h.kdf.Time)
	b = binary.BigEndian.AppendUint32(b, h.kdf.MemoryKiB)
	b = append(b, h.kdf.Threads)
	b = append(b, h.pinSalt[:]...)
	b = append(b, h.pukSalt[:]...)
	return b
}

func (h *header) marshal() []byte {
	b := h.fixed()
	b = append(b, h.pinWrap[:]...)
	b = append(b, h.pukWrap[:]...)
	return b
}

// parseStore splits a store file into header and sealed body (nonce ‖ ct).
func parseStore(data []byte) (*header, []byte, error) {
	if len(data) < headerLen+12+4+16 {
		return nil, nil, fmt.Errorf("%w: store file too short (%d bytes)", ErrCorrupt, len(data))
	}
	if !bytes.Equal(data[:8], storeMagic[:]) {
		return nil, nil, fmt.Errorf("%w: not a QKMSD store (bad magic)", ErrCorrupt)
	}
	h := &header{}
	p := 8
	copy(h.storeID[:], data[p:p+16])
	p += 16
	h.kdf.Time = binary.BigEndian.Uint32(data[p:])
	h.kdf.MemoryKiB = binary.BigEndian.Uint32(data[p+4:])
	h.kdf.Threads = data[p+8]
	p += 9
	if err := h.kdf.check(); err != nil {
		return nil, nil, err
	}
	copy(h.pinSalt[:], data[p:p+16])
	p += 16
	copy(h.pukSalt[:], data[p:p+16])
	p += 16
	copy(h.pinWrap[:], data[p:p+wrapLen])
	p += wrapLen
	copy(h.pukWrap[:], data[p:p+wrapLen])
	p += wrapLen
	body := data[p:]
	n := binary.BigEndian.Uint32(body[12:16])
	if n > maxBodyLen || int64(n) != int64(len(body))-16 || n < 16 {
		return nil, nil, fmt.Errorf("%w: body length %d does not match the file (%d bytes)", ErrCorrupt, n, len(body)-16)
	}
	return h, body, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

func wrapKey(kek, dek, ad []byte) ([wrapLen]byte, error) {
	var out [wrapLen]byte
	g, err := newGCM(kek)
	if err != nil {
		return out, err
	}
	if _, err := rand.Read(out[:12]); err != nil {
		return out, err
	}
	g.Seal(out[12:12], out[:12], dek, ad)
	return out, nil
}

func unwrapKey(kek []byte, w [wrapLen]byte, ad []byte) ([]byte, error) {
	g, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	return g.Open(nil, w[:12], w[12:], ad)
}

// wrapAD is the additional data of a DEK wrap: magic, store ID, KDF
// parameters, the wrap's own salt and its label — not the other wrap's salt,
// so changing the PIN leaves the PUK wrap valid.
func wrapAD(h *header, label string) []byte {
	b := h.fixed()[:8+16+9]
	if label == "pin" {
		b = append(b, h.pinSalt[:]...)
	} else {
		b = append(b, h.pukSalt[:]...)
	}
	return append(b, label...)
}

// sealBody returns the store file bytes for header h and plaintext body.
func sealBody(h *header, dek, body []byte) ([]byte, error) {
	g, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	hb := h.marshal()
	out := make([]byte, 0, len(hb)+16+len(body)+16)
	out = append(out, hb...)
	var nonce [12]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	out = append(out, nonce[:]...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(body)+g.Overhead()))
	ad := out // header, nonce, length
	ad = append([]byte(nil), ad...)
	return g.Seal(out, nonce[:], body, ad), nil
}

func openBody(h *header, dek, sealed []byte) ([]byte, error) {
	g, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	ad := append(h.marshal(), sealed[:16]...)
	pt, err := g.Open(nil, sealed[:12], sealed[16:], ad)
	if err != nil {
		return nil, fmt.Errorf("%w: metadata failed authentication", ErrCorrupt)
	}
	return pt, nil
}

// counters is the wrong-PIN / wrong-PUK counter file.
type counters struct {
	storeID [16]byte
	pinFail uint32
	pukFail uint32
}

const counterLen = 8 + 16 + 4 + 4 + 4

func (c *counters) marshal() []byte {
	b := make([]byte, 0, counterLen)
	b = append(b, counterMagic[:]...)
	b = append(b, c.storeID[:]...)
	b = binary.BigEndian.AppendUint32(b, c.pinFail)
	b = binary.BigEndian.AppendUint32(b, c.pukFail)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

func parseCounters(b []byte) (*counters, error) {
	if len(b) != counterLen || !bytes.Equal(b[:8], counterMagic[:]) {
		return nil, fmt.Errorf("%w: malformed PIN counter file", ErrCorrupt)
	}
	if crc32.ChecksumIEEE(b[:counterLen-4]) != binary.BigEndian.Uint32(b[counterLen-4:]) {
		return nil, fmt.Errorf("%w: PIN counter checksum", ErrCorrupt)
	}
	c := &counters{}
	copy(c.storeID[:], b[8:24])
	c.pinFail = binary.BigEndian.Uint32(b[24:])
	c.pukFail = binary.BigEndian.Uint32(b[28:])
	return c, nil
}

// writeAtomic replaces dir/name with data: temporary file, fsync, rename,
// directory fsync.
func writeAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, name+tmpMarker+"*")
	if err != nil {
		return fmt.Errorf("device: create temporary file: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("device: write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("device: sync %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("device: close %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("device: rename %s: %w", name, err)
	}
	ok = true
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("device: open directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("device: sync directory: %w", err)
	}
	return nil
}

func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s larger than %d bytes", ErrCorrupt, filepath.Base(path), max)
	}
	return b, nil
}
