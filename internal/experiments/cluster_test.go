package experiments

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/internal/pgha"
)

// TestClusterShort is CI's short run of the cluster experiment: three qshield
// nodes on a Patroni pair, one node stopped and the primary crashed while
// payers pay; no acknowledged transfer may be lost or applied twice.
func TestClusterShort(t *testing.T) {
	if os.Getenv(pgha.EnvCluster) == "" {
		t.Skip(pgha.EnvCluster + " not set: skipping the Patroni cluster experiment")
	}
	if m := pgha.Missing(); m != "" {
		t.Fatalf("%s is set but %s is missing", pgha.EnvCluster, m)
	}
	spec := ClusterExperiment()
	params, err := experiment.ResolveParams(spec, map[string]string{"workers": "4", "duration": "35s"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := spec.Run(context.Background(), &experiment.Env{Params: params, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	d := res.Data.(map[string]any)
	if d["lost"].(int) != 0 || d["acks"].(int) == 0 || d["stored"].(int) != d["acks"].(int) {
		t.Fatalf("cluster run: %+v", d)
	}
	t.Logf("%+v", d)
}
