package selfverify

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/emmansun/gmsm/sm4"

	"github.com/qshield/qshield/selfverify/ecqv"
)

// KeySize is the length of every symmetric key (K_UN, K_UV, K_j, K_VN).
const KeySize = 32

// Domain-separation labels. Every signed or MACed byte string starts with one.
const (
	labelToken    = "qshield-sv-token-v1"
	labelWithdraw = "qshield-sv-withdraw-v1"
	labelClose    = "qshield-sv-close-v1"
	labelPay1     = "qshield-sv-pay1-v1"
	labelDeposit  = "qshield-sv-deposit-v1"
	labelReserve  = "qshield-sv-reserve-v1"
	labelConfirm  = "qshield-sv-confirm-v1"
	labelChain    = "qshield-sv-chain-v1"
	labelRef      = "qshield-sv-ref-v1"
	infoKUN       = "qshield-sv K_UN v1"
	infoKUV       = "qshield-sv K_UV v1"
	infoKVN       = "qshield-sv K_VN v1"
)

// canon builds the canonical byte strings that are signed or MACed: a label
// followed by length-prefixed fields, so that no two field lists share an
// encoding.
type canon []byte

func newCanon(label string) canon { return canon(label).str("") }

func (c canon) str(s string) canon {
	c = binary.BigEndian.AppendUint32(c, uint32(len(s)))
	return append(c, s...)
}

func (c canon) bytes(b []byte) canon {
	c = binary.BigEndian.AppendUint32(c, uint32(len(b)))
	return append(c, b...)
}

func (c canon) i64(v int64) canon { return binary.BigEndian.AppendUint64(c, uint64(v)) }

// newAEAD returns AES-256-GCM on P-256 and SM4-GCM (128-bit key: the first 16
// bytes of the 32-byte key) on SM2.
func newAEAD(curve *ecqv.Curve, key []byte) (cipher.AEAD, error) {
	var b cipher.Block
	var err error
	if curve.Name() == "SM2" {
		b, err = sm4.NewCipher(key[:16])
	} else {
		b, err = aes.NewCipher(key)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: aead key: %w", err)
	}
	return cipher.NewGCM(b)
}

// Directional nonces for keys that are used for exactly one exchange
// (K_UV / K_j): the request and the response each use the key once.
var (
	nonceRequest  = []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	nonceResponse = []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}
)

func sealOnce(curve *ecqv.Curve, key, nonce, plaintext, aad []byte) ([]byte, error) {
	a, err := newAEAD(curve, key)
	if err != nil {
		return nil, err
	}
	return a.Seal(nil, nonce, plaintext, aad), nil
}

func openOnce(curve *ecqv.Curve, key, nonce, ciphertext, aad []byte) ([]byte, error) {
	a, err := newAEAD(curve, key)
	if err != nil {
		return nil, err
	}
	pt, err := a.Open(nil, nonce, ciphertext, aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// sealRandom encrypts under a long-lived key (K_UN) with a random 96-bit nonce
// prepended to the ciphertext.
func sealRandom(curve *ecqv.Curve, key, plaintext, aad []byte) ([]byte, error) {
	a, err := newAEAD(curve, key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, a.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("selfverify: nonce: %w", err)
	}
	return a.Seal(nonce, nonce, plaintext, aad), nil
}

func openRandom(curve *ecqv.Curve, key, ct, aad []byte) ([]byte, error) {
	a, err := newAEAD(curve, key)
	if err != nil {
		return nil, err
	}
	if len(ct) < a.NonceSize()+a.Overhead() {
		return nil, ErrDecrypt
	}
	pt, err := a.Open(nil, ct[:a.NonceSize()], ct[a.NonceSize():], aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// NextKey is one step of the dynamic key chain: K_{j+1} = H(label ‖ K_j).
func NextKey(curve *ecqv.Curve, k []byte) []byte {
	h := curve.Hash()
	h.Write([]byte(labelChain))
	h.Write(k)
	return h.Sum(nil)[:KeySize]
}

// payAAD binds a payment ciphertext to its session and sequence number.
func payAAD(session string, seq int64) []byte {
	return newCanon("qshield-sv-pay-aad-v1").str(session).i64(seq)
}

// PaymentRef is the reference of payment seq of a session, the same at U, V
// and N: hex(H(label ‖ session ‖ seq))[:32].
func PaymentRef(curve *ecqv.Curve, session string, seq int64) string {
	h := curve.Hash()
	h.Write(newCanon(labelRef).str(session).i64(seq))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func mac(curve *ecqv.Curve, key, msg []byte) []byte {
	m := hmac.New(curve.HashFunc(), key)
	m.Write(msg)
	return m.Sum(nil)
}

func macEqual(curve *ecqv.Curve, key, msg, tag []byte) bool {
	return hmac.Equal(mac(curve, key, msg), tag)
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("selfverify: randomness: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// deriveKUV is K_UV = HKDF(x(a·Q_V), salt = A, info = label ‖ ID_V).
func deriveKUV(curve *ecqv.Curve, z, a []byte, vendor string) ([]byte, error) {
	return curve.DeriveKey(z, a, infoKUV+"|"+vendor, KeySize)
}

// deriveKUN is K_UN = HKDF(x(t·Q_N), salt = serial, info = label ‖ ID_U).
func deriveKUN(curve *ecqv.Curve, z []byte, serial, user string) ([]byte, error) {
	return curve.DeriveKey(z, []byte(serial), infoKUN+"|"+user, KeySize)
}

// deriveKVN is K_VN = HKDF(x(d_V·Q_N), info = label ‖ ID_V), the key that
// authenticates V's online spend reservations at N.
func deriveKVN(curve *ecqv.Curve, z []byte, vendor string) ([]byte, error) {
	return curve.DeriveKey(z, nil, infoKVN+"|"+vendor, KeySize)
}
