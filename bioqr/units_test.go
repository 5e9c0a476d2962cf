package bioqr_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qrimg"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestSealOpenSuites(t *testing.T) {
	for _, alg := range []pki.Algorithm{pki.ECDSAP256, pki.SM2} {
		t.Run(string(alg), func(t *testing.T) {
			u, err := bioqr.NewSecureUnit("", bioqr.KindPOS, alg, nil)
			if err != nil {
				t.Fatal(err)
			}
			other, _ := bioqr.NewSecureUnit("", bioqr.KindPOS, alg, nil)
			msg := []byte("Sum+InforCn+RandCodeC")
			ct, err := bioqr.Seal(u.EncryptionPublic(), []byte("info"), []byte("aad"), msg)
			if err != nil {
				t.Fatal(err)
			}
			want := map[pki.Algorithm]bioqr.Suite{pki.ECDSAP256: bioqr.SuiteHPKEP256, pki.SM2: bioqr.SuiteSM2SM4}[alg]
			if bioqr.Suite(ct[0]) != want {
				t.Fatalf("suite %v, want %v", bioqr.Suite(ct[0]), want)
			}
			pt, err := u.Decrypt([]byte("info"), []byte("aad"), ct)
			if err != nil || !bytes.Equal(pt, msg) {
				t.Fatalf("open: %q %v", pt, err)
			}
			for name, f := range map[string]func() error{
				"wrong key": func() error { _, err := other.Decrypt([]byte("info"), []byte("aad"), ct); return err },
				// Issue #12: the signing key never decrypts.
				"sealed to the signing key": func() error {
					c, err := bioqr.Seal(u.Public(), []byte("info"), []byte("aad"), msg)
					if err != nil {
						return nil // report as opened: sealing must work
					}
					_, err = u.Decrypt([]byte("info"), []byte("aad"), c)
					return err
				},
				"wrong aad":  func() error { _, err := u.Decrypt([]byte("info"), []byte("aaX"), ct); return err },
				"wrong info": func() error { _, err := u.Decrypt([]byte("infX"), []byte("aad"), ct); return err },
				"flipped bit": func() error {
					c := bytes.Clone(ct)
					c[len(c)-1] ^= 1
					_, err := u.Decrypt([]byte("info"), []byte("aad"), c)
					return err
				},
				"relabelled suite": func() error {
					c := bytes.Clone(ct)
					c[0] ^= 3
					_, err := u.Decrypt([]byte("info"), []byte("aad"), c)
					return err
				},
				"truncated": func() error { _, err := u.Decrypt([]byte("info"), []byte("aad"), ct[:20]); return err },
			} {
				if err := f(); !errors.Is(err, bioqr.ErrDecrypt) {
					t.Errorf("%s: %v", name, err)
				}
			}
			// Signatures round-trip through the raw form.
			der, err := u.Sign(msg)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := bioqr.SigToRaw(der)
			if err != nil || len(raw) != 64 || !bioqr.VerifySig(u.Public(), msg, bioqr.RawToSig(raw)) {
				t.Fatalf("raw signature: %v", err)
			}
			if bioqr.VerifySig(u.Public(), []byte("other"), der) {
				t.Fatal("signature verifies for another message")
			}
		})
	}
}

func TestSecureUnitFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "phone.json")
	pin := pki.PassphraseKeyWithParams([]byte("123456 correct"), pki.Argon2Params{Time: 1, Memory: 19 * 1024, Threads: 1})
	u, err := bioqr.NewSecureUnit(path, bioqr.KindPhone, pki.ECDSAP256, pin)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.PutSecret("accounts", []byte(`["alice"]`)); err != nil {
		t.Fatal(err)
	}
	if _, err := bioqr.NewSecureUnit(path, bioqr.KindPhone, pki.ECDSAP256, pin); !errors.Is(err, bioqr.ErrExists) {
		t.Fatalf("overwrote an existing unit: %v", err)
	}
	wrong := pki.PassphraseKeyWithParams([]byte("000000 wrong!"), pki.Argon2Params{Time: 1, Memory: 19 * 1024, Threads: 1})
	if _, err := bioqr.OpenSecureUnit(path, wrong); !errors.Is(err, bioqr.ErrWrongKey) {
		t.Fatalf("wrong PIN: %v", err)
	}
	u2, err := bioqr.OpenSecureUnit(path, pin)
	if err != nil {
		t.Fatal(err)
	}
	if !u2.Public().Equal(u.Public()) {
		t.Fatal("reopened unit has another key")
	}
	s, err := u2.Secret("accounts")
	if err != nil || string(s) != `["alice"]` {
		t.Fatalf("secret: %q %v", s, err)
	}
	data, _ := os.ReadFile(path)
	if bytes.Contains(data, []byte("alice")) || bytes.Contains(data, []byte("PRIVATE KEY-----\nM")) {
		t.Fatal("secret or key in clear on disk")
	}
}

