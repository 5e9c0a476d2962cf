package scenario

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/qshield/qshield/bioqr"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/bioqr/emvqr"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qrimg"
	"github.com/qshield/qshield/sqldb"
)

// BioQRDeps is what BioQR needs from the platform.
type BioQRDeps struct {
	DB     *sqldb.DB
	CA     *pki.CA // an ECDSA P-256 CA (mutual TLS)
	Ledger *ledger.Ledger
	Audit  audit.Recorder // nil: LogAuditor on Log
	// DataDir is the FVC2002 directory holding DB1_B (QSHIELD_FINGERPRINT_DATA);
	// "" means synthetic templates, and a directory without the data is an error.
	DataDir string
	Log     *slog.Logger
}

// BioQR runs seed 004 end to end on the platform's database, CA and
// ledger: certification of the settlement server, a POS and a phone; a
// payment through both QR codes (rendered to PNG and scanned back) settled
// over mutual TLS on a loopback port; then every attack, each of which must
// be refused with its own error. A step that does not behave as the scheme
// requires ends the demo with an error (the rows so far are returned).
func BioQR(ctx context.Context, d BioQRDeps) ([]Step, error) {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	var steps []Step
	ok := func(step, detail string) { steps = append(steps, Step{step, "ok", detail}) }
	fail := func(step string, err error) ([]Step, error) {
		steps = append(steps, Step{step, "UNEXPECTED", err.Error()})
		return steps, fmt.Errorf("bioqr demo: %s: %w", step, err)
	}
	refused := func(step string, err, want error) error {
		if err == nil {
			steps = append(steps, Step{step, "UNEXPECTED", "accepted"})
			return fmt.Errorf("bioqr demo: %s: accepted, want %s", step, bioqr.ErrorCode(want))
		}
		if !errors.Is(err, want) {
			steps = append(steps, Step{step, "UNEXPECTED", err.Error()})
			return fmt.Errorf("bioqr demo: %s: %w (want %s)", step, err, bioqr.ErrorCode(want))
		}
		steps = append(steps, Step{step, "refused (" + bioqr.ErrorCode(want) + ")", err.Error()})
		return nil
	}

	m := bioqr.NewFingerprintMatcher()
	tp, err := bioqr.LoadTemplates(d.DataDir, m)
	if err != nil {
		return fail("load fingerprint templates", err)
	}
	ok("fingerprint templates", tp.Source)
	rig, err := bioqr.NewRig(ctx, bioqr.RigConfig{DB: d.DB, CA: d.CA, Ledger: d.Ledger, Audit: d.Audit, Matcher: m, Templates: tp, Log: d.Log, Now: time.Now})
	if err != nil {
		return fail("certify settlement server, POS and phone (steps A–F, a–d)", err)
	}
	ok("certify settlement server, POS and phone (steps A–F, a–d)",
		fmt.Sprintf("credentials of %d/%d/%d bytes; owner template sealed to the settlement key, commitment in the phone credential",
			len(rig.Settlement.Credential()), len(rig.POS.Unit.Credential().Raw), len(rig.Phone.Unit.Credential().Raw)))
	url, stop, err := rig.StartTLS(ctx)
	if err != nil {
		return fail("start settlement API over mutual TLS", err)
	}
	defer stop()
	ok("start settlement API over mutual TLS", url+"/v1/bioqr/")

	scan := func(text string) (string, qrimg.Info, error) {
		png, info, err := qrimg.EncodePNG(text, qrimg.M, 3)
		if err != nil {
			return "", info, err
		}
		got, err := qrimg.DecodePNG(strings.NewReader(string(png)), 0)
		return got, info, err
	}
	// Steps 2–3.
	c, err := rig.POS.NewConsumption(ctx, 25_50)
	if err != nil {
		return fail("POS shows consumption QR for 25.50 CNY (steps 2–3)", err)
	}
	text, info, err := scan(c.Payload)
	if err != nil {
		return fail("POS shows consumption QR for 25.50 CNY (steps 2–3)", err)
	}
	ok("POS shows consumption QR for 25.50 CNY (steps 2–3)", fmt.Sprintf("EMVCo MPM dynamic payload, %d characters, QR version %d-%s", len(c.Payload), info.Version, info.Level))
	// Steps 4–7.
	read, err := rig.Phone.ReadConsumption(ctx, text)
	if err != nil {
		return fail("phone scans it and verifies the POS against the CA (steps 4–5)", err)
	}
	ok("phone scans it and verifies the POS against the CA (steps 4–5)", "credential signed by the platform CA, not revoked, POS signature valid")
	qr, err := rig.Phone.Pay(ctx, read, rig.Payer, tp.Genuine)
	if err != nil {
		return fail("phone encrypts the payment to the POS key (steps 6–7)", err)
	}
	qtext, qinfo, err := scan(qr)
	if err != nil {
		return fail("phone encrypts the payment to the POS key (steps 6–7)", err)
	}
	ok("phone encrypts the payment to the POS key (steps 6–7)", fmt.Sprintf("%s, with the owner's finger from the phone sensor: %d characters, QR version %d-%s", bioqr.SuiteHPKEP256, len(qr), qinfo.Version, qinfo.Level))
	before, _ := d.Ledger.Account(ctx, rig.Payer)
	res, err := rig.POS.Accept(ctx, qtext)
	if err != nil {
		return fail("POS decrypts, checks RandCode, settles over mutual TLS (steps 8–15)", err)
	}
	after, _ := d.Ledger.Account(ctx, rig.Payer)
	if before.Balance-after.Balance != 25_50 {
		return fail("POS decrypts, checks RandCode, settles over mutual TLS (steps 8–15)", fmt.Errorf("payer debited %d, want 2550", before.Balance-after.Balance))
	}
	ok("POS decrypts, checks RandCode, settles over mutual TLS (steps 8–15)", fmt.Sprintf("paid: transfer %s, match score %.1f", res.TransferID, res.Score))
	// The same with the POS's own sensor (step 11's other branch).
	rig.POS.Sensor = bioqr.BytesSensor(tp.Genuine)
	c2, _ := rig.POS.NewConsumption(ctx, 8_00)
	read2, err := rig.Phone.ReadConsumption(ctx, c2.Payload)
	if err != nil {
		return fail("payment with the finger on the POS sensor (step 11)", err)
	}
	qr2, _ := rig.Phone.Pay(ctx, read2, rig.Payer, nil)
	if res2, err := rig.POS.Accept(ctx, qr2); err != nil {
		return fail("payment with the finger on the POS sensor (step 11)", err)
	} else {
		ok("payment with the finger on the POS sensor (step 11)", fmt.Sprintf("paid 8.00: transfer %s", res2.TransferID))
	}

	// Attacks.
	payWith := func(amount int64, probe []byte) (string, error) {
		c, err := rig.POS.NewConsumption(ctx, amount)
		if err != nil {
			return "", err
		}
		read, err := rig.Phone.ReadConsumption(ctx, c.Payload)
		if err != nil {
			return "", err
		}
		return rig.Phone.Pay(ctx, read, rig.Payer, probe)
	}
	// The rogue CA lives in its own throw-away database, not the platform's.
	evil, closeEvil, err := throwawayCA(ctx)
	if err != nil {
		return fail("attack: fake POS certified by another CA", err)
	}
	defer closeEvil()
	eu, _ := bioqr.NewSecureUnit("", bioqr.KindPOS, pki.ECDSAP256, nil)
	ereq, _ := bioqr.NewCertRequest(eu, "EVIL-POS", "", nil, map[string]string{bioqr.AttrMerchantAccount: "thief"})
	ec, err := (&bioqr.Certifier{CA: evil}).Certify(ctx, ereq)
	if err == nil {
		err = ec.Install(eu, evil.Certificate())
	}
	if err != nil {
		return fail("attack: fake POS certified by another CA", err)
	}
	fake := &bioqr.POS{Unit: eu, Store: bioqr.NewMemoryRandStore(), Merchant: rig.POS.Merchant}
	fc, err := fake.NewConsumption(ctx, 999_00)
	if err != nil {
		return fail("attack: fake POS certified by another CA", err)
	}
	_, err = rig.Phone.ReadConsumption(ctx, fc.Payload)
	if err := refused("attack: fake POS certified by another CA", err, bioqr.ErrIllegalPOS); err != nil {
		return steps, err
	}
	rp, err := rig.NewPOS(ctx, "POS-STOLEN-"+randSuffix(), rig.Merchant)
	if err != nil {
		return fail("attack: revoked POS", err)
	}
	rc, _ := rp.NewConsumption(ctx, 50_00)
	if err := d.CA.Revoke(ctx, rp.Unit.Certificate().SerialNumber, "terminal reported stolen"); err != nil {
		return fail("attack: revoked POS", err)
	}
	_, err = rig.Phone.ReadConsumption(ctx, rc.Payload)
	if err := refused("attack: revoked POS", err, bioqr.ErrIllegalPOS); err != nil {
		return steps, err
	}
	_, err = rig.POS.Accept(ctx, qtext)
	if err := refused("attack: replay the paid payment QR", err, bioqr.ErrRandCodeUsed); err != nil {
		return steps, err
	}
	cm, _ := rig.POS.NewConsumption(ctx, 88_00)
	body := strings.Replace(cm.Payload, "540588.00", "540508.00", 1)
	body = body[:len(body)-4]
	_, err = rig.Phone.ReadConsumption(ctx, body+fmt.Sprintf("%04X", emvqr.CRC16([]byte(body))))
	if err := refused("attack: consumption QR amount changed 88.00 → 8.00 (CRC fixed)", err, bioqr.ErrBadSignature); err != nil {
		return steps, err
	}
	pq, err := payWith(6_00, tp.Genuine)
	if err != nil {
		return fail("attack: flip one bit of the payment QR ciphertext", err)
	}
	q, _ := bioqr.ParsePaymentQR(pq)
	q.Ciphertext[len(q.Ciphertext)/2] ^= 1
	_, err = rig.POS.Accept(ctx, bioqr.EncodePaymentQR(q))
	if err := refused("attack: flip one bit of the payment QR ciphertext", err, bioqr.ErrDecrypt); err != nil {
		return steps, err
	}
	wq, err := payWith(7_00, tp.Impostor)
	if err != nil {
		return fail("attack: wrong finger", err)
	}
	_, err = rig.POS.Accept(ctx, wq)
	if err := refused("attack: wrong finger", err, bioqr.ErrFingerprint); err != nil {
		return steps, err
	}
	rig.POS.Sensor = nil
	sq, err := payWith(9_00, nil)
	if err != nil {
		return fail("attack: stolen phone, no finger", err)
	}
	_, err = rig.POS.Accept(ctx, sq)
	if err := refused("attack: stolen phone, no finger", err, bioqr.ErrNoFingerprint); err != nil {
		return steps, err
	}
	xc, _ := rig.POS.NewConsumption(ctx, 4_00)
	rig.Phone.Now = func() time.Time { return time.Now().Add(bioqr.DefaultConsumptionTTL + time.Second) }
	_, err = rig.Phone.ReadConsumption(ctx, xc.Payload)
	rig.Phone.Now = time.Now
	if err := refused("attack: expired consumption QR", err, bioqr.ErrExpired); err != nil {
		return steps, err
	}
	other, err := rig.NewPOS(ctx, "POS-OTHER-"+randSuffix(), rig.Merchant)
	if err != nil {
		return fail("attack: payment QR shown to a different POS", err)
	}
	oq, err := payWith(2_00, tp.Genuine)
	if err != nil {
		return fail("attack: payment QR shown to a different POS", err)
	}
	_, err = other.Accept(ctx, oq)
	if err := refused("attack: payment QR shown to a different POS", err, bioqr.ErrWrongPOS); err != nil {
		return steps, err
	}
	final, _ := d.Ledger.Account(ctx, rig.Payer)
	if before.Balance-final.Balance != 25_50+8_00 {
		return fail("balances", fmt.Errorf("payer lost %d minor units, want 3350", before.Balance-final.Balance+25_50))
	}
	ok("balances", fmt.Sprintf("payer paid exactly 25.50 + 8.00; every attack moved no money (balance %d.%02d CNY)", final.Balance/100, final.Balance%100))
	return steps, nil
}

// throwawayCA creates a CA in a temporary SQLite database.
func throwawayCA(ctx context.Context) (*pki.CA, func(), error) {
	dir, err := os.MkdirTemp("", "qshield-bioqr-evil-*")
	if err != nil {
		return nil, nil, err
	}
	db, err := sqldb.Open(ctx, filepath.Join(dir, "evil.db"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	done := func() { db.Close(); os.RemoveAll(dir) }
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		done()
		return nil, nil, err
	}
	k, _ := pki.RawKey(b)
	ca, err := pki.NewCA(ctx, db, "evil", pki.Options{Subject: "qshield platform root CA"}, k)
	if err != nil {
		done()
		return nil, nil, err
	}
	return ca, done, nil
}

func randSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
