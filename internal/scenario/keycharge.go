package scenario

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/internal/lab"
	"github.com/qshield/qshield/keycharge"
	"github.com/qshield/qshield/keycharge/channel"
	"github.com/qshield/qshield/keycharge/device"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
)

// KeyChargeDeps is what KeyCharge needs from the platform.
type KeyChargeDeps struct {
	DB    *sqldb.DB
	CA    *pki.CA // ECDSA P-256 (TLS)
	Audit *audit.Log
	// Dir receives the device directories (default: a temporary directory,
	// removed afterwards).
	Dir string
	Log *slog.Logger
}

// KeyCharge runs seed 001 end to end on the platform's database, CA and audit
// trail: it starts a KME pair and the QKMP/QSSC (HTTPS, mutual TLS) on
// loopback, then runs the device lifecycle, a charge over ETSI 014 with the
// consistency check, a charge from prefetched pools, channels with
// AES-256-GCM and SM4-GCM, and the refusals (illegal transition, cloned
// device, counterfeit device, frozen/lost/cancelled device, wrong PINs),
// and verifies the audit chain. It returns an error as soon as a step does
// not behave as required.
func KeyCharge(ctx context.Context, deps KeyChargeDeps) (steps []Step, err error) {
	if deps.DB == nil || deps.CA == nil || deps.Audit == nil {
		return nil, fmt.Errorf("%w: KeyCharge needs DB, CA and Audit", keycharge.ErrInvalid)
	}
	r := &kcRun{ctx: ctx, deps: deps, dir: deps.Dir,
		opts: device.Options{KDF: device.KDFParams{Time: 1, MemoryKiB: 16 * 1024, Threads: 1}}, // demo speed; production uses the defaults
		pin:  []byte("135790"), puk: []byte("24680135")}
	if r.dir == "" {
		if r.dir, err = os.MkdirTemp("", "qshield-keycharge-demo-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(r.dir)
	}
	r.kc, err = lab.StartKeycharge(ctx, lab.KeychargeConfig{DB: deps.DB, CA: deps.CA, Audit: deps.Audit, PoolUnits: 1024, Log: deps.Log})
	if err != nil {
		return nil, err
	}
	defer r.kc.Close()
	defer func() {
		if r.dev != nil {
			r.dev.Close()
		}
	}()
	for _, phase := range []func() error{r.fill, r.provision, r.charge, r.channels, r.clone, r.counterfeit,
		r.wrongPIN, r.frozenAndLost, r.cancel, r.auditTrail} {
		if err := phase(); err != nil {
			return r.steps, err
		}
	}
	return r.steps, nil
}

// kcRun is one run of the KeyCharge scenario.
type kcRun struct {
	ctx      context.Context
	deps     KeyChargeDeps
	dir      string
	kc       *lab.Keycharge
	steps    []Step
	opts     device.Options
	pin, puk []byte
	serial   string             // the device's serial
	devDir   string             // its store
	dev      *device.Device     // the provisioned device
	ch       *keycharge.Charger // the charger
}

func (r *kcRun) ok(step, detail string, a ...any) {
	r.steps = append(r.steps, Step{Step: step, Outcome: "ok", Detail: fmt.Sprintf(detail, a...)})
}

// refused records a step the platform must refuse: err must wrap want
// (any error when want is nil).
func (r *kcRun) refused(step string, err error, want error) error {
	if err == nil {
		return fmt.Errorf("keycharge demo: %s: was not refused", step)
	}
	if want != nil && !errors.Is(err, want) {
		return fmt.Errorf("keycharge demo: %s: refused for the wrong reason: %w", step, err)
	}
	r.steps = append(r.steps, Step{Step: step, Outcome: "refused", Detail: err.Error()})
	return nil
}

// fill puts quantum key into both KMEs' pools.
func (r *kcRun) fill() error {
	if err := r.kc.Fill(r.ctx, 6<<20); err != nil {
		return err
	}
	kc := r.kc
	r.ok("KME pair", "charger SAE %s at %s, QSSC SAE %s at %s; 6 MiB of quantum key in each pool", kc.Config.ChargerSAE, kc.Pair.AURL, kc.Config.QSSCSAE, kc.Pair.BURL)
	return nil
}

// provision runs the device lifecycle up to "bound" and two refused
// transitions.
func (r *kcRun) provision() error {
	ctx, kc := r.ctx, r.kc
	suffix := make([]byte, 3)
	rand.Read(suffix)
	r.serial = fmt.Sprintf("QK-UKEY-%X", suffix)
	r.devDir = filepath.Join(r.dir, r.serial)
	dev, err := lab.Provision(ctx, kc.Admin, r.devDir, device.Info{Serial: r.serial, Model: "QK-UKEY-1", Kind: "ukey"}, r.pin, r.puk, r.opts, "admin-wang", "alice")
	if err != nil {
		return fmt.Errorf("keycharge demo: provision: %w", err)
	}
	r.dev = dev
	d, err := kc.Admin.Device(ctx, r.serial)
	if err != nil {
		return err
	}
	r.ok("device lifecycle", "%s manufactured (key pair generated inside) → initialised (certificate %s from the platform CA) → distributed to admin-wang → bound to alice → %s", r.serial, d.CertSerial, d.State)
	_, err = kc.Admin.Transition(ctx, r.serial, keycharge.TransitionRequest{Action: keycharge.ActActivate})
	if err := r.refused("illegal transition: activate an active device", err, keycharge.ErrTransition); err != nil {
		return err
	}
	_, err = kc.Charger.Transition(ctx, r.serial, keycharge.TransitionRequest{Action: keycharge.ActFreeze})
	return r.refused("charger (not an administrator) freezes the device", err, keycharge.ErrForbidden)
}

// charge charges over ETSI 014, then from prefetched pools, and compares the
// device's and the platform's keys.
func (r *kcRun) charge() error {
	ctx := r.ctx
	var err error
	if r.ch, err = r.kc.NewCharger(nil); err != nil {
		return err
	}
	res, err := r.ch.Charge(ctx, r.dev, 2<<20)
	if err != nil {
		return fmt.Errorf("keycharge demo: charge: %w", err)
	}
	r.ok("charge 2 MiB over ETSI 014", "challenge-response signed by the device key, %d keys, consistency hash %x…, %v (%.1f MB/s); device holds %d bytes", res.Keys, res.Hash[:6], res.Elapsed.Round(time.Millisecond), float64(res.Bytes)/1e6/res.Elapsed.Seconds(), res.Remaining)
	if _, err := r.ch.Prefetch(ctx, 1<<20); err != nil {
		return fmt.Errorf("keycharge demo: prefetch: %w", err)
	}
	res, err = r.ch.Charge(ctx, r.dev, 1<<20)
	if err != nil {
		return fmt.Errorf("keycharge demo: charge from pool: %w", err)
	}
	r.ok("charge 1 MiB from prefetched pools", "%v (%.1f MB/s); device holds %d bytes", res.Elapsed.Round(time.Millisecond), float64(res.Bytes)/1e6/res.Elapsed.Seconds(), res.Remaining)
	dd, _ := r.dev.Digest()
	pd, _ := r.kc.QKMP.DeviceDigest(ctx, r.serial)
	if string(dd) != string(pd) {
		return errors.New("keycharge demo: device and platform hold different keys")
	}
	r.ok("device and platform consistent", "same keys, bytes and usage on both sides (digest %x…)", dd[:6])
	return nil
}

// channels copies the device's store (the clone used later) and then opens
// a quantum secure channel with each cipher.
func (r *kcRun) channels() error {
	if err := lab.CopyStore(r.devDir, filepath.Join(r.dir, "clone")); err != nil {
		return err
	}
	for _, alg := range []channel.Alg{channel.AES256GCM, channel.SM4GCM} {
		s, err := (&keycharge.Phone{Device: r.dev, Platform: r.kc.Phone, Alg: alg}).Open(r.ctx)
		if err != nil {
			return fmt.Errorf("keycharge demo: channel: %w", err)
		}
		reply, err := s.Send(r.ctx, []byte("login alice; balance?"))
		if err != nil {
			return fmt.Errorf("keycharge demo: channel: %w", err)
		}
		r.ok("quantum secure channel ("+string(alg)+")", "key %s @%d in the clear; echo %q; %d bytes of key left at the QSSC", s.KeyID, s.Offset, reply, s.Remaining)
	}
	return nil
}

// clone: the copy taken before the channels replays the segment the
// original used first.
func (r *kcRun) clone() error {
	cd, err := device.Open(filepath.Join(r.dir, "clone"), r.pin, r.opts)
	if err != nil {
		return err
	}
	_, err = (&keycharge.Phone{Device: cd, Platform: r.kc.Phone}).Open(r.ctx)
	cd.Close()
	return r.refused("cloned device replays a used key segment", err, keycharge.ErrKeyUsed)
}

// counterfeit: a device with its own key pair and a self-signed
// certificate asks for a charge.
func (r *kcRun) counterfeit() error {
	fake := filepath.Join(r.dir, "fake")
	if err := device.Manufacture(fake, device.Info{Serial: r.serial, Kind: "ukey"}, r.pin, r.puk, r.opts); err != nil {
		return err
	}
	fd, err := device.Open(fake, r.pin, r.opts)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: r.serial}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, fd.PublicKey(), fd.Signer())
	if err == nil {
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(der); err == nil {
			err = fd.InstallCertificate(c)
		}
	}
	if err != nil {
		fd.Close()
		return err
	}
	_, err = r.ch.Charge(r.ctx, fd, 4096)
	fd.Close()
	return r.refused("counterfeit device (self-signed certificate) asks for a charge", err, keycharge.ErrCounterfeit)
}

