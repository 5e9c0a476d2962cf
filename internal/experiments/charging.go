package experiments

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/internal/lab"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/keycharge"
	"github.com/qshield/qshield/keycharge/channel"
	"github.com/qshield/qshield/keycharge/device"
	"github.com/qshield/qshield/kme"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/sqldb"
)

// ChargingExperiment measures seed 001's quantum key charging end to end —
// ETSI 014 enc_keys at the charger's KME, the device's encrypted key file
// (fsynced), the platform's dec_keys at the QSSC's KME, the consistency
// check and the sealed key store — for charges of 1–9 MB, the device write
// alone (the "local key pool" bound: AEAD and disk), and the quantum secure
// channel's set-up latency and throughput with AES-256-GCM and SM4-GCM.
func ChargingExperiment() experiment.Spec {
	return experiment.Spec{
		Name:    "charging",
		Summary: "quantum key charging (1-9 MB) throughput and the QSSC channel's set-up latency and throughput",
		Params: []experiment.Param{
			{Name: "sizes", Default: "1,2,3,4,5,6,7,8,9", Usage: "charge volumes in MB (comma-separated)"},
			{Name: "key_bits", Default: "65536", Usage: "ETSI key size (bits) requested by the charger, also the KME unit"},
			{Name: "reps", Default: "3", Usage: "charges per volume and method (the median is reported)"},
			{Name: "sessions", Default: "200", Usage: "channel sessions opened for the set-up latency"},
			{Name: "messages", Default: "2000", Usage: "messages per channel throughput cell"},
			{Name: "msg_sizes", Default: "1024,65536", Usage: "channel message sizes in bytes"},
		},
		Run: runCharging,
	}
}

func chgIntList(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad list element %q", p)
		}
		out = append(out, v)
	}
	return out, nil
}

type chargeCell struct {
	MB          int           `json:"mb"`
	Elapsed     time.Duration `json:"elapsed_ns"`
	MBps        float64       `json:"mb_per_s"`
	DeviceOnly  time.Duration `json:"device_write_ns"`
	DeviceMBps  float64       `json:"device_mb_per_s"`
	Fetch       time.Duration `json:"fetch_write_ns"`
	Prefetch    time.Duration `json:"prefetch_ns"`
	PoolElapsed time.Duration `json:"pool_charge_ns"`
	PoolMBps    float64       `json:"pool_mb_per_s"`
	Commit      time.Duration `json:"commit_ns"`
}

