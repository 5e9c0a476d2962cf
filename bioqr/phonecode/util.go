package phonecode

import (
	"crypto/elliptic"
	"fmt"
	"math/big"
	"sort"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/emmansun/gmsm/sm2"
)

func sm2Curve() elliptic.Curve { return sm2.P256() }

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// SigToRaw converts an ASN.1 DER ECDSA/SM2 signature to the fixed 64-byte
// r ‖ s form used inside QR payloads (saving the DER overhead).
func SigToRaw(der []byte) ([]byte, error) {
	var r, s []byte
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, casn1.SEQUENCE) || !in.Empty() ||
		!seq.ReadASN1Integer(new(big.Int)) {
		return nil, fmt.Errorf("%w: signature encoding", ErrMalformed)
	}
	seq2 := cryptobyte.String(der)
	var body cryptobyte.String
	seq2.ReadASN1(&body, casn1.SEQUENCE)
	rb, sb := new(big.Int), new(big.Int)
	if !body.ReadASN1Integer(rb) || !body.ReadASN1Integer(sb) || !body.Empty() || rb.Sign() <= 0 || sb.Sign() <= 0 ||
		rb.BitLen() > 256 || sb.BitLen() > 256 {
		return nil, fmt.Errorf("%w: signature encoding", ErrMalformed)
	}
	r, s = rb.FillBytes(make([]byte, 32)), sb.FillBytes(make([]byte, 32))
	return append(r, s...), nil
}

// RawToSig converts r ‖ s back to DER (nil when raw is not 64 bytes).
func RawToSig(raw []byte) []byte {
	if len(raw) != 64 {
		return nil
	}
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(new(big.Int).SetBytes(raw[:32]))
		b.AddASN1BigInt(new(big.Int).SetBytes(raw[32:]))
	})
	out, err := b.Bytes()
	if err != nil {
		return nil
	}
	return out
}
