package experiments

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/fingerprint"
	"github.com/qshield/qshield/fingerprint/fvc"
	"github.com/qshield/qshield/internal/lab"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qrimg"
	"github.com/qshield/qshield/sqldb"
)

// BioQRExperiment is `qshield experiment bioqr`: seed 004's end-to-end
// payment latency by protocol stage and throughput (settlement over mutual
// TLS on loopback, real SQLite or PostgreSQL ledger), and the sizes and QR
// versions of the consumption and payment codes.
func BioQRExperiment() experiment.Spec {
	return experiment.Spec{
		Name:    "bioqr",
		Summary: "seed 004: biometric QR payment latency, throughput and QR sizes",
		Params: []experiment.Param{
			{Name: "payments", Default: "100", Usage: "sequential payments timed stage by stage"},
			{Name: "workers", Default: "1,2,4", Usage: "concurrent POS workers for the throughput runs"},
			{Name: "per-worker", Default: "40", Usage: "payments per worker in each throughput run"},
			{Name: "data", Default: "", Usage: "FVC2002 directory holding DB1_B (default: $QSHIELD_FINGERPRINT_DATA; neither: synthetic templates)"},
		},
		Run: runBioQR,
	}
}

// bioqrData is the FVC2002 directory: the flag, else fvc.DataDir (a variable
// set to a path that holds nothing is an error), else "" (synthetic).
func bioqrData(p string) (string, error) {
	if p != "" {
		return p, nil
	}
	dir, err := fvc.DataDir()
	if errors.Is(err, fvc.ErrDataUnset) {
		return "", nil
	}
	return dir, err
}

type bioqrStages map[string][]time.Duration

func (s bioqrStages) add(stage string, d time.Duration) { s[stage] = append(s[stage], d) }

func bioqrPct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	c := append([]time.Duration(nil), ds...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	i := int(p * float64(len(c)-1))
	return c[i]
}

func bioqrMean(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	if len(ds) == 0 {
		return 0
	}
	return t / time.Duration(len(ds))
}

