package experiments

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/fingerprint"
	"github.com/qshield/qshield/fingerprint/fvc"
)

func fingerprintEnv(params map[string]string) *experiment.Env {
	p := map[string]string{"data": "", "synthetic": "no", "passes": "1", "seed": "1", "grid": "small", "fingers": "10", "select": "robust", "tuneseed": "2"}
	for k, v := range params {
		p[k] = v
	}
	return &experiment.Env{Params: p}
}

// TestFingerprintMissingDataIsAnError covers issue 17: an explicit data path
// that holds no database used to switch silently to synthetic data and
// report 0.00% EER. Now every such case is an error naming the cause, and
// synthetic data is used only when asked for.
func TestFingerprintMissingDataIsAnError(t *testing.T) {
	empty := t.TempDir()
	withDBs := t.TempDir()
	for _, d := range []string{"DB1_B", "DB2_B", "DB3_B", "DB4_B"} {
		if err := os.Mkdir(filepath.Join(withDBs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name   string
		env    string
		params map[string]string
		want   error
	}{
		{"explicit path to an empty directory", "", map[string]string{"data": empty}, fvc.ErrNoData},
		{"explicit path to nothing", "", map[string]string{"data": filepath.Join(empty, "missing")}, fvc.ErrNoData},
		{"explicit path with empty databases", "", map[string]string{"data": withDBs}, fvc.ErrNoData},
		{"environment variable pointing at nothing", filepath.Join(empty, "missing"), nil, fvc.ErrNoData},
		{"no data named at all", "", nil, fvc.ErrDataUnset},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(fvc.DataEnv, c.env)
			res, err := runFingerprint(context.Background(), fingerprintEnv(c.params))
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if res != nil {
				t.Fatal("a result was returned with the error")
			}
		})
	}
	t.Run("bad synthetic value", func(t *testing.T) {
		if _, err := runFingerprint(context.Background(), fingerprintEnv(map[string]string{"synthetic": "auto"})); err == nil || !strings.Contains(err.Error(), "synthetic") {
			t.Fatalf("synthetic=auto: %v", err)
		}
	})
	t.Run("selection distortions equal to the test set's", func(t *testing.T) {
		_, err := runFingerprint(context.Background(), fingerprintEnv(map[string]string{"synthetic": "yes", "fingers": "4", "seed": "7", "tuneseed": "7"}))
		if err == nil || !strings.Contains(err.Error(), "tuneseed") {
			t.Fatalf("tuneseed = seed: %v", err)
		}
	})
	t.Run("bad select value", func(t *testing.T) {
		_, err := runFingerprint(context.Background(), fingerprintEnv(map[string]string{"synthetic": "yes", "fingers": "4", "select": "best"}))
		if err == nil || !strings.Contains(err.Error(), "select") {
			t.Fatalf("select=best: %v", err)
		}
	})
}

// TestFingerprintSyntheticIsLabelled runs the whole experiment on synthetic
// databases (asked for explicitly) and checks that every table names them
// and that no published FVC2002 figure is compared with them.
func TestFingerprintSyntheticIsLabelled(t *testing.T) {
	res, err := runFingerprint(context.Background(), fingerprintEnv(map[string]string{"synthetic": "yes", "fingers": "4"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range res.Tables {
		text := tb.Title + strings.Join(tb.Notes, " ")
		for _, row := range tb.Rows {
			text += strings.Join(row, " ")
		}
		if strings.Contains(text, "OpenAFIS") || strings.Contains(text, "FVC2002") {
			t.Errorf("table %q compares synthetic data with FVC2002 figures", tb.Title)
		}
		if tb.Title != "" && !strings.Contains(text, "synthetic") {
			t.Errorf("table %q does not name its data", tb.Title)
		}
	}
}

// TestFingerprintGrid: every candidate is distinct, cylinders alone appear
// once per cylinder setting, and graph merging appears only where the graph
// is fused (w > 0), with the settings fixed on synthetic data.
func TestFingerprintGrid(t *testing.T) {
	mcc, cands := fingerprintGrid()
	if want := len(mcc) * (1 + len(graphGrid)*(len(fusionWeights)-1)); len(cands) != want {
		t.Fatalf("%d candidates, want %d", len(cands), want)
	}
	names := map[string]bool{}
	params := map[fingerprint.Params]bool{}
	merged := 0
	for _, c := range cands {
		if names[c.Name] || params[c.Params] {
			t.Errorf("duplicate candidate %q", c.Name)
		}
		names[c.Name], params[c.Params] = true, true
		if c.Params.MergeMinPairs > 0 {
			merged++
			if c.Params.FusionWeight == 0 || c.Params.MergeMinPairs != 4 || c.Params.MergeStrain != 0.25 || !strings.HasSuffix(c.Name, " merge") {
				t.Errorf("candidate %q: merging %d/%v at w=%v", c.Name, c.Params.MergeMinPairs, c.Params.MergeStrain, c.Params.FusionWeight)
			}
		}
	}
	if want := len(mcc) * (len(fusionWeights) - 1); merged != want {
		t.Errorf("%d merged candidates, want %d", merged, want)
	}
	if !params[fingerprint.DefaultParams()] {
		t.Error("DefaultParams is not in the grid")
	}
}
