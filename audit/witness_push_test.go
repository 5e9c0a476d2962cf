package audit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// rawAdd posts an add-checkpoint body and returns status, content type and body.
func rawAdd(t *testing.T, url string, body []byte) (int, string, string) {
	t.Helper()
	resp, err := http.Post(url+"/add-checkpoint", "text/plain", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// TestWitnessAddCheckpoint runs the tlog-witness protocol between the
// publisher (WitnessSink) and a witness over HTTP on a real log: every
// checkpoint is cosigned and stored with its cosignature, a quorum check
// passes with the witness and fails without enough; unknown origin → 404,
// foreign key → 403, old > new → 400, stale old → 409 with the held size,
// a bad proof → 422, a fork (same size, other root) → 409 and an alarm, a
// rollback → 409/refusal; none of the refusals changes the witness's
// state, and a restarted witness keeps it.
func TestWitnessAddCheckpoint(t *testing.T) {
	signer, verifier := testKeys(t)
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := emptyLog(t, db)
		cos, cosV := testCosigner(t, "witness.example/w1")
		state := filepath.Join(t.TempDir(), "witness-state")
		w := &Witness{Log: verifier, Signer: cos, StateFile: state}
		srv := httptest.NewServer(w.Handler("/w1"))
		defer srv.Close()
		url := srv.URL + "/w1"
		sink := &WitnessSink{URL: url, Witness: cosV, Log: l}
		pub := &Publisher{Log: l, Signer: signer, Sinks: []Sink{sink}}

		publish := func() Checkpoint {
			t.Helper()
			if _, _, err := pub.PublishNow(ctx); err != nil {
				t.Fatal(err)
			}
			msg, err := l.LatestCheckpoint(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cp, sigs, err := VerifyCosigned(msg, verifier, []note.Verifier{cosV}, 1)
			if err != nil {
				t.Fatalf("served checkpoint: %v\n%s", err, msg)
			}
			if len(sigs) != 1 {
				t.Fatalf("%d cosignatures", len(sigs))
			}
			return cp
		}
		stateNow := func() string {
			t.Helper()
			b, err := os.ReadFile(state)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}

		appendN(t, l, 5, "alice")
		publish()
		appendN(t, l, 9, "bob")
		cp14 := publish() // pushed with a proof from 5
		if held, _, _ := w.Held(); held.Size != 14 || cp14.Size != 14 {
			t.Fatalf("witness holds %d, checkpoint %d", held.Size, cp14.Size)
		}
		// The state verifies with the log's key and the witness's cosignature key.
		if _, err := note.Open([]byte(stateNow()), note.VerifierList(verifier)); err != nil {
			t.Fatal(err)
		}
		if _, err := note.Open([]byte(stateNow()), note.VerifierList(cosV)); err != nil {
			t.Fatal(err)
		}
		// Quorum: two trusted witnesses required, one cosigned.
		msg14, _ := l.LatestCheckpoint(ctx)
		_, otherV := testCosigner(t, "witness.example/w2")
		if _, _, err := VerifyCosigned(msg14, verifier, []note.Verifier{cosV, otherV}, 2); err == nil {
			t.Fatal("quorum of 2 met with one cosignature")
		}
		// A sink that forgot the witness's size learns it from the 409.
		appendN(t, l, 3, "carol")
		pub.Sinks = []Sink{&WitnessSink{URL: url, Witness: cosV, Log: l}}
		publish()
		held17 := stateNow()
		msg17, _ := l.LatestCheckpoint(ctx)
		plain17 := msg17[:bytes.Index(msg17, []byte("\n\n"))+2]
		plain17 = append(plain17, msg17[len(plain17):bytes.IndexByte(msg17[len(plain17):], '\n')+len(plain17)+1]...) // text + the log's signature only

		refuse := func(name string, body []byte, wantStatus int, wantBody string) {
			t.Helper()
			alarms := w.Alarms.Load()
			status, ctype, got := rawAdd(t, url, body)
			if status != wantStatus || wantBody != "" && got != wantBody {
				t.Fatalf("%s: %d %q, want %d %q", name, status, got, wantStatus, wantBody)
			}
			if status == http.StatusConflict && ctype != "text/x.tlog.size" {
				t.Fatalf("%s: 409 content type %q", name, ctype)
			}
			if stateNow() != held17 {
				t.Fatalf("%s changed the witness's state", name)
			}
			if name != "fork" && w.Alarms.Load() != alarms {
				t.Fatalf("%s raised an alarm", name)
			}
		}
		req := func(old int64, proof []tlog.Hash, cp []byte) []byte {
			return AddCheckpointRequest{OldSize: old, Proof: proof, Checkpoint: cp}.Marshal()
		}
		// Another origin; a checkpoint signed by another key; old > new.
		otherSigner, _ := testKeys(t) // same origin, other key
		foreign := mustSign(t, otherSigner, Checkpoint{Origin: testOrigin, Tree: Tree{Size: 20}})
		refuse("unknown origin", req(17, nil, bytes.Replace(plain17, []byte(testOrigin), []byte("other.example/log"), 1)), http.StatusNotFound, "")
		refuse("foreign key", req(17, nil, foreign), http.StatusForbidden, "")
		refuse("old above new", req(18, nil, plain17), http.StatusBadRequest, "")
		refuse("stale old", req(14, nil, plain17), http.StatusConflict, "17\n")
		refuse("malformed", []byte("old 017\n\n"+string(plain17)), http.StatusBadRequest, "")
		// Replaying the held checkpoint is re-cosigned, state unchanged.
		if status, _, body := rawAdd(t, url, req(17, nil, plain17)); status != http.StatusOK || !strings.HasPrefix(body, "— witness.example/w1 ") {
			t.Fatalf("replay of the held checkpoint: %d %q", status, body)
		}
		if stateNow() != held17 {
			t.Fatal("replay changed the state")
		}

		// Bad proof: the log grows to 20; a proof with one hash flipped.
		backup17 := takeBackup(t, db)
		appendN(t, l, 3, "dave")
		if _, _, err := l.Checkpoint(ctx, signer); err != nil {
			t.Fatal(err)
		}
		msg20, _ := l.LatestCheckpoint(ctx)
		proof, err := l.ProveConsistency(ctx, 17, 20)
		if err != nil {
			t.Fatal(err)
		}
		bad := append([]tlog.Hash(nil), proof...)
		bad[0][0] ^= 1
		refuse("bad proof", req(17, bad, msg20), http.StatusUnprocessableEntity, "")
		refuse("proof from 0", req(0, proof, msg20), http.StatusConflict, "17\n")

		// Fork: the database is restored to 17 records and grows
		// differently to 20; the log signs that other tree of 20. The
		// witness first accepts the honest 20, then refuses the fork with
		// 409 and an alarm.
		if status, _, body := rawAdd(t, url, req(17, proof, msg20)); status != http.StatusOK {
			t.Fatalf("honest 20: %d %s", status, body)
		}
		held17 = stateNow() // now holds 20
		backup17.restore(t, db)
		appendN(t, l, 3, "mallory")
		forkSink := &WitnessSink{URL: url, Witness: cosV, Log: l}
		pub.Sinks = []Sink{forkSink}
		_, _, err = pub.PublishNow(ctx)
		if !errors.Is(err, ErrFork) {
			t.Fatalf("fork push: %v", err)
		}
		if w.Alarms.Load() != 1 {
			t.Fatalf("alarms %d after a fork", w.Alarms.Load())
		}
		if stateNow() != held17 {
			t.Fatal("the fork changed the witness's state")
		}
		forked, _ := l.LatestCheckpoint(ctx)
		refuse("fork", req(20, nil, forked), http.StatusConflict, "20\n")
		if w.Alarms.Load() != 2 {
			t.Fatalf("alarms %d after a second fork", w.Alarms.Load())
		}

		// Rollback: the database restored to 17 records again, the log
		// signs nothing new; pushing its checkpoint of 17 is refused.
		backup17.restore(t, db)
		_, _, err = pub.PublishNow(ctx)
		if !errors.Is(err, ErrRollback) {
			t.Fatalf("rollback push: %v", err)
		}
		refuse("rollback", req(17, nil, plain17), http.StatusConflict, "20\n")

		// A restarted witness keeps its state and continues from 20.
		w2 := &Witness{Log: verifier, Signer: cos, StateFile: state}
		if held, ok, err := w2.Held(); err != nil || !ok || held.Size != 20 {
			t.Fatalf("restarted witness holds %+v %v %v", held, ok, err)
		}
		if _, err := w2.AddCheckpoint(ctx, AddCheckpointRequest{OldSize: 17, Checkpoint: plain17}); err == nil {
			t.Fatal("restarted witness accepted a rollback")
		}
		var we *WitnessError
		_, err = w2.AddCheckpoint(ctx, AddCheckpointRequest{OldSize: 20, Checkpoint: msg20})
		if err != nil {
			t.Fatalf("restarted witness refused the held checkpoint: %v", err)
		}
		if _, err := w2.AddCheckpoint(ctx, AddCheckpointRequest{OldSize: 20, Checkpoint: forked}); !errors.As(err, &we) || we.Status != http.StatusConflict {
			t.Fatalf("restarted witness on the fork: %v", err)
		}
	})
}

// FuzzParseAddCheckpoint: parsing never panics; an accepted body
// round-trips byte for byte through Marshal; and a witness given a
// rejected or refused request keeps its state file unchanged.
func FuzzParseAddCheckpoint(f *testing.F) {
	signer, verifier := testKeys(f)
	cos, _ := testCosigner(f, "witness.example/fuzz")
	var h [32]byte
	h[0] = 7
	cp5 := mustSignTB(f, signer, Checkpoint{Origin: testOrigin, Tree: Tree{Size: 5, Hash: h}})
	seeds := [][]byte{
		AddCheckpointRequest{OldSize: 0, Checkpoint: cp5}.Marshal(),
		AddCheckpointRequest{OldSize: 3, Proof: []tlog.Hash{h, h}, Checkpoint: cp5}.Marshal(),
		[]byte("old 0\n\n"), []byte("old 01\n\nx"), []byte("old -1\n\nx"), []byte("old 1\nAAAA\n\nx"), []byte(""),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	dir := f.TempDir()
	state := filepath.Join(dir, "state")
	w := &Witness{Log: verifier, Signer: cos, StateFile: state}
	if _, err := w.AddCheckpoint(context.Background(), AddCheckpointRequest{Checkpoint: cp5}); err != nil {
		f.Fatal(err)
	}
	held, err := os.ReadFile(state)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseAddCheckpoint(body)
		if err != nil {
			return
		}
		if got := r.Marshal(); !bytes.Equal(got, body) {
			t.Fatalf("round trip\n got %q\nwant %q", got, body)
		}
		if len(r.Proof) > 63 || r.OldSize < 0 || len(r.Checkpoint) == 0 {
			t.Fatalf("accepted %+v", r)
		}
		if _, err := w.AddCheckpoint(context.Background(), r); err != nil {
			if now, _ := os.ReadFile(state); !bytes.Equal(now, held) {
				t.Fatalf("a refused request changed the state: %v", err)
			}
		} else if now, _ := os.ReadFile(state); !bytes.Equal(now, held) {
			// Only a valid log-signed extension may change it; the fuzzer
			// cannot forge one, so an accepted request is a replay of cp5.
			t.Fatalf("accepted request changed the state:\n%s", now)
		}
	})
}

