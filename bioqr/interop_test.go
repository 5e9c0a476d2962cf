package bioqr_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/bioqr/emvqr"
	"github.com/qshield/qshield/sqldb"
)

// promptparseScript parses each payload given on stdin (one JSON array)
// with promptparse in strict mode (CRC checked) and prints, per payload,
// the tags a wallet needs, or null when promptparse refuses it.
const promptparseScript = `
const {parse} = require("promptparse");
const payloads = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = payloads.map(p => {
  const q = parse(p, true, true);
  if (!q) return null;
  const t = {};
  for (const id of ["00","01","52","53","54","58","59","60"]) t[id] = q.getTagValue(id) || "";
  t["26.00"] = q.getTagValue("26","00") || "";
  t["26.01"] = q.getTagValue("26","01") || "";
  t["80.00"] = q.getTagValue("80","00") || "";
  t["n80"] = q.getTags().filter(x => +x.id >= 80 && +x.id <= 99).length;
  return t;
});
console.log(JSON.stringify(out));
`

// TestConsumptionQRIndependentParser checks that a consumption QR parses
// with an EMVCo parser other than ours: promptparse (MIT, npm), which
// validates the CRC in strict mode and splits templates into sub-tags. The
// Go module proxy reachable from this workplace refuses every Go EMVCo
// parser module we tried, so the independent parser is a Node.js one; the
// test runs when node can load promptparse (set NODE_PATH, e.g. after
// `npm install --prefix /tmp/pp promptparse@1.6.0`, NODE_PATH=/tmp/pp/node_modules)
// and skips with a message otherwise.
func TestConsumptionQRIndependentParser(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed: skipping the independent EMVCo parser check")
	}
	if out, err := exec.Command(node, "-e", `require.resolve("promptparse")`).CombinedOutput(); err != nil {
		first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		t.Skipf("promptparse not installed for node (npm install promptparse@1.6.0 and set NODE_PATH): %s", first)
	}
	db, err := sqldb.Open(t.Context(), filepath.Join(t.TempDir(), "interop.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f := newFixture(t, db)
	var payloads []string
	for _, amt := range []int64{1, 25_50, 999_999_99} {
		c, err := f.rig.POS.NewConsumption(f.ctx, amt)
		if err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, c.Payload)
	}
	// A tampered copy (amount changed, CRC not) must be refused by it too.
	payloads = append(payloads, strings.Replace(payloads[1], "540525.50", "540595.50", 1))
	in, _ := json.Marshal(payloads)
	cmd := exec.Command(node, "-e", promptparseScript)
	cmd.Stdin = strings.NewReader(string(in))
	cmd.Env = os.Environ()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	var got []map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("promptparse output %q: %v", out, err)
	}
	if len(got) != len(payloads) {
		t.Fatalf("%d results for %d payloads", len(got), len(payloads))
	}
	for i, want := range []string{"0.01", "25.50", "999999.99"} {
		g := got[i]
		if g == nil {
			t.Fatalf("promptparse refused consumption QR %d: %s", i, payloads[i])
		}
		p, _ := emvqr.Parse(payloads[i])
		exp := map[string]any{"00": "01", "01": "12", "53": "156", "54": want, "58": "CN", "59": "Corner Shop", "60": "Hangzhou",
			"26.00": bioqr.GUI, "80.00": bioqr.GUI}
		exp["52"], _ = p.Get("52")
		for k, v := range exp {
			if g[k] != v {
				t.Errorf("payload %d tag %s: promptparse %v, want %v", i, k, g[k], v)
			}
		}
		if g["26.01"] != f.rig.Merchant || g["n80"].(float64) < 2 {
			t.Errorf("payload %d: merchant %v, %v unreserved templates", i, g["26.01"], g["n80"])
		}
	}
	if got[3] != nil {
		t.Fatal("promptparse accepted a payload with a wrong CRC")
	}
}
