package phonecode

import (
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hpke"
	"crypto/rand"
	"fmt"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm4"
)

// Suite identifies the public-key encryption used for a ciphertext. It is
// chosen by the recipient's key type and is bound into the AEAD's
// additional data, so a ciphertext cannot be re-labelled to another suite.
type Suite uint8

const (
	// SuiteHPKEP256 is RFC 9180 HPKE in base mode: DHKEM(P-256, HKDF-SHA256),
	// HKDF-SHA256, AES-128-GCM (crypto/hpke). Ciphertext: enc (65 bytes) ‖
	// AEAD ciphertext (plaintext + 16 bytes).
	SuiteHPKEP256 Suite = 1
	// SuiteSM2SM4 is the Chinese-standard option: a fresh 128-bit key
	// encrypted with SM2 public-key encryption (GB/T 32918.4, C1C3C2), then
	// the plaintext sealed with SM4-GCM under that key with the additional
	// data. Ciphertext: u16 length ‖ SM2 ciphertext ‖ 12-byte nonce ‖ SM4-GCM
	// ciphertext. (SM2 encryption alone has no additional data, hence the KEM/DEM
	// split.)
	SuiteSM2SM4 Suite = 2
)

func (s Suite) String() string {
	switch s {
	case SuiteHPKEP256:
		return "HPKE-P256-SHA256-AES128GCM"
	case SuiteSM2SM4:
		return "SM2-SM4GCM"
	}
	return fmt.Sprintf("Suite(%d)", uint8(s))
}

// suiteFor returns the suite for a recipient public key.
func suiteFor(pub *ecdsa.PublicKey) (Suite, error) {
	switch {
	case pub == nil:
		return 0, fmt.Errorf("%w: no recipient key", ErrMalformed)
	case pub.Curve == elliptic.P256():
		return SuiteHPKEP256, nil
	case pub.Curve == sm2.P256():
		return SuiteSM2SM4, nil
	}
	return 0, fmt.Errorf("%w: unsupported recipient curve %s", ErrMalformed, pub.Curve.Params().Name)
}

func suiteAAD(s Suite, aad []byte) []byte {
	return append([]byte{'q', 's', 'b', 'q', byte(s)}, aad...)
}

// Seal encrypts plaintext to pub (info: protocol label, aad: data bound but
// not encrypted). The output starts with the suite byte.
func Seal(pub *ecdsa.PublicKey, info, aad, plaintext []byte) ([]byte, error) {
	s, err := suiteFor(pub)
	if err != nil {
		return nil, err
	}
	fullAAD := suiteAAD(s, aad)
	switch s {
	case SuiteHPKEP256:
		epk, err := pub.ECDH()
		if err != nil {
			return nil, fmt.Errorf("bioqr: recipient key: %w", err)
		}
		pk, err := hpke.NewDHKEMPublicKey(epk)
		if err != nil {
			return nil, fmt.Errorf("bioqr: recipient key: %w", err)
		}
		enc, sender, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.AES128GCM(), info)
		if err != nil {
			return nil, fmt.Errorf("bioqr: HPKE setup: %w", err)
		}
		ct, err := sender.Seal(fullAAD, plaintext)
		if err != nil {
			return nil, fmt.Errorf("bioqr: HPKE seal: %w", err)
		}
		out := make([]byte, 0, 1+len(enc)+len(ct))
		return append(append(append(out, byte(s)), enc...), ct...), nil
	default: // SuiteSM2SM4
		key := make([]byte, 16)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("bioqr: random key: %w", err)
		}
		defer clear(key)
		// The label goes into the SM2-encrypted part so that the key is
		// bound to this protocol use.
		kem, err := sm2.Encrypt(rand.Reader, pub, append(append([]byte(nil), key...), info...), nil)
		if err != nil {
			return nil, fmt.Errorf("bioqr: SM2 encrypt: %w", err)
		}
		aead, err := sm4GCM(key)
		if err != nil {
			return nil, err
		}
		nonce := make([]byte, aead.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return nil, fmt.Errorf("bioqr: nonce: %w", err)
		}
		out := []byte{byte(s), byte(len(kem) >> 8), byte(len(kem))}
		out = append(append(out, kem...), nonce...)
		return aead.Seal(out, nonce, plaintext, append(fullAAD, info...)), nil
	}
}

func sm4GCM(key []byte) (cipher.AEAD, error) {
	b, err := sm4.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("bioqr: SM4: %w", err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		return nil, fmt.Errorf("bioqr: SM4-GCM: %w", err)
	}
	return a, nil
}

// Open decrypts a Seal output with the private key; every failure wraps
// ErrDecrypt (a wrong key, a modified ciphertext or aad, a wrong suite).
func Open(priv any, info, aad, ct []byte) ([]byte, error) {
	if len(ct) < 1 {
		return nil, fmt.Errorf("%w: empty ciphertext", ErrDecrypt)
	}
	s := Suite(ct[0])
	fullAAD := suiteAAD(s, aad)
	body := ct[1:]
	switch s {
	case SuiteHPKEP256:
		k, ok := priv.(*ecdsa.PrivateKey)
		if !ok || k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ciphertext for a P-256 key", ErrDecrypt)
		}
		const encLen = 65
		if len(body) < encLen+16 {
			return nil, fmt.Errorf("%w: truncated HPKE ciphertext", ErrDecrypt)
		}
		ek, err := k.ECDH()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
		}
		sk, err := hpke.NewDHKEMPrivateKey(ek)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
		}
		r, err := hpke.NewRecipient(body[:encLen], sk, hpke.HKDFSHA256(), hpke.AES128GCM(), info)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
		}
		pt, err := r.Open(fullAAD, body[encLen:])
		if err != nil {
			return nil, fmt.Errorf("%w: authentication failed", ErrDecrypt)
		}
		return pt, nil
	case SuiteSM2SM4:
		k, ok := priv.(*sm2.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: ciphertext for an SM2 key", ErrDecrypt)
		}
		if len(body) < 2 {
			return nil, fmt.Errorf("%w: truncated SM2 ciphertext", ErrDecrypt)
		}
		n := int(body[0])<<8 | int(body[1])
		body = body[2:]
		if n > len(body) || len(body)-n < 12+16 {
			return nil, fmt.Errorf("%w: truncated SM2 ciphertext", ErrDecrypt)
		}
		kp, err := sm2.Decrypt(k, body[:n])
		if err != nil || len(kp) != 16+len(info) || string(kp[16:]) != string(info) {
			return nil, fmt.Errorf("%w: SM2 key decryption failed", ErrDecrypt)
		}
		defer clear(kp)
		aead, err := sm4GCM(kp[:16])
		if err != nil {
			return nil, err
		}
		rest := body[n:]
		pt, err := aead.Open(nil, rest[:12], rest[12:], append(fullAAD, info...))
		if err != nil {
			return nil, fmt.Errorf("%w: authentication failed", ErrDecrypt)
		}
		return pt, nil
	}
	return nil, fmt.Errorf("%w: unknown suite %d", ErrDecrypt, ct[0])
}

var _ = ecdh.P256
