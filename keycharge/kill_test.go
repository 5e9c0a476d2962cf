package keycharge_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"github.com/qshield/qshield/keycharge"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qshield/qshield/keycharge/device"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// Environment of the child charger process.
const (
	envChild  = "QKC_TEST_CHILD"
	envKillAt = "QKC_TEST_KILL_AT"
)

func writePEMPair(t *testing.T, dir, name string, c tls.Certificate) {
	t.Helper()
	os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
	kp, err := pki.EncodePrivateKeyPEM(c.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, name+"-key.pem"), kp, 0o600)
}

// TestChargerKilled runs the charger as a separate process (this test
// binary re-executed) and SIGKILLs it at each charge step and at random
// moments; after every kill the device is re-plugged: recovery must leave
// device and platform with exactly the same keys and nothing open.
func TestChargerKilled(t *testing.T) {
	if os.Getenv(envChild) != "" {
		t.Skip("child process")
	}
	if testing.Short() {
		t.Skip("short mode")
	}
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := startEnv(t, db, 14)
		ctx := e.ctx
		cfgDir := t.TempDir()
		os.WriteFile(filepath.Join(cfgDir, "ca.pem"), pki.EncodeCertPEM(e.ca.Certificate()), 0o600)
		writePEMPair(t, cfgDir, "charger", e.lab.ChargerCert)
		writePEMPair(t, cfgDir, "sae", e.lab.ChargerKMETLS.Certificates[0])
		dev := e.provision("SN-KILL")
		dir := dev.Dir()
		dev.Close()
		plans := append([]string{}, keycharge.FaultPoints[:len(keycharge.FaultPoints)-1]...)
		for i := 0; i < 3; i++ {
			plans = append(plans, "random")
		}
		for _, plan := range plans {
			cmd := exec.Command(os.Args[0], "-test.run=^TestChargerChild$", "-test.v")
			cmd.Env = append(os.Environ(), envChild+"="+strings.Join([]string{cfgDir, e.lab.URL, e.lab.Pair.AURL, dir, e.lab.Config.ChargerSAE}, "|"), envKillAt+"="+plan)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killed := make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					line := sc.Text()
					if strings.HasPrefix(line, "AT ") || strings.HasPrefix(line, "STARTED") {
						select {
						case killed <- line:
						default:
						}
					}
				}
			}()
			select {
			case line := <-killed:
				if plan == "random" {
					time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
				}
				cmd.Process.Signal(syscall.SIGKILL)
				t.Logf("%s: killed (%s)", plan, line)
			case <-time.After(60 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("%s: child never reached its kill point", plan)
			}
			cmd.Wait()
			// Re-plug.
			d, err := device.Open(dir, testPIN, fastOpts)
			if err != nil {
				t.Fatalf("%s: device after kill: %v", plan, err)
			}
			rec, err := e.charger(nil).Recover(ctx, d)
			if err != nil {
				t.Fatalf("%s: recover: %v", plan, err)
			}
			// Settle charges the kill left open on the platform (never staged).
			if _, err := e.charger(nil).Charge(ctx, d, 8<<10); err != nil {
				t.Fatalf("%s: charge after recovery: %v", plan, err)
			}
			e.consistent(d)
			t.Logf("%s: recovery %s, device holds %d bytes in %d charges", plan, rec, d.Remaining(), len(d.Charges()))
			d.Close()
		}
	})
}

// TestChargerChild is the child charger process of TestChargerKilled.
func TestChargerChild(t *testing.T) {
	spec := os.Getenv(envChild)
	if spec == "" {
		t.Skip("only run as a child of TestChargerKilled")
	}
	parts := strings.Split(spec, "|")
	cfgDir, qkmpURL, kmeURL, devDir, sae := parts[0], parts[1], parts[2], parts[3], parts[4]
	killAt := os.Getenv(envKillAt)
	roots := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(cfgDir, "ca.pem"))
	roots.AppendCertsFromPEM(caPEM)
	load := func(name string) *tls.Config {
		c, err := tls.LoadX509KeyPair(filepath.Join(cfgDir, name+".pem"), filepath.Join(cfgDir, name+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{c}}
	}
	ch, err := keycharge.NewCharger(keycharge.ChargerConfig{Platform: keycharge.NewClient(qkmpURL, load("charger")), KME: etsi014.New(kmeURL, load("sae")), MasterSAE: sae,
		Batch: 8, Parallel: 2, // small batches: many steps to land a random kill in
		Fault: func(p string) error {
			if p == killAt {
				fmt.Printf("AT %s\n", p)
				os.Stdout.Sync()
				time.Sleep(time.Minute)
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := device.Open(devDir, testPIN, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	if killAt == "random" {
		fmt.Println("STARTED " + strconv.Itoa(os.Getpid()))
		os.Stdout.Sync()
	}
	if _, err := ch.Charge(context.Background(), d, 1<<20); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Minute) // "random" finished before the kill: wait for it
}
