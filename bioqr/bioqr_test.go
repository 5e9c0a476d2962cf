package bioqr_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/qshield/qshield/fingerprint/fvc"
	"github.com/qshield/qshield/internal/testclock"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/bioqr/emvqr"
	"github.com/qshield/qshield/internal/lab"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qrimg"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

var (
	tplOnce sync.Once
	tpl     lab.Templates
	tplErr  error
)

func templates(t *testing.T) lab.Templates {
	tplOnce.Do(func() {
		// FVC2002 templates when QSHIELD_FINGERPRINT_DATA names them,
		// synthetic ones otherwise; a variable pointing at nothing fails.
		dir, err := fvc.DataDir()
		if err != nil && !errors.Is(err, fvc.ErrDataUnset) {
			tplErr = err
			return
		}
		tpl, tplErr = lab.LoadTemplates(dir, nil)
	})
	if tplErr != nil {
		t.Fatalf("templates: %v", tplErr)
	}
	return tpl
}

type fixture struct {
	ctx   context.Context
	db    *sqldb.DB
	ca    *pki.CA
	led   *ledger.Ledger
	rig   *lab.Bioqr
	audit *bioqr.MemoryAuditor
	clk   *testclock.Clock
}

func fastKey() pki.KeyEncryptor {
	k, _ := pki.RawKey(bytes.Repeat([]byte{7}, 32))
	return k
}

func newFixture(t *testing.T, db *sqldb.DB) *fixture {
	t.Helper()
	ctx := context.Background()
	ca, err := pki.OpenOrCreateCA(ctx, db, "platform", pki.Options{}, fastKey())
	if err != nil {
		t.Fatal(err)
	}
	led, err := ledger.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	f := &fixture{ctx: ctx, db: db, ca: ca, led: led, audit: &bioqr.MemoryAuditor{}, clk: testclock.New(time.Now())}
	f.rig, err = lab.NewBioqr(ctx, lab.BioqrConfig{DB: db, CA: ca, Ledger: led, Audit: f.audit, Templates: templates(t), Now: f.clk.Now})
	if err != nil {
		t.Fatalf("NewBioqr: %v", err)
	}
	return f
}

func (f *fixture) balance(t *testing.T, id string) int64 {
	t.Helper()
	a, err := f.led.Account(f.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return a.Balance
}

// viaPNG renders text as a QR PNG and scans it back, as a camera would.
func viaPNG(t *testing.T, text string) string {
	t.Helper()
	png, _, err := qrimg.EncodePNG(text, qrimg.M, 3)
	if err != nil {
		t.Fatalf("render QR: %v", err)
	}
	got, err := qrimg.DecodePNG(bytes.NewReader(png), 0)
	if err != nil {
		t.Fatalf("scan QR: %v", err)
	}
	if got != text {
		t.Fatal("scanned QR differs from the rendered one")
	}
	return got
}

// pay runs steps 2–8: the POS issues a consumption QR, the phone reads it
// and returns the payment QR text.
func (f *fixture) pay(t *testing.T, amount int64, probe []byte) (string, *bioqr.Consumption) {
	t.Helper()
	c, err := f.rig.POS.NewConsumption(f.ctx, amount)
	if err != nil {
		t.Fatalf("NewConsumption: %v", err)
	}
	read, err := f.rig.Phone.ReadConsumption(f.ctx, viaPNG(t, c.Payload))
	if err != nil {
		t.Fatalf("ReadConsumption: %v", err)
	}
	qr, err := f.rig.Phone.Pay(f.ctx, read, f.rig.Payer, probe)
	if err != nil {
		t.Fatalf("Pay: %v", err)
	}
	return viaPNG(t, qr), c
}

func TestFifteenStepsOverMutualTLS(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(t, db)
		url, stop, err := f.rig.StartTLS(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		before, mBefore := f.balance(t, f.rig.Payer), f.balance(t, f.rig.Merchant)
		// The phone takes the POS certificate from the server.
		if _, ok := f.rig.Phone.Certificates.(*bioqr.Client); !ok {
			t.Fatal("the phone does not fetch POS certificates over HTTP")
		}
		// Probe from the phone's own sensor.
		qr, c := f.pay(t, 25_50, f.rig.Templates.Genuine)
		res, err := f.rig.POS.Accept(f.ctx, qr)
		if err != nil {
			t.Fatalf("Accept: %v", err)
		}
		if res.Status != "paid" || res.Amount != 25_50 || res.ProbeSource != "phone" || res.Replayed {
			t.Fatalf("result %+v", res)
		}
		// Probe from the POS's sensor.
		f.rig.POS.Sensor = bioqr.BytesSensor(f.rig.Templates.Genuine)
		qr2, _ := f.pay(t, 10_00, nil)
		res2, err := f.rig.POS.Accept(f.ctx, qr2)
		if err != nil || res2.ProbeSource != "pos" {
			t.Fatalf("Accept with POS probe: %+v, %v", res2, err)
		}
		if got := f.balance(t, f.rig.Payer); got != before-35_50 {
			t.Fatalf("payer balance %d, want %d", got, before-35_50)
		}
		if got := f.balance(t, f.rig.Merchant); got != mBefore+35_50 {
			t.Fatalf("merchant balance %d, want %d", got, mBefore+35_50)
		}
		if !strings.Contains(c.Payload, "010212") {
			t.Fatal("consumption QR is not dynamic")
		}
		// The payload is a standard EMVCo payload.
		if _, err := emvqr.Parse(c.Payload); err != nil {
			t.Fatalf("emvqr.Parse: %v", err)
		}
		// Without a client certificate the API refuses.
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: nil}}).Get(url + "/v1/bioqr/credential")
		if err == nil {
			resp.Body.Close()
			t.Fatal("TLS handshake without a client certificate succeeded")
		}
		var settled int
		for _, e := range f.audit.Snapshot() {
			if e.Event == "bioqr.settle" && e.Outcome == audit.OutcomeSuccess {
				settled++
			}
		}
		if settled != 2 {
			t.Fatalf("%d settle audit events, want 2", settled)
		}
	})
}

