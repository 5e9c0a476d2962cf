package experiments

import (
	"context"
	"log/slog"
	"testing"

	"github.com/qshield/qshield/experiment"
)

// TestKMEShort runs the key-manager experiment briefly with both pool
// shapes (64-kbit segments as serve stores them, a row per 256-bit key):
// every cell delivers keys and none fails.
func TestKMEShort(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end HTTPS run")
	}
	spec := KMEExperiment()
	for _, seg := range []string{"65536", "256"} {
		params, err := experiment.ResolveParams(spec, map[string]string{"duration": "300ms", "concurrency": "2", "batches": "1,128", "pool": "60000", "segment": seg})
		if err != nil {
			t.Fatal(err)
		}
		res, err := spec.Run(context.Background(), &experiment.Env{Params: params, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("segment %s: %v", seg, err)
		}
		for _, c := range res.Data.([]kmeCell) {
			if c.RoundTrips == 0 || c.Errors != 0 {
				t.Errorf("segment %s, %d keys/request: %d round trips, %d errors (%s)", seg, c.Keys, c.RoundTrips, c.Errors, c.FirstErr)
			}
		}
	}
	params, err := experiment.ResolveParams(spec, map[string]string{"segment": "100"})
	if err == nil {
		_, err = spec.Run(context.Background(), &experiment.Env{Params: params, Log: slog.New(slog.DiscardHandler)})
	}
	if err == nil {
		t.Fatal("segment=100 accepted")
	}
}