func mustSignTB(t testing.TB, s note.Signer, c Checkpoint) []byte {
	t.Helper()
	msg, err := note.Sign(&note.Note{Text: c.Text()}, s)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// TestWitnessAddCheckpointAtomic: requests racing from the same old size
// (checkpoints of 12, 15 and 20 records, each with a valid proof from 10)
// get exactly one cosignature; the others are told the new size (409),
// and the state is the accepted one — never a later write of a smaller
// tree (the race tlog-witness warns about).
func TestWitnessAddCheckpointAtomic(t *testing.T) {
	signer, verifier := testKeys(t)
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := emptyLog(t, db)
		cos, _ := testCosigner(t, "witness.example/w1")
		msgs := map[int64][]byte{}
		for _, n := range []int64{10, 12, 15, 20} {
			appendN(t, l, int(n)-int(l.mustSize(t)), "a")
			m, cp, err := l.Checkpoint(ctx, signer)
			if err != nil || cp.Size != n {
				t.Fatalf("checkpoint %d: %v %d", n, err, cp.Size)
			}
			msgs[n] = m
		}
		for round := 0; round < 5; round++ {
			w := &Witness{Log: verifier, Signer: cos, StateFile: filepath.Join(t.TempDir(), "state")}
			if _, err := w.AddCheckpoint(ctx, AddCheckpointRequest{Checkpoint: msgs[10]}); err != nil {
				t.Fatal(err)
			}
			type result struct {
				n   int64
				err error
			}
			res := make(chan result)
			for _, n := range []int64{12, 15, 20} {
				proof, err := l.ProveConsistency(ctx, 10, n)
				if err != nil {
					t.Fatal(err)
				}
				go func() {
					_, err := w.AddCheckpoint(ctx, AddCheckpointRequest{OldSize: 10, Proof: proof, Checkpoint: msgs[n]})
					res <- result{n, err}
				}()
			}
			var won []int64
			for range 3 {
				r := <-res
				var we *WitnessError
				switch {
				case r.err == nil:
					won = append(won, r.n)
				case errors.As(r.err, &we) && we.Status == http.StatusConflict:
				default:
					t.Fatalf("checkpoint %d: %v", r.n, r.err)
				}
			}
			held, _, err := w.Held()
			if err != nil || len(won) != 1 || held.Size != won[0] {
				t.Fatalf("accepted %v, state holds %d (%v)", won, held.Size, err)
			}
		}
	})
}

