package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"testing"
	"time"

	"github.com/qshield/qshield/seal"
)

func FuzzParseDeviceInfo(f *testing.F) {
	good, _ := MarshalDeviceInfo(&DeviceInfo{Serial: "SN", Model: "m", Kind: KindPhone, Attrs: map[string]string{"a": "1", "b": "2"}})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{0x30, 0x80, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		d, err := ParseDeviceInfo(der)
		if err != nil {
			return
		}
		// Accepted input is canonical: re-encoding reproduces it exactly.
		again, err := MarshalDeviceInfo(d)
		if err != nil || !bytes.Equal(again, der) {
			t.Fatalf("accepted non-canonical device info %x", der)
		}
	})
}

func FuzzParseRole(f *testing.F) {
	for _, r := range []Role{RoleServer, RoleClient, RoleDevice, RoleApplication} {
		e, _ := roleExtension(r)
		f.Add(e.Value)
	}
	f.Add([]byte{0x13, 0x06, 's', 'e', 'r', 'v', 'e', 'r'})
	f.Fuzz(func(t *testing.T, der []byte) {
		r, err := ParseRole(der)
		if err == nil && !r.Valid() {
			t.Fatalf("accepted invalid role %q", r)
		}
	})
}

func FuzzParseCertPEM(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	c, _ := x509.ParseCertificate(der)
	p := EncodeCertPEM(c)
	f.Add(p)
	f.Add(append(append([]byte(nil), p...), p...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertsPEM(data)
		if err != nil {
			return
		}
		// Invariant: every certificate parsed re-encodes to PEM that parses
		// back to the same DER, and its role and device info read the same.
		for _, c := range certs {
			back, err := ParseCertPEM(EncodeCertPEM(c))
			if err != nil || !bytes.Equal(back.Raw, c.Raw) {
				t.Fatalf("certificate does not round-trip through PEM: %v", err)
			}
			r1, e1 := RoleOf(c)
			r2, e2 := RoleOf(back)
			if r1 != r2 || (e1 == nil) != (e2 == nil) {
				t.Fatalf("role differs after a round trip: %v/%v %v/%v", r1, r2, e1, e2)
			}
			_, _ = DeviceInfoOf(c)
		}
	})
}

func FuzzParsePrivateKeyPEM(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	enc, _ := RawKey(make([]byte, 32))
	plain, _ := EncodePrivateKeyPEM(k)
	sealed, _ := SealPrivateKeyPEM(k, enc)
	f.Add(plain)
	f.Add(sealed)
	f.Add([]byte("-----BEGIN QSHIELD SEALED PRIVATE KEY-----\nUVNLMQE=\n-----END QSHIELD SEALED PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParsePrivateKeyPEM(data, enc)
		if err == nil && s == nil {
			t.Fatal("nil key without error")
		}
	})
}

// FuzzParseSealed covers the sealed-key container parsers, current (QSK2)
// and legacy (QSK1). It does not run the KDF (argon2id parameters in a
// fuzzed blob could ask for up to 1 GiB). Invariants: an accepted header
// has argon2id parameters in range and a complete seal record (or nonce and
// tag); a raw-key Open of anything but the seed fails.
func FuzzParseSealed(f *testing.F) {
	rk, _ := RawKey(make([]byte, 32))
	s1, _ := rk.Seal([]byte("k"), nil)
	s2, _ := fastKey("fuzz passphrase").Seal([]byte("k"), nil)
	f.Add(s1)
	f.Add(s2)
	f.Add([]byte("QSK1"))
	f.Add([]byte("QSK2"))
	for _, v := range []string{
		"51534b3102f80915576c4298a53a74804a8011d1254ea1fd711562710d0e858d0bf2cd94513d7d1c4b57d5fc47", // testdata/qsk1.json, raw
		"51534b31010000000100004c00010441dfba57623441bfe2f6ab4a518facec3ed08f0ee0fd705bc92f5afab4416b8c7baf779c7d9723ac4678230294103439ea5086ba91c7ef4ec5d3ad98d5242012b4da648d76951b0d519b6e0e1c1828f6f3dd00c8b148a7577493",
	} {
		b, _ := hex.DecodeString(v)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if IsLegacySealed(data) {
			h, err := parseLegacy(data)
			if err != nil {
				return
			}
			if h.kdf == kdfArgon2 && checkArgon(h.params) != nil {
				t.Fatal("accepted out-of-range argon2 parameters")
			}
			if len(h.nonce) != 24 || len(h.ct) < 16 {
				t.Fatal("short nonce or ciphertext accepted")
			}
		} else {
			h, err := parseSealedKey(data)
			if err != nil {
				return
			}
			if h.kdf == kdfArgon2 && checkArgon(h.params) != nil {
				t.Fatal("accepted out-of-range argon2 parameters")
			}
			if len(h.record) < seal.Overhead || !seal.IsSealed(h.record) || !bytes.Equal(append(bytes.Clone(h.header), h.record...), data) {
				t.Fatal("accepted an incomplete record or split the blob wrongly")
			}
		}
		if data[4] == kdfRaw {
			// Only the unchanged seed opens (the fuzzing workers each seal
			// their own s1, so compare what it opens to, not its bytes).
			if pt, err := rk.Open(data, nil); err == nil && string(pt) != "k" {
				t.Fatalf("a fuzzed blob opened to %q", pt)
			}
		}
	})
}
