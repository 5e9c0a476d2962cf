package scenario

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/bioqr/emvqr"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/money"
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
	r := &bioqrRun{ctx: ctx, d: d}
	err := r.run()
	return r.steps, err
}

// bioqrRun is one run of the BioQR scenario.
type bioqrRun struct {
	ctx   context.Context
	d     BioQRDeps
	steps []Step
	tp    bioqr.Templates
	rig   *bioqr.Rig
	// paidQR is the payment QR of the first payment (an attack replays it);
	// before is the payer's balance before that payment.
	paidQR string
	before int64
}

func (r *bioqrRun) ok(step, detail string) { r.steps = append(r.steps, Step{step, "ok", detail}) }

func (r *bioqrRun) fail(step string, err error) error {
	r.steps = append(r.steps, Step{step, "UNEXPECTED", err.Error()})
	return fmt.Errorf("bioqr demo: %s: %w", step, err)
}

// refused records an attack: err must wrap want.
func (r *bioqrRun) refused(step string, err, want error) error {
	if err == nil {
		r.steps = append(r.steps, Step{step, "UNEXPECTED", "accepted"})
		return fmt.Errorf("bioqr demo: %s: accepted, want %s", step, bioqr.ErrorCode(want))
	}
	if !errors.Is(err, want) {
		r.steps = append(r.steps, Step{step, "UNEXPECTED", err.Error()})
		return fmt.Errorf("bioqr demo: %s: %w (want %s)", step, err, bioqr.ErrorCode(want))
	}
	r.steps = append(r.steps, Step{step, "refused (" + bioqr.ErrorCode(want) + ")", err.Error()})
	return nil
}

func (r *bioqrRun) run() error {
	stop, err := r.setup()
	if err != nil {
		return err
	}
	defer stop()
	if err := r.pay(); err != nil {
		return err
	}
	if err := r.payWithPOSSensor(); err != nil {
		return err
	}
	for _, attack := range []func() error{r.fakePOS, r.revokedPOS, r.replay, r.alteredAmount, r.flippedBit,
		r.wrongFinger, r.noFinger, r.expired, r.otherPOS} {
		if err := attack(); err != nil {
			return err
		}
	}
	return r.balances()
}

// setup loads the templates, certifies the parties (steps A–F, a–d) and
// starts the settlement API over mutual TLS.
func (r *bioqrRun) setup() (stop func(), err error) {
	m := bioqr.NewFingerprintMatcher()
	if r.tp, err = bioqr.LoadTemplates(r.d.DataDir, m); err != nil {
		return nil, r.fail("load fingerprint templates", err)
	}
	r.ok("fingerprint templates", r.tp.Source)
	const certify = "certify settlement server, POS and phone (steps A–F, a–d)"
	d := r.d
	if r.rig, err = bioqr.NewRig(r.ctx, bioqr.RigConfig{DB: d.DB, CA: d.CA, Ledger: d.Ledger, Audit: d.Audit, Matcher: m, Templates: r.tp, Log: d.Log, Now: time.Now}); err != nil {
		return nil, r.fail(certify, err)
	}
	r.ok(certify, fmt.Sprintf("credentials of %d/%d/%d bytes; owner template sealed to the settlement key, commitment in the phone credential",
		len(r.rig.Settlement.Credential()), len(r.rig.POS.Unit.Credential().Raw), len(r.rig.Phone.Unit.Credential().Raw)))
	url, stop, err := r.rig.StartTLS(r.ctx)
	if err != nil {
		return nil, r.fail("start settlement API over mutual TLS", err)
	}
	r.ok("start settlement API over mutual TLS", url+"/v1/bioqr/")
	return stop, nil
}

// scan renders text as a PNG QR code and decodes it back, as a camera would.
func scan(text string) (string, qrimg.Info, error) {
	png, info, err := qrimg.EncodePNG(text, qrimg.M, 3)
	if err != nil {
		return "", info, err
	}
	got, err := qrimg.DecodePNG(strings.NewReader(string(png)), 0)
	return got, info, err
}

