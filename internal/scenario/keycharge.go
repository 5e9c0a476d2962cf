package scenario

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"github.com/qshield/qshield/keycharge"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/qshield/qshield/audit"
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
	dir := deps.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "qshield-keycharge-demo-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	lab, err := keycharge.StartLab(ctx, keycharge.LabConfig{DB: deps.DB, CA: deps.CA, Audit: deps.Audit, PoolUnits: 1024, Log: deps.Log})
	if err != nil {
		return nil, err
	}
	defer lab.Close()
	ok := func(step, detail string, a ...any) {
		steps = append(steps, Step{Step: step, Outcome: "ok", Detail: fmt.Sprintf(detail, a...)})
	}
	refused := func(step string, err error, want error) error {
		if err == nil {
			return fmt.Errorf("keycharge demo: %s: was not refused", step)
		}
		if want != nil && !errors.Is(err, want) {
			return fmt.Errorf("keycharge demo: %s: refused for the wrong reason: %w", step, err)
		}
		steps = append(steps, Step{Step: step, Outcome: "refused", Detail: err.Error()})
		return nil
	}
	if err := lab.Fill(ctx, 6<<20); err != nil {
		return steps, err
	}
	ok("KME pair", "charger SAE %s at %s, QSSC SAE %s at %s; 6 MiB of quantum key in each pool", lab.Config.ChargerSAE, lab.Pair.AURL, lab.Config.QSSCSAE, lab.Pair.BURL)

	opts := device.Options{KDF: device.KDFParams{Time: 1, MemoryKiB: 16 * 1024, Threads: 1}} // demo speed; production uses the defaults
	pin, puk := []byte("135790"), []byte("24680135")
	suffix := make([]byte, 3)
	rand.Read(suffix)
	serial := fmt.Sprintf("QK-UKEY-%X", suffix)
	devDir := filepath.Join(dir, serial)
	dev, err := keycharge.Provision(ctx, lab.Admin, devDir, device.Info{Serial: serial, Model: "QK-UKEY-1", Kind: "ukey"}, pin, puk, opts, "admin-wang", "alice")
	if err != nil {
		return steps, fmt.Errorf("keycharge demo: provision: %w", err)
	}
	defer dev.Close()
	d, err := lab.Admin.Device(ctx, serial)
	if err != nil {
		return steps, err
	}
	ok("device lifecycle", "%s manufactured (key pair generated inside) → initialised (certificate %s from the platform CA) → distributed to admin-wang → bound to alice → %s", serial, d.CertSerial, d.State)
	_, err = lab.Admin.Transition(ctx, serial, keycharge.TransitionRequest{Action: keycharge.ActActivate})
	if err := refused("illegal transition: activate an active device", err, keycharge.ErrTransition); err != nil {
		return steps, err
	}
	_, err = lab.Charger.Transition(ctx, serial, keycharge.TransitionRequest{Action: keycharge.ActFreeze})
	if err := refused("charger (not an administrator) freezes the device", err, keycharge.ErrForbidden); err != nil {
		return steps, err
	}

	ch, err := lab.NewCharger(nil)
	if err != nil {
		return steps, err
	}
	res, err := ch.Charge(ctx, dev, 2<<20)
	if err != nil {
		return steps, fmt.Errorf("keycharge demo: charge: %w", err)
	}
	ok("charge 2 MiB over ETSI 014", "challenge-response signed by the device key, %d keys, consistency hash %x…, %v (%.1f MB/s); device holds %d bytes", res.Keys, res.Hash[:6], res.Elapsed.Round(time.Millisecond), float64(res.Bytes)/1e6/res.Elapsed.Seconds(), res.Remaining)
	if _, err := ch.Prefetch(ctx, 1<<20); err != nil {
		return steps, fmt.Errorf("keycharge demo: prefetch: %w", err)
	}
	res, err = ch.Charge(ctx, dev, 1<<20)
	if err != nil {
		return steps, fmt.Errorf("keycharge demo: charge from pool: %w", err)
	}
	ok("charge 1 MiB from prefetched pools", "%v (%.1f MB/s); device holds %d bytes", res.Elapsed.Round(time.Millisecond), float64(res.Bytes)/1e6/res.Elapsed.Seconds(), res.Remaining)
	dd, _ := dev.Digest()
	pd, _ := lab.QKMP.DeviceDigest(ctx, serial)
	if string(dd) != string(pd) {
		return steps, errors.New("keycharge demo: device and platform hold different keys")
	}
	ok("device and platform consistent", "same keys, bytes and usage on both sides (digest %x…)", dd[:6])

	// A clone: a copy of the store taken now, used after the original.
	clone := filepath.Join(dir, "clone")
	if err := copyStore(devDir, clone); err != nil {
		return steps, err
	}
	for _, alg := range []channel.Alg{channel.AES256GCM, channel.SM4GCM} {
		s, err := (&keycharge.Phone{Device: dev, Platform: lab.Phone, Alg: alg}).Open(ctx)
		if err != nil {
			return steps, fmt.Errorf("keycharge demo: channel: %w", err)
		}
		reply, err := s.Send(ctx, []byte("login alice; balance?"))
		if err != nil {
			return steps, fmt.Errorf("keycharge demo: channel: %w", err)
		}
		ok("quantum secure channel ("+string(alg)+")", "key %s @%d in the clear; echo %q; %d bytes of key left at the QSSC", s.KeyID, s.Offset, reply, s.Remaining)
	}

	// The clone replays the segment the original used first.
	cd, err := device.Open(clone, pin, opts)
	if err != nil {
		return steps, err
	}
	_, err = (&keycharge.Phone{Device: cd, Platform: lab.Phone}).Open(ctx)
	cd.Close()
	if err := refused("cloned device replays a used key segment", err, keycharge.ErrKeyUsed); err != nil {
		return steps, err
	}

	// Counterfeit device: its own key pair and a self-signed certificate.
	fake := filepath.Join(dir, "fake")
	if err := device.Manufacture(fake, device.Info{Serial: serial, Kind: "ukey"}, pin, puk, opts); err != nil {
		return steps, err
	}
	fd, err := device.Open(fake, pin, opts)
	if err != nil {
		return steps, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: serial}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
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
		return steps, err
	}
	_, err = ch.Charge(ctx, fd, 4096)
	fd.Close()
	if err := refused("counterfeit device (self-signed certificate) asks for a charge", err, keycharge.ErrCounterfeit); err != nil {
		return steps, err
	}

	// Wrong PIN at the charger is reported to the platform.
	dev2 := filepath.Join(dir, "other")
	if _, err := keycharge.Provision(ctx, lab.Admin, dev2, device.Info{Serial: serial + "-2", Kind: "ukey"}, pin, puk, opts, "admin-wang", "bob"); err != nil {
		return steps, err
	}
	_, err = ch.OpenDevice(ctx, dev2, []byte("000000"), opts)
	if err := refused("wrong PIN at the charger", err, device.ErrWrongPIN); err != nil {
		return steps, err
	}
	if d2, err := lab.Admin.Device(ctx, serial+"-2"); err == nil {
		steps[len(steps)-1].Detail += fmt.Sprintf(" (platform counts %d wrong PIN(s) for %s)", d2.PINFailures, d2.Serial)
	}

	for _, st := range []struct {
		act  keycharge.Action
		name string
	}{{keycharge.ActFreeze, "frozen"}, {keycharge.ActReportLost, "lost"}} {
		if _, err := lab.Admin.Transition(ctx, serial, keycharge.TransitionRequest{Action: st.act, Reason: "demo"}); err != nil {
			return steps, err
		}
		_, err := ch.Charge(ctx, dev, 4096)
		if err := refused(st.name+" device asks for a charge", err, keycharge.ErrDeviceState); err != nil {
			return steps, err
		}
		_, err = (&keycharge.Phone{Device: dev, Platform: lab.Phone}).Open(ctx)
		if err := refused(st.name+" device opens a channel", err, keycharge.ErrDeviceState); err != nil {
			return steps, err
		}
	}
	if _, err := lab.Admin.Transition(ctx, serial, keycharge.TransitionRequest{Action: keycharge.ActUnfreeze, Reason: "found"}); err != nil {
		return steps, err
	}
	if _, err := (&keycharge.Phone{Device: dev, Platform: lab.Phone}).Open(ctx); err != nil {
		return steps, fmt.Errorf("keycharge demo: after unfreeze: %w", err)
	}
	ok("cancel the loss", "device active again; its keys restored; channel opens")
	if _, err := lab.Admin.Transition(ctx, serial, keycharge.TransitionRequest{Action: keycharge.ActCancel}); err != nil {
		return steps, err
	}
	d, _ = lab.Admin.Device(ctx, serial)
	ok("cancel the device", "state %s; keys on the platform destroyed (%d bytes left); certificate revoked", d.State, d.Remaining)
	_, err = (&keycharge.Phone{Device: dev, Platform: lab.Phone}).Open(ctx)
	if err := refused("cancelled device opens a channel", err, keycharge.ErrDeviceState); err != nil {
		return steps, err
	}
	rep, err := deps.Audit.Verify(ctx)
	if err != nil {
		return steps, err
	}
	if !rep.OK {
		return steps, fmt.Errorf("keycharge demo: audit chain broken: %v", rep.Problems)
	}
	stats, err := lab.Admin.AuditStats(ctx, "event")
	if err != nil {
		return steps, err
	}
	ok("audit trail", "chain of %d records verifies; %d keycharge event types (qshield audit stats --by event,resource,day)", rep.Records, len(stats))
	return steps, nil
}

func copyStore(from, to string) error {
	if err := os.MkdirAll(to, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