func TestFileRandStoreSingleUse(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rand.json")
	a, b := bioqr.FileRandStore{Path: path}, bioqr.FileRandStore{Path: path}
	var code [16]byte
	code[0] = 9
	now := time.Now()
	if err := a.Put(ctx, bioqr.Pending{RandCode: code, Amount: 100, Currency: "156", MerchantAccount: "m", Expires: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	p, err := b.Take(ctx, code, now)
	if err != nil || p.Amount != 100 {
		t.Fatalf("take: %+v %v", p, err)
	}
	if _, err := a.Take(ctx, code, now); !errors.Is(err, bioqr.ErrRandCodeUsed) {
		t.Fatalf("second take: %v", err)
	}
	var other [16]byte
	if _, err := a.Take(ctx, other, now); !errors.Is(err, bioqr.ErrRandCodeUnknown) {
		t.Fatalf("unknown code: %v", err)
	}
	code[0] = 10
	_ = a.Put(ctx, bioqr.Pending{RandCode: code, Amount: 1, Expires: now.Add(time.Second)})
	if _, err := a.Take(ctx, code, now.Add(2*time.Second)); !errors.Is(err, bioqr.ErrExpired) {
		t.Fatalf("expired code: %v", err)
	}
}

func TestCredentialSM2CA(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ca, err := pki.NewCA(ctx, db, "gm", pki.Options{Algorithm: pki.SM2}, fastKey())
		if err != nil {
			t.Fatal(err)
		}
		u, _ := bioqr.NewSecureUnit("", bioqr.KindPOS, pki.SM2, nil)
		req, err := bioqr.NewCertRequest(u, "POS-SM2", "", nil, map[string]string{bioqr.AttrMerchantAccount: "m"})
		if err != nil {
			t.Fatal(err)
		}
		c, err := (&bioqr.Certifier{CA: ca}).Certify(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Install(u, ca.Certificate()); err != nil {
			t.Fatal(err)
		}
		cred := u.Credential()
		if cred.SigAlg != bioqr.SigSM2 || cred.PublicKey.Curve != bioqr.SM2Curve() {
			t.Fatalf("credential %+v", cred)
		}
		if err := cred.Verify(ca.Certificate(), bioqr.KindPOS, time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := cred.Verify(ca.Certificate(), bioqr.KindPhone, time.Now()); !errors.Is(err, bioqr.ErrMalformed) {
			t.Fatalf("wrong kind accepted: %v", err)
		}
		if err := cred.Verify(ca.Certificate(), bioqr.KindPOS, cred.NotAfter); !errors.Is(err, bioqr.ErrExpired) {
			t.Fatalf("expired credential accepted: %v", err)
		}
		// A payment to an SM2 POS uses SM2 encryption with SM4-GCM.
		ct, err := bioqr.Seal(cred.PublicKey, []byte(bioqr.PaymentInfo), nil, []byte("x"))
		if err != nil || bioqr.Suite(ct[0]) != bioqr.SuiteSM2SM4 {
			t.Fatalf("suite: %v", err)
		}
	})
}

func TestEnrolmentChecks(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(t, db)
		st := f.rig.Settlement
		stc, _ := bioqr.ParseCredential(st.Credential())
		u, _ := bioqr.NewSecureUnit("", bioqr.KindPhone, pki.ECDSAP256, nil)
		good := func() *bioqr.EnrolRequest {
			er, err := bioqr.NewEnrolRequest(u, stc, "PHONE-X", "", f.rig.Templates.Owner, []string{f.rig.Payer})
			if err != nil {
				t.Fatal(err)
			}
			return er
		}
		cases := map[string]struct {
			mutate func(*bioqr.EnrolRequest)
			want   error
		}{
			"commitment mismatch": {func(e *bioqr.EnrolRequest) { e.SealedTemplate[len(e.SealedTemplate)-1] ^= 1 }, bioqr.ErrMalformed},
			"forged proof":        {func(e *bioqr.EnrolRequest) { e.Request.Subject = "PHONE-Y" }, bioqr.ErrBadSignature},
			"unknown account":     {func(e *bioqr.EnrolRequest) { e.Accounts = []string{"nobody"} }, bioqr.ErrNotFound},
			"no accounts":         {func(e *bioqr.EnrolRequest) { e.Accounts = nil }, bioqr.ErrMalformed},
			"POS request":         {func(e *bioqr.EnrolRequest) { e.Request.Kind = bioqr.KindPOS }, bioqr.ErrMalformed},
		}
		for name, c := range cases {
			t.Run(name, func(t *testing.T) {
				er := good()
				c.mutate(er)
				if _, err := st.Enrol(f.ctx, "test", er); !errors.Is(err, c.want) {
					t.Fatalf("Enrol = %v, want %v", err, c.want)
				}
			})
		}
		t.Run("garbage template", func(t *testing.T) {
			sealed, commit, _ := bioqr.SealTemplate(stc, u.Public(), []byte("not a template"))
			req, _ := bioqr.NewCertRequest(u, "PHONE-Z", "", commit, nil)
			if _, err := st.Enrol(f.ctx, "test", &bioqr.EnrolRequest{Request: req, SealedTemplate: sealed, Accounts: []string{f.rig.Payer}}); !errors.Is(err, bioqr.ErrMalformed) {
				t.Fatalf("garbage template enrolled: %v", err)
			}
		})
		// Nothing was issued for the refused requests.
		n := 0
		for _, e := range f.audit.Snapshot() {
			if e.Event == "bioqr.certify" && e.Outcome == audit.OutcomeSuccess {
				n++
			}
		}
		if n != 3 { // the rig's settlement server, POS and phone
			t.Fatalf("%d certifications, want 3", n)
		}
		// The template is stored sealed, bound to the credential.
		var sealed []byte
		cred := f.rig.Phone.Unit.Credential()
		if err := db.QueryRowContext(f.ctx, db.Rebind(`SELECT template_sealed FROM bioqr_enrolments WHERE serial = ?`), cred.Serial.Text(16)).Scan(&sealed); err != nil {
			t.Fatal(err)
		}
		if h := sha256.Sum256(sealed); !bytes.Equal(h[:], cred.Extra) {
			t.Fatal("stored template does not match the credential's commitment")
		}
		if bytes.Contains(sealed, f.rig.Templates.Owner[24:60]) {
			t.Fatal("template stored in clear")
		}
	})
}

