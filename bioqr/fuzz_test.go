package bioqr_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"testing"
	"time"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/internal/lab"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
)

// seeds builds one genuine instance of every binary format, once.
type seedSet struct {
	credential, message, envelope []byte
	consumption, paymentQR        string
}

func makeSeeds(f *testing.F) seedSet {
	ctx := context.Background()
	db, err := sqldb.Open(ctx, f.TempDir()+"/seed.db")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	ca, err := pki.NewCA(ctx, db, "seed", pki.Options{}, fastKey())
	if err != nil {
		f.Fatal(err)
	}
	led, err := ledger.Open(ctx, db)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { led.Close() })
	tp, err := lab.LoadTemplates("", nil)
	if err != nil {
		f.Fatal(err)
	}
	r, err := lab.NewBioqr(ctx, lab.BioqrConfig{DB: db, CA: ca, Ledger: led, Templates: tp, Audit: &bioqr.MemoryAuditor{}})
	if err != nil {
		f.Fatal(err)
	}
	c, err := r.POS.NewConsumption(ctx, 12_00)
	if err != nil {
		f.Fatal(err)
	}
	read, err := r.Phone.ReadConsumption(ctx, c.Payload)
	if err != nil {
		f.Fatal(err)
	}
	qr, err := r.Phone.Pay(ctx, read, r.Payer, tp.Genuine)
	if err != nil {
		f.Fatal(err)
	}
	q, _ := bioqr.ParsePaymentQR(qr)
	pt, err := r.POS.Unit.Decrypt([]byte(bioqr.PaymentInfo), bioqr.PaymentAAD(q.KeyID), q.Ciphertext)
	if err != nil {
		f.Fatal(err)
	}
	env, _ := (&bioqr.Envelope{Message: pt, ProbeSource: bioqr.ProbeFromPOS, POSProbe: tp.Genuine, POSTime: time.Now()}).Marshal()
	return seedSet{credential: r.Phone.Unit.Credential().Raw, message: pt, envelope: env, consumption: c.Payload, paymentQR: qr}
}

func FuzzParseCredential(f *testing.F) {
	s := makeSeeds(f)
	f.Add(s.credential)
	f.Add([]byte{1, 1, 1, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := bioqr.ParseCredential(b)
		if err != nil {
			return
		}
		if !bytes.Equal(c.Raw, b) || c.PublicKey == nil || c.Serial.Sign() <= 0 {
			t.Fatal("accepted credential is inconsistent")
		}
		// Verification of arbitrary input never panics.
		_ = c.Verify(&x509.Certificate{}, bioqr.KindPhone, time.Now())
	})
}

func FuzzParsePaymentMessage(f *testing.F) {
	s := makeSeeds(f)
	f.Add(s.message)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := bioqr.ParsePaymentMessage(b)
		if err != nil {
			return
		}
		// Re-encoding the signed part gives the same bytes.
		tbs, err := m.ComputeTBS()
		if err != nil || !bytes.Equal(tbs, m.TBS) {
			t.Fatalf("non-canonical payment message accepted: %v", err)
		}
		if m.Amount <= 0 || m.POSSerial.Cmp(big.NewInt(0)) <= 0 {
			t.Fatal("accepted message with bad values")
		}
	})
}

func FuzzParseEnvelope(f *testing.F) {
	s := makeSeeds(f)
	f.Add(s.envelope)
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := bioqr.ParseEnvelope(b)
		if err != nil {
			return
		}
		again, err := e.Marshal()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatal("envelope does not round-trip")
		}
	})
}

func FuzzParsePaymentQR(f *testing.F) {
	s := makeSeeds(f)
	f.Add(s.paymentQR)
	f.Add("QSP1:")
	f.Fuzz(func(t *testing.T, text string) {
		q, err := bioqr.ParsePaymentQR(text)
		if err != nil {
			return
		}
		if bioqr.EncodePaymentQR(q) != text {
			t.Fatal("payment QR does not round-trip")
		}
	})
}

func FuzzParseConsumption(f *testing.F) {
	s := makeSeeds(f)
	f.Add(s.consumption)
	f.Fuzz(func(t *testing.T, text string) {
		c, err := bioqr.ParseConsumption(text)
		if err != nil {
			return
		}
		if c.POSSerial == nil || c.POSSerial.Sign() <= 0 || c.Amount <= 0 || len(c.Signature) != 64 {
			t.Fatal("accepted consumption QR is inconsistent")
		}
	})
}

// FuzzCertRequest feeds arbitrary JSON to the certification-request checks
// the enrolment and POS endpoints run before anything is issued.
func FuzzCertRequest(f *testing.F) {
	u, _ := bioqr.NewSecureUnit("", bioqr.KindPOS, pki.ECDSAP256, nil)
	req, _ := bioqr.NewCertRequest(u, "POS-1", "m", []byte{1, 2}, map[string]string{"merchant_account": "shop"})
	good, _ := json.Marshal(req)
	f.Add(good)
	f.Add([]byte(`{"kind":1,"subject":"x","curve":"SM2","public_key":"AAAA"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r bioqr.CertRequest
		if json.Unmarshal(b, &r) != nil {
			return
		}
		pub, err := r.SigningKey()
		if err == nil && (pub == nil || !bioqr.VerifySig(pub, r.SignedBytes(), r.ProofOfPossession)) {
			t.Fatal("accepted a request whose proof of possession does not verify")
		}
	})
}
