package pki

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/qshield/qshield/seal"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

type qsk1Vector struct {
	Comment    string `json:"comment"`
	Passphrase string `json:"passphrase"`
	Key        string `json:"key"`
	AD         string `json:"ad"`
	Plaintext  string `json:"plaintext"`
	Sealed     string `json:"sealed"`
}

func loadQSK1(t *testing.T) []qsk1Vector {
	t.Helper()
	b, err := os.ReadFile("testdata/qsk1.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []qsk1Vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	return vs
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// referenceOpenQSK1 opens a QSK1 blob from its specification alone (the
// format comment in keyenc_legacy.go), with golang.org/x/crypto and none of
// this package's code: the vectors are checked against the format, not only
// against the reader.
func referenceOpenQSK1(t *testing.T, blob, pass, key, ad []byte) []byte {
	t.Helper()
	n := 5
	if blob[4] == 1 {
		tm, mem, th := binary.BigEndian.Uint32(blob[5:]), binary.BigEndian.Uint32(blob[9:]), blob[13]
		key = argon2.IDKey(pass, blob[14:30], tm, mem, th, 32)
		n = 30
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		t.Fatal(err)
	}
	nonce := blob[n : n+24]
	pt, err := aead.Open(nil, nonce, blob[n+24:], append(append([]byte(nil), blob[:n+24]...), ad...))
	if err != nil {
		t.Fatalf("reference open: %v", err)
	}
	return pt
}

func (v qsk1Vector) encryptor(t *testing.T) KeyEncryptor {
	if v.Passphrase != "" {
		return PassphraseKey([]byte(v.Passphrase))
	}
	k, err := RawKey(unhex(t, v.Key))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestQSK1KnownAnswers: keys sealed by the earlier sealer (XChaCha20-Poly1305,
// testdata/qsk1.json, written by that code) still open, to the plaintext the
// reference implementation finds; a wrong key and every one-byte change are
// refused.
func TestQSK1KnownAnswers(t *testing.T) {
	for _, v := range loadQSK1(t) {
		t.Run(v.Comment, func(t *testing.T) {
			blob, ad, want := unhex(t, v.Sealed), unhex(t, v.AD), unhex(t, v.Plaintext)
			if !IsLegacySealed(blob) {
				t.Fatal("not recognised as QSK1")
			}
			var key []byte
			if v.Key != "" {
				key = unhex(t, v.Key)
			}
			if ref := referenceOpenQSK1(t, blob, []byte(v.Passphrase), key, ad); !bytes.Equal(ref, want) {
				t.Fatalf("reference: %x, want %x", ref, want)
			}
			enc := v.encryptor(t)
			got, err := enc.Open(blob, ad)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Open: %x, %v; want %x", got, err, want)
			}
			wrong, _ := RawKey(bytes.Repeat([]byte{0xee}, 32))
			if v.Passphrase != "" {
				wrong = fastKey("not the passphrase")
			}
			if _, err := wrong.Open(blob, ad); !errors.Is(err, ErrWrongKey) {
				t.Errorf("wrong key: %v, want ErrWrongKey", err)
			}
			if v.Passphrase != "" {
				return // one argon2id run per change would take minutes
			}
			for i := range blob {
				bad := bytes.Clone(blob)
				bad[i] ^= 0x01
				if _, err := enc.Open(bad, ad); err == nil {
					t.Fatalf("byte %d changed: opened", i)
				}
			}
		})
	}
}

// TestSealedKeyRoundTrip: the current format is the seal record behind the
// KDF header (it opens with package seal directly), round trips with both
// kinds of key, and refuses a wrong passphrase, the other kind of key, other
// additional data, every one-byte change and every truncation.
func TestSealedKeyRoundTrip(t *testing.T) {
	raw := bytes.Repeat([]byte{9}, 32)
	rk, _ := RawKey(raw)
	pk := fastKey("correct horse battery staple")
	ad := []byte("qshield pki ca key\x00main")
	pt := []byte("PKCS #8 bytes")
	for _, c := range []struct {
		name  string
		enc   KeyEncryptor
		other KeyEncryptor
	}{{"raw", rk, pk}, {"passphrase", pk, rk}} {
		t.Run(c.name, func(t *testing.T) {
			s, err := c.enc.Seal(pt, ad)
			if err != nil {
				t.Fatal(err)
			}
			if IsLegacySealed(s) || string(s[:4]) != "QSK2" {
				t.Fatalf("sealed %q…, want QSK2", s[:4])
			}
			h, err := parseSealedKey(s)
			if err != nil {
				t.Fatal(err)
			}
			master := raw
			if h.kdf == kdfArgon2 {
				master = argon2.IDKey([]byte("correct horse battery staple"), h.salt, h.params.Time, h.params.Memory, h.params.Threads, 32)
			}
			sl, _ := seal.New(master, "pki key")
			if got, err := sl.Open(h.record, string(h.header), string(ad)); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("record does not open with package seal: %v", err)
			}
			if got, err := c.enc.Open(s, ad); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("round trip: %q, %v", got, err)
			}
			if _, err := c.enc.Open(s, []byte("other")); !errors.Is(err, ErrWrongKey) {
				t.Errorf("other additional data: %v, want ErrWrongKey", err)
			}
			if _, err := c.other.Open(s, ad); !errors.Is(err, ErrWrongKey) {
				t.Errorf("other kind of key: %v, want ErrWrongKey", err)
			}
			if c.name == "passphrase" {
				if _, err := fastKey("wrong horse battery staple").Open(s, ad); !errors.Is(err, ErrWrongKey) {
					t.Errorf("wrong passphrase: %v, want ErrWrongKey", err)
				}
				return
			}
			for i := range s {
				bad := bytes.Clone(s)
				bad[i] ^= 0x80
				if _, err := c.enc.Open(bad, ad); err == nil {
					t.Fatalf("byte %d changed: opened", i)
				}
			}
			for n := range len(s) {
				if _, err := c.enc.Open(s[:n], ad); err == nil {
					t.Fatalf("truncated to %d bytes: opened", n)
				}
			}
		})
	}
}

// sealQSK1Raw writes the legacy raw-key format (for the reseal tests only:
// nothing in the package writes it).
func sealQSK1Raw(t *testing.T, key, pt, ad []byte) []byte {
	aead, _ := chacha20poly1305.NewX(key)
	out := append([]byte("QSK1"), kdfRaw)
	nonce := make([]byte, 24)
	rand.Read(nonce)
	out = append(out, nonce...)
	return aead.Seal(out, nonce, pt, append(bytes.Clone(out), ad...))
}

// TestLoadCAResealsLegacyKey: a CA key sealed in QSK1 loads, and is stored
// again in the current format.
func TestLoadCAResealsLegacyKey(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		raw := bytes.Repeat([]byte{5}, 32)
		rk, _ := RawKey(raw)
		ca, err := NewCA(ctx, db, "legacy", Options{}, rk)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := marshalPrivateKey(ca.signer)
		old := sealQSK1Raw(t, raw, der, keyAD("legacy", ca.cert.Raw))
		if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE pki_cas SET key_sealed = ? WHERE name = ?`), old, "legacy"); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			got, err := LoadCA(ctx, db, "legacy", rk)
			if err != nil {
				t.Fatalf("load %d: %v", i, err)
			}
			if !publicKeysEqual(got.signer.Public(), ca.signer.Public()) {
				t.Fatal("another key")
			}
			var stored []byte
			if err := db.QueryRowContext(ctx, db.Rebind(`SELECT key_sealed FROM pki_cas WHERE name = ?`), "legacy").Scan(&stored); err != nil {
				t.Fatal(err)
			}
			if IsLegacySealed(stored) || string(stored[:4]) != "QSK2" {
				t.Fatalf("load %d: key still stored as %q", i, stored[:4])
			}
		}
	})
}

// TestLoadPrivateKeyFileReseals: a PEM key file sealed in QSK1 loads and is
// rewritten in the current format, mode 0600; with the wrong key it is
// refused and left as it was.
func TestLoadPrivateKeyFileReseals(t *testing.T) {
	raw := bytes.Repeat([]byte{6}, 32)
	rk, _ := RawKey(raw)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := marshalPrivateKey(k)
	path := filepath.Join(t.TempDir(), "key.pem")
	old := pem.EncodeToMemory(&pem.Block{Type: pemSealedKey, Bytes: sealQSK1Raw(t, raw, der, []byte(sealedKeyAD))})
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	other, _ := RawKey(bytes.Repeat([]byte{7}, 32))
	if _, err := LoadPrivateKeyFile(path, other); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong key: %v, want ErrWrongKey", err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, old) {
		t.Fatal("file changed by a failed load")
	}
	for i := range 2 {
		got, err := LoadPrivateKeyFile(path, rk)
		if err != nil || !publicKeysEqual(got.Public(), k.Public()) {
			t.Fatalf("load %d: %v", i, err)
		}
		b, _ := os.ReadFile(path)
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != pemSealedKey || IsLegacySealed(blk.Bytes) {
			t.Fatalf("load %d: file not resealed", i)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %v", fi.Mode())
		}
	}
}