func (l *Log) mustSize(t *testing.T) int64 {
	t.Helper()
	h, err := l.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h.Seq
}

// BenchmarkWitnessAddCheckpoint measures one add-checkpoint over HTTP on
// loopback: parse, log signature check, consistency proof check (from a
// tree of 10⁶ records to one of 10⁶+1000, 20-odd hashes), cosignature and
// the durable (fsync'd) state write.
func BenchmarkWitnessAddCheckpoint(b *testing.B) {
	signer, verifier := testKeys(b)
	cos, _ := testCosigner(b, "witness.example/bench")
	// Two trees from leaf hashes held in memory.
	const n1, n2 = 1_000_000, 1_001_000
	var hashes []tlog.Hash
	for i := int64(0); i < n2; i++ {
		var rec [8]byte
		rec[0], rec[1], rec[2] = byte(i), byte(i>>8), byte(i>>16)
		hs, err := tlog.StoredHashes(i, rec[:], tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(ix))
			for j, x := range ix {
				out[j] = hashes[x]
			}
			return out, nil
		}))
		if err != nil {
			b.Fatal(err)
		}
		hashes = append(hashes, hs...)
	}
	r := tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(ix))
		for j, x := range ix {
			out[j] = hashes[x]
		}
		return out, nil
	})
	h1, _ := tlog.TreeHash(n1, r)
	h2, _ := tlog.TreeHash(n2, r)
	proof, err := tlog.ProveTree(n2, n1, r)
	if err != nil {
		b.Fatal(err)
	}
	m1 := mustSignTB(b, signer, Checkpoint{Origin: testOrigin, Tree: Tree{Size: n1, Hash: h1}})
	m2 := mustSignTB(b, signer, Checkpoint{Origin: testOrigin, Tree: Tree{Size: n2, Hash: h2}})
	state := filepath.Join(b.TempDir(), "state")
	w := &Witness{Log: verifier, Signer: cos, StateFile: state}
	srv := httptest.NewServer(w.Handler(""))
	defer srv.Close()
	body := AddCheckpointRequest{OldSize: n1, Proof: proof, Checkpoint: m2}.Marshal()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := os.Remove(state); err != nil && !errors.Is(err, os.ErrNotExist) {
			b.Fatal(err)
		}
		if _, err := w.AddCheckpoint(context.Background(), AddCheckpointRequest{Checkpoint: m1}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		resp, err := http.Post(srv.URL+"/add-checkpoint", "text/plain", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// TestWitnessSinkSuperseded: two nodes share one log and push to one
// witness. A checkpoint signed by node B before node A's newer one reached
// the witness is stale, not a rollback: B's push reports ErrSuperseded, the
// witness raises no alarm and keeps the newer state, and B's next
// checkpoint is cosigned from there. A log that really shrank below the
// witness's size is still a rollback (TestWitnessAddCheckpoint).
func TestWitnessSinkSuperseded(t *testing.T) {
	signer, verifier := testKeys(t)
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := emptyLog(t, db)
		cos, cosV := testCosigner(t, "witness.example/w1")
		w := &Witness{Log: verifier, Signer: cos, StateFile: filepath.Join(t.TempDir(), "witness-state")}
		srv := httptest.NewServer(w.Handler("/w1"))
		defer srv.Close()
		url := srv.URL + "/w1"
		nodeA := &Publisher{Log: l, Signer: signer, Sinks: []Sink{&WitnessSink{URL: url, Witness: cosV, Log: l}}}
		sinkB := &WitnessSink{URL: url, Witness: cosV, Log: l}
		nodeB := &Publisher{Log: l, Signer: signer, Sinks: []Sink{sinkB}}

		appendN(t, l, 10, "alice")
		stale, _, err := l.Checkpoint(ctx, signer) // node B signs 10 …
		if err != nil {
			t.Fatal(err)
		}
		appendN(t, l, 10, "bob")
		if _, cp, err := nodeA.PublishNow(ctx); err != nil || cp.Size != 20 { // … node A pushes 20 first
			t.Fatalf("node A: %v %d", err, cp.Size)
		}
		held, _, _ := w.Held()
		if err := sinkB.Publish(ctx, stale); !errors.Is(err, ErrSuperseded) || errors.Is(err, ErrRollback) {
			t.Fatalf("stale push from node B: %v, want ErrSuperseded", err)
		}
		if now, _, _ := w.Held(); now.Size != held.Size || w.Alarms.Load() != 0 {
			t.Fatalf("witness now holds %d (was %d), alarms %d", now.Size, held.Size, w.Alarms.Load())
		}
		appendN(t, l, 5, "carol")
		if _, cp, err := nodeB.PublishNow(ctx); err != nil || cp.Size != 25 {
			t.Fatalf("node B's next checkpoint: %v %d", err, cp.Size)
		}
		if now, _, _ := w.Held(); now.Size != 25 {
			t.Fatalf("witness holds %d, want 25", now.Size)
		}
	})
}
