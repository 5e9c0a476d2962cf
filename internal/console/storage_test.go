package console

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/qshield/qshield/keycharge"
)

// TestStoragePageRenders: the device page shows each key's life, used or not.
func TestStoragePageRenders(t *testing.T) {
	clk := newClock()
	c := newConsole(t, clk)
	_, s := signIn(t, c, "au", RoleAuditor)
	used := clk.Now()
	dev := &keycharge.Device{Serial: "SN-1", Kind: "ukey", State: keycharge.StateActive, KeyBytes: 2048, KeyUsed: 64, Remaining: 1984}
	w := httptest.NewRecorder()
	c.render(w, httptest.NewRequest(http.MethodGet, "/console/storage/SN-1", nil), http.StatusOK, "storage", page{S: s, Data: struct {
		Row  storageRow
		Keys []keycharge.KeyRecord
	}{storageRows([]*keycharge.Device{dev})[0], []keycharge.KeyRecord{
		{KeyID: "k-1", Charge: "c-1", Length: 1024, Used: 64, State: "active", Distributed: used.Add(-time.Hour), LastUsed: &used},
		{KeyID: "k-2", Charge: "c-1", Seq: 1, Length: 1024, State: "active", Distributed: used.Add(-time.Hour)},
	}}})
	body := w.Body.String()
	if w.Code != http.StatusOK || !strings.Contains(body, "k-1") || !strings.Contains(body, "2026-12-06 10:00:00 UTC") || !strings.Contains(body, "1984 B left") {
		t.Fatalf("device page: %d %s", w.Code, body)
	}
}
