package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"

	"github.com/qshield/qshield/fsutil"
)

// Witness cosignatures (C2SP tlog-cosignature v1.0.1, the Ed25519 type).
//
// A cosignature is a signed-note signature line on a checkpoint,
//
//	— <witness name> base64(key ID || timestamp || Ed25519 signature)
//
// where key ID = SHA-256(name || "\n" || 0x04 || public key)[:4], timestamp
// is 8 bytes big-endian (POSIX seconds, at most 2^63-1), and the signature
// covers
//
//	cosignature/v1
//	time <timestamp, decimal>
//	<the checkpoint text, with its final newline>
//
// It states: "as of this time, the largest tree of this origin I have seen
// and checked consistent has this root." Cosigner and the verifier from
// NewCosignatureVerifier implement golang.org/x/mod/sumdb/note's Signer
// and Verifier, so note.Sign adds a cosignature and note.Open checks one.
// The cosigner's public key is published as a vkey with type byte 0x04:
// <name>+<key ID, 8 hex>+base64(0x04 || public key).

// cosignatureV1Alg is the vkey type byte of Ed25519 cosignatures.
const cosignatureV1Alg = 0x04

// cosignatureSize is a cosignature's length after the key ID.
const cosignatureSize = 8 + ed25519.SignatureSize

// ErrCosignature is wrapped by errors about malformed cosigner keys and
// cosignatures.
var ErrCosignature = errors.New("audit: cosignature")

// Cosigner makes C2SP cosignature/v1 signatures. It implements note.Signer.
type Cosigner struct {
	name string
	key  ed25519.PrivateKey
	hash uint32
	now  func() time.Time
}

// NewCosigner returns a cosigner named name (a witness's key name: no
// spaces, no "+") for key; now is the clock that timestamps cosignatures
// (nil: time.Now).
func NewCosigner(name string, key ed25519.PrivateKey, now func() time.Time) (*Cosigner, error) {
	if !validKeyName(name) {
		return nil, fmt.Errorf("%w: bad cosigner name %q", ErrCosignature, name)
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: not an Ed25519 private key", ErrCosignature)
	}
	if now == nil {
		now = time.Now
	}
	pub := key.Public().(ed25519.PublicKey)
	return &Cosigner{name: name, key: key, hash: cosignatureKeyID(name, pub), now: now}, nil
}

// Name implements note.Signer.
func (c *Cosigner) Name() string { return c.name }

// KeyHash implements note.Signer: the C2SP key ID (type byte 0x04).
func (c *Cosigner) KeyHash() uint32 { return c.hash }

// Sign implements note.Signer: the timestamped cosignature of the note
// text msg.
func (c *Cosigner) Sign(msg []byte) ([]byte, error) {
	ts := c.now().Unix()
	if ts < 0 {
		return nil, fmt.Errorf("%w: clock before 1970", ErrCosignature)
	}
	return c.signAt(uint64(ts), msg), nil
}

func (c *Cosigner) signAt(ts uint64, msg []byte) []byte {
	sig := make([]byte, 8, cosignatureSize)
	binary.BigEndian.PutUint64(sig, ts)
	return append(sig, ed25519.Sign(c.key, cosignedMessage(ts, msg))...)
}

// VerifierKey is the cosigner's public vkey (type 0x04).
func (c *Cosigner) VerifierKey() string {
	pub := c.key.Public().(ed25519.PublicKey)
	return fmt.Sprintf("%s+%08x+%s", c.name, c.hash, base64.StdEncoding.EncodeToString(append([]byte{cosignatureV1Alg}, pub...)))
}

// Verifier returns the note.Verifier of the cosigner's signatures.
func (c *Cosigner) Verifier() note.Verifier {
	return cosignatureVerifier{name: c.name, hash: c.hash, key: c.key.Public().(ed25519.PublicKey)}
}

// cosignedMessage is what a cosignature/v1 signature covers.
func cosignedMessage(ts uint64, text []byte) []byte {
	m := make([]byte, 0, 40+len(text))
	m = append(m, "cosignature/v1\ntime "...)
	m = strconv.AppendUint(m, ts, 10)
	m = append(m, '\n')
	return append(m, text...)
}

