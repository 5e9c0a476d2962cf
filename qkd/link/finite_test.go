package link

import (
	"context"
	"errors"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qkd/bb84"
	"github.com/qshield/qshield/qkd/decoy"
	"github.com/qshield/qshield/qkd/privacy"
)

// TestDeliveredKeyIsFiniteSize (finding: asymptotic bounds on finite blocks):
// the delivered key length is exactly the finite-key length of Lim et al.
// (2014) for the block's bounds, minus the bits disclosed and discarded, cut
// to whole keys. A key sized by any other (e.g. asymptotic) bound fails it.
func TestDeliveredKeyIsFiniteSize(t *testing.T) {
	cfg := testConfig(25)
	st, err := Run(context.Background(), cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.FinalBits == 0 || st.SX1Lower <= 0 {
		t.Fatalf("no key at 25 km with the planned block: %+v", st)
	}
	margin := st.SX0Lower + st.SX1Lower*(1-decoy.H(st.PhiUpper)) - decoy.SecurityCost(1e-10) -
		float64(st.DisclosedBits) - float64(st.DiscardedBits)
	if f := float64(st.FinalBits); f > margin || margin-f >= 8*32 {
		t.Fatalf("delivered %d bits; the finite-key length is %.0f (whole 256-bit keys)", st.FinalBits, margin)
	}
	if st.EpsSec != 1e-10 || !(st.EpsCor > 0 && st.EpsCor < 1e-15) {
		t.Errorf("ε_sec = %g, ε_cor = %g", st.EpsSec, st.EpsCor)
	}
	t.Logf("25 km, %d pulses: %d bits, s_X,0 ≥ %.0f, s_X,1 ≥ %.0f, φ_X ≤ %.4f, disclosed %d, ε_cor %.3g",
		st.Pulses, st.FinalBits, st.SX0Lower, st.SX1Lower, st.PhiUpper, st.DisclosedBits, st.EpsCor)
}

// TestNoAsymptoticSwitch (finding: FiniteSize was off by default): the
// session configuration has no field that could select asymptotic bounds.
func TestNoAsymptoticSwitch(t *testing.T) {
	ty := reflect.TypeOf(Config{})
	for i := 0; i < ty.NumField(); i++ {
		name := strings.ToLower(ty.Field(i).Name)
		if strings.Contains(name, "finite") || strings.Contains(name, "asymptotic") {
			t.Errorf("link.Config.%s: delivery must not be able to switch the finite-key bound off", ty.Field(i).Name)
		}
	}
}

// TestAuditBlocksAbort (finding: the platform's 4·10^7-pulse blocks at 25 km
// delivered 25,856 bits, 10^8-pulse blocks 61,440, from asymptotic bounds):
// with the old source settings (ν = 0.05, 0.8/0.1/0.1, symmetric bases) such
// blocks now abort for a finite-size reason and deliver nothing.
func TestAuditBlocksAbort(t *testing.T) {
	for _, pulses := range []int64{4e7, 1e8} {
		cfg := testConfig(25)
		p := &cfg.Physics
		p.Nu, p.PMu, p.PNu, p.PVacuum, p.PX = 0.05, 0.8, 0.1, 0.1, 0.5
		cfg.PulsesPerBlock = pulses
		var got []qkd.Key
		st, err := Run(context.Background(), cfg, func(_ context.Context, k []qkd.Key) error { got = append(got, k...); return nil }, nil)
		if !errors.Is(err, qkd.ErrAborted) || st.FinalBits != 0 || len(got) != 0 {
			t.Fatalf("%d pulses: err = %v, %d bits delivered", pulses, err, st.FinalBits)
		}
		if st.AbortCause != qkd.CauseDecoy && st.AbortCause != qkd.CauseFiniteSize && st.AbortCause != qkd.CausePhaseError {
			t.Errorf("%d pulses: cause %q (%s)", pulses, st.AbortCause, st.AbortReason)
		}
	}
}

// TestShortBlockCause: a block below the planned size aborts with a cause a
// metric can count, on both sides.
func TestShortBlockCause(t *testing.T) {
	cfg := testConfig(25)
	cfg.PulsesPerBlock = 2e8 // minimum 2.6·10^8
	var mu sync.Mutex
	var bobCause qkd.AbortCause
	ta, tb := Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		st, _ := RunBob(context.Background(), tb, cfg, nil)
		mu.Lock()
		bobCause = st.AbortCause
		mu.Unlock()
	}()
	st, err := RunAlice(context.Background(), ta, cfg, nil)
	ta.Close()
	<-done
	if !errors.Is(err, qkd.ErrAborted) || st.AbortCause != qkd.CauseFiniteSize || st.Aborts[qkd.CauseFiniteSize] != 1 {
		t.Fatalf("err = %v, cause %q, aborts %v", err, st.AbortCause, st.Aborts)
	}
	mu.Lock()
	defer mu.Unlock()
	if bobCause != qkd.CauseFiniteSize {
		t.Errorf("Bob's cause %q", bobCause)
	}
}