func TestAttacks(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(t, db)
		r := f.rig
		genuine, impostor := r.Templates.Genuine, r.Templates.Impostor

		t.Run("fake POS from another CA", func(t *testing.T) {
			// Same subject name as the platform root, different key.
			evil, err := pki.NewCA(f.ctx, f.db, "evil", pki.Options{Subject: f.ca.Certificate().Subject.CommonName}, fastKey())
			if err != nil {
				t.Fatal(err)
			}
			u, _ := bioqr.NewSecureUnit("", bioqr.KindPOS, pki.ECDSAP256, nil)
			req, _ := bioqr.NewCertRequest(u, "EVIL-POS", "", nil, map[string]string{bioqr.AttrMerchantAccount: "thief"})
			c, err := (&bioqr.Certifier{CA: evil}).Certify(f.ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Install(u, evil.Certificate()); err != nil {
				t.Fatal(err)
			}
			fake := &bioqr.POS{Unit: u, Store: bioqr.NewMemoryRandStore(), Merchant: r.POS.Merchant}
			fake.Merchant.Account = "thief"
			qr, err := fake.NewConsumption(f.ctx, 999_00)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Phone.ReadConsumption(f.ctx, qr.Payload); !errors.Is(err, bioqr.ErrIllegalPOS) {
				t.Fatalf("phone accepted a POS certified by another CA: %v", err)
			}
			// A forged POS key naming a genuine certificate fails the POS signature.
			u2, _ := bioqr.NewSecureUnit("", bioqr.KindPOS, pki.ECDSAP256, nil)
			u2.SetIdentity(r.POS.Unit.Credential(), r.POS.Unit.Certificate(), r.POS.Unit.Root())
			forger := &bioqr.POS{Unit: u2, Store: bioqr.NewMemoryRandStore(), Merchant: r.POS.Merchant}
			qr2, err := forger.NewConsumption(f.ctx, 1_00)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Phone.ReadConsumption(f.ctx, qr2.Payload); !errors.Is(err, bioqr.ErrBadSignature) {
				t.Fatalf("phone accepted a QR signed by a key other than the credential's: %v", err)
			}
		})

		t.Run("revoked POS", func(t *testing.T) {
			pos2, err := r.NewPOS(f.ctx, "POS-REVOKED", r.Merchant)
			if err != nil {
				t.Fatal(err)
			}
			c, err := pos2.NewConsumption(f.ctx, 5_00)
			if err != nil {
				t.Fatal(err)
			}
			read, err := r.Phone.ReadConsumption(f.ctx, c.Payload)
			if err != nil {
				t.Fatalf("before revocation: %v", err)
			}
			qr, err := r.Phone.Pay(f.ctx, read, r.Payer, genuine)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.ca.Revoke(f.ctx, pos2.Unit.Certificate().SerialNumber, "terminal stolen"); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Phone.ReadConsumption(f.ctx, c.Payload); !errors.Is(err, bioqr.ErrIllegalPOS) {
				t.Fatalf("phone accepted a revoked POS: %v", err)
			}
			// Its already-made payment QR is refused by the settlement server.
			if _, err := pos2.Accept(f.ctx, qr); !errors.Is(err, bioqr.ErrIllegalPOS) {
				t.Fatalf("settlement accepted a revoked POS: %v", err)
			}
		})

		t.Run("replayed payment QR", func(t *testing.T) {
			before := f.balance(t, r.Payer)
			qr, _ := f.pay(t, 3_00, genuine)
			if _, err := r.POS.Accept(f.ctx, qr); err != nil {
				t.Fatal(err)
			}
			if _, err := r.POS.Accept(f.ctx, qr); !errors.Is(err, bioqr.ErrRandCodeUsed) {
				t.Fatalf("POS accepted a replayed payment QR: %v", err)
			}
			// A POS replaying to the settlement server gets the same answer,
			// not a second payment.
			q, _ := bioqr.ParsePaymentQR(qr)
			pt, _ := r.POS.Unit.Decrypt([]byte(bioqr.PaymentInfo), bioqr.PaymentAAD(q.KeyID), q.Ciphertext)
			env := &bioqr.Envelope{Message: pt, ProbeSource: bioqr.ProbeFromPhone, POSTime: f.clk.Now()}
			sealed, err := r.POS.SealEnvelope(env)
			if err != nil {
				t.Fatal(err)
			}
			res, err := r.Settlement.Settle(f.ctx, r.POS.Unit.Certificate(), sealed)
			if err != nil {
				t.Fatalf("server replay: %v", err)
			}
			if res.Status != "paid" {
				t.Fatalf("server replay: %+v", res)
			}
			if got := f.balance(t, r.Payer); got != before-3_00 {
				t.Fatalf("payer paid %d, want 3.00 once", before-got)
			}
			// Another envelope (POS probe instead) with the same RandCode is refused.
			env2 := &bioqr.Envelope{Message: pt, ProbeSource: bioqr.ProbeFromPhone, POSTime: f.clk.Now().Add(time.Second)}
			sealed2, _ := r.POS.SealEnvelope(env2)
			if _, err := r.Settlement.Settle(f.ctx, r.POS.Unit.Certificate(), sealed2); !errors.Is(err, bioqr.ErrRandCodeUsed) {
				t.Fatalf("server accepted a second envelope for a used RandCode: %v", err)
			}
		})

		t.Run("modified amount or ciphertext", func(t *testing.T) {
			before := f.balance(t, r.Payer)
			c, err := r.POS.NewConsumption(f.ctx, 88_00)
			if err != nil {
				t.Fatal(err)
			}
			// 1. The displayed amount changed (CRC recomputed): the POS signature fails.
			body := strings.Replace(c.Payload, "540588.00", "540508.00", 1)
			body = body[:len(body)-4]
			forged := body + strings.ToUpper(hex16(emvqr.CRC16([]byte(body))))
			if _, err := r.Phone.ReadConsumption(f.ctx, forged); !errors.Is(err, bioqr.ErrBadSignature) {
				t.Fatalf("phone accepted a consumption QR with a changed amount: %v", err)
			}
			// 2. A flipped ciphertext byte in the payment QR: decryption fails.
			read, _ := r.Phone.ReadConsumption(f.ctx, c.Payload)
			qr, err := r.Phone.Pay(f.ctx, read, r.Payer, genuine)
			if err != nil {
				t.Fatal(err)
			}
			q, _ := bioqr.ParsePaymentQR(qr)
			q.Ciphertext[len(q.Ciphertext)/2] ^= 1
			if _, err := r.POS.Accept(f.ctx, bioqr.EncodePaymentQR(q)); !errors.Is(err, bioqr.ErrDecrypt) {
				t.Fatalf("POS accepted a modified ciphertext: %v", err)
			}
			// 3. A rogue POS lowers... raises the amount before sealing: the
			//    phone's signature no longer verifies.
			c2, _ := r.POS.NewConsumption(f.ctx, 1_00)
			read2, _ := r.Phone.ReadConsumption(f.ctx, c2.Payload)
			qr2, _ := r.Phone.Pay(f.ctx, read2, r.Payer, genuine)
			q2, _ := bioqr.ParsePaymentQR(qr2)
			pt, _ := r.POS.Unit.Decrypt([]byte(bioqr.PaymentInfo), bioqr.PaymentAAD(q2.KeyID), q2.Ciphertext)
			m, err := bioqr.ParsePaymentMessage(pt)
			if err != nil {
				t.Fatal(err)
			}
			m.Amount = 500_00
			if m.TBS, err = m.ComputeTBS(); err != nil {
				t.Fatal(err)
			}
			m.Raw = append(append([]byte(nil), m.TBS...), byte(len(m.Signature)))
			m.Raw = append(m.Raw, m.Signature...)
			sealed, _ := r.POS.SealEnvelope(&bioqr.Envelope{Message: m.Raw, ProbeSource: bioqr.ProbeFromPhone, POSTime: f.clk.Now()})
			if _, err := r.Settlement.Settle(f.ctx, r.POS.Unit.Certificate(), sealed); !errors.Is(err, bioqr.ErrBadSignature) {
				t.Fatalf("settlement accepted an altered amount: %v", err)
			}
			if got := f.balance(t, r.Payer); got != before {
				t.Fatalf("money moved: %d", before-got)
			}
		})

		t.Run("forged payment cannot burn the customer's RandCode", func(t *testing.T) {
			c, _ := r.POS.NewConsumption(f.ctx, 5_00)
			read, _ := r.Phone.ReadConsumption(f.ctx, c.Payload)
			// A bystander read the RandCode off the screen and forges a
			// payment with an uncertified key.
			u, _ := bioqr.NewSecureUnit("", bioqr.KindPhone, pki.ECDSAP256, nil)
			u.SetIdentity(nil, nil, r.Phone.Unit.Root())
			m := &bioqr.PaymentMessage{Amount: 5_00, Currency: "156", Account: "x", MerchantAccount: c.Account, RandCode: c.RandCode,
				Expires: c.Expires, POSSerial: c.POSSerial, Created: f.clk.Now(), PhoneCredential: r.Phone.Unit.Credential().Raw}
			if err := m.SignWith(u.Sign); err != nil {
				t.Fatal(err)
			}
			kid := r.POS.Unit.KeyID()
			ct, _ := bioqr.Seal(r.POS.Unit.EncryptionPublic(), []byte(bioqr.PaymentInfo), bioqr.PaymentAAD(kid), m.Raw)
			if _, err := r.POS.Accept(f.ctx, bioqr.EncodePaymentQR(&bioqr.PaymentQR{KeyID: kid, Ciphertext: ct})); !errors.Is(err, bioqr.ErrBadSignature) {
				t.Fatalf("forged payment: %v", err)
			}
			qr, err := r.Phone.Pay(f.ctx, read, r.Payer, genuine)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.POS.Accept(f.ctx, qr); err != nil {
				t.Fatalf("the customer's payment after the forgery: %v", err)
			}
		})

		t.Run("wrong finger", func(t *testing.T) {
			before := f.balance(t, r.Payer)
			qr, _ := f.pay(t, 7_00, impostor)
			if _, err := r.POS.Accept(f.ctx, qr); !errors.Is(err, bioqr.ErrFingerprint) {
				t.Fatalf("settlement accepted another finger: %v", err)
			}
			if got := f.balance(t, r.Payer); got != before {
				t.Fatal("money moved on a wrong finger")
			}
		})

		t.Run("stolen phone with no finger", func(t *testing.T) {
			before := f.balance(t, r.Payer)
			r.POS.Sensor = nil
			qr, _ := f.pay(t, 9_00, nil)
			if _, err := r.POS.Accept(f.ctx, qr); !errors.Is(err, bioqr.ErrNoFingerprint) {
				t.Fatalf("payment without any fingerprint: %v", err)
			}
			// The thief puts their own finger on the POS sensor.
			r.POS.Sensor = bioqr.BytesSensor(impostor)
			qr2, _ := f.pay(t, 9_00, nil)
			if _, err := r.POS.Accept(f.ctx, qr2); !errors.Is(err, bioqr.ErrFingerprint) {
				t.Fatalf("thief's finger accepted: %v", err)
			}
			r.POS.Sensor = nil
			// A copied credential in another phone (no access to the secure
			// unit's key) fails the phone signature even with the owner's finger.
			thief, _ := bioqr.NewSecureUnit("", bioqr.KindPhone, pki.ECDSAP256, nil)
			thief.SetIdentity(r.Phone.Unit.Credential(), nil, r.Phone.Unit.Root())
			tp := &bioqr.Phone{Unit: thief, Revocation: bioqr.CARevocation{CA: f.ca}, Certificates: bioqr.CARevocation{CA: f.ca}, Now: f.clk.Now}
			if err := tp.SetAccounts([]string{r.Payer}); err != nil {
				t.Fatal(err)
			}
			c, _ := r.POS.NewConsumption(f.ctx, 9_00)
			read, _ := tp.ReadConsumption(f.ctx, c.Payload)
			qr3, err := tp.Pay(f.ctx, read, r.Payer, genuine)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.POS.Accept(f.ctx, qr3); !errors.Is(err, bioqr.ErrBadSignature) {
				t.Fatalf("cloned credential accepted: %v", err)
			}
			if got := f.balance(t, r.Payer); got != before {
				t.Fatal("money moved")
			}
		})

		t.Run("expired consumption QR", func(t *testing.T) {
			c, _ := r.POS.NewConsumption(f.ctx, 4_00)
			read, err := r.Phone.ReadConsumption(f.ctx, c.Payload)
			if err != nil {
				t.Fatal(err)
			}
			qr, _ := r.Phone.Pay(f.ctx, read, r.Payer, genuine)
			f.clk.Add(bioqr.DefaultConsumptionTTL + time.Second)
			defer f.clk.Add(-(bioqr.DefaultConsumptionTTL + time.Second))
			if _, err := r.Phone.ReadConsumption(f.ctx, c.Payload); !errors.Is(err, bioqr.ErrExpired) {
				t.Fatalf("phone accepted an expired consumption QR: %v", err)
			}
			if _, err := r.POS.Accept(f.ctx, qr); !errors.Is(err, bioqr.ErrExpired) {
				t.Fatalf("POS accepted a payment for an expired consumption QR: %v", err)
			}
		})

		t.Run("payment QR made for a different POS", func(t *testing.T) {
			other, err := r.NewPOS(f.ctx, "POS-OTHER", r.Merchant)
			if err != nil {
				t.Fatal(err)
			}
			qr, _ := f.pay(t, 2_00, genuine)
			if _, err := other.Accept(f.ctx, qr); !errors.Is(err, bioqr.ErrWrongPOS) {
				t.Fatalf("another POS accepted the code: %v", err)
			}
			// Relabelled with the other POS's key ID: it cannot decrypt it.
			q, _ := bioqr.ParsePaymentQR(qr)
			q.KeyID = other.Unit.KeyID()
			if _, err := other.Accept(f.ctx, bioqr.EncodePaymentQR(q)); !errors.Is(err, bioqr.ErrDecrypt) {
				t.Fatalf("another POS decrypted the code: %v", err)
			}
			// The right POS still accepts it.
			if _, err := r.POS.Accept(f.ctx, qr); err != nil {
				t.Fatalf("right POS: %v", err)
			}
		})

		t.Run("lockout after repeated wrong fingers", func(t *testing.T) {
			var err error
			for i := 0; i < 8 && !errors.Is(err, bioqr.ErrLocked); i++ {
				qr, _ := f.pay(t, 1_00, impostor)
				_, err = r.POS.Accept(f.ctx, qr)
			}
			if !errors.Is(err, bioqr.ErrLocked) {
				t.Fatalf("no lockout: %v", err)
			}
			qr, _ := f.pay(t, 1_00, genuine)
			if _, err := r.POS.Accept(f.ctx, qr); !errors.Is(err, bioqr.ErrLocked) {
				t.Fatalf("locked phone paid: %v", err)
			}
			f.clk.Add(16 * time.Minute)
			qr, _ = f.pay(t, 1_00, genuine)
			if _, err := r.POS.Accept(f.ctx, qr); err != nil {
				t.Fatalf("after the window: %v", err)
			}
		})
	})
}