func runBioQR(ctx context.Context, env *experiment.Env) (*experiment.Result, error) {
	n, err := env.Int("payments")
	if err != nil {
		return nil, err
	}
	perWorker, err := env.Int("per-worker")
	if err != nil {
		return nil, err
	}
	var workers []int
	for _, f := range strings.Split(env.String("workers"), ",") {
		w, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || w < 1 || w > 64 {
			return nil, fmt.Errorf("parameter workers: %q", f)
		}
		workers = append(workers, w)
	}
	dsn := env.DB
	if dsn == "" {
		dir, err := os.MkdirTemp("", "qshield-bioqr-*")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		dsn = filepath.Join(dir, "bioqr.db")
	}
	db, err := sqldb.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	key, err := pki.RawKey(make([]byte, 32))
	if err != nil {
		return nil, err
	}
	ca, err := pki.OpenOrCreateCA(ctx, db, "bioqr-experiment", pki.Options{}, key)
	if err != nil {
		return nil, err
	}
	led, err := ledger.Open(ctx, db)
	if err != nil {
		return nil, err
	}
	defer led.Close()
	data, err := bioqrData(env.String("data"))
	if err != nil {
		return nil, err
	}
	tp, err := lab.LoadTemplates(data, nil)
	if err != nil {
		return nil, err
	}
	rig, err := lab.NewBioqr(ctx, lab.BioqrConfig{DB: db, CA: ca, Ledger: led, Templates: tp, Audit: &bioqr.MemoryAuditor{}, Log: env.Log, Funds: 1 << 40})
	if err != nil {
		return nil, err
	}
	url, stop, err := rig.StartTLS(ctx)
	if err != nil {
		return nil, err
	}
	defer stop()
	env.Log.Info("bioqr experiment", "server", url, "templates", tp.Source, "db", db.Dialect)

	// 1. Sequential payments, stage by stage, with both QR codes rendered to
	//    PNG and scanned back.
	st := bioqrStages{}
	var cSize, pSize int
	var cInfo, pInfo qrimg.Info
	scanFails := 0
	bar := env.Progress.Start("bioqr sequential payments", int64(n), "payments")
	for i := 0; i < n; i++ {
		t0 := time.Now()
		c, err := rig.POS.NewConsumption(ctx, int64(100+i))
		if err != nil {
			return nil, err
		}
		t1 := time.Now()
		cpng, ci, err := qrimg.EncodePNG(c.Payload, qrimg.M, 3)
		if err != nil {
			return nil, err
		}
		ctext, err := qrimg.DecodePNG(strings.NewReader(string(cpng)), 0)
		if err != nil || ctext != c.Payload {
			scanFails++
			ctext = c.Payload
		}
		t2 := time.Now()
		read, err := rig.Phone.ReadConsumption(ctx, ctext)
		if err != nil {
			return nil, err
		}
		t3 := time.Now()
		qr, err := rig.Phone.Pay(ctx, read, rig.Payer, tp.Genuine)
		if err != nil {
			return nil, err
		}
		t4 := time.Now()
		ppng, pi, err := qrimg.EncodePNG(qr, qrimg.M, 3)
		if err != nil {
			return nil, err
		}
		ptext, err := qrimg.DecodePNG(strings.NewReader(string(ppng)), 0)
		if err != nil || ptext != qr {
			scanFails++
			ptext = qr
		}
		t5 := time.Now()
		if _, err := rig.POS.Accept(ctx, ptext); err != nil {
			return nil, err
		}
		t6 := time.Now()
		st.add("1 POS: consumption QR (sign, EMVCo encode)", t1.Sub(t0))
		st.add("2 render + scan consumption QR (PNG)", t2.Sub(t1))
		st.add("3 phone: verify POS (credential, revocation over mTLS, signature)", t3.Sub(t2))
		st.add("4 phone: sign + HPKE-encrypt payment", t4.Sub(t3))
		st.add("5 render + scan payment QR (PNG)", t5.Sub(t4))
		st.add("6 POS: decrypt, RandCode, reseal, settle over mTLS (match + ledger)", t6.Sub(t5))
		st.add("total", t6.Sub(t0))
		st.add("total without QR imaging", t6.Sub(t0)-t2.Sub(t1)-t5.Sub(t4))
		cSize, pSize, cInfo, pInfo = len(c.Payload), len(qr), ci, pi
		bar.Add(1)
	}
	bar.Done()
	lat := experiment.Table{Title: fmt.Sprintf("End-to-end latency by stage (%d sequential payments, %s, %s)", n, db.Dialect, tp.Source),
		Header: []string{"stage", "mean", "p50", "p95", "p99"}}
	var names []string
	for k := range st {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		lat.AddRow(k, bioqrMean(st[k]), bioqrPct(st[k], 0.5), bioqrPct(st[k], 0.95), bioqrPct(st[k], 0.99))
	}
	lat.Notes = append(lat.Notes, fmt.Sprintf("QR scan failures (gozxing, scale 3 px/module): %d of %d", scanFails, 2*n))

	// 2. Throughput: W POS workers paying concurrently (no QR imaging).
	thr := experiment.Table{Title: "Throughput: concurrent payments (consumption → verify → pay → settle over mutual TLS)",
		Header: []string{"workers", "payments", "elapsed", "payments/s"}}
	var tx, ty []float64
	for _, w := range workers {
		var wg sync.WaitGroup
		errs := make(chan error, w)
		start := time.Now()
		for k := 0; k < w; k++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perWorker; i++ {
					c, err := rig.POS.NewConsumption(ctx, 100)
					if err == nil {
						var read *bioqr.Consumption
						if read, err = rig.Phone.ReadConsumption(ctx, c.Payload); err == nil {
							var qr string
							if qr, err = rig.Phone.Pay(ctx, read, rig.Payer, tp.Genuine); err == nil {
								_, err = rig.POS.Accept(ctx, qr)
							}
						}
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		close(errs)
		if err := <-errs; err != nil {
			return nil, err
		}
		rate := float64(w*perWorker) / el.Seconds()
		thr.AddRow(w, w*perWorker, el, fmt.Sprintf("%.1f", rate))
		tx, ty = append(tx, float64(w)), append(ty, rate)
	}

	// 3. Sizes.
	sizes := experiment.Table{Title: "QR code sizes (error correction M)", Header: []string{"code", "content", "characters", "QR mode", "QR version", "modules"}}
	sizes.AddRow("consumption QR (EMVCo MPM, dynamic)", "amount, merchant, RandCodeP, expiry, POS credential, POS signature", cSize, cInfo.Mode, cInfo.Version, cInfo.Modules)
	sizes.AddRow("payment QR, probe from phone", fmt.Sprintf("Base45(key ID ‖ HPKE(message + %d-byte probe))", len(tp.Genuine)), pSize, pInfo.Mode, pInfo.Version, pInfo.Modules)
	c, _ := rig.POS.NewConsumption(ctx, 100)
	read, err := rig.Phone.ReadConsumption(ctx, c.Payload)
	if err != nil {
		return nil, err
	}
	noProbe, err := rig.Phone.Pay(ctx, read, rig.Payer, nil)
	if err != nil {
		return nil, err
	}
	np, err := qrimg.Encode(noProbe, qrimg.M)
	if err != nil {
		return nil, err
	}
	sizes.AddRow("payment QR, probe from POS sensor", "Base45(key ID ‖ HPKE(message))", len(noProbe), np.Mode, np.Version, np.Modules)
	sizes.AddRow("phone credential", "compact CA-signed credential (binary)", len(rig.Phone.Unit.Credential().Raw), "-", "-", "-")
	sizes.AddRow("phone X.509 certificate", "DER, for comparison", len(rig.Phone.Unit.Certificate().Raw), "-", "-", "-")

	// 4. Payment QR version against the probe's minutiae count over the
	//    FVC2002 DB1_B records.
	var mx, vy []float64
	if data != "" {
		files, _ := filepath.Glob(filepath.Join(data, lab.FVCDir, "*.iso"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			t, err := fingerprint.ParseISO(b)
			if err != nil {
				continue
			}
			c, _ := rig.POS.NewConsumption(ctx, 100)
			read, err := rig.Phone.ReadConsumption(ctx, c.Payload)
			if err != nil {
				return nil, err
			}
			qr, err := rig.Phone.Pay(ctx, read, rig.Payer, b)
			if err != nil {
				return nil, err
			}
			code, err := qrimg.Encode(qr, qrimg.M)
			if err != nil {
				return nil, err
			}
			mx, vy = append(mx, float64(len(t.Minutiae))), append(vy, float64(code.Version))
		}
		if len(mx) > 0 {
			minV, maxV := vy[0], vy[0]
			for _, v := range vy {
				minV, maxV = min(minV, v), max(maxV, v)
			}
			sizes.Notes = append(sizes.Notes, fmt.Sprintf("Over the %d FVC2002 DB1_B records as phone probes the payment QR is version %.0f–%.0f (M).", len(mx), minV, maxV))
		}
	}
	// 5. Scan robustness of the real codes under camera-like distortions.
	rob := experiment.Table{Title: "Scan success under camera-like distortions (gozxing; 20 noise seeds each)",
		Header: []string{"distortion", "consumption QR @3 px", "consumption QR @6 px", "payment QR @3 px", "payment QR @6 px"}}
	lastC, _ := rig.POS.NewConsumption(ctx, 25_50)
	lastRead, err := rig.Phone.ReadConsumption(ctx, lastC.Payload)
	if err != nil {
		return nil, err
	}
	lastQR, err := rig.Phone.Pay(ctx, lastRead, rig.Payer, tp.Genuine)
	if err != nil {
		return nil, err
	}
	codes := []string{lastC.Payload, lastQR}
	for _, d := range []struct {
		name string
		d    qrimg.Distortion
	}{
		{"none", qrimg.Distortion{}},
		{"rotated 8°", qrimg.Distortion{Rotate: 8}},
		{"blur r=1", qrimg.Distortion{Blur: 1}},
		{"noise σ=30", qrimg.Distortion{Noise: 30}},
		{"JPEG q=50", qrimg.Distortion{JPEGQuality: 50}},
		{"rotated 5°, blur, noise σ=8, contrast 0.3, JPEG q=70", qrimg.Distortion{Rotate: 5, Blur: 1, Noise: 8, Contrast: 0.3, JPEGQuality: 70}},
	} {
		row := []any{d.name}
		for _, text := range codes {
			code, err := qrimg.Encode(text, qrimg.M)
			if err != nil {
				return nil, err
			}
			for _, sc := range []int{3, 6} {
				img := code.Image(sc)
				okN, total := 0, 20
				if d.d.Noise == 0 && d.d.JPEGQuality == 0 {
					total = 1 // deterministic
				}
				for seed := 0; seed < total; seed++ {
					dd := d.d
					dd.Seed = uint64(seed)
					if got, err := qrimg.Decode(qrimg.Distort(img, dd)); err == nil && got == text {
						okN++
					}
				}
				row = append(row, fmt.Sprintf("%d/%d", okN, total))
			}
		}
		rob.AddRow(row...)
	}
	rob.Notes = append(rob.Notes, "The CLI and the POS page render 6 px per module; decoding tries ZXing's detector, then a pure-barcode read.")

	res := &experiment.Result{
		Title:  "seed 004 biometric QR payments",
		Tables: []experiment.Table{lat, thr, sizes, rob},
		Plots: []experiment.Plot{{File: "bioqr-throughput.png", Title: "bioqr payments per second", XLabel: "concurrent POS workers", YLabel: "payments/s",
			Series: []experiment.Series{{Name: string(db.Dialect.String()), X: tx, Y: ty}}}},
	}
	if len(mx) > 0 {
		res.Plots = append(res.Plots, experiment.Plot{File: "bioqr-qr-version.png", Title: "payment QR version vs probe minutiae (FVC2002 DB1_B)",
			XLabel: "minutiae in the probe", YLabel: "QR version (M)", Series: []experiment.Series{{Name: "payment QR", X: mx, Y: vy, Points: true}}})
	}
	return res, nil
}
