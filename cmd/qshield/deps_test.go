package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinaryDoesNotLinkTesting: the qshield binary must not link the testing
// package (internal/cli once imported sqldb/sqldbtest for a DSN constant,
// which put testing's flags and code into every build).
func TestBinaryDoesNotLinkTesting(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "testing" || strings.HasPrefix(p, "testing/") || strings.HasSuffix(p, "test") && strings.Contains(p, "qshield/") {
			t.Errorf("qshield links %s", p)
		}
	}
}