func hex16(v uint16) string {
	const h = "0123456789abcdef"
	return string([]byte{h[v>>12], h[v>>8&15], h[v>>4&15], h[v&15]})
}

// TestFifteenStepsSM2 runs the protocol with the Chinese-standard option:
// an SM2 CA, SM2 device keys, SM2-SM3 credentials and signatures, and
// SM2 + SM4-GCM encryption of the payment QR and the envelope.
func TestFifteenStepsSM2(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ca, err := pki.NewCA(ctx, db, "gm-platform", pki.Options{Algorithm: pki.SM2}, fastKey())
		if err != nil {
			t.Fatal(err)
		}
		led, err := ledger.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer led.Close()
		r, err := lab.NewBioqr(ctx, lab.BioqrConfig{DB: db, CA: ca, Ledger: led, Templates: templates(t), Algorithm: pki.SM2, Audit: &bioqr.MemoryAuditor{}})
		if err != nil {
			t.Fatal(err)
		}
		c, err := r.POS.NewConsumption(ctx, 18_80)
		if err != nil {
			t.Fatal(err)
		}
		read, err := r.Phone.ReadConsumption(ctx, c.Payload)
		if err != nil {
			t.Fatal(err)
		}
		qr, err := r.Phone.Pay(ctx, read, r.Payer, r.Templates.Genuine)
		if err != nil {
			t.Fatal(err)
		}
		q, _ := bioqr.ParsePaymentQR(qr)
		if bioqr.Suite(q.Ciphertext[0]) != bioqr.SuiteSM2SM4 {
			t.Fatalf("payment QR suite %v", bioqr.Suite(q.Ciphertext[0]))
		}
		res, err := r.POS.Accept(ctx, qr)
		if err != nil || res.Amount != 18_80 {
			t.Fatalf("Accept: %+v %v", res, err)
		}
		// And the wrong finger is refused here too.
		c2, _ := r.POS.NewConsumption(ctx, 1_00)
		read2, _ := r.Phone.ReadConsumption(ctx, c2.Payload)
		qr2, _ := r.Phone.Pay(ctx, read2, r.Payer, r.Templates.Impostor)
		if _, err := r.POS.Accept(ctx, qr2); !errors.Is(err, bioqr.ErrFingerprint) {
			t.Fatalf("impostor: %v", err)
		}
	})
}

