package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// walk calls fn for every command of the tree.
func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, s := range c.Commands() {
		walk(s, fn)
	}
}

// TestVocabulary enforces docs/CLI.md on the whole command tree: one flag
// name per concept (the old names only as hidden, deprecated aliases), one
// spelling of enrol, and default device directories that two kinds of
// device never share.
func TestVocabulary(t *testing.T) {
	root := Root(NewGlobals())
	retired := map[string]string{"url": "server", "state-dir": "dir", "admin-dir": "admin", "operator-dir": "admin", "device": "dir", "kme-url": "kme"}
	dirOwner := map[string]string{} // default --dir → the command group using it
	walk(root, func(c *cobra.Command) {
		path := c.CommandPath()
		if c.Name() == "enroll" {
			t.Errorf("%s: the command is enrol (enroll is only an alias)", path)
		}
		check := func(f *pflag.Flag) {
			if now, ok := retired[f.Name]; ok && !f.Hidden {
				t.Errorf("%s: --%s is visible; the vocabulary's name is --%s", path, f.Name, now)
			}
			switch f.Name {
			case "server":
				// scan submits (and charges) only when asked: its --server
				// has no default from the environment.
				if path != "qshield scan" && !strings.Contains(f.Usage, EnvServer) {
					t.Errorf("%s: --server does not name %s", path, EnvServer)
				}
			case "admin":
				if !strings.Contains(f.Usage, EnvAdmin) {
					t.Errorf("%s: --admin does not name %s", path, EnvAdmin)
				}
			case "dir":
				if f.DefValue == "" || c.LocalFlags().Lookup("dir") != f {
					return // counted at the command defining it
				}
				group := path
				if c.InheritedFlags().Lookup("dir") == f {
					return
				}
				if prev, ok := dirOwner[f.DefValue]; ok && prev != group {
					t.Errorf("--dir default %s is shared by %s and %s", f.DefValue, prev, group)
				}
				dirOwner[f.DefValue] = group
			}
		}
		c.LocalFlags().VisitAll(check)
		c.InheritedFlags().VisitAll(check)
	})
	if len(dirOwner) < 5 {
		t.Errorf("only %d default device directories found: %v", len(dirOwner), dirOwner)
	}
}

// TestEnrollAlias: the old spelling still finds the command.
func TestEnrollAlias(t *testing.T) {
	root := Root(NewGlobals())
	for _, args := range [][]string{{"selfverify", "enroll"}, {"phone", "qmsp", "enroll"}, {"phone", "bioqr", "enroll"}, {"watermark", "enroll"}} {
		c, _, err := root.Find(args)
		if err != nil || c.Name() != "enrol" {
			t.Errorf("%v finds %v, %v", args, c.Name(), err)
		}
	}
}

// TestEveryCommandJSONError: every command, given --json and a mistake,
// answers one JSON error object with code "usage" and exits 2.
func TestEveryCommandJSONError(t *testing.T) {
	var paths [][]string
	walk(Root(NewGlobals()), func(c *cobra.Command) {
		if c.HasParent() {
			paths = append(paths, strings.Fields(c.CommandPath())[1:])
		}
	})
	if len(paths) < 60 {
		t.Fatalf("only %d commands", len(paths))
	}
	for _, p := range paths {
		g := NewGlobals()
		var out, errb bytes.Buffer
		g.Out, g.Err = &out, &errb
		code := Main(context.Background(), g, append(p, "--json", "--no-such-flag"))
		var e errorJSON
		if err := json.Unmarshal(out.Bytes(), &e); err != nil || code != ExitUsage || e.Error.Code != "usage" || e.Error.ExitCode != ExitUsage {
			t.Errorf("qshield %s --json --no-such-flag: exit %d, stdout %q (%v)", strings.Join(p, " "), code, out.String(), err)
		}
	}
}
