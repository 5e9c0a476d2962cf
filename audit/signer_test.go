package audit

import (
	"path/filepath"
	"sync"
	"testing"
)

// Nodes starting together create the checkpoint key at once: every one must
// end up with the same, matching key pair (a race once wrote one node's
// private key beside another's verifier key).
func TestLoadOrCreateSignerRace(t *testing.T) {
	dir := t.TempDir()
	key, vkey := filepath.Join(dir, "cp.key"), filepath.Join(dir, "cp.vkey")
	const n = 16
	got := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); _, got[i], errs[i] = LoadOrCreateSigner(key, vkey, "qshield.test/audit") }()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("creator %d: %v", i, errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("creator %d has verifier key %s, creator 0 %s", i, got[i], got[0])
		}
	}
	// Loading again gives the same key.
	if _, v, err := LoadOrCreateSigner(key, vkey, "qshield.test/audit"); err != nil || v != got[0] {
		t.Fatalf("reload: %s, %v", v, err)
	}
}