// TestConsumptionQRAtMaximumLengths: with the longest merchant name (25),
// city (15) and account (64), a 13-character amount and a 16-byte certificate serial
// (the longest pki issues), the consumption QR stays within EMVCo's 512
// characters and parses with emvqr and ParseConsumption; the phone still
// reads it and pays to the POS's encryption key from its certificate.
func TestConsumptionQRAtMaximumLengths(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(t, db)
		r := f.rig
		account := strings.Repeat("m", 64) // the longest merchant account
		if _, err := f.led.CreateAccount(f.ctx, ledger.NewAccount{ID: account, Kind: ledger.KindMerchant, Currency: "CNY"}); err != nil {
			t.Fatal(err)
		}
		var pos *bioqr.POS
		for i := 0; pos == nil; i++ {
			p, err := r.NewPOS(f.ctx, fmt.Sprintf("MAX-%d", i), account)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Unit.Credential().Serial.Bytes()) == 16 {
				pos = p
			}
		}
		pos.Merchant.Name = strings.Repeat("N", 25)
		pos.Merchant.City = strings.Repeat("C", 15)
		c, err := pos.NewConsumption(f.ctx, 999_999_999_999) // "9999999999.99"
		if err != nil {
			t.Fatalf("consumption QR at maximum lengths: %v", err)
		}
		t.Logf("consumption QR at maximum lengths: %d characters", len(c.Payload))
		if len(c.Payload) > 512 {
			t.Fatalf("consumption QR of %d characters exceeds EMVCo's 512", len(c.Payload))
		}
		if _, err := emvqr.Parse(c.Payload); err != nil {
			t.Fatalf("emvqr: %v", err)
		}
		if _, err := bioqr.ParseConsumption(c.Payload); err != nil {
			t.Fatalf("ParseConsumption: %v", err)
		}
		read, err := r.Phone.ReadConsumption(f.ctx, c.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if !read.SealTo().Equal(pos.Unit.EncryptionPublic()) || read.SealTo().Equal(pos.Unit.Public()) {
			t.Fatal("the phone does not seal to the POS's encryption key")
		}
	})
}