// recording wraps a transport and keeps the Amplify messages sent.
type recording struct {
	Transport
	mu  sync.Mutex
	amp []*Amplify
}

func (r *recording) Send(ctx context.Context, m Message) error {
	if a, ok := m.(*Amplify); ok {
		r.mu.Lock()
		r.amp = append(r.amp, a)
		r.mu.Unlock()
	}
	return r.Transport.Send(ctx, m)
}

// TestToeplitzSeedIsFull (finding: the n+m−1 seed bits were a ChaCha8
// expansion of 256 bits): the Amplify message carries all n+m−1 seed bits,
// and Bob refuses a seed of any other length.
func TestToeplitzSeedIsFull(t *testing.T) {
	cfg := testConfig(25)
	ta, tb := Pipe()
	rec := &recording{Transport: ta}
	done := make(chan error, 1)
	go func() { _, err := RunBob(context.Background(), tb, cfg, nil); done <- err }()
	st, err := RunAlice(context.Background(), rec, cfg, nil)
	ta.Close()
	if berr := <-done; err != nil || berr != nil {
		t.Fatal(err, berr)
	}
	if len(rec.amp) != 1 {
		t.Fatalf("%d Amplify messages", len(rec.amp))
	}
	a := rec.amp[0]
	n, m := int(st.ReconciledBits), int(a.Bits)
	if want := (privacy.SeedBits(n, m) + 63) / 64; len(a.Seed) != want {
		t.Fatalf("seed of %d words for a %d×%d Toeplitz matrix, want %d", len(a.Seed), m, n, want)
	}
	// Not a short seed stretched: the words are distinct (a repeated word in
	// 2^14+ random words has probability < 2^-30).
	seen := map[uint64]bool{}
	for _, w := range a.Seed[:len(a.Seed)-1] {
		if seen[w] {
			t.Fatal("repeated seed word")
		}
		seen[w] = true
	}
	short := *a
	short.Seed = a.Seed[:4]
	key := make([]uint64, (n+63)/64)
	if _, err := amplify(key, n, &short, cfg.KeyBytes); !errors.Is(err, ErrProtocol) {
		t.Fatalf("short seed: err = %v, want ErrProtocol", err)
	}
}

// TestPlanPulses reports and checks the planned block sizes: positive finite
// key at the minimum, none at half of it, and growing with distance.
func TestPlanPulses(t *testing.T) {
	prev := 0.0
	for _, km := range []float64{10, 25, 50} {
		p := bb84.DefaultParams(km)
		n, err := MinPulses(p, 1e-10, 1.10)
		if err != nil {
			t.Fatal(err)
		}
		at := func(x float64) int64 { l, _ := ExpectedKeyLength(p, x, 1e-10, 1.10, 16384); return l }
		if at(float64(n)) <= 0 || at(0.9*float64(n)) > 0 {
			t.Errorf("%g km: minimum %d pulses is not the threshold (ℓ = %d there, %d at 90%%)", km, n, at(float64(n)), at(0.9*float64(n)))
		}
		if float64(n) <= prev {
			t.Errorf("%g km: minimum %d not above the shorter link's %.0f", km, n, prev)
		}
		prev = float64(n)
		plan, _ := PlanPulses(p, 1e-10, 1.10)
		t.Logf("%g km: minimum block %.3g pulses, planned %.3g (%.1f s at 40 MHz), expected key %d bits", km, float64(n), float64(plan), float64(plan)/40e6, at(float64(plan)))
		if plan < 2*n || math.Mod(float64(plan), 1e7) != 0 {
			t.Errorf("%g km: plan %d for minimum %d", km, plan, n)
		}
	}
}
