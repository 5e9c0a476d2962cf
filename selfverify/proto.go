package selfverify

import (
	"encoding/hex"
	"time"

	"github.com/qshield/qshield/selfverify/ecqv"
)

// Helpers of the message layer shared by every side and built on every
// platform, WebAssembly included (see local.go).

func ms(t time.Time) int64 { return t.UnixMilli() }

func sessionID(curve *ecqv.Curve, a []byte) string {
	h := curve.Hash()
	h.Write(newCanon("qshield-sv-session-v1").bytes(a))
	return hex.EncodeToString(h.Sum(nil)[:16])
}
