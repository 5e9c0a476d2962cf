package platform

import (
	"testing"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/keycharge"
	"github.com/qshield/qshield/qmsp"
	"github.com/qshield/qshield/selfverify"
	"github.com/qshield/qshield/watermark/service"
)

// TestErrorCodesAgree checks that a problem code means the same thing on
// every API the platform serves: one status and one payer-facing message,
// so a client (or a payer) never has to know which scheme answered.
func TestErrorCodesAgree(t *testing.T) {
	registries := map[string]*httpx.Registry{
		"ledger": server.LedgerCodes, "bioqr": bioqr.ErrorCodes(), "keycharge": keycharge.ErrorCodes(),
		"qmsp": qmsp.ErrorCodes(), "selfverify": selfverify.ErrorCodes(), "watermark": service.ErrorCodes(),
		"admin enrolment": enrolCodes,
	}
	type seen struct {
		api string
		c   httpx.Code
	}
	first := map[string]seen{}
	for api, r := range registries {
		for _, c := range r.Codes() {
			if c.Message == "" || c.Status < 400 {
				t.Errorf("%s: code %q has no message or a non-error status", api, c.Code)
			}
			if prev, ok := first[c.Code]; ok {
				if prev.c.Status != c.Status || prev.c.Message != c.Message {
					t.Errorf("code %q: %s says %d %q, %s says %d %q", c.Code, prev.api, prev.c.Status, prev.c.Message, api, c.Status, c.Message)
				}
				continue
			}
			first[c.Code] = seen{api, c}
		}
	}
}
