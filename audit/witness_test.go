package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestWitness: a witness process cosigns checkpoints of a growing log over
// HTTP and raises an alarm (error, counter, unchanged state) on a rollback
// and on a fork; a checkpoint signed by another key is refused.
func TestWitness(t *testing.T) {
	signer, verifier := testKeys(t)
	wsigner, wverifier := testCosigner(t, "witness.example")
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := emptyLog(t, db)
		srv := httptest.NewServer(Handler(l))
		defer srv.Close()
		pub := &Publisher{Log: l, Signer: signer, Sinks: []Sink{FileSink{Path: filepath.Join(t.TempDir(), "cp.txt")}}}
		w := &Witness{Log: verifier, Signer: wsigner, Source: HTTPSource{BaseURL: srv.URL}, StateFile: filepath.Join(t.TempDir(), "witness-state")}

		step := func(wantErr error) Checkpoint {
			t.Helper()
			c, err := w.Step(ctx)
			if wantErr == nil && err != nil || wantErr != nil && !errors.Is(err, wantErr) {
				t.Fatalf("witness step: want %v, got %v", wantErr, err)
			}
			return c
		}
		appendN(t, l, 5, "alice")
		if _, _, err := pub.PublishNow(ctx); err != nil {
			t.Fatal(err)
		}
		step(nil)
		appendN(t, l, 9, "bob")
		if _, _, err := pub.PublishNow(ctx); err != nil {
			t.Fatal(err)
		}
		if c := step(nil); c.Size != 14 {
			t.Fatalf("witness holds size %d", c.Size)
		}
		// The cosigned state carries both signatures.
		st, err := os.ReadFile(w.StateFile)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := note.Open(st, note.VerifierList(verifier, wverifier)); err != nil {
			t.Fatal(err)
		}
		n, _ := note.Open(st, note.VerifierList(verifier, wverifier))
		if len(n.Sigs) != 2 {
			t.Fatalf("state has %d verified signatures, want 2", len(n.Sigs))
		}
		old := takeBackup(t, db) // size 14, checkpoint 14
		appendN(t, l, 3, "carol")
		if _, _, err := pub.PublishNow(ctx); err != nil {
			t.Fatal(err)
		}
		step(nil) // 17

		// Rollback: the database is restored from the backup.
		old.restore(t, db)
		step(ErrRollback)
		if w.Alarms.Load() != 1 {
			t.Fatalf("alarms %d", w.Alarms.Load())
		}
		// Fork: the restored copy grows to the same and a larger size with
		// other records and signs its own checkpoints.
		appendN(t, l, 3, "mallory")
		if _, _, err := pub.PublishNow(ctx); err != nil {
			t.Fatal(err)
		}
		step(ErrFork)
		appendN(t, l, 4, "mallory")
		if _, _, err := pub.PublishNow(ctx); err != nil {
			t.Fatal(err)
		}
		step(ErrFork)
		if w.Alarms.Load() != 3 {
			t.Fatalf("alarms %d", w.Alarms.Load())
		}
		if held, _, err := w.Held(); err != nil || held.Size != 17 {
			t.Fatalf("witness state changed after alarms: %+v %v", held, err)
		}
		// A checkpoint under another key is refused without an alarm.
		other, _ := testKeys(t)
		w2 := &Witness{Log: verifier, Signer: wsigner, Source: staticSource{msg: mustSign(t, other, Checkpoint{Origin: testOrigin, Tree: Tree{Size: 1}})}, StateFile: filepath.Join(t.TempDir(), "s")}
		if _, err := w2.Step(ctx); err == nil || w2.Alarms.Load() != 0 {
			t.Fatalf("foreign checkpoint: %v", err)
		}
	})
}

func testCosigner(t testing.TB, name string) (*Cosigner, note.Verifier) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCosigner(name, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewCosignatureVerifier(c.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	return c, v
}

type staticSource struct{ msg []byte }

func (s staticSource) Checkpoint(context.Context) ([]byte, error) { return s.msg, nil }
func (s staticSource) Consistency(context.Context, int64, int64) ([]tlog.Hash, error) {
	return nil, errors.New("none")
}

func mustSign(t *testing.T, s note.Signer, c Checkpoint) []byte {
	t.Helper()
	msg, err := note.Sign(&note.Note{Text: c.Text()}, s)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}
