package device

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
)

// ECIES: the device's only decryption operation. A ciphertext is
//
//	ephemeral P-256 public key (65, uncompressed) ‖ AES-256-GCM(k, nonce 0, m)
//
// with k = HKDF-SHA256(ECDH(eph, device), salt = eph ‖ device public key,
// info "qkmsd ecies v1"). Each key k encrypts one message, so a fixed nonce
// is safe. The platform uses it to send the device secrets that only the
// device may read (Encrypt is the public half).
const eciesInfo = "qkmsd ecies v1"

func eciesKey(shared, eph, recipient []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, shared, append(append([]byte(nil), eph...), recipient...), eciesInfo, 32)
}

// Encrypt encrypts msg for the device whose encryption public key is pub
// (Device.EncryptionPublicKey; never its signing key, which cannot decrypt).
func Encrypt(pub *ecdsa.PublicKey, msg []byte) ([]byte, error) {
	rp, err := pub.ECDH()
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrInvalid, err)
	}
	eph, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	shared, err := eph.ECDH(rp)
	if err != nil {
		return nil, err
	}
	k, err := eciesKey(shared, eph.PublicKey().Bytes(), rp.Bytes())
	if err != nil {
		return nil, err
	}
	g, err := newGCM(k)
	if err != nil {
		return nil, err
	}
	return g.Seal(eph.PublicKey().Bytes(), make([]byte, 12), msg, nil), nil
}

// Decrypt opens a ciphertext from Encrypt with the device's decryption key
// (never the signing key).
func (d *Device) Decrypt(ct []byte) ([]byte, error) {
	if len(ct) < 65+16 {
		return nil, fmt.Errorf("%w: ciphertext too short", ErrInvalid)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return nil, err
	}
	sk, err := d.dec.ECDH()
	if err != nil {
		return nil, err
	}
	eph, err := ecdh.P256().NewPublicKey(ct[:65])
	if err != nil {
		return nil, fmt.Errorf("%w: ephemeral key: %v", ErrInvalid, err)
	}
	shared, err := sk.ECDH(eph)
	if err != nil {
		return nil, err
	}
	k, err := eciesKey(shared, ct[:65], sk.PublicKey().Bytes())
	if err != nil {
		return nil, err
	}
	g, err := newGCM(k)
	if err != nil {
		return nil, err
	}
	m, err := g.Open(nil, make([]byte, 12), ct[65:], nil)
	if err != nil {
		return nil, fmt.Errorf("%w: ciphertext failed authentication", ErrInvalid)
	}
	return m, nil
}
