package channel

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"
)

// OpenRequest opens a session (JSON on the wire; []byte fields in base64).
type OpenRequest struct {
	Serial      string `json:"serial"`
	KeyID       string `json:"key_id"`
	Offset      int    `json:"offset"`
	Alg         Alg    `json:"alg"`
	ClientNonce []byte `json:"client_nonce"`
	TimeMillis  int64  `json:"time_ms"`
	Signature   []byte `json:"signature"` // device ECDSA (ASN.1) over SHA-256(Transcript)
	MAC         []byte `json:"mac"`       // MAC(AuthKey(segment), "qkch open", Transcript)
}

// OpenResponse accepts a session.
type OpenResponse struct {
	SessionID   []byte `json:"session_id"`
	ServerNonce []byte `json:"server_nonce"`
	Remaining   int64  `json:"remaining_bytes"` // the device's unused key on the platform
	MAC         []byte `json:"mac"`             // MAC(AuthKey, "qkch accept", Transcript, SessionID, ServerNonce)
}

// Transcript is the canonical encoding of the signed fields.
func (r *OpenRequest) Transcript() []byte {
	var b []byte
	put := func(s []byte) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	put([]byte("qkch open v1"))
	put([]byte(r.Serial))
	put([]byte(r.KeyID))
	put([]byte(strconv.Itoa(r.Offset)))
	put([]byte(r.Alg))
	put(r.ClientNonce)
	put([]byte(strconv.FormatInt(r.TimeMillis, 10)))
	return b
}

// Digest is what the device signs.
func (r *OpenRequest) Digest() []byte {
	d := sha256.Sum256(r.Transcript())
	return d[:]
}

// RequestMAC computes the phone's MAC.
func (r *OpenRequest) RequestMAC(authKey []byte) []byte {
	return MAC(authKey, "qkch open", r.Transcript())
}

// AcceptMAC computes the QSSC's MAC.
func (r *OpenRequest) AcceptMAC(authKey, sessionID, serverNonce []byte) []byte {
	return MAC(authKey, "qkch accept", r.Transcript(), sessionID, serverNonce)
}