// wrongPIN: a wrong PIN at the charger is refused and reported to the
// platform.
func (r *kcRun) wrongPIN() error {
	dev2 := filepath.Join(r.dir, "other")
	if _, err := lab.Provision(r.ctx, r.kc.Admin, dev2, device.Info{Serial: r.serial + "-2", Kind: "ukey"}, r.pin, r.puk, r.opts, "admin-wang", "bob"); err != nil {
		return err
	}
	_, err := r.ch.OpenDevice(r.ctx, dev2, []byte("000000"), r.opts)
	if err := r.refused("wrong PIN at the charger", err, device.ErrWrongPIN); err != nil {
		return err
	}
	if d2, err := r.kc.Admin.Device(r.ctx, r.serial+"-2"); err == nil {
		r.steps[len(r.steps)-1].Detail += fmt.Sprintf(" (platform counts %d wrong PIN(s) for %s)", d2.PINFailures, d2.Serial)
	}
	return nil
}

// frozenAndLost: a frozen, then lost device can neither charge nor open a
// channel; cancelling the loss restores it.
func (r *kcRun) frozenAndLost() error {
	ctx, kc := r.ctx, r.kc
	for _, st := range []struct {
		act  keycharge.Action
		name string
	}{{keycharge.ActFreeze, "frozen"}, {keycharge.ActReportLost, "lost"}} {
		if _, err := kc.Admin.Transition(ctx, r.serial, keycharge.TransitionRequest{Action: st.act, Reason: "demo"}); err != nil {
			return err
		}
		_, err := r.ch.Charge(ctx, r.dev, 4096)
		if err := r.refused(st.name+" device asks for a charge", err, keycharge.ErrDeviceState); err != nil {
			return err
		}
		_, err = (&keycharge.Phone{Device: r.dev, Platform: kc.Phone}).Open(ctx)
		if err := r.refused(st.name+" device opens a channel", err, keycharge.ErrDeviceState); err != nil {
			return err
		}
	}
	if _, err := kc.Admin.Transition(ctx, r.serial, keycharge.TransitionRequest{Action: keycharge.ActUnfreeze, Reason: "found"}); err != nil {
		return err
	}
	if _, err := (&keycharge.Phone{Device: r.dev, Platform: kc.Phone}).Open(ctx); err != nil {
		return fmt.Errorf("keycharge demo: after unfreeze: %w", err)
	}
	r.ok("cancel the loss", "device active again; its keys restored; channel opens")
	return nil
}

