// Package boundary holds the tests that keep qshield's public boundary:
// library packages are importable from another module and no exported
// signature of theirs mentions an internal type. The packages under
// internal/ (wiring, CLI, demo, experiments) and cmd/ are not the library.
package boundary

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/importer"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/qshield/qshield"

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found: %v", err)
	}
	return root
}

func isLibrary(path string) bool {
	return !strings.Contains(path+"/", "/internal/") && !strings.HasPrefix(path, module+"/cmd/")
}

// TestExternalModule builds and runs testdata/extmod, a module outside this
// one that uses the library through a replace directive.
func TestExternalModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a second module")
	}
	root := repoRoot(t)
	dir := t.TempDir()
	src := filepath.Join(root, "testdata", "extmod")
	for _, name := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "go.mod" {
			b = bytes.ReplaceAll(b, []byte("=> ../.."), []byte("=> "+root))
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goCmd := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s in the external module: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// The main module's dependencies may have moved on since go.mod was
	// written: tidy the copy (from the module cache or the proxy) first.
	goCmd("mod", "tidy")
	if out := goCmd("run", "."); strings.TrimSpace(out) != "ok" {
		t.Fatalf("external module printed %q, want ok", out)
	}
}

// TestNoInternalTypesInPublicAPI type-checks every library package from its
// export data and fails on any exported name whose type mentions a type
// defined under internal/ (another module could not name it).
func TestNoInternalTypesInPublicAPI(t *testing.T) {
	root := repoRoot(t)
	cmd := exec.Command("go", "list", "-export", "-deps", "-json=ImportPath,Export,Standard", "./...")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	exports := map[string]string{}
	var libs []string
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath, Export string
			Standard           bool
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		exports[p.ImportPath] = p.Export
		if strings.HasPrefix(p.ImportPath, module+"/") && isLibrary(p.ImportPath) && !strings.HasSuffix(p.ImportPath, "/sqldbtest") {
			libs = append(libs, p.ImportPath)
		}
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := exports[path]
		if !ok || f == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(f)
	})
	if len(libs) < 10 {
		t.Fatalf("only %d library packages found", len(libs))
	}
	for _, path := range libs {
		pkg, err := imp.Import(path)
		if err != nil {
			t.Fatalf("import %s: %v", path, err)
		}
		for _, name := range pkg.Scope().Names() {
			obj := pkg.Scope().Lookup(name)
			if !obj.Exported() {
				continue
			}
			if bad := internalIn(obj.Type(), map[types.Type]bool{}, true); bad != "" {
				t.Errorf("%s.%s mentions %s", path, name, bad)
			}
		}
	}
}

// internalIn returns the first internal type reachable through t's exported
// surface ("" if none). top: t is the declared type itself, whose methods
// and exported fields are part of the API.
func internalIn(t types.Type, seen map[types.Type]bool, top bool) string {
	if seen[t] {
		return ""
	}
	seen[t] = true
	switch t := t.(type) {
	case *types.Named:
		if p := t.Obj().Pkg(); p != nil && !isLibrary(p.Path()) && strings.HasPrefix(p.Path(), module) {
			return p.Path() + "." + t.Obj().Name()
		}
		for i := 0; i < t.TypeArgs().Len(); i++ {
			if s := internalIn(t.TypeArgs().At(i), seen, false); s != "" {
				return s
			}
		}
		if !top {
			return ""
		}
		for i := 0; i < t.NumMethods(); i++ {
			if m := t.Method(i); m.Exported() {
				if s := internalIn(m.Type(), seen, false); s != "" {
					return s
				}
			}
		}
		return internalIn(t.Underlying(), seen, false)
	case *types.Pointer:
		return internalIn(t.Elem(), seen, top)
	case *types.Slice:
		return internalIn(t.Elem(), seen, false)
	case *types.Array:
		return internalIn(t.Elem(), seen, false)
	case *types.Map:
		if s := internalIn(t.Key(), seen, false); s != "" {
			return s
		}
		return internalIn(t.Elem(), seen, false)
	case *types.Chan:
		return internalIn(t.Elem(), seen, false)
	case *types.Signature:
		for _, tup := range []*types.Tuple{t.Params(), t.Results()} {
			for i := 0; i < tup.Len(); i++ {
				if s := internalIn(tup.At(i).Type(), seen, false); s != "" {
					return s
				}
			}
		}
	case *types.Struct:
		for i := 0; i < t.NumFields(); i++ {
			if f := t.Field(i); f.Exported() || f.Embedded() {
				if s := internalIn(f.Type(), seen, false); s != "" {
					return s
				}
			}
		}
	case *types.Interface:
		for i := 0; i < t.NumMethods(); i++ {
			if s := internalIn(t.Method(i).Type(), seen, false); s != "" {
				return s
			}
		}
	}
	return ""
}
