// Package seal encrypts records at rest: one sealer for every key, pool unit
// and secret qshield keeps in its database.
//
// Design:
//
//   - AEAD: AES-256-GCM with a random 96-bit nonce per record (at most 2^32
//     records per purpose key keeps the nonce-collision risk below 2^-32;
//     qshield's largest store, the KME pool, holds far fewer).
//   - Keys: every purpose has its own key, HKDF-SHA256(master, salt = none,
//     info = "qshield seal v1 " + purpose). A key leaked from one purpose
//     opens nothing of another, and one master key can serve them all.
//   - Versioned header: a sealed record is "QSL" || version (1) || nonce ||
//     ciphertext || tag. The header is authenticated (it is part of the
//     additional data), so a record cannot be relabelled; a later version
//     can change the cipher and still read version 1.
//   - Domain-separated additional data: header || len(purpose) || purpose ||
//     for each identity part len(part) || part, lengths as 2-byte big-endian.
//     A record sealed for one row (the identity: table, KME ID, unit ID, …)
//     does not open as another row's, nor as another purpose's, and no two
//     identities encode alike ("a","bc" differs from "ab","c").
//
// Records written by the earlier per-package sealers are read by those
// packages' migrations (see kme and keycharge) and rewritten in this format;
// pki's private-key sealer (pki.KeyEncryptor: argon2id or a raw key as the
// master key) writes a seal record behind its KDF header and reseals its
// earlier XChaCha20-Poly1305 blobs on load.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Errors.
var (
	// ErrFormat: the bytes are not a sealed record of a known version.
	ErrFormat = errors.New("seal: not a sealed record")
	// ErrOpen: the record does not open with this key, purpose and identity
	// (wrong master key, tampered record or a record of another row).
	ErrOpen = errors.New("seal: record does not open (wrong key, tampered, or another record's)")
)

const (
	magic     = "QSL"
	version1  = 1
	nonceSize = 12
	tagSize   = 16
	header    = len(magic) + 1
	// Overhead is what sealing adds to a plaintext.
	Overhead = header + nonceSize + tagSize
	// KeySize is the master key's size.
	KeySize = 32
	maxPart = 1<<16 - 1
)

// Sealer seals records of one purpose. It is safe for concurrent use.
type Sealer struct {
	purpose string
	aead    cipher.AEAD
}

// New returns the sealer for purpose (e.g. "kme unit") under a 32-byte
// master key. The master key is not kept.
func New(master []byte, purpose string) (*Sealer, error) {
	if len(master) != KeySize {
		return nil, fmt.Errorf("seal: master key is %d bytes, want %d", len(master), KeySize)
	}
	if purpose == "" || len(purpose) > maxPart {
		return nil, errors.New("seal: purpose must be 1 to 65535 bytes")
	}
	k, err := hkdf.Key(sha256.New, master, nil, "qshield seal v1 "+purpose, 32)
	if err != nil {
		return nil, fmt.Errorf("seal: derive key: %w", err)
	}
	defer clear(k)
	blk, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return &Sealer{purpose: purpose, aead: aead}, nil
}

// Purpose returns the sealer's purpose label.
func (s *Sealer) Purpose() string { return s.purpose }

// Seal encrypts plaintext for the record named by id (e.g. KME ID and unit
// ID); Open must be given the same id.
func (s *Sealer) Seal(plaintext []byte, id ...string) ([]byte, error) {
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	return s.sealWithNonce(nonce[:], plaintext, id)
}

func (s *Sealer) sealWithNonce(nonce, plaintext []byte, id []string) ([]byte, error) {
	out := make([]byte, 0, Overhead+len(plaintext))
	out = append(out, magic...)
	out = append(out, version1)
	ad, err := s.additionalData(out, id)
	if err != nil {
		return nil, err
	}
	out = append(out, nonce...)
	return s.aead.Seal(out, nonce, plaintext, ad), nil
}

// Open decrypts a record sealed for id.
func (s *Sealer) Open(sealed []byte, id ...string) ([]byte, error) {
	if !IsSealed(sealed) {
		return nil, ErrFormat
	}
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: truncated", ErrFormat)
	}
	ad, err := s.additionalData(sealed[:header], id)
	if err != nil {
		return nil, err
	}
	pt, err := s.aead.Open(nil, sealed[header:header+nonceSize], sealed[header+nonceSize:], ad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// IsSealed reports whether b starts with a sealed record header of a
// version this package reads (a migration's test for "already resealed").
func IsSealed(b []byte) bool {
	return len(b) >= header && string(b[:len(magic)]) == magic && b[len(magic)] == version1
}

func (s *Sealer) additionalData(hdr []byte, id []string) ([]byte, error) {
	n := len(hdr) + 2 + len(s.purpose)
	for _, p := range id {
		if len(p) > maxPart {
			return nil, fmt.Errorf("seal: identity part of %d bytes (at most %d)", len(p), maxPart)
		}
		n += 2 + len(p)
	}
	ad := make([]byte, 0, n)
	ad = append(ad, hdr...)
	ad = binary.BigEndian.AppendUint16(ad, uint16(len(s.purpose)))
	ad = append(ad, s.purpose...)
	for _, p := range id {
		ad = binary.BigEndian.AppendUint16(ad, uint16(len(p)))
		ad = append(ad, p...)
	}
	return ad, nil
}