// cancel ends the device: keys destroyed, certificate revoked, refused.
func (r *kcRun) cancel() error {
	ctx, kc := r.ctx, r.kc
	if _, err := kc.Admin.Transition(ctx, r.serial, keycharge.TransitionRequest{Action: keycharge.ActCancel}); err != nil {
		return err
	}
	d, _ := kc.Admin.Device(ctx, r.serial)
	r.ok("cancel the device", "state %s; keys on the platform destroyed (%d bytes left); certificate revoked", d.State, d.Remaining)
	_, err := (&keycharge.Phone{Device: r.dev, Platform: kc.Phone}).Open(ctx)
	return r.refused("cancelled device opens a channel", err, keycharge.ErrDeviceState)
}

// auditTrail verifies the audit chain.
func (r *kcRun) auditTrail() error {
	rep, err := r.deps.Audit.Verify(r.ctx)
	if err != nil {
		return err
	}
	if !rep.OK {
		return fmt.Errorf("keycharge demo: audit chain broken: %v", rep.Problems)
	}
	stats, err := r.kc.Admin.AuditStats(r.ctx, "event")
	if err != nil {
		return err
	}
	r.ok("audit trail", "chain of %d records verifies; %d keycharge event types (qshield audit stats --by event,resource,day)", rep.Records, len(stats))
	return nil
}