func TestPOSPage(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(t, db)
		c, err := f.rig.POS.NewConsumption(f.ctx, 12_34)
		if err != nil {
			t.Fatal(err)
		}
		posP, err := f.ca.Authenticate(f.ctx, f.rig.POS.Unit.Certificate())
		if err != nil {
			t.Fatal(err)
		}
		if err := f.rig.Settlement.Publish(f.ctx, posP, f.rig.POS.Unit.Certificate(), &bioqr.DisplayRequest{Payload: c.Payload}); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(f.rig.Settlement.PageHandler())
		defer srv.Close()
		id := f.rig.POS.Unit.Certificate().Subject.CommonName[len("pos "):]
		resp, err := http.Get(srv.URL + "/bioqr/pos/" + id)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "12.34 CNY") || !strings.Contains(string(body), "qr.png") {
			t.Fatalf("page %d: %s", resp.StatusCode, body)
		}
		resp, err = http.Get(srv.URL + "/bioqr/pos/" + id + "/qr.png")
		if err != nil {
			t.Fatal(err)
		}
		got, err := qrimg.DecodePNG(resp.Body, 0)
		resp.Body.Close()
		if err != nil || got != c.Payload {
			t.Fatalf("page QR: %v", err)
		}
		// Another POS's QR cannot be published under this POS.
		other, _ := f.rig.NewPOS(f.ctx, "POS-2", f.rig.Merchant)
		otherP, err := f.ca.Authenticate(f.ctx, other.Unit.Certificate())
		if err != nil {
			t.Fatal(err)
		}
		if err := f.rig.Settlement.Publish(f.ctx, otherP, other.Unit.Certificate(), &bioqr.DisplayRequest{Payload: c.Payload}); !errors.Is(err, bioqr.ErrWrongPOS) {
			t.Fatalf("publish foreign QR: %v", err)
		}
	})
}

func TestRevocationStatusOverHTTP(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(t, db)
		_, stop, err := f.rig.StartTLS(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		cl := f.rig.Phone.Revocation
		serial := f.rig.POS.Unit.Certificate().SerialNumber
		if err := cl.CheckRevoked(f.ctx, serial); err != nil {
			t.Fatal(err)
		}
		if err := cl.CheckRevoked(f.ctx, big.NewInt(12345)); !errors.Is(err, pki.ErrUnknownCert) {
			t.Fatalf("unknown serial: %v", err)
		}
		_ = f.ca.Revoke(f.ctx, serial, "test")
		if err := cl.CheckRevoked(f.ctx, serial); !errors.Is(err, pki.ErrRevoked) {
			t.Fatalf("revoked serial: %v", err)
		}
		// The POS's own mutual-TLS connection is now refused too.
		if _, err := f.rig.POS.Settler.Settle(f.ctx, []byte{1}); err == nil {
			t.Fatal("revoked POS reached the settle endpoint")
		}
	})
}
