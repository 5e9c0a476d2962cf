package bioqrphone_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/bioqr/phonecode"
	"github.com/qshield/qshield/internal/lab"
	"github.com/qshield/qshield/internal/wallet/wasm/bioqrphone"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// webcrypto stands in for the browser's WebCrypto key: it signs with
// SHA-256 and returns r ‖ s, as crypto.subtle.sign({name: 'ECDSA'}) does.
type webcrypto struct{ k *ecdsa.PrivateKey }

func newWebCrypto(t *testing.T) webcrypto {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return webcrypto{k}
}

func (w webcrypto) raw() []byte { b, _ := w.k.PublicKey.ECDH(); return b.Bytes() }

func (w webcrypto) sign(t *testing.T, msg []byte) []byte {
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, w.k, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
}

func rawKey() pki.KeyEncryptor {
	k, _ := pki.RawKey(bytes.Repeat([]byte{7}, 32))
	return k
}

type env struct {
	ctx  context.Context
	db   *sqldb.DB
	rig  *lab.Bioqr
	ca   *pki.CA
	led  *ledger.Ledger
	sign webcrypto
	cred []byte // the wallet's phone credential
	acct string
}

// enrolled runs the wallet's enrolment (PrepareEnrolment, Finish, the
// server's bioqr.Settlement.Enrol with a code, Install) against the lab's
// settlement server.
func enrolled(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	ca, err := pki.OpenOrCreateCA(ctx, db, "platform", pki.Options{}, rawKey())
	if err != nil {
		t.Fatal(err)
	}
	led, err := ledger.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	tp, err := lab.LoadTemplates("", nil)
	if err != nil {
		t.Fatal(err)
	}
	rig, err := lab.NewBioqr(ctx, lab.BioqrConfig{DB: db, CA: ca, Ledger: led, Audit: &bioqr.MemoryAuditor{}, Templates: tp})
	if err != nil {
		t.Fatal(err)
	}
	rig.POS.Sensor = bioqr.BytesSensor(tp.Genuine)
	e := &env{ctx: ctx, db: db, rig: rig, ca: ca, led: led, sign: newWebCrypto(t), acct: rig.Payer}
	dec, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signPub, _ := bioqrphone.PublicKey(e.sign.raw())
	encPub, err := bioqrphone.PublicKey(dec.PublicKey().Bytes())
	if err != nil {
		t.Fatal(err)
	}
	root := rig.Settlement.Root()
	en, tbs, err := bioqrphone.PrepareEnrolment(root, rig.Settlement.Credential(), signPub, encPub, tp.Owner, "WALLET-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := en.Finish(newWebCrypto(t).sign(t, tbs), "X"); !errors.Is(err, phonecode.ErrBadSignature) {
		t.Fatalf("a proof of possession by another key: %v", err)
	}
	code, err := rig.Settlement.IssueEnrolmentCode(ctx, "test", e.acct)
	if err != nil {
		t.Fatal(err)
	}
	body, err := en.Finish(e.sign.sign(t, tbs), code.Code)
	if err != nil {
		t.Fatal(err)
	}
	var req struct {
		Request        *bioqr.CertRequest `json:"request"`
		SealedTemplate []byte             `json:"sealed_template"`
		Code           string             `json:"code"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(body, tp.Owner[:32]) {
		t.Fatal("the enrolment body carries the owner template in clear")
	}
	certd, err := rig.Settlement.Enrol(ctx, "test", &bioqr.EnrolRequest{Request: req.Request, SealedTemplate: req.SealedTemplate, Accounts: []string{e.acct}, Consent: []string{req.Code}})
	if err != nil {
		t.Fatalf("the settlement server refused the wallet's enrolment: %v", err)
	}
	cj, _ := json.Marshal(certd)
	var c bioqrphone.Certified
	if err := json.Unmarshal(cj, &c); err != nil {
		t.Fatal(err)
	}
	other := newWebCrypto(t)
	otherPub, _ := bioqrphone.PublicKey(other.raw())
	if _, err := bioqrphone.Install(root, &c, otherPub, time.Now()); err == nil {
		t.Fatal("Install accepted a credential for another key")
	}
	cred, err := bioqrphone.Install(root, &c, signPub, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e.cred = cred.Raw
	return e
}

func (e *env) status(t *testing.T, serial *big.Int) bioqrphone.POSStatus {
	t.Helper()
	der, err := e.ca.CertificateDER(e.ctx, serial.Text(16))
	if err != nil {
		return bioqrphone.POSStatus{}
	}
	revoked, err := e.ca.IsRevoked(e.ctx, serial)
	if err != nil {
		t.Fatal(err)
	}
	return bioqrphone.POSStatus{Certificate: der, Known: true, Revoked: revoked}
}

// pay is the wallet's payment: read, verify, sign, seal.
func (e *env) pay(t *testing.T, payload string) (string, error) {
	t.Helper()
	o, err := bioqrphone.ReadConsumption(payload)
	if err != nil {
		return "", err
	}
	serial, _ := new(big.Int).SetString(o.POSSerial, 16)
	c, err := bioqrphone.VerifyConsumption(e.rig.Settlement.Root(), payload, e.status(t, serial), time.Now())
	if err != nil {
		return "", err
	}
	p, tbs, err := bioqrphone.NewPayment(c, e.acct, e.cred, time.Now())
	if err != nil {
		return "", err
	}
	if _, err := p.Finish(newWebCrypto(t).sign(t, tbs)); !errors.Is(err, phonecode.ErrBadSignature) {
		t.Fatalf("a payment signed by another key: %v", err)
	}
	return p.Finish(e.sign.sign(t, tbs))
}

func TestWalletPhonePaysAndAttacksAreRefused(t *testing.T) {
	e := enrolled(t)
	before, _ := e.led.Account(e.ctx, e.acct)
	c, err := e.rig.POS.NewConsumption(e.ctx, 42_00)
	if err != nil {
		t.Fatal(err)
	}
	qr, err := e.pay(t, c.Payload)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.rig.POS.Accept(e.ctx, qr)
	if err != nil {
		t.Fatalf("the POS refused the wallet's payment code: %v", err)
	}
	if res.Amount != 42_00 || res.Account != e.acct || res.ProbeSource != "pos" {
		t.Errorf("settled %+v", res)
	}
	after, _ := e.led.Account(e.ctx, e.acct)
	if after.Balance != before.Balance-42_00 {
		t.Fatalf("payer balance %d → %d", before.Balance, after.Balance)
	}
	if _, err := e.rig.POS.Accept(e.ctx, qr); !errors.Is(err, bioqr.ErrRandCodeUsed) && !errors.Is(err, bioqr.ErrRandCodeUnknown) {
		t.Fatalf("replayed payment code: %v", err)
	}

	// A code whose amount was altered after the POS signed it.
	c2, err := e.rig.POS.NewConsumption(e.ctx, 5_00)
	if err != nil {
		t.Fatal(err)
	}
	forged := *c2
	forged.Amount = 1_00
	if err := phonecode.EncodeConsumption(&forged, func(b []byte) ([]byte, error) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		d := sha256.Sum256(b)
		return ecdsa.SignASN1(rand.Reader, k, d[:])
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pay(t, forged.Payload); !errors.Is(err, phonecode.ErrBadSignature) || bioqrphone.Sentence(err) != bioqrphone.MsgForged {
		t.Fatalf("a code not signed by its POS: %v", err)
	}

	// The POS's certificate unknown to the CA, and then revoked.
	serial := e.rig.POS.Unit.Certificate().SerialNumber
	if _, err := bioqrphone.VerifyConsumption(e.rig.Settlement.Root(), c2.Payload, bioqrphone.POSStatus{}, time.Now()); !errors.Is(err, phonecode.ErrIllegalPOS) {
		t.Fatalf("an unknown POS: %v", err)
	}
	if err := e.ca.Revoke(e.ctx, serial, "stolen"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pay(t, c2.Payload); !errors.Is(err, phonecode.ErrIllegalPOS) || bioqrphone.Sentence(err) != bioqrphone.MsgIllegalPOS {
		t.Fatalf("a revoked POS: %v", err)
	}

	// A wallet whose pinned root is another CA's refuses a POS of this one.
	other, err := pki.NewCA(e.ctx, e.db, "evil", pki.Options{Subject: e.ca.Certificate().Subject.CommonName}, rawKey())
	if err != nil {
		t.Fatal(err)
	}
	st := e.status(t, serial)
	st.Revoked = false
	if _, err := bioqrphone.VerifyConsumption(other.Certificate(), c2.Payload, st, time.Now()); !errors.Is(err, phonecode.ErrIllegalPOS) {
		t.Fatalf("a POS of another CA: %v", err)
	}
	if after2, _ := e.led.Account(e.ctx, e.acct); after2.Balance != after.Balance {
		t.Fatalf("the attacks moved money: %d → %d", after.Balance, after2.Balance)
	}
}

// FuzzReadConsumption: any text either is refused or, when it parses, is
// still never accepted without a known, unrevoked POS certificate from the
// CA (VerifyConsumption with no certificate refuses it as an illegal POS).
func FuzzReadConsumption(f *testing.F) {
	f.Add("")
	f.Add("000201010212")
	// A well-formed code signed by a key no CA certified.
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := &phonecode.Consumption{Merchant: phonecode.Merchant{Name: "Corner Shop", City: "Hangzhou", Country: "CN", MCC: "5411", Account: "shop", Currency: "CNY"},
		Amount: 25_50, Expires: time.Now().Add(time.Minute), POSSerial: big.NewInt(0x1234)}
	if err := phonecode.EncodeConsumption(c, func(b []byte) ([]byte, error) {
		d := sha256.Sum256(b)
		return ecdsa.SignASN1(rand.Reader, k, d[:])
	}); err != nil {
		f.Fatal(err)
	}
	f.Add(c.Payload)
	f.Fuzz(func(t *testing.T, s string) {
		o, err := bioqrphone.ReadConsumption(s)
		if err != nil {
			return
		}
		if o.POSSerial == "" || o.AmountText == "" {
			t.Fatalf("accepted %q without a POS serial or an amount: %+v", s, o)
		}
		if _, err := bioqrphone.VerifyConsumption(nil, s, bioqrphone.POSStatus{}, time.Now()); err == nil {
			t.Fatalf("accepted %q with no CA root and no certificate", s)
		}
	})
}

func TestPublicKeyRefusesWhatIsNotAPoint(t *testing.T) {
	good := newWebCrypto(t).raw()
	off := append([]byte(nil), good...)
	off[64] ^= 1
	for name, raw := range map[string][]byte{"empty": nil, "compressed": good[:33], "off the curve": off, "not uncompressed": append([]byte{2}, good[1:]...)} {
		if _, err := bioqrphone.PublicKey(raw); !errors.Is(err, phonecode.ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	k, err := bioqrphone.PublicKey(good)
	if err != nil || !bytes.Equal(must(k.Bytes()), good) {
		t.Fatalf("a WebCrypto raw key: %v", err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