// TestPhoneTakesPOSKeyFromVerifiedCertificate: the phone seals only to the
// encryption key a CA-verified POS certificate registers. A POS certificate
// without one (never a fall-back to its signing key), a source that hands
// over another certificate, or no source at all: the POS is refused.
func TestPhoneTakesPOSKeyFromVerifiedCertificate(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(t, db)
		r := f.rig
		// A POS certificate issued without the encryption-key attribute.
		u, _ := bioqr.NewSecureUnit("", bioqr.KindPOS, pki.ECDSAP256, nil)
		iss, err := f.ca.Issue(f.ctx, pki.IssueRequest{Role: pki.RoleDevice, CommonName: "POS OLD-POS", PublicKey: u.Public(),
			Device:   &pki.DeviceInfo{Serial: "OLD-POS", Kind: pki.KindPOS, Attrs: map[string]string{bioqr.AttrMerchantAccount: r.Merchant}},
			Validity: time.Hour, Kind: pki.PrincipalPOS, Scheme: "bioqr"})
		if err != nil {
			t.Fatal(err)
		}
		u.SetIdentity(nil, iss.Cert, r.POS.Unit.Root())
		old := &bioqr.POS{Unit: u, Store: bioqr.NewMemoryRandStore(), Merchant: r.POS.Merchant}
		c, err := old.NewConsumption(f.ctx, 3_00)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Phone.ReadConsumption(f.ctx, c.Payload); !errors.Is(err, bioqr.ErrIllegalPOS) || !errors.Is(err, bioqr.ErrNoEncryptionKey) {
			t.Fatalf("phone accepted a POS certificate without an encryption key: %v", err)
		}
		// A source that answers with another certificate.
		good, err := r.POS.NewConsumption(f.ctx, 3_00)
		if err != nil {
			t.Fatal(err)
		}
		liar := &bioqr.Phone{Unit: r.Phone.Unit, Certificates: fixedCert(r.Phone.Unit.Certificate().Raw), Now: f.clk.Now}
		if _, err := liar.ReadConsumption(f.ctx, good.Payload); !errors.Is(err, bioqr.ErrIllegalPOS) {
			t.Fatalf("phone accepted another certificate for the POS: %v", err)
		}
		if _, err := (&bioqr.Phone{Unit: r.Phone.Unit, Now: f.clk.Now}).ReadConsumption(f.ctx, good.Payload); err == nil {
			t.Fatal("phone without a certificate source read a consumption QR")
		}
		// Pay refuses a consumption that ReadConsumption did not verify.
		parsed, err := bioqr.ParseConsumption(good.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Phone.Pay(f.ctx, parsed, r.Payer, nil); !errors.Is(err, bioqr.ErrIllegalPOS) {
			t.Fatalf("phone paid an unverified consumption QR: %v", err)
		}
	})
}

type fixedCert []byte

func (c fixedCert) CertificateDER(context.Context, *big.Int) ([]byte, error) { return c, nil }

// randSuffix makes test identifiers unique across runs on one database.
func randSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