// pay is steps 2–15: the consumption QR, the phone's checks, the payment QR
// with the finger from the phone's sensor, settlement over mutual TLS.
func (r *bioqrRun) pay() error {
	ctx, rig := r.ctx, r.rig
	const show = "POS shows consumption QR for 25.50 CNY (steps 2–3)"
	c, err := rig.POS.NewConsumption(ctx, 25_50)
	if err != nil {
		return r.fail(show, err)
	}
	text, info, err := scan(c.Payload)
	if err != nil {
		return r.fail(show, err)
	}
	r.ok(show, fmt.Sprintf("EMVCo MPM dynamic payload, %d characters, QR version %d-%s", len(c.Payload), info.Version, info.Level))
	const verify = "phone scans it and verifies the POS against the CA (steps 4–5)"
	read, err := rig.Phone.ReadConsumption(ctx, text)
	if err != nil {
		return r.fail(verify, err)
	}
	r.ok(verify, "credential signed by the platform CA, not revoked, POS signature valid")
	const encrypt = "phone encrypts the payment to the POS key (steps 6–7)"
	qr, err := rig.Phone.Pay(ctx, read, rig.Payer, r.tp.Genuine)
	if err != nil {
		return r.fail(encrypt, err)
	}
	qtext, qinfo, err := scan(qr)
	if err != nil {
		return r.fail(encrypt, err)
	}
	r.ok(encrypt, fmt.Sprintf("%s, with the owner's finger from the phone sensor: %d characters, QR version %d-%s", bioqr.SuiteHPKEP256, len(qr), qinfo.Version, qinfo.Level))
	const settle = "POS decrypts, checks RandCode, settles over mutual TLS (steps 8–15)"
	before, _ := r.d.Ledger.Account(ctx, rig.Payer)
	res, err := rig.POS.Accept(ctx, qtext)
	if err != nil {
		return r.fail(settle, err)
	}
	after, _ := r.d.Ledger.Account(ctx, rig.Payer)
	if before.Balance-after.Balance != 25_50 {
		return r.fail(settle, fmt.Errorf("payer debited %d, want 2550", before.Balance-after.Balance))
	}
	r.ok(settle, fmt.Sprintf("paid: transfer %s, match score %.3f (threshold %.3f)", res.TransferID, res.Score, bioqr.PaymentThreshold))
	r.paidQR, r.before = qtext, before.Balance
	return nil
}

// payWithPOSSensor is step 11's other branch: the finger on the POS's sensor.
func (r *bioqrRun) payWithPOSSensor() error {
	ctx, rig := r.ctx, r.rig
	const step = "payment with the finger on the POS sensor (step 11)"
	rig.POS.Sensor = bioqr.BytesSensor(r.tp.Genuine)
	c2, _ := rig.POS.NewConsumption(ctx, 8_00)
	read2, err := rig.Phone.ReadConsumption(ctx, c2.Payload)
	if err != nil {
		return r.fail(step, err)
	}
	qr2, _ := rig.Phone.Pay(ctx, read2, rig.Payer, nil)
	res2, err := rig.POS.Accept(ctx, qr2)
	if err != nil {
		return r.fail(step, err)
	}
	r.ok(step, fmt.Sprintf("paid 8.00: transfer %s", res2.TransferID))
	return nil
}

// payQR makes a payment QR for amount at the rig's POS with probe.
func (r *bioqrRun) payQR(amount int64, probe []byte) (string, error) {
	c, err := r.rig.POS.NewConsumption(r.ctx, amount)
	if err != nil {
		return "", err
	}
	read, err := r.rig.Phone.ReadConsumption(r.ctx, c.Payload)
	if err != nil {
		return "", err
	}
	return r.rig.Phone.Pay(r.ctx, read, r.rig.Payer, probe)
}

func (r *bioqrRun) fakePOS() error {
	const step = "attack: fake POS certified by another CA"
	// The rogue CA lives in its own throw-away database, not the platform's.
	evil, closeEvil, err := throwawayCA(r.ctx)
	if err != nil {
		return r.fail(step, err)
	}
	defer closeEvil()
	eu, _ := bioqr.NewSecureUnit("", bioqr.KindPOS, pki.ECDSAP256, nil)
	ereq, _ := bioqr.NewCertRequest(eu, "EVIL-POS", "", nil, map[string]string{bioqr.AttrMerchantAccount: "thief"})
	ec, err := (&bioqr.Certifier{CA: evil}).Certify(r.ctx, ereq)
	if err == nil {
		err = ec.Install(eu, evil.Certificate())
	}
	if err != nil {
		return r.fail(step, err)
	}
	fake := &bioqr.POS{Unit: eu, Store: bioqr.NewMemoryRandStore(), Merchant: r.rig.POS.Merchant}
	fc, err := fake.NewConsumption(r.ctx, 999_00)
	if err != nil {
		return r.fail(step, err)
	}
	_, err = r.rig.Phone.ReadConsumption(r.ctx, fc.Payload)
	return r.refused(step, err, bioqr.ErrIllegalPOS)
}

