package experiments

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qkd/bb84"
	"github.com/qshield/qshield/qkd/cascade"
	"github.com/qshield/qshield/qkd/decoy"
	"github.com/qshield/qshield/qkd/decoy/limfig"
	"github.com/qshield/qshield/qkd/link"
	"github.com/qshield/qshield/qkd/privacy"
)

// QKDRateExperiment is `qshield experiment qkd-rate`: secret key rate per pulse
// against distance for the GYS link: the asymptotic GLLP curve (a reference,
// never delivered), the finite-key bound of Lim et al. (2014) at block sizes
// 10^8…10^12 pulses, and the full protocol, which delivers keys sized by that
// finite-key bound; and the reproduction of Lim et al.'s Fig. 1 (package
// limfig) beside the paper's anchor points (qkd-lim2014.png).
func QKDRateExperiment() experiment.Spec {
	return experiment.Spec{
		Name:    "qkd-rate",
		Summary: "decoy-state BB84 key rate per pulse vs distance 0–150 km (GYS link): GLLP asymptotic reference, finite-key bound (Lim et al. 2014) at 1e8…1e12 pulses, full protocol (delivered); Lim et al. 2014 Fig. 1 reproduced (n_X = 1e4…1e9, optimised) beside the paper's anchors",
		Params: []experiment.Param{
			{Name: "max-km", Default: "150", Usage: "largest distance"},
			{Name: "step-km", Default: "10", Usage: "distance step"},
			{Name: "detections", Default: "10000000", Usage: "detection events simulated per distance for the simulator check against GLLP"},
			{Name: "nu", Default: "0.05", Usage: "weak decoy intensity of the simulator check (GYS settings: μ = 0.48, vacuum 0, symmetric bases)"},
			{Name: "finite-pulses", Default: "1e8,1e9,1e10,1e11,1e12", Usage: "comma-separated block sizes (pulses) for the finite-key curves"},
			{Name: "f", Default: "1.22", Usage: "reconciliation efficiency of the theory curves (GLLP and finite-key)"},
			{Name: "epsilon", Default: "1e-10", Usage: "ε_sec of the finite-key bound"},
			{Name: "link-km", Default: "10,25,50", Usage: "distances where the whole protocol (Cascade, verification, Toeplitz) runs"},
			{Name: "link-pulses", Default: "0", Usage: "pulses per full-protocol block (0: the link's planned block for the distance)"},
			{Name: "lim-blocks", Default: "1e4,1e5,1e6,1e7,1e8,1e9", Usage: "post-processing block sizes n_X of the reproduced Lim et al. (2014) Fig. 1 curves (empty: skip)"},
			{Name: "lim-step-km", Default: "10", Usage: "distance step of the reproduced Lim et al. Fig. 1 curves"},
		},
		Run: runQKDRate,
	}
}

