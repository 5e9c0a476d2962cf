package qkd

import (
	"math"
	"testing"
)

func TestStatsAdd(t *testing.T) {
	var s Stats
	s.Add(Stats{Blocks: 1, Pulses: 1000, ReconciledBits: 100, FinalBits: 30, QBER: 0.02, F: 1.1, SampledBits: 10, SampledQBER: 0.1}, 1e6)
	s.Add(Stats{Blocks: 1, Pulses: 1000, ReconciledBits: 300, FinalBits: 60, QBER: 0.04, F: 1.05, SampledBits: 30, SampledQBER: 0.0,
		Aborted: false}, 1e6)
	s.Add(Stats{Blocks: 1, AbortedBlocks: 1, Pulses: 1000, Aborted: true, AbortReason: "QBER"}, 1e6)
	if s.Blocks != 3 || s.AbortedBlocks != 1 || !s.Aborted || s.AbortReason != "QBER" || s.Pulses != 3000 || s.FinalBits != 90 {
		t.Fatalf("counters: %+v", s)
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-12 }
	if !near(s.QBER, (0.02*100+0.04*300)/400) || !near(s.F, (1.1*100+1.05*300)/400) || !near(s.SampledQBER, 0.025) {
		t.Errorf("weighted averages: QBER %g F %g sampled %g", s.QBER, s.F, s.SampledQBER)
	}
	if !near(s.SecretFraction, 90.0/400) || !near(s.KeyRatePerPulse, 0.03) || !near(s.KeyRateBps, 0.03e6) {
		t.Errorf("ratios: %+v", s)
	}
}

func TestAbortCauseRoundTrip(t *testing.T) {
	for _, c := range causes {
		if got := ParseAbortCause(c.Reason("detail: with colons")); got != c {
			t.Errorf("ParseAbortCause(%q) = %q", c.Reason("x"), got)
		}
	}
	for _, r := range []string{"", "qber", "QBER 12%", "finite-size:no space", "something: else"} {
		if got := ParseAbortCause(r); got != CauseOther {
			t.Errorf("ParseAbortCause(%q) = %q, want other", r, got)
		}
	}
	var s Stats
	s.Add(Stats{Blocks: 1, AbortedBlocks: 1, Aborted: true, AbortCause: CauseQBER, Aborts: map[AbortCause]int{CauseQBER: 1}}, 1)
	s.Add(Stats{Blocks: 1, AbortedBlocks: 1, Aborted: true, AbortCause: CauseQBER, Aborts: map[AbortCause]int{CauseQBER: 1}}, 1)
	s.Add(Stats{Blocks: 1, EpsSec: 1e-10, EpsCor: 1e-16}, 1)
	if s.Aborts[CauseQBER] != 2 || s.AbortCause != CauseQBER || s.EpsSec != 1e-10 {
		t.Errorf("%+v", s)
	}
}
