package bioqr

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"testing"
	"time"

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
	tp, err := LoadTemplates("", nil)
	if err != nil {
		f.Fatal(err)
	}
	r, err := NewRig(ctx, RigConfig{DB: db, CA: ca, Ledger: led, Templates: tp, Audit: &MemoryAuditor{}})
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
	q, _ := ParsePaymentQR(qr)
	pt, err := r.POS.Unit.Decrypt([]byte(paymentInfo), paymentAAD(q.KeyID), q.Ciphertext)
	if err != nil {
		f.Fatal(err)
	}
	env, _ := (&Envelope{Message: pt, ProbeSource: ProbeFromPOS, POSProbe: tp.Genuine, POSTime: time.Now()}).marshal()
	return seedSet{credential: r.Phone.Unit.Credential().Raw, message: pt, envelope: env, consumption: c.Payload, paymentQR: qr}
}

func FuzzParseCredential(f *testing.F) {
	s := makeSeeds(f)
	f.Add(s.credential)
	f.Add([]byte{1, 1, 1, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCredential(b)
		if err != nil {
			return
		}
		if !bytes.Equal(c.Raw, b) || c.PublicKey == nil || c.Serial.Sign() <= 0 {
			t.Fatal("accepted credential is inconsistent")
		}
		// Verification of arbitrary input never panics.
		_ = c.Verify(&x509.Certificate{}, KindPhone, time.Now())
	})
}

func FuzzParsePaymentMessage(f *testing.F) {
	s := makeSeeds(f)
	f.Add(s.message)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParsePaymentMessage(b)
		if err != nil {
			return
		}
		// Re-encoding the signed part gives the same bytes.
		tbs, err := m.tbs()
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
		e, err := ParseEnvelope(b)
		if err != nil {
			return
		}
		again, err := e.marshal()
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
		q, err := ParsePaymentQR(text)
		if err != nil {
			return
		}
		if EncodePaymentQR(q) != text {
			t.Fatal("payment QR does not round-trip")
		}
	})
}

func FuzzParseConsumption(f *testing.F) {
	s := makeSeeds(f)
	f.Add(s.consumption)
	f.Fuzz(func(t *testing.T, text string) {
		c, err := ParseConsumption(text)
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
	u, _ := NewSecureUnit("", KindPOS, pki.ECDSAP256, nil)
	req, _ := NewCertRequest(u, "POS-1", "m", []byte{1, 2}, map[string]string{"merchant_account": "shop"})
	good, _ := json.Marshal(req)
	f.Add(good)
	f.Add([]byte(`{"kind":1,"subject":"x","curve":"SM2","public_key":"AAAA"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r CertRequest
		if json.Unmarshal(b, &r) != nil {
			return
		}
		pub, err := r.publicKey()
		if err == nil && (pub == nil || !verifySig(pub, r.SignedBytes(), r.ProofOfPossession)) {
			t.Fatal("accepted a request whose proof of possession does not verify")
		}
	})
}