func parseFloats(s string) ([]float64, error) {
	var out []float64
	for _, f := range splitComma(s) {
		var v float64
		if _, err := fmt.Sscan(f, &v); err != nil {
			return nil, fmt.Errorf("bad number %q: %w", f, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func splitComma(s string) []string {
	var out []string
	cur := ""
	for _, r := range s {
		if r == ',' {
			if cur != "" {
				out = append(out, cur)
			}
			cur = ""
			continue
		}
		if r != ' ' {
			cur += string(r)
		}
	}
	if cur != "" {
		out = append(out, cur)
	}
	return out
}

// gysReference is the source setting of the GLLP reference figures (μ = 0.48,
// weak decoy nu, vacuum, 80/10/10, symmetric bases), used only to check the
// simulator against the asymptotic formula.
func gysReference(km, nu float64) bb84.Params {
	p := bb84.DefaultParams(km)
	p.Mu, p.Nu, p.Vacuum, p.PMu, p.PNu, p.PVacuum, p.PX = 0.48, nu, 0, 0.8, 0.1, 0.1, 0.5
	return p
}

func runQKDRate(ctx context.Context, env *experiment.Env) (*experiment.Result, error) {
	maxKm, err := env.Float("max-km")
	if err != nil {
		return nil, err
	}
	step, err := env.Float("step-km")
	if err != nil {
		return nil, err
	}
	dets, err := env.Float("detections")
	if err != nil {
		return nil, err
	}
	nu, err := env.Float("nu")
	if err != nil {
		return nil, err
	}
	fTheory, err := env.Float("f")
	if err != nil {
		return nil, err
	}
	eps, err := env.Float("epsilon")
	if err != nil {
		return nil, err
	}
	fins, err := parseFloats(env.String("finite-pulses"))
	if err != nil {
		return nil, err
	}
	linkKm, err := parseFloats(env.String("link-km"))
	if err != nil {
		return nil, err
	}
	linkPulses, err := env.Float("link-pulses")
	if err != nil {
		return nil, err
	}
	if step <= 0 || maxKm < 0 || maxKm > 400 || dets < 1e4 || !(nu > 0 && nu < 0.48) || !(fTheory >= 1 && fTheory < 3) || !(eps > 0 && eps < 0.01) || linkPulses < 0 {
		return nil, errors.New("qkd-rate: need step-km > 0, 0 ≤ max-km ≤ 400, detections ≥ 10^4, 0 < ν < 0.48, 1 ≤ f < 3, 0 < ε < 0.01, link-pulses ≥ 0")
	}
	const mu = 0.48
	gys := decoy.GYS()
	var seed [32]byte
	rng := bb84.NewRand(&seed)

	header := []string{"km", "GLLP, ∞ decoys (asymptotic)", "simulated vacuum+weak (asymptotic)", "sim / GLLP"}
	for _, n := range fins {
		header = append(header, fmt.Sprintf("finite N=%.0e", n))
	}
	tab := experiment.Table{Title: fmt.Sprintf("Secret key rate per pulse, GYS link (f = %g for the theory curves)", fTheory), Header: header}
	plot := experiment.Plot{File: "qkd-rate.png", Title: "Decoy-state BB84 key rate, GYS link: asymptotic reference vs finite-key (delivered)", XLabel: "distance (km)", YLabel: "key bits per pulse", LogY: true}
	sRef := experiment.Series{Name: "GLLP asymptotic (reference, not delivered)"}
	sSim := experiment.Series{Name: fmt.Sprintf("simulator check, vacuum+weak ν=%g (asymptotic)", nu), Points: true}
	sFin := make([]experiment.Series, len(fins))
	for i, n := range fins {
		sFin[i].Name = fmt.Sprintf("finite-key (Lim 2014), N=%.0e pulses", n)
	}
	var kms []float64
	for km := 0.0; km <= maxKm+1e-9; km += step {
		kms = append(kms, km)
	}
	prog := env.Progress.Start("qkd-rate", int64(len(kms)+len(linkKm)), "points")
	type point struct {
		Km, GLLP, Sim float64
		Finite        []float64
	}
	var data []point
	maxDev := 0.0
	for _, km := range kms {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Simulator check: asymptotic vacuum + weak decoy bounds on a
		// simulated block with the reference's settings, per signal pulse.
		p := gysReference(km, nu)
		ref := gys.GLLP(km, mu, fTheory)
		gain, _, _ := p.Expected()
		pulses := int64(math.Min(dets/(gain[0]*p.PMu+gain[1]*p.PNu+gain[2]*p.PVacuum), 1<<44))
		blk, err := bb84.Simulate(p, pulses, rng)
		if err != nil {
			return nil, err
		}
		obs, err := decoy.Observe(countsOf(blk, p))
		if err != nil {
			return nil, err
		}
		sim, _, _ := decoy.Rate(obs, fTheory)
		pt := point{Km: km, GLLP: ref, Sim: sim}
		row := []any{km, ref, sim}
		if ref > 0 {
			row = append(row, fmt.Sprintf("%.3f", sim/ref))
			if km <= 120 {
				maxDev = math.Max(maxDev, math.Abs(sim/ref-1))
			}
		} else {
			row = append(row, "—")
		}
		// Finite-key bound on the expected counts of the link's own settings.
		for i, n := range fins {
			l, err := link.ExpectedKeyLength(bb84.DefaultParams(km), n, eps, fTheory, 16384)
			if err != nil {
				return nil, err
			}
			r := float64(l) / n
			pt.Finite = append(pt.Finite, r)
			row = append(row, r)
			if r > 0 {
				sFin[i].X = append(sFin[i].X, km)
				sFin[i].Y = append(sFin[i].Y, r)
			}
		}
		tab.AddRow(row...)
		if ref > 0 {
			sRef.X = append(sRef.X, km)
			sRef.Y = append(sRef.Y, ref)
		}
		if sim > 0 {
			sSim.X = append(sSim.X, km)
			sSim.Y = append(sSim.Y, sim)
		}
		data = append(data, pt)
		prog.Add(1)
	}
	cutRef := cutoff(func(km float64) float64 { return gys.GLLP(km, mu, fTheory) })
	tab.Notes = append(tab.Notes,
		fmt.Sprintf("GLLP (Lo–Ma–Chen, infinite decoys, per signal pulse, μ = 0.48) is an ASYMPTOTIC reference: rate zero at %.1f km (reference: about 142 km). No delivered key is sized by it.", cutRef),
		fmt.Sprintf("Simulator check: one simulated block per distance with the reference's settings (μ = 0.48, ν = %g, 80/10/10, symmetric bases), asymptotic vacuum + weak decoy bounds of Ma et al. (2005); largest deviation from GLLP over 0–120 km: %.1f%% (target 10%%).", nu, 100*maxDev),
		fmt.Sprintf("Finite-key: the bound of Lim et al. (2014) — the one every delivered key is sized by — on the expected counts of N pulses with the link's settings (μ = 0.4, ν = 0.2, vacuum; 30/50/20; key basis 80%%), ε_sec = %g, leakage f·h(E_X) per key bit plus one 64-bit tag per 16384-bit frame; per pulse (all pulses). 0 means the block yields no key.", eps))
	plot.Series = append([]experiment.Series{sRef, sSim}, sFin...)

	// The whole protocol at a few distances.
	lt := experiment.Table{Title: "Full protocol (Cascade, verification, Toeplitz): delivered keys, sized by the finite-key bound",
		Header: []string{"km", "pulses", "QBER", "f", "key bits n_X", "φ_X bound", "final bits", "key/pulse (delivered)", "finite bound, expected (f measured)", "GLLP (f=" + fmt.Sprint(fTheory) + ")", "ε_cor", "round trips", "time"}}
	sLink := experiment.Series{Name: "full protocol, delivered (finite-key)", Points: true}
	type linkPoint struct {
		Km, Pulses, QBER, F, PerPulse float64
		FinalBits                     int64
	}
	var linkData []linkPoint
	for _, km := range linkKm {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		cfg := link.DefaultConfig(km)
		cfg.Blocks = 1
		cfg.Epsilon = eps
		cfg.PulsesPerBlock = int64(linkPulses)
		s := seed
		s[0] = byte(km)
		cfg.Seed = &s
		start := time.Now()
		st, err := link.Run(ctx, cfg, nil, nil)
		el := time.Since(start)
		if err != nil && !errors.Is(err, qkd.ErrAborted) {
			return nil, err
		}
		fMeas := st.F
		if fMeas == 0 {
			fMeas = fTheory
		}
		exp, _ := link.ExpectedKeyLength(cfg.Physics, float64(st.Pulses), eps, fMeas, 16384)
		lt.AddRow(km, fmt.Sprintf("%.3g", float64(st.Pulses)), fmt.Sprintf("%.2f%%", 100*st.QBER), fmt.Sprintf("%.3f", st.F), st.ReconciledBits+st.DiscardedBits,
			fmt.Sprintf("%.4f", st.PhiUpper), st.FinalBits, st.KeyRatePerPulse, float64(exp)/float64(st.Pulses), gys.GLLP(km, mu, fTheory), fmt.Sprintf("%.2g", st.EpsCor), st.RoundTrips, el.Round(time.Millisecond))
		if st.KeyRatePerPulse > 0 {
			sLink.X = append(sLink.X, km)
			sLink.Y = append(sLink.Y, st.KeyRatePerPulse)
		}
		linkData = append(linkData, linkPoint{Km: km, Pulses: float64(st.Pulses), QBER: st.QBER, F: st.F, PerPulse: st.KeyRatePerPulse, FinalBits: st.FinalBits})
		prog.Add(1)
	}
	prog.Done()
	lt.Notes = append(lt.Notes,
		"Block size: the link's planned block (twice the minimum block with a positive expected finite key, in 10^7-pulse source frames) unless link-pulses is set.",
		"Delivered key per pulse counts all pulses (every intensity and both bases); keys are cut to whole 32-byte keys; the bits disclosed by Cascade and the 64-bit tags, and any discarded bits, are subtracted exactly. ε_sec per block as set; ε_cor is the tags' collision bound.")
	plot.Series = append(plot.Series, sLink)
	res := &experiment.Result{Name: "qkd-rate", Title: "QKD key rate vs distance: asymptotic reference, finite-key bound, delivered", Tables: []experiment.Table{tab, lt}, Plots: []experiment.Plot{plot},
		Data: map[string]any{"curves": data, "link": linkData}}
	limBlocks, err := parseFloats(env.String("lim-blocks"))
	if err != nil {
		return nil, err
	}
	limStep, err := env.Float("lim-step-km")
	if err != nil {
		return nil, err
	}
	if len(limBlocks) > 0 {
		lt, lp, ld, err := limFig1(ctx, limBlocks, limStep)
		if err != nil {
			return nil, err
		}
		res.Tables = append(res.Tables, lt)
		res.Plots = append(res.Plots, lp)
		res.Data.(map[string]any)["lim2014"] = ld
	}
	return res, nil
}

// limFig1 reproduces Lim et al. (2014), Fig. 1 (dedicated fibre, the paper's
// system, five parameters optimised per point) with package limfig, beside
// the paper's anchor points: the n_X = 10^4 curve reaching 135 km, and
// R(10^9) ≈ 1.75·R(10^7) at 100 km.
func limFig1(ctx context.Context, blocks []float64, step float64) (experiment.Table, experiment.Plot, any, error) {
	if !(step >= 1) {
		return experiment.Table{}, experiment.Plot{}, nil, errors.New("qkd-rate: lim-step-km must be ≥ 1")
	}
	for _, n := range blocks {
		if !(n >= 1e3 && n <= 1e12) {
			return experiment.Table{}, experiment.Plot{}, nil, fmt.Errorf("qkd-rate: lim block %g outside [1e3, 1e12]", n)
		}
	}
	s := limfig.Paper()
	type curve struct {
		NX       float64
		Km, Rate []float64
		CutoffKm float64
	}
	plot := experiment.Plot{File: "qkd-lim2014.png", Title: "Lim et al. 2014 Fig. 1 reproduced (dedicated fibre, optimised parameters)", XLabel: "fibre length (km)", YLabel: "secret key rate per pulse", LogY: true}
	tab := experiment.Table{Title: "Lim et al. (2014) Fig. 1, reproduced: optimised secret key rate per pulse (ε_sec = κℓ, κ = 10^-15)", Header: []string{"n_X", "0 km", "50 km", "100 km", "cut-off (km)", "optimum at the last point (μ1, μ2, p_μ1, p_μ2, q_x)"}}
	var curves []curve
	var r7, r9, low4 float64
	for _, nX := range blocks {
		c := curve{NX: nX}
		ser := experiment.Series{Name: fmt.Sprintf("reproduced n_X = %.0e", nX)}
		var last limfig.Params
		lastKm := -1.0
		for km := 0.0; km <= 260; km += step {
			if err := ctx.Err(); err != nil {
				return experiment.Table{}, experiment.Plot{}, nil, err
			}
			r, p := s.Optimal(km, nX)
			if r <= 0 {
				break
			}
			c.Km, c.Rate = append(c.Km, km), append(c.Rate, r)
			ser.X, ser.Y = append(ser.X, km), append(ser.Y, r)
			last, lastKm = p, km
			if km == 100 && nX == 1e7 {
				r7 = r
			}
			if km == 100 && nX == 1e9 {
				r9 = r
			}
		}
		if lastKm >= 0 {
			c.CutoffKm = s.Cutoff(nX, lastKm, lastKm+step, 0.5)
			if r, _ := s.Optimal(c.CutoffKm, nX); r > 0 {
				ser.X, ser.Y = append(ser.X, c.CutoffKm), append(ser.Y, r)
				if nX == 1e4 {
					low4 = r
				}
			}
		}
		at := func(km float64) any {
			for i, k := range c.Km {
				if k == km {
					return c.Rate[i]
				}
			}
			return 0.0
		}
		tab.AddRow(fmt.Sprintf("%.0e", nX), at(0), at(50), at(100), fmt.Sprintf("%.1f", c.CutoffKm),
			fmt.Sprintf("%.3f, %.3f, %.3f, %.3f, %.3f", last.Mu1, last.Mu2, last.P1, last.P2, last.QX))
		curves = append(curves, c)
		plot.Series = append(plot.Series, ser)
	}
	anchors := experiment.Series{Name: "paper anchors (135 km; 1.75x at 100 km)", Points: true}
	if low4 > 0 {
		anchors.X, anchors.Y = append(anchors.X, 135), append(anchors.Y, low4)
	}
	if r7 > 0 {
		anchors.X, anchors.Y = append(anchors.X, 100), append(anchors.Y, 1.75*r7)
	}
	plot.Series = append(plot.Series, anchors)
	tab.Notes = append(tab.Notes,
		"System of Lim et al. (2014), Evaluation: η_Bob 10%, p_dc 6·10^-7, p_ap 4%, e_mis 0.5% (misalignment read with η_sys), 0.2 dB/km, f_EC 1.16, μ3 = 2·10^-4, ε_cor 10^-15, ε_sec = 10^-15·ℓ; bound = decoy.Finite (the delivered one); optimiser = random multi-start + Nelder–Mead over (μ1, μ2, p_μ1, p_μ2, q_x).",
		"Paper anchors: n_X = 10^4 reaches 135 km; R(10^9)/R(10^7) at 100 km ≈ 1.75; the top curve stays just below 10^-2 at 0 km.")
	if r7 > 0 && r9 > 0 {
		tab.Notes = append(tab.Notes, fmt.Sprintf("Reproduced: R(10^9)/R(10^7) at 100 km = %.2f.", r9/r7))
	}
	return tab, plot, curves, nil
}

// cutoff finds the distance where rate(km) first reaches zero (bisection).
func cutoff(rate func(float64) float64) float64 {
	lo, hi := 0.0, 400.0
	if rate(hi) > 0 {
		return math.Inf(1)
	}
	for hi-lo > 0.01 {
		m := (lo + hi) / 2
		if rate(m) > 0 {
			lo = m
		} else {
			hi = m
		}
	}
	return lo
}

// countsOf tallies a simulated block like Alice and Bob would (all sifted
// decoy and vacuum bits compared, signal bits all compared: asymptotic).
func countsOf(b *bb84.Block, p bb84.Params) decoy.Counts {
	c := decoy.Counts{Mu: p.Mu, Nu: p.Nu, Pulses: b.PulsesPerClass}
	a, bob := &b.Alice, &b.Bob
	for i := 0; i < a.N; i++ {
		k := a.Class[i]
		c.Detections[k]++
		if bb84.Bit(a.Basis, i) != bb84.Bit(bob.Basis, i) {
			continue
		}
		c.Sifted[k]++
		c.Compared[k]++
		if bb84.Bit(a.Value, i) != bb84.Bit(bob.Value, i) {
			c.Errors[k]++
		}
	}
	return c
}

// QKDCascadeExperiment is `qshield experiment qkd-cascade`: Cascade efficiency,
// round trips, residual errors and speed against QBER, next to the published
// table.
func QKDCascadeExperiment() experiment.Spec {
	return experiment.Spec{
		Name:    "qkd-cascade",
		Summary: "Cascade reconciliation efficiency f, round trips, residual-error frames and throughput vs QBER 1–10%, next to Martinez-Mateo et al. (2015)",
		Params: []experiment.Param{
			{Name: "frames", Default: "1000", Usage: "frames per QBER point (the published table used 10,000)"},
			{Name: "n", Default: "10000", Usage: "frame length in bits"},
			{Name: "qbers", Default: "0.01,0.02,0.03,0.04,0.05,0.06,0.07,0.08,0.09,0.10", Usage: "comma-separated QBERs"},
		},
		Run: runQKDCascade,
	}
}

var publishedCascade = map[int][3]string{ // QBER % → original, BICONF, Yan et al.
	1:  {"1.143", "1.101", "1.095"},
	2:  {"1.159", "1.090", "1.084"},
	5:  {"1.185", "1.093", "1.077"},
	10: {"1.209", "1.111", "1.093"},
}

func runQKDCascade(ctx context.Context, env *experiment.Env) (*experiment.Result, error) {
	frames, err := env.Int("frames")
	if err != nil {
		return nil, err
	}
	n, err := env.Int("n")
	if err != nil {
		return nil, err
	}
	qbers, err := parseFloats(env.String("qbers"))
	if err != nil {
		return nil, err
	}
	if frames < 1 || n < 1024 || n > 1<<22 {
		return nil, errors.New("qkd-cascade: need frames ≥ 1 and 1024 ≤ n ≤ 2^22")
	}
	tab := experiment.Table{Title: fmt.Sprintf("Cascade (option-8 block sizes, sub-block reuse, parity inference), n = %d, %d frames per point", n, frames),
		Header: []string{"QBER", "f (this)", "f min–max", "original", "BICONF", "Yan et al.", "round trips", "residual-error frames", "caught by verification", "Mbit/s (one core)"}}
	plot := experiment.Plot{File: "qkd-cascade.png", Title: "Cascade efficiency", XLabel: "QBER (%)", YLabel: "f = disclosed / (n·h(QBER))"}
	sThis := experiment.Series{Name: "this implementation"}
	sOrig := experiment.Series{Name: "original Cascade (published)", Points: true}
	sBic := experiment.Series{Name: "BICONF (published)", Points: true}
	sYan := experiment.Series{Name: "Yan et al. (published)", Points: true}
	prog := env.Progress.Start("qkd-cascade", int64(frames*len(qbers)), "frames")
	rng := rand.New(rand.NewPCG(2015, 10000))
	type point struct {
		QBER, F, RoundTrips, MbitPerS float64
		Residual, Caught              int
	}
	var data []point
	words := (n + 63) / 64
	for _, q := range qbers {
		if !(q > 0 && q < 0.5) {
			return nil, fmt.Errorf("qkd-cascade: QBER %g", q)
		}
		var seed [32]byte
		seed[0] = byte(q * 1000)
		plan, err := cascade.NewPlan(n, q, 0, seed)
		if err != nil {
			return nil, err
		}
		bob := cascade.NewBob(plan)
		alice, _ := cascade.NewAlice(plan, make([]uint64, words))
		ask := func(_ context.Context, req []cascade.Range) ([]uint64, error) { return alice.Answer(req) }
		a := make([]uint64, words)
		b := make([]uint64, words)
		var disclosed, rts float64
		fMin, fMax := math.Inf(1), 0.0
		residual, caught := 0, 0
		var busy time.Duration
		for f := 0; f < frames; f++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			for i := range a {
				a[i] = rng.Uint64()
			}
			if r := uint(n) & 63; r != 0 {
				a[words-1] &= 1<<r - 1
			}
			copy(b, a)
			for i := 0; i < n; i++ {
				if rng.Float64() < q {
					b[i>>6] ^= 1 << (uint(i) & 63)
				}
			}
			_ = alice.Reset(a)
			start := time.Now()
			res, err := bob.Reconcile(ctx, b, ask)
			busy += time.Since(start)
			if err != nil {
				return nil, err
			}
			fr := float64(res.Disclosed) / (float64(n) * decoy.H(q))
			disclosed += float64(res.Disclosed)
			rts += float64(res.RoundTrips)
			fMin, fMax = math.Min(fMin, fr), math.Max(fMax, fr)
			differ := false
			for i := range a {
				if a[i] != b[i] {
					differ = true
					break
				}
			}
			if differ {
				residual++
				pt, _ := privacy.NewTagPoint()
				ta, _ := privacy.Tag(a, n, pt)
				tb, _ := privacy.Tag(b, n, pt)
				if ta != tb {
					caught++
				}
			}
			prog.Add(1)
		}
		fAvg := disclosed / float64(frames) / (float64(n) * decoy.H(q))
		mbps := float64(n) * float64(frames) / busy.Seconds() / 1e6
		pub, ok := publishedCascade[int(math.Round(q*100))]
		if !ok || math.Abs(q*100-math.Round(q*100)) > 1e-9 {
			pub = [3]string{"—", "—", "—"}
		}
		tab.AddRow(fmt.Sprintf("%.1f%%", 100*q), fmt.Sprintf("%.4f", fAvg), fmt.Sprintf("%.3f–%.3f", fMin, fMax), pub[0], pub[1], pub[2],
			fmt.Sprintf("%.0f", rts/float64(frames)), fmt.Sprintf("%d / %d", residual, frames), fmt.Sprintf("%d / %d", caught, residual), fmt.Sprintf("%.1f", mbps))
		sThis.X = append(sThis.X, 100*q)
		sThis.Y = append(sThis.Y, fAvg)
		if ok {
			for i, s := range []*experiment.Series{&sOrig, &sBic, &sYan} {
				var v float64
				fmt.Sscan(pub[i], &v)
				s.X = append(s.X, 100*q)
				s.Y = append(s.Y, v)
			}
		}
		data = append(data, point{QBER: q, F: fAvg, RoundTrips: rts / float64(frames), MbitPerS: mbps, Residual: residual, Caught: caught})
	}
	prog.Done()
	tab.Notes = append(tab.Notes,
		"f uses the nominal QBER, as the published table does; published figures: Martinez-Mateo et al. 2015, n = 10^4, 10,000 runs per point (original Cascade 37–46 round trips, BICONF 98–123, Yan et al. 105–121).",
		"Not like-for-like: this implementation uses the optimised (option-8) block sizes of Martinez-Mateo et al.; the published columns are the original, BICONF and Yan et al. variants. Against optimised Cascade it matches the best they report (about 1.04 at n = 2^14), it does not beat it.",
		"Round trips count parity requests for one frame in isolation; the link batches the requests of all frames of a block into one message, so a block costs about as many round trips as its slowest frame.",
		"Residual-error frames are frames where Cascade finished with errors left; each is checked with the 64-bit GF(2^64) verification tag the link uses, and must be caught.",
		"Mbit/s: frame bits per second of Bob's and Alice's work together on one goroutine, no network delay (published implementations: 2–8 Mbit/s).")
	plot.Series = []experiment.Series{sThis, sOrig, sBic, sYan}
	return &experiment.Result{Name: "qkd-cascade", Title: "Cascade reconciliation vs QBER", Tables: []experiment.Table{tab}, Plots: []experiment.Plot{plot}, Data: data}, nil
}

// QKDEveExperiment is `qshield experiment qkd-eve`: QBER and outcome under
// intercept-resend eavesdropping on a fraction of the pulses, and under a
// photon-number-splitting attack that only the decoy states expose.
func QKDEveExperiment() experiment.Spec {
	return experiment.Spec{
		Name:    "qkd-eve",
		Summary: "QBER, decoy bounds and outcome under intercept-resend (fractions 0, 0.1, 0.5, 1) and photon-number-splitting attacks",
		Params: []experiment.Param{
			{Name: "fractions", Default: "0,0.1,0.25,0.5,1", Usage: "comma-separated intercept-resend fractions"},
			{Name: "distance", Default: "25", Usage: "fibre length (km) for intercept-resend"},
			{Name: "pns-distance", Default: "50", Usage: "fibre length (km) for the PNS attack"},
			{Name: "pulses", Default: "0", Usage: "pulses per block (0: the link's planned block for the distance)"},
			{Name: "runs", Default: "3", Usage: "blocks per point"},
		},
		Run: runQKDEve,
	}
}

func runQKDEve(ctx context.Context, env *experiment.Env) (*experiment.Result, error) {
	fracs, err := parseFloats(env.String("fractions"))
	if err != nil {
		return nil, err
	}
	km, err := env.Float("distance")
	if err != nil {
		return nil, err
	}
	pnsKm, err := env.Float("pns-distance")
	if err != nil {
		return nil, err
	}
	pulses, err := env.Float("pulses")
	if err != nil {
		return nil, err
	}
	runs, err := env.Int("runs")
	if err != nil {
		return nil, err
	}
	if runs < 1 {
		return nil, errors.New("qkd-eve: runs must be ≥ 1")
	}
	prog := env.Progress.Start("qkd-eve", int64(runs*(len(fracs)+3)), "blocks")
	run := func(cfg link.Config) (qkd.Stats, error) {
		cfg.Blocks = runs
		cfg.ContinueOnAbort = true
		cfg.PulsesPerBlock = int64(pulses)
		cfg.OnBlock = func(qkd.Stats) { prog.Add(1) }
		st, err := link.Run(ctx, cfg, nil, nil)
		if err != nil && !errors.Is(err, qkd.ErrAborted) {
			return st, err
		}
		return st, nil
	}
	outcomeOf := func(st qkd.Stats) string {
		if st.AbortedBlocks == st.Blocks {
			return "aborted: " + st.AbortReason
		}
		if st.AbortedBlocks > 0 {
			return fmt.Sprintf("key in %d of %d blocks", st.Blocks-st.AbortedBlocks, st.Blocks)
		}
		return "key established"
	}
	// Honest error rate of the test bits: the detection-weighted mean over the
	// intensities (every intensity's Z detections are disclosed).
	var base float64
	{
		hp := bb84.DefaultParams(km)
		gain, errRate, err := hp.Expected()
		if err != nil {
			return nil, err
		}
		var det float64
		for k, pk := range hp.Probabilities() {
			det += pk * gain[k]
			base += pk * gain[k] * errRate[k]
		}
		base /= det
	}
	blockDesc := fmt.Sprintf("%.0e pulses", pulses)
	if pulses == 0 {
		blockDesc = "the planned size"
	}
	ir := experiment.Table{Title: fmt.Sprintf("Intercept-resend on a fraction p of the pulses, %g km, %d blocks of %s each", km, runs, blockDesc),
		Header: []string{"p", "sampled QBER", "expected ≈ E + p·(1/4 − E/2)", "φ_X bound", "final bits", "key/pulse", "outcome"}}
	plot := experiment.Plot{File: "qkd-eve.png", Title: "QBER under intercept-resend", XLabel: "fraction of pulses intercepted", YLabel: "QBER"}
	sMeas := experiment.Series{Name: "measured", Points: true}
	sExp := experiment.Series{Name: "expected"}
	sLim := experiment.Series{Name: "abort threshold (11%)"}
	type point struct {
		P, QBER, Expected float64
		Outcome           string
		FinalBits         int64
	}
	var data []point
	for _, p := range fracs {
		if !(p >= 0 && p <= 1) {
			return nil, fmt.Errorf("qkd-eve: fraction %g", p)
		}
		cfg := link.DefaultConfig(km)
		if p > 0 {
			cfg.Physics.Eve, cfg.Physics.EveFraction = bb84.EveInterceptResend, p
		}
		st, err := run(cfg)
		if err != nil {
			return nil, err
		}
		want := base + p*(0.25-base/2)
		e1 := "—"
		if st.PhiUpper > 0 {
			e1 = fmt.Sprintf("%.2f%%", 100*st.PhiUpper)
		}
		ir.AddRow(p, fmt.Sprintf("%.2f%%", 100*st.SampledQBER), fmt.Sprintf("%.2f%%", 100*want), e1, st.FinalBits, st.KeyRatePerPulse, outcomeOf(st))
		sMeas.X, sMeas.Y = append(sMeas.X, p), append(sMeas.Y, st.SampledQBER)
		sExp.X, sExp.Y = append(sExp.X, p), append(sExp.Y, want)
		sLim.X, sLim.Y = append(sLim.X, p), append(sLim.Y, 0.11)
		data = append(data, point{P: p, QBER: st.SampledQBER, Expected: want, Outcome: outcomeOf(st), FinalBits: st.FinalBits})
	}
	ir.Notes = append(ir.Notes, "Expected: Eve's wrong basis (probability 1/2) makes Bob's sifted bit random, so the QBER rises by about p/4. The link aborts once the QBER passes 11% or the decoy bounds leave no secret key: the key shrinks with p and vanishes well before p = 1.")

	pns := experiment.Table{Title: fmt.Sprintf("Photon-number splitting at %g km (Eve keeps one photon of each multi-photon pulse, blocks single photons to keep the signal gain)", pnsKm),
		Header: []string{"attacked fraction", "sampled QBER", "s_X,1 lower bound", "abort cause", "final bits", "outcome"}}
	for _, p := range []float64{0, 0.5, 1} {
		cfg := link.DefaultConfig(pnsKm)
		if p > 0 {
			cfg.Physics.Eve, cfg.Physics.EveFraction = bb84.EvePNS, p
		}
		st, err := run(cfg)
		if err != nil {
			return nil, err
		}
		pns.AddRow(p, fmt.Sprintf("%.2f%%", 100*st.SampledQBER), st.SX1Lower, string(st.AbortCause), st.FinalBits, outcomeOf(st))
	}
	prog.Done()
	pns.Notes = append(pns.Notes, "The QBER does not move under PNS; the decoy gains expose the attack through the single-photon yield bound, and the key shrinks to what the single photons still guarantee, or the block aborts.")
	plot.Series = []experiment.Series{sMeas, sExp, sLim}
	return &experiment.Result{Name: "qkd-eve", Title: "QKD under eavesdropping", Tables: []experiment.Table{ir, pns}, Plots: []experiment.Plot{plot}, Data: data}, nil
}
