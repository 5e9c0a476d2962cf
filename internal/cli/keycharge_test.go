package cli

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/internal/lab"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func FuzzKCParseSize(f *testing.F) {
	for _, s := range []string{"9MB", "512KiB", "1048576", "1 m", "-1", "99999999999999999MB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := kcParseSize(s)
		if err == nil && (n <= 0 || n > 1<<40) {
			t.Fatalf("%q: %d", s, n)
		}
	})
}

func writeCertPair(t *testing.T, dir, name string, der []byte, key any) {
	t.Helper()
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}), 0o600)
}

// The admin, charger and phone commands end to end against a lab platform.
func TestKeychargeCommands(t *testing.T) {
	ctx := context.Background()
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	enc, _ := pki.RawKey(bytes.Repeat([]byte{9}, 32))
	ca, err := pki.OpenOrCreateCA(ctx, db, "platform", pki.Options{}, enc)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := audit.Open(ctx, db)
	kc, err := lab.StartKeycharge(ctx, lab.KeychargeConfig{DB: db, CA: ca, Audit: log, PoolUnits: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	if err := kc.Fill(ctx, 2<<20); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	os.WriteFile(filepath.Join(state, "ca.pem"), pki.EncodeCertPEM(ca.Certificate()), 0o644)
	// The admin key sealed under the passphrase, as `qshield serve` writes it
	// when QSHIELD_ADMIN_PASSPHRASE is set: every admin command reads it
	// (tls.LoadX509KeyPair could not, #12).
	writeCertPair(t, state, "admin", kc.AdminCert.Certificate[0], kc.AdminCert.PrivateKey)
	t.Setenv(platform.EnvAdminPassphrase, "correct horse battery staple")
	sealedAdmin, err := pki.SealPrivateKeyPEM(kc.AdminCert.PrivateKey.(crypto.Signer), pki.PassphraseKey([]byte("correct horse battery staple")))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "admin-key.pem"), sealedAdmin, 0o600); err != nil {
		t.Fatal(err)
	}
	writeCertPair(t, state, "charger-1", kc.ChargerCert.Certificate[0], kc.ChargerCert.PrivateKey)
	devices := t.TempDir()
	dev := filepath.Join(devices, "ukey1")
	t.Setenv(EnvDevicePIN, "112233")
	t.Setenv(EnvDevicePUK, "44556677")
	run := func(cmd *cobra.Command, args ...string) string {
		t.Helper()
		g := NewGlobals()
		var out, errb bytes.Buffer
		g.Out, g.Err = &out, &errb
		g.Init()
		c := cmd
		if c == nil {
			t.Fatal("nil command")
		}
		_ = g
		c.SetArgs(args)
		c.SetOut(&out)
		c.SetErr(&errb)
		c.SetContext(ctx)
		if err := c.ExecuteContext(ctx); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errb.String())
		}
		return out.String()
	}
	mk := func(f func(*Globals) *cobra.Command) (*cobra.Command, *bytes.Buffer) {
		g := NewGlobals()
		var out bytes.Buffer
		g.Out, g.Err = &out, &bytes.Buffer{}
		g.Init()
		return f(g), &out
	}
	common := []string{"--server", kc.URL, "--admin", state}
	admin := func(args ...string) string {
		c, out := mk(AdminCommand)
		run(c, append(args, common...)...)
		return out.String()
	}
	admin("device", "manufacture", "--dir", dev, "--serial", "CLI-1")
	admin("device", "init", "--dir", dev)
	admin("device", "distribute", "CLI-1", "--to", "admin-li")
	admin("device", "bind", "CLI-1", "--user", "carol")
	if out := admin("device", "activate", "CLI-1"); !strings.Contains(out, "state=active") {
		t.Fatalf("activate: %s", out)
	}
	ch, out := mk(ChargerCommand)
	run(ch, append([]string{"--watch", devices, "--once", "--volume", "256KiB", "--kme", kc.Pair.AURL,
		"--cert", filepath.Join(state, "charger-1.pem"), "--key", filepath.Join(state, "charger-1-key.pem")}, common...)...)
	if !strings.Contains(out.String(), "charged 262144 bytes") {
		t.Fatalf("charger: %s", out.String())
	}
	ph, pout := mk(PhoneChannelCommand)
	run(ph, append([]string{"--dir", dev, "--alg", "sm4-gcm", "hello QSSC", "second message"}, common...)...)
	if !strings.Contains(pout.String(), "< hello QSSC") || !strings.Contains(pout.String(), "sm4-gcm") {
		t.Fatalf("phone: %s", pout.String())
	}
	if out := admin("device", "show", "CLI-1"); !strings.Contains(out, "key=262080/262144") {
		t.Fatalf("show: %s", out)
	}
	admin("device", "freeze", "CLI-1")
	ph2, _ := mk(PhoneChannelCommand)
	ph2.SetArgs(append([]string{"--dir", dev, "x"}, common...))
	ph2.SetOut(&bytes.Buffer{})
	ph2.SetErr(&bytes.Buffer{})
	if err := ph2.ExecuteContext(ctx); err == nil || !strings.Contains(err.Error(), "frozen") {
		t.Fatalf("frozen device channel: %v", err)
	}
	// charger --once must fail when its charge fails (a frozen device is
	// refused): it used to exit 0 whatever happened.
	ch2, _ := mk(ChargerCommand)
	ch2.SetArgs(append([]string{"--watch", devices, "--once", "--volume", "64KiB", "--kme", kc.Pair.AURL,
		"--cert", filepath.Join(state, "charger-1.pem"), "--key", filepath.Join(state, "charger-1-key.pem")}, common...))
	ch2.SetOut(&bytes.Buffer{})
	ch2.SetErr(&bytes.Buffer{})
	if err := ch2.ExecuteContext(ctx); err == nil || ErrorCode(err) != "charge_failed" {
		t.Fatalf("charger --once on a frozen device: %v, want a charge_failed error", err)
	}
	if out := admin("device", "stats", "--by", "event"); !strings.Contains(out, "keycharge.charge.commit") {
		t.Fatalf("stats: %s", out)
	}
}