func (r *bioqrRun) revokedPOS() error {
	const step = "attack: revoked POS"
	rp, err := r.rig.NewPOS(r.ctx, "POS-STOLEN-"+randSuffix(), r.rig.Merchant)
	if err != nil {
		return r.fail(step, err)
	}
	rc, _ := rp.NewConsumption(r.ctx, 50_00)
	if err := r.d.CA.Revoke(r.ctx, rp.Unit.Certificate().SerialNumber, "terminal reported stolen"); err != nil {
		return r.fail(step, err)
	}
	_, err = r.rig.Phone.ReadConsumption(r.ctx, rc.Payload)
	return r.refused(step, err, bioqr.ErrIllegalPOS)
}

func (r *bioqrRun) replay() error {
	_, err := r.rig.POS.Accept(r.ctx, r.paidQR)
	return r.refused("attack: replay the paid payment QR", err, bioqr.ErrRandCodeUsed)
}

func (r *bioqrRun) alteredAmount() error {
	cm, _ := r.rig.POS.NewConsumption(r.ctx, 88_00)
	body := strings.Replace(cm.Payload, "540588.00", "540508.00", 1)
	body = body[:len(body)-4]
	_, err := r.rig.Phone.ReadConsumption(r.ctx, body+fmt.Sprintf("%04X", emvqr.CRC16([]byte(body))))
	return r.refused("attack: consumption QR amount changed 88.00 → 8.00 (CRC fixed)", err, bioqr.ErrBadSignature)
}

func (r *bioqrRun) flippedBit() error {
	const step = "attack: flip one bit of the payment QR ciphertext"
	pq, err := r.payQR(6_00, r.tp.Genuine)
	if err != nil {
		return r.fail(step, err)
	}
	q, _ := bioqr.ParsePaymentQR(pq)
	q.Ciphertext[len(q.Ciphertext)/2] ^= 1
	_, err = r.rig.POS.Accept(r.ctx, bioqr.EncodePaymentQR(q))
	return r.refused(step, err, bioqr.ErrDecrypt)
}

func (r *bioqrRun) wrongFinger() error {
	wq, err := r.payQR(7_00, r.tp.Impostor)
	if err != nil {
		return r.fail("attack: wrong finger", err)
	}
	_, err = r.rig.POS.Accept(r.ctx, wq)
	return r.refused("attack: wrong finger", err, bioqr.ErrFingerprint)
}

func (r *bioqrRun) noFinger() error {
	r.rig.POS.Sensor = nil
	sq, err := r.payQR(9_00, nil)
	if err != nil {
		return r.fail("attack: stolen phone, no finger", err)
	}
	_, err = r.rig.POS.Accept(r.ctx, sq)
	return r.refused("attack: stolen phone, no finger", err, bioqr.ErrNoFingerprint)
}

func (r *bioqrRun) expired() error {
	xc, _ := r.rig.POS.NewConsumption(r.ctx, 4_00)
	r.rig.Phone.Now = func() time.Time { return time.Now().Add(bioqr.DefaultConsumptionTTL + time.Second) }
	_, err := r.rig.Phone.ReadConsumption(r.ctx, xc.Payload)
	r.rig.Phone.Now = time.Now
	return r.refused("attack: expired consumption QR", err, bioqr.ErrExpired)
}

func (r *bioqrRun) otherPOS() error {
	const step = "attack: payment QR shown to a different POS"
	other, err := r.rig.NewPOS(r.ctx, "POS-OTHER-"+randSuffix(), r.rig.Merchant)
	if err != nil {
		return r.fail(step, err)
	}
	oq, err := r.payQR(2_00, r.tp.Genuine)
	if err != nil {
		return r.fail(step, err)
	}
	_, err = other.Accept(r.ctx, oq)
	return r.refused(step, err, bioqr.ErrWrongPOS)
}

// balances checks that the payer paid the two payments and nothing else.
func (r *bioqrRun) balances() error {
	final, _ := r.d.Ledger.Account(r.ctx, r.rig.Payer)
	if r.before-final.Balance != 25_50+8_00 {
		return r.fail("balances", fmt.Errorf("payer lost %d minor units, want 3350", r.before-final.Balance+25_50))
	}
	r.ok("balances", fmt.Sprintf("payer paid exactly 25.50 + 8.00; every attack moved no money (balance %s)", money.Format(final.Balance, final.Currency)))
	return nil
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
