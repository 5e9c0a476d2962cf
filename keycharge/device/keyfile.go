package device

import (
	"bytes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
)

// Key files: keyMagic ‖ file ID (16) ‖ chunk size (u32) ‖ chunks, each the
// AES-256-GCM sealing of up to chunkSize plaintext bytes under a per-file
// subkey HKDF-SHA256(DEK, file ID), nonce = chunk index (u64) ‖ last flag
// (u32), additional data = the file header. Every file has at least one chunk
// and only the final chunk carries the last flag (STREAM, Hoang–Reyhanitabar–
// Rogaway–Vizár 2015), so truncation, extension and reordering all fail.
const (
	chunkSize     = 64 << 10
	keyFileHeader = 8 + 16 + 4
)

func fileAEAD(dek []byte, fileID []byte) (cipher.AEAD, error) {
	sub, err := hkdf.Key(sha256.New, dek, fileID, "qkmsd key file v1", 32)
	if err != nil {
		return nil, err
	}
	return newGCM(sub)
}

func chunkNonce(i uint64, last bool) []byte {
	n := make([]byte, 12)
	binary.BigEndian.PutUint64(n, i)
	if last {
		n[11] = 1
	}
	return n
}

func keyFileHead(fileID []byte) []byte {
	b := make([]byte, 0, keyFileHeader)
	b = append(b, keyMagic[:]...)
	b = append(b, fileID...)
	return binary.BigEndian.AppendUint32(b, chunkSize)
}

// keyFileWriter streams sealed chunks into a temporary file.
type keyFileWriter struct {
	f     *os.File
	aead  cipher.AEAD
	head  []byte
	buf   []byte
	chunk uint64
	size  int64     // plaintext bytes
	sum   hash.Hash // SHA-256 of the file bytes
	out   []byte
}

func newKeyFileWriter(f *os.File, dek, fileID []byte) (*keyFileWriter, error) {
	a, err := fileAEAD(dek, fileID)
	if err != nil {
		return nil, err
	}
	w := &keyFileWriter{f: f, aead: a, head: keyFileHead(fileID), buf: make([]byte, 0, chunkSize), sum: sha256.New()}
	if err := w.raw(w.head); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *keyFileWriter) raw(b []byte) error {
	w.sum.Write(b)
	if _, err := w.f.Write(b); err != nil {
		return fmt.Errorf("device: write key file: %w", err)
	}
	return nil
}

func (w *keyFileWriter) Write(p []byte) error {
	for len(p) > 0 {
		if len(w.buf) == chunkSize {
			if err := w.flush(false); err != nil {
				return err
			}
		}
		n := min(chunkSize-len(w.buf), len(p))
		w.buf = append(w.buf, p[:n]...)
		p = p[n:]
		w.size += int64(n)
	}
	return nil
}

func (w *keyFileWriter) flush(last bool) error {
	w.out = w.aead.Seal(w.out[:0], chunkNonce(w.chunk, last), w.buf, w.head)
	w.chunk++
	w.buf = w.buf[:0]
	return w.raw(w.out)
}

// finish seals the final chunk and returns the file's SHA-256.
func (w *keyFileWriter) finish() ([]byte, error) {
	if err := w.flush(true); err != nil {
		return nil, err
	}
	return w.sum.Sum(nil), nil
}

func chunkCount(size int64) int64 {
	if size == 0 {
		return 1
	}
	return (size + chunkSize - 1) / chunkSize
}

// keyFileReader reads plaintext ranges of a committed key file.
type keyFileReader struct {
	path string
	size int64
	aead cipher.AEAD
	head []byte
}

func openKeyFile(dir string, kf *keyFile, dek []byte) (*keyFileReader, error) {
	a, err := fileAEAD(dek, kf.ID)
	if err != nil {
		return nil, err
	}
	return &keyFileReader{path: filepath.Join(dir, kf.Name), size: kf.Size, aead: a, head: keyFileHead(kf.ID)}, nil
}

// verifyKeyFile checks the whole file against its recorded hash and length.
func verifyKeyFile(dir string, kf *keyFile) error {
	f, err := os.Open(filepath.Join(dir, kf.Name))
	if err != nil {
		return fmt.Errorf("%w: key file %s: %v", ErrCorrupt, kf.Name, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("device: read key file %s: %w", kf.Name, err)
	}
	want := keyFileHeader + kf.Size + chunkCount(kf.Size)*16
	if n != want || !bytes.Equal(h.Sum(nil), kf.Hash) {
		return fmt.Errorf("%w: key file %s does not match its recorded hash", ErrCorrupt, kf.Name)
	}
	return nil
}

// readRange returns plaintext bytes [off, off+n).
func (r *keyFileReader) readRange(off int64, n int) ([]byte, error) {
	if off < 0 || n < 0 || off+int64(n) > r.size {
		return nil, fmt.Errorf("%w: range %d+%d outside key file of %d bytes", ErrCorrupt, off, n, r.size)
	}
	f, err := os.Open(r.path)
	if err != nil {
		return nil, fmt.Errorf("%w: key file: %v", ErrCorrupt, err)
	}
	defer f.Close()
	out := make([]byte, 0, n)
	last := uint64(chunkCount(r.size) - 1)
	ct := make([]byte, chunkSize+16)
	for len(out) < n {
		pos := off + int64(len(out))
		ci := uint64(pos / chunkSize)
		clen := int64(chunkSize)
		if ci == last {
			clen = r.size - int64(ci)*chunkSize
		}
		c := ct[:clen+16]
		if _, err := f.ReadAt(c, keyFileHeader+int64(ci)*(chunkSize+16)); err != nil {
			return nil, fmt.Errorf("%w: read key chunk %d: %v", ErrCorrupt, ci, err)
		}
		pt, err := r.aead.Open(nil, chunkNonce(ci, ci == last), c, r.head)
		if err != nil {
			return nil, fmt.Errorf("%w: key chunk %d failed authentication", ErrCorrupt, ci)
		}
		start := pos - int64(ci)*chunkSize
		take := min(int64(n-len(out)), int64(len(pt))-start)
		out = append(out, pt[start:start+take]...)
	}
	return out, nil
}