// cosignatureKeyID is SHA-256(name || "\n" || 0x04 || pub)[:4], big-endian.
func cosignatureKeyID(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', cosignatureV1Alg})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// noteKeyID is the signed-note Ed25519 key hash (type 0x01).
func noteKeyID(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', 0x01})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

type cosignatureVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v cosignatureVerifier) Name() string    { return v.name }
func (v cosignatureVerifier) KeyHash() uint32 { return v.hash }

// Verify implements note.Verifier: sig is timestamp || Ed25519 signature.
func (v cosignatureVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != cosignatureSize {
		return false
	}
	ts := binary.BigEndian.Uint64(sig)
	if ts > math.MaxInt64 {
		return false
	}
	return ed25519.Verify(v.key, cosignedMessage(ts, msg), sig[8:])
}

// NewCosignatureVerifier parses a witness's public key: a vkey of type
// 0x04 (C2SP cosignature/v1), or an ordinary signed-note Ed25519 vkey (type
// 0x01) of the same key pair, whose key ID is then recomputed for type
// 0x04. The result checks cosignatures, never plain note signatures.
func NewCosignatureVerifier(vkey string) (note.Verifier, error) {
	name, hashHex, keyB64, ok := splitVKey(vkey)
	if !ok || !validKeyName(name) || len(hashHex) != 8 {
		return nil, fmt.Errorf("%w: malformed verifier key %q", ErrCosignature, vkey)
	}
	hash, err := strconv.ParseUint(hashHex, 16, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed verifier key hash %q", ErrCosignature, hashHex)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(keyB64)
	if err != nil || len(raw) != 1+ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: verifier key is not a type byte and an Ed25519 public key", ErrCosignature)
	}
	pub := ed25519.PublicKey(raw[1:])
	var want uint32
	switch raw[0] {
	case cosignatureV1Alg:
		want = cosignatureKeyID(name, pub)
	case 0x01:
		want = noteKeyID(name, pub)
	default:
		return nil, fmt.Errorf("%w: verifier key type 0x%02x is neither 0x04 (cosignature/v1) nor 0x01 (Ed25519)", ErrCosignature, raw[0])
	}
	if uint32(hash) != want {
		return nil, fmt.Errorf("%w: verifier key hash %s does not match its name and key (want %08x)", ErrCosignature, hashHex, want)
	}
	return cosignatureVerifier{name: name, hash: cosignatureKeyID(name, pub), key: pub}, nil
}

// splitVKey splits "name+hash+base64" (the base64 may itself hold "+").
func splitVKey(vkey string) (name, hash, key string, ok bool) {
	name, rest, ok1 := strings.Cut(vkey, "+")
	hash, key, ok2 := strings.Cut(rest, "+")
	return name, hash, key, ok1 && ok2
}

// validKeyName is signed-note's rule for key names.
func validKeyName(name string) bool {
	return name != "" && utf8.ValidString(name) && strings.IndexFunc(name, unicode.IsSpace) < 0 && !strings.Contains(name, "+")
}

// CosignatureTime returns the timestamp of a cosignature/v1 signature (as
// found in note.Note.Sigs after note.Open verified it).
func CosignatureTime(sig note.Signature) (time.Time, error) {
	raw, err := base64.StdEncoding.DecodeString(sig.Base64)
	if err != nil || len(raw) != 4+cosignatureSize {
		return time.Time{}, fmt.Errorf("%w: not a cosignature/v1 signature", ErrCosignature)
	}
	ts := binary.BigEndian.Uint64(raw[4:])
	if ts > math.MaxInt64 {
		return time.Time{}, fmt.Errorf("%w: timestamp beyond 2^63-1", ErrCosignature)
	}
	return time.Unix(int64(ts), 0).UTC(), nil
}

// ed25519FromNoteKey returns the name and private key of a signed-note
// Ed25519 private key ("PRIVATE+KEY+name+hash+base64(0x01 || seed)").
func ed25519FromNoteKey(skey string) (string, ed25519.PrivateKey, error) {
	if _, err := note.NewSigner(skey); err != nil {
		return "", nil, err
	}
	parts := strings.SplitN(skey, "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", nil, errors.New("not an Ed25519 signed-note private key")
	}
	return parts[2], ed25519.NewKeyFromSeed(raw[1:]), nil
}

// LoadOrCreateCosigner reads a witness's key from keyFile (a signed-note
// Ed25519 private key, as GenerateCheckpointKey makes), creating it for
// name on first use (mode 0600), and writes its public cosignature vkey
// (type 0x04) to vkeyFile if that does not exist yet. An existing vkeyFile
// must name the same key (either encoding). now is the cosigner's clock
// (nil: time.Now).
func LoadOrCreateCosigner(keyFile, vkeyFile, name string, now func() time.Time) (*Cosigner, error) {
	skey, err := os.ReadFile(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		s, _, gerr := note.GenerateKey(rand.Reader, name)
		if gerr != nil {
			return nil, fmt.Errorf("audit: generate witness key: %w", gerr)
		}
		if err := os.MkdirAll(filepath.Dir(keyFile), 0o700); err != nil {
			return nil, fmt.Errorf("audit: witness key directory: %w", err)
		}
		if err := fsutil.CreateExclusive(keyFile, []byte(s+"\n"), 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("audit: write witness key: %w", err)
		}
		skey, err = os.ReadFile(keyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("audit: read witness key: %w", err)
	}
	kname, key, err := ed25519FromNoteKey(strings.TrimSpace(string(skey)))
	if err != nil {
		return nil, fmt.Errorf("audit: witness key %s: %w", keyFile, err)
	}
	c, err := NewCosigner(kname, key, now)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(vkeyFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := fsutil.WriteFileAtomic(vkeyFile, []byte(c.VerifierKey()+"\n"), 0o644, true); err != nil {
			return nil, fmt.Errorf("audit: write witness verifier key: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("audit: read witness verifier key: %w", err)
	default:
		v, err := NewCosignatureVerifier(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("audit: witness verifier key %s: %w", vkeyFile, err)
		}
		if v.Name() != c.Name() || v.KeyHash() != c.KeyHash() {
			return nil, fmt.Errorf("audit: %s and %s are not one key pair", keyFile, vkeyFile)
		}
	}
	return c, nil
}

// ReadCosignatureVerifier reads a witness's public key file (see
// NewCosignatureVerifier).
func ReadCosignatureVerifier(path string) (note.Verifier, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit: read witness key: %w", err)
	}
	v, err := NewCosignatureVerifier(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("audit: witness key %s: %w", path, err)
	}
	return v, nil
}