type channelCell struct {
	Alg      string        `json:"alg"`
	MsgBytes int           `json:"msg_bytes"`
	Messages int           `json:"messages"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	MsgPerS  float64       `json:"msg_per_s"`
	MBps     float64       `json:"mb_per_s"`
}

func runCharging(ctx context.Context, env *experiment.Env) (*experiment.Result, error) {
	sizes, err := chgIntList(env.String("sizes"))
	if err != nil {
		return nil, fmt.Errorf("parameter sizes: %w", err)
	}
	keyBits, err := env.Int("key_bits")
	if err != nil {
		return nil, err
	}
	reps, err := env.Int("reps")
	if err != nil || reps < 1 {
		return nil, fmt.Errorf("parameter reps: must be a positive integer")
	}
	nSessions, err := env.Int("sessions")
	if err != nil {
		return nil, err
	}
	nMsg, err := env.Int("messages")
	if err != nil {
		return nil, err
	}
	msgSizes, err := chgIntList(env.String("msg_sizes"))
	if err != nil {
		return nil, fmt.Errorf("parameter msg_sizes: %w", err)
	}
	work, err := os.MkdirTemp("", "qshield-charging-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	dsn := env.DB
	if dsn == "" {
		dsn = filepath.Join(work, "qshield.db")
	}
	db, err := sqldb.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	enc, err := pki.RawKey(chgRandBytes(32))
	if err != nil {
		return nil, err
	}
	ca, err := pki.OpenOrCreateCA(ctx, db, "charging-exp-"+strconv.FormatInt(time.Now().UnixNano(), 36), pki.Options{}, enc)
	if err != nil {
		return nil, err
	}
	alog, err := audit.Open(ctx, db)
	if err != nil {
		return nil, err
	}
	maxMB := slices.Max(sizes)
	unit := keyBits / 8
	kc, err := lab.StartKeycharge(ctx, lab.KeychargeConfig{DB: db, CA: ca, Audit: alog, KeyBits: keyBits, PoolUnits: (maxMB<<20)/unit*3 + 2048, Log: env.Log})
	if err != nil {
		return nil, err
	}
	defer kc.Close()
	// Each charge goes into a fresh device (a UKEY holds a few MB; a device
	// that accumulated hundreds of MB would measure its metadata instead).
	// The PIN KDF is not part of a charge: cheaper parameters here.
	opts := device.Options{KDF: device.KDFParams{Time: 1, MemoryKiB: 16 * 1024, Threads: 1}}
	pin, puk := []byte("123456"), []byte("12345678")
	serial := "EXP-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	nDev := 0
	fresh := func() (*device.Device, error) {
		nDev++
		return lab.Provision(ctx, kc.Admin, filepath.Join(work, fmt.Sprintf("ukey-%d", nDev)), device.Info{Serial: fmt.Sprintf("%s-%d", serial, nDev), Kind: "ukey"}, pin, puk, opts, "exp-admin", "exp-user")
	}
	dev, err := lab.Provision(ctx, kc.Admin, filepath.Join(work, "ukey"), device.Info{Serial: serial, Kind: "ukey"}, pin, puk, opts, "exp-admin", "exp-user")
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	ch, err := kc.NewCharger(nil)
	if err != nil {
		return nil, err
	}
	bar := env.Progress.Start("charging", int64(len(sizes)), "charges")
	var cells []chargeCell
	for _, mb := range sizes {
		vol := int64(mb) << 20
		var direct, pool, devw []chargeCell
		for r := 0; r < reps; r++ {
			if err := kc.Fill(ctx, vol); err != nil {
				return nil, fmt.Errorf("fill key pools: %w", err)
			}
			// Directly from the key managers, then the same volume from the
			// charger's local pool (prefetched and announced beforehand).
			rr, err := chargeRound(ctx, ch, fresh, func() error { return kc.Fill(ctx, vol) }, nil, vol)
			if err != nil {
				return nil, fmt.Errorf("charge %d MB: %w", mb, err)
			}
			direct = append(direct, chargeCell{Elapsed: rr.direct.Elapsed, Fetch: rr.direct.FetchWrite, Commit: rr.direct.Commit})
			pool = append(pool, chargeCell{PoolElapsed: rr.pool.Elapsed, Prefetch: rr.prefetch})
			// The device write alone, from keys already in memory.
			dw, err := chgDeviceWrite(filepath.Join(work, fmt.Sprintf("bench-%d-%d", mb, r)), vol, unit)
			if err != nil {
				return nil, err
			}
			devw = append(devw, chargeCell{DeviceOnly: dw})
		}
		// Medians over the repetitions (the machine is shared).
		slices.SortFunc(direct, func(a, b chargeCell) int { return int(a.Elapsed - b.Elapsed) })
		slices.SortFunc(pool, func(a, b chargeCell) int { return int(a.PoolElapsed - b.PoolElapsed) })
		slices.SortFunc(devw, func(a, b chargeCell) int { return int(a.DeviceOnly - b.DeviceOnly) })
		m := reps / 2
		c := chargeCell{MB: mb, Elapsed: direct[m].Elapsed, Fetch: direct[m].Fetch, Commit: direct[m].Commit,
			PoolElapsed: pool[m].PoolElapsed, Prefetch: pool[m].Prefetch, DeviceOnly: devw[m].DeviceOnly}
		c.MBps = float64(vol) / 1e6 / c.Elapsed.Seconds()
		c.PoolMBps = float64(vol) / 1e6 / c.PoolElapsed.Seconds()
		c.DeviceMBps = float64(vol) / 1e6 / c.DeviceOnly.Seconds()
		cells = append(cells, c)
		bar.Add(1)
	}
	bar.Done()

	// Channel set-up latency: on a device charged with 1 MiB and on one
	// charged with 9 MiB (the metadata, rewritten and synced once per
	// segment lease, grows with the number of keys held).
	small, err := lab.Provision(ctx, kc.Admin, filepath.Join(work, "ukey-small"), device.Info{Serial: serial + "-S", Kind: "ukey"}, pin, puk, opts, "exp-admin", "exp-user")
	if err != nil {
		return nil, err
	}
	defer small.Close()
	if err := kc.Fill(ctx, 1<<20); err != nil {
		return nil, err
	}
	if _, err := ch.Charge(ctx, small, 1<<20); err != nil {
		return nil, err
	}
	if err := kc.Fill(ctx, 9<<20); err != nil {
		return nil, err
	}
	if _, err := ch.Charge(ctx, dev, 9<<20); err != nil {
		return nil, err
	}
	type latRow struct {
		keys int
		lat  []time.Duration
	}
	var lats []latRow
	for _, d := range []*device.Device{small, dev} {
		var lat []time.Duration
		for i := 0; i < nSessions; i++ {
			t0 := time.Now()
			if _, err := (&keycharge.Phone{Device: d, Platform: kc.Phone}).Open(ctx); err != nil {
				return nil, fmt.Errorf("channel open: %w", err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		lats = append(lats, latRow{len(d.Keys()), lat})
	}
	lat := lats[0].lat
	var chCells []channelCell
	for _, alg := range []channel.Alg{channel.AES256GCM, channel.SM4GCM} {
		for _, sz := range msgSizes {
			s, err := (&keycharge.Phone{Device: dev, Platform: kc.Phone, Alg: alg}).Open(ctx)
			if err != nil {
				return nil, err
			}
			msg := chgRandBytes(sz)
			n := nMsg
			if sz >= 64<<10 {
				n = max(1, nMsg/8)
			}
			t0 := time.Now()
			for i := 0; i < n; i++ {
				if _, err := s.Send(ctx, msg); err != nil {
					return nil, fmt.Errorf("channel send: %w", err)
				}
			}
			el := time.Since(t0)
			chCells = append(chCells, channelCell{Alg: string(alg), MsgBytes: sz, Messages: n, Elapsed: el, MsgPerS: float64(n) / el.Seconds(), MBps: float64(n*sz) / 1e6 / el.Seconds()})
		}
	}

	t1 := experiment.Table{Title: "Quantum key charging (end to end: ETSI 014 at both KMEs, device key file fsynced, consistency check, sealed platform store)",
		Header: []string{"volume (MB)", "direct: charge time", "direct MB/s", "fetch+write", "platform commit", "from pool: charge time", "pool MB/s", "prefetch (both sides)", "device write only", "device MB/s"}}
	var xs, ys, ds, ps []float64
	for _, c := range cells {
		t1.AddRow(c.MB, c.Elapsed, c.MBps, c.Fetch, c.Commit, c.PoolElapsed, c.PoolMBps, c.Prefetch, c.DeviceOnly, c.DeviceMBps)
		xs, ys, ds = append(xs, float64(c.MB)), append(ys, c.MBps), append(ds, c.DeviceMBps)
		ps = append(ps, c.PoolMBps)
	}
	t1.Notes = []string{fmt.Sprintf("median of %d charges per cell; ETSI keys of %d bits, %d per enc_keys/dec_keys call, 4 calls in flight; a fresh device per charge; DB %s", reps, keyBits, 128, db.Dialect),
		"direct = keys fetched with enc_keys during the charge and with dec_keys by the platform at commit; from pool = both sides prefetched (Charger.Prefetch, timed separately) and the charge only writes, checks and assigns",
		"device write only = the QKMSD's chunked AES-256-GCM key file with fsync, from key material already in memory"}
	t2 := experiment.Table{Title: "Quantum secure channel set-up (phone: take segment + device signature; QSSC: certificate, signature, key MAC, mark used, all over HTTPS)",
		Header: []string{"keys on the device", "sessions", "p50", "p90", "p99", "max"}}
	for _, l := range lats {
		t2.AddRow(l.keys, len(l.lat), chgPct(l.lat, 50), chgPct(l.lat, 90), chgPct(l.lat, 99), l.lat[len(l.lat)-1])
	}
	t3 := experiment.Table{Title: "Quantum secure channel throughput (request/response over HTTPS, echo service)",
		Header: []string{"cipher", "message bytes", "messages", "time", "messages/s", "MB/s (one way)"}}
	for _, c := range chCells {
		t3.AddRow(c.Alg, c.MsgBytes, c.Messages, c.Elapsed, c.MsgPerS, c.MBps)
	}
	return &experiment.Result{Name: "charging", Title: "Seed 001: quantum key charging and the quantum secure channel",
		Tables: []experiment.Table{t1, t2, t3},
		Plots: []experiment.Plot{{File: "charging-throughput.png", Title: "Charging throughput", XLabel: "volume (MB)", YLabel: "MB/s",
			Series: []experiment.Series{{Name: "direct from the KMEs", X: xs, Y: ys}, {Name: "from the local pools", X: xs, Y: ps}, {Name: "device write only", X: xs, Y: ds}}}},
		Data: map[string]any{"charges": cells, "channel_setup_ns": lat, "channel_setup_big_device_ns": lats[1].lat, "channel": chCells}}, nil
}

func chgPct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, len(s)*p/100)]
}

func chgRandBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// chgDeviceWrite times staging vol bytes of keys into a fresh device.
func chgDeviceWrite(dir string, vol int64, unit int) (time.Duration, error) {
	opts := device.Options{KDF: device.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}}
	if err := device.Manufacture(dir, device.Info{Serial: "BENCH", Kind: "ukey"}, []byte("123456"), []byte("12345678"), opts); err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	d, err := device.Open(dir, []byte("123456"), opts)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	if err := chgSelfCert(d); err != nil {
		return 0, err
	}
	n := int((vol + int64(unit) - 1) / int64(unit))
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = chgRandBytes(unit)
	}
	t0 := time.Now()
	w, err := d.BeginCharge("bench")
	if err != nil {
		return 0, err
	}
	for i, k := range keys {
		if err := w.Add(fmt.Sprintf("k%06d", i), k); err != nil {
			return 0, err
		}
	}
	h, err := w.Stage()
	if err != nil {
		return 0, err
	}
	if err := d.CommitCharge("bench", h); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// chgSelfCert gives a benchmark device a (self-signed) certificate:
// BeginCharge refuses uninitialised devices.
func chgSelfCert(d *device.Device) error {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: d.Info().Serial}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, d.PublicKey(), d.Signer())
	if err != nil {
		return err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	return d.InstallCertificate(c)
}

// ChargingServeExperiment charges devices through the key managers and the
// QKMP of a real platform (platform.Open, served over HTTPS as `qshield
// serve` does, QKD link off) whose pools were filled the way its link fills
// them (blocks of 256-bit keys joined by kme.JoinKeys and cut into the
// platform's 64-kbit segments). The same KMEs serve QMSP's small keys,
// carved from the same segments; a QMSP-sized enc_keys/dec_keys exchange is
// checked between charges.
func ChargingServeExperiment() experiment.Spec {
	return experiment.Spec{
		Name:    "charging-serve",
		Summary: "quantum key charging through the platform's own key managers (qshield serve), from filled pools",
		Params: []experiment.Param{
			{Name: "sizes", Default: "1,5,9", Usage: "charge volumes in MB (comma-separated)"},
			{Name: "reps", Default: "3", Usage: "charges per volume and method (the median is reported)"},
			{Name: "block_keys", Default: "4096", Usage: "256-bit link keys per joined block when filling the pools"},
		},
		Run: runChargingServe,
	}
}

func runChargingServe(ctx context.Context, env *experiment.Env) (*experiment.Result, error) {
	sizes, err := chgIntList(env.String("sizes"))
	if err != nil {
		return nil, fmt.Errorf("parameter sizes: %w", err)
	}
	reps, err := env.Int("reps")
	if err != nil || reps < 1 {
		return nil, fmt.Errorf("parameter reps: must be a positive integer")
	}
	blockKeys, err := env.Int("block_keys")
	if err != nil || blockKeys < 1 {
		return nil, fmt.Errorf("parameter block_keys: must be a positive integer")
	}
	if slices.Max(sizes) > 12 {
		return nil, fmt.Errorf("parameter sizes: at most 12 MB (the platform's pools hold 32 MB)")
	}
	work, err := os.MkdirTemp("", "qshield-charging-serve-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	dsn := env.DB
	if dsn == "" {
		dsn = filepath.Join(work, "qshield.db")
	}
	p, err := platform.Open(ctx, platform.Config{DB: dsn, StateDir: work, Log: env.Log, QKD: platform.QKDConfig{Off: true}})
	if err != nil {
		return nil, err
	}
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Serve(sctx, ln) }()
	defer func() { stop(); <-done }()
	url := p.URL(ln.Addr())
	adminTLS, err := platform.LoadClientTLS(work)
	if err != nil {
		return nil, err
	}
	admin := keycharge.NewClient(url, adminTLS)
	defer admin.Close()
	chTLS, err := p.KME.ClientTLSAs(ctx, platform.SAECharger, pki.PrincipalCharger)
	if err != nil {
		return nil, err
	}
	chPlatform := keycharge.NewClient(url, chTLS)
	defer chPlatform.Close()
	ch, err := keycharge.NewCharger(keycharge.ChargerConfig{Platform: chPlatform, KME: etsi014.New(p.KME.AURL, chTLS),
		MasterSAE: platform.SAECharger, SlaveSAE: platform.SAEQSSC, KeyBits: 65536, Log: env.Log})
	if err != nil {
		return nil, err
	}
	// QMSP's SAEs on the same KMEs: a 1024-byte key carved from the same
	// segments, fetched by ID at the other site.
	cssTLS, err := p.KME.ClientTLS(ctx, platform.SAECSS)
	if err != nil {
		return nil, err
	}
	ppsTLS, err := p.KME.ClientTLS(ctx, platform.SAEPPS)
	if err != nil {
		return nil, err
	}
	css, pps := etsi014.New(p.KME.BURL, cssTLS), etsi014.New(p.KME.AURL, ppsTLS)
	qmspCheck := func() error {
		ks, err := css.EncKeys(ctx, platform.SAEPPS, 4, 8192)
		if err != nil {
			return fmt.Errorf("QMSP-sized enc_keys: %w", err)
		}
		ids := make([]string, len(ks))
		for i, k := range ks {
			ids[i] = k.ID
		}
		got, err := pps.DecKeys(ctx, platform.SAECSS, ids...)
		if err != nil {
			return fmt.Errorf("QMSP-sized dec_keys: %w", err)
		}
		for i := range ks {
			if string(got[i].Key) != string(ks[i].Key) {
				return fmt.Errorf("QMSP-sized key %s differs between the sites", ks[i].ID)
			}
		}
		return nil
	}
	sa, sb := p.KME.Sinks()
	ja, jb := kme.JoinKeys(sa), kme.JoinKeys(sb)
	fill := func(n int64) error {
		for n > 0 {
			block := qkd.RandomKeys(blockKeys, 32)
			if err := ja(ctx, block); err != nil {
				return err
			}
			if err := jb(ctx, block); err != nil {
				return err
			}
			n -= int64(blockKeys) * 32
		}
		return nil
	}
	opts := device.Options{KDF: device.KDFParams{Time: 1, MemoryKiB: 16 * 1024, Threads: 1}}
	pin, puk := []byte("123456"), []byte("12345678")
	serial := "SRV-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	nDev := 0
	fresh := func() (*device.Device, error) {
		nDev++
		return lab.Provision(ctx, admin, filepath.Join(work, fmt.Sprintf("ukey-%d", nDev)), device.Info{Serial: fmt.Sprintf("%s-%d", serial, nDev), Kind: "ukey"}, pin, puk, opts, "exp-admin", "exp-user")
	}
	type serveCell struct {
		MB          int           `json:"mb"`
		Elapsed     time.Duration `json:"direct_ns"`
		MBps        float64       `json:"direct_mb_per_s"`
		Fetch       time.Duration `json:"fetch_write_ns"`
		Commit      time.Duration `json:"commit_ns"`
		Prefetch    time.Duration `json:"prefetch_ns"`
		PoolElapsed time.Duration `json:"pool_charge_ns"`
		PoolMBps    float64       `json:"pool_mb_per_s"`
		Segments    int           `json:"segments_after_fill"`
	}
	bar := env.Progress.Start("charging through serve", int64(len(sizes)*reps), "charges")
	var cells []serveCell
	for _, mb := range sizes {
		vol := int64(mb) << 20
		var direct, pool []serveCell
		segs := 0
		for r := 0; r < reps; r++ {
			if err := fill(vol + vol/16); err != nil {
				return nil, fmt.Errorf("fill the key pools: %w", err)
			}
			segs = p.KME.A.Counters().StoredSegments
			rr, err := chargeRound(ctx, ch, fresh, func() error { return fill(vol + vol/16) }, qmspCheck, vol)
			if err != nil {
				return nil, fmt.Errorf("charge %d MB through serve: %w", mb, err)
			}
			direct = append(direct, serveCell{Elapsed: rr.direct.Elapsed, Fetch: rr.direct.FetchWrite, Commit: rr.direct.Commit})
			pool = append(pool, serveCell{PoolElapsed: rr.pool.Elapsed, Prefetch: rr.prefetch})
			bar.Add(1)
		}
		slices.SortFunc(direct, func(a, b serveCell) int { return int(a.Elapsed - b.Elapsed) })
		slices.SortFunc(pool, func(a, b serveCell) int { return int(a.PoolElapsed - b.PoolElapsed) })
		m := reps / 2
		c := serveCell{MB: mb, Elapsed: direct[m].Elapsed, Fetch: direct[m].Fetch, Commit: direct[m].Commit,
			Prefetch: pool[m].Prefetch, PoolElapsed: pool[m].PoolElapsed, Segments: segs}
		c.MBps = float64(vol) / 1e6 / c.Elapsed.Seconds()
		c.PoolMBps = float64(vol) / 1e6 / c.PoolElapsed.Seconds()
		cells = append(cells, c)
	}
	bar.Done()
	t := experiment.Table{Title: "Quantum key charging through qshield serve's key managers (ETSI 014 at both KMEs, 64-kbit keys carved from the shared pool, device key file fsynced, consistency check, sealed platform store)",
		Header: []string{"volume (MB)", "direct: charge time", "direct MB/s", "fetch+write", "platform commit", "prefetch (both sides)", "from pool: charge time", "pool MB/s", "segments in pool A"}}
	var xs, ys, ps []float64
	for _, c := range cells {
		t.AddRow(c.MB, c.Elapsed, c.MBps, c.Fetch, c.Commit, c.Prefetch, c.PoolElapsed, c.PoolMBps, c.Segments)
		xs, ys, ps = append(xs, float64(c.MB)), append(ys, c.MBps), append(ps, c.PoolMBps)
	}
	t.Notes = []string{fmt.Sprintf("median of %d charges per cell; the platform's KMEs (key_size 256, max_key_size 65536, 64-kbit segments); pools filled with blocks of %d 256-bit keys joined by kme.JoinKeys; DB %s", reps, blockKeys, p.DB.Dialect),
		"direct = keys fetched with enc_keys during the charge and with dec_keys by the platform at commit; from pool = both sides prefetched (timed separately)",
		"after each direct charge, four 8-kbit keys (QMSP's size) are exchanged between the CSS and the PPS on the same KMEs and checked equal"}
	return &experiment.Result{Name: "charging-serve", Title: "Seed 001: charging through qshield serve",
		Tables: []experiment.Table{t},
		Plots: []experiment.Plot{{File: "charging-serve.png", Title: "Charging through serve", XLabel: "volume (MB)", YLabel: "MB/s",
			Series: []experiment.Series{{Name: "direct from serve's KMEs", X: xs, Y: ys}, {Name: "from pools prefetched from serve's KMEs", X: xs, Y: ps}}}},
		Data: map[string]any{"charges": cells}}, nil
}

// chargeResults is one round of chargeRound.
type chargeResults struct {
	direct, pool *keycharge.ChargeResult
	prefetch     time.Duration
}

// chargeRound charges a fresh device with vol bytes straight from the key
// managers (whose pools the caller filled), runs between (if any), refills
// the pools with refill, prefetches vol into the charger's local pool and
// charges a second fresh device from it: the experiments' two ways to charge.
func chargeRound(ctx context.Context, ch *keycharge.Charger, fresh func() (*device.Device, error), refill, between func() error, vol int64) (chargeResults, error) {
	var out chargeResults
	charge := func() (*keycharge.ChargeResult, error) {
		d, err := fresh()
		if err != nil {
			return nil, err
		}
		defer d.Close()
		return ch.Charge(ctx, d, vol)
	}
	var err error
	if out.direct, err = charge(); err != nil {
		return out, fmt.Errorf("from the key managers: %w", err)
	}
	if between != nil {
		if err := between(); err != nil {
			return out, err
		}
	}
	if err := refill(); err != nil {
		return out, fmt.Errorf("fill the key pools: %w", err)
	}
	t0 := time.Now()
	if _, err := ch.Prefetch(ctx, vol); err != nil {
		return out, fmt.Errorf("prefetch: %w", err)
	}
	out.prefetch = time.Since(t0)
	if out.pool, err = charge(); err != nil {
		return out, fmt.Errorf("from the prefetched pool: %w", err)
	}
	return out, nil
}
