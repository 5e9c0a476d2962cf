package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// fastKey keeps argon2id at its accepted minimum so tests stay quick.
func fastKey(pass string) KeyEncryptor {
	return PassphraseKeyWithParams([]byte(pass), Argon2Params{Time: 1, Memory: minArgonMemory, Threads: 1})
}

func mustCA(t *testing.T, db *sqldb.DB, name string, alg Algorithm) *CA {
	t.Helper()
	ca, err := NewCA(context.Background(), db, name, Options{Algorithm: alg}, fastKey("correct horse battery"))
	if err != nil {
		t.Fatalf("NewCA(%s, %s): %v", name, alg, err)
	}
	return ca
}

func issue(t *testing.T, ca *CA, req IssueRequest) *Issued {
	t.Helper()
	iss, err := ca.Issue(context.Background(), req)
	if err != nil {
		t.Fatalf("Issue(%+v): %v", req, err)
	}
	return iss
}

func reqFor(role Role, cn string) IssueRequest {
	r := IssueRequest{Role: role, CommonName: cn}
	if role == RoleServer {
		r.DNSNames = []string{"settlement.example"}
		r.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	return r
}

func TestIssueAndVerifyEachRole(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		for _, alg := range []Algorithm{ECDSAP256, SM2} {
			ca := mustCA(t, db, "root-"+string(alg), alg)
			for _, role := range []Role{RoleServer, RoleClient, RoleDevice, RoleApplication} {
				t.Run(string(alg)+"/"+string(role), func(t *testing.T) {
					iss := issue(t, ca, reqFor(role, "subject-"+string(role)))
					if iss.Key == nil {
						t.Fatal("CA generated no key")
					}
					if !publicKeysEqual(iss.Key.Public(), iss.Cert.PublicKey) {
						t.Fatal("returned key does not match certificate")
					}
					if _, err := ca.Verify(ctx, iss.Cert, role, time.Time{}); err != nil {
						t.Fatalf("Verify as %s: %v", role, err)
					}
					if _, err := ca.Verify(ctx, iss.Cert, "", time.Time{}); err != nil {
						t.Fatalf("Verify any role: %v", err)
					}
					got, err := RoleOf(iss.Cert)
					if err != nil || got != role {
						t.Fatalf("RoleOf = %q, %v", got, err)
					}
					for _, other := range []Role{RoleServer, RoleClient, RoleDevice, RoleApplication} {
						if other == role {
							continue
						}
						if _, err := ca.Verify(ctx, iss.Cert, other, time.Time{}); !errors.Is(err, ErrWrongRole) {
							t.Errorf("Verify as %s: %v, want ErrWrongRole", other, err)
						}
					}
					if alg == SM2 && iss.Cert.SignatureAlgorithm != x509.SignatureAlgorithm(smx509.SM2WithSM3) {
						t.Errorf("SM2 CA signed with %v", iss.Cert.SignatureAlgorithm)
					}
					if alg == SM2 && !sm2.IsSM2PublicKey(iss.Cert.PublicKey) {
						t.Errorf("SM2 CA generated a %T key", iss.Cert.PublicKey)
					}
				})
			}
		}
	})
}

func TestUntrusted(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ca := mustCA(t, db, "main", ECDSAP256)
		other := mustCA(t, db, "other", ECDSAP256)
		foreign := issue(t, other, reqFor(RoleClient, "mallory"))
		if _, err := ca.Verify(ctx, foreign.Cert, RoleClient, time.Time{}); !errors.Is(err, ErrUntrusted) {
			t.Fatalf("cert of another CA: %v, want ErrUntrusted", err)
		}
		// Same subject as our root, self-signed, with a valid role extension.
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		roleExt, _ := roleExtension(RoleClient)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(42), Subject: ca.Certificate().Subject,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			ExtraExtensions: []pkix.Extension{roleExt},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		self, _ := x509.ParseCertificate(der)
		if _, err := ca.Verify(ctx, self, RoleClient, time.Time{}); !errors.Is(err, ErrUntrusted) {
			t.Fatalf("self-signed impostor: %v, want ErrUntrusted", err)
		}
		// Signed by the right key but not in the register (e.g. a key
		// compromise, or a record deleted): fail closed.
		iss := issue(t, ca, reqFor(RoleClient, "ghost"))
		if _, err := db.ExecContext(ctx, db.Rebind(`DELETE FROM pki_certs WHERE serial = ?`), serialText(iss.Cert.SerialNumber)); err != nil {
			t.Fatal(err)
		}
		if _, err := ca.Verify(ctx, iss.Cert, RoleClient, time.Time{}); !errors.Is(err, ErrUntrusted) {
			t.Fatalf("unregistered cert: %v, want ErrUntrusted", err)
		}
		// The root itself is not an end-entity certificate.
		if _, err := ca.Verify(ctx, ca.Certificate(), "", time.Time{}); err == nil {
			t.Fatal("root accepted as a leaf")
		}
		if _, err := ca.Verify(ctx, nil, "", time.Time{}); !errors.Is(err, ErrUntrusted) {
			t.Fatalf("nil cert: %v", err)
		}
	})
}

func TestExpiry(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ca := mustCA(t, db, "main", ECDSAP256)
		iss := issue(t, ca, IssueRequest{Role: RoleDevice, CommonName: "pos-1", Validity: 48 * time.Hour})
		if _, err := ca.Verify(ctx, iss.Cert, RoleDevice, time.Now().Add(72*time.Hour)); !errors.Is(err, ErrExpired) {
			t.Fatalf("after NotAfter: %v, want ErrExpired", err)
		}
		if _, err := ca.Verify(ctx, iss.Cert, RoleDevice, time.Now().Add(-time.Hour)); !errors.Is(err, ErrExpired) {
			t.Fatalf("before NotBefore: %v, want ErrExpired", err)
		}
		if _, err := ca.Verify(ctx, iss.Cert, RoleDevice, time.Now().Add(24*time.Hour)); err != nil {
			t.Fatalf("within validity: %v", err)
		}
		long := issue(t, ca, IssueRequest{Role: RoleDevice, CommonName: "pos-2", Validity: 100 * 365 * 24 * time.Hour})
		if long.Cert.NotAfter.After(ca.Certificate().NotAfter) {
			t.Fatal("leaf outlives the root")
		}
	})
}

func TestRevocation(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ca := mustCA(t, db, "main", ECDSAP256)
		iss := issue(t, ca, reqFor(RoleDevice, "phone-7"))
		if rev, err := ca.IsRevoked(ctx, iss.Cert.SerialNumber); err != nil || rev {
			t.Fatalf("fresh cert IsRevoked = %v, %v", rev, err)
		}
		if err := ca.Revoke(ctx, iss.Cert.SerialNumber, "phone lost"); err != nil {
			t.Fatal(err)
		}
		if _, err := ca.Verify(ctx, iss.Cert, RoleDevice, time.Time{}); !errors.Is(err, ErrRevoked) {
			t.Fatalf("revoked: %v, want ErrRevoked", err)
		}
		if rev, err := ca.IsRevoked(ctx, iss.Cert.SerialNumber); err != nil || !rev {
			t.Fatalf("IsRevoked = %v, %v", rev, err)
		}
		// A second CA object on the same db (another process) sees it too.
		ca2, err := LoadCA(ctx, db, "main", fastKey("correct horse battery"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ca2.Verify(ctx, iss.Cert, RoleDevice, time.Time{}); !errors.Is(err, ErrRevoked) {
			t.Fatalf("revoked via other instance: %v", err)
		}
		if err := ca.Revoke(ctx, iss.Cert.SerialNumber, "again"); err != nil {
			t.Fatalf("second revoke: %v", err)
		}
		recs, err := ca.Certificates(ctx, 0)
		if err != nil || len(recs) != 1 || !recs[0].Revoked || recs[0].RevokeReason != "phone lost" || recs[0].DeviceSerial != "" {
			t.Fatalf("Certificates = %+v, %v", recs, err)
		}
		if err := ca.Revoke(ctx, big.NewInt(12345), "x"); !errors.Is(err, ErrUnknownCert) {
			t.Fatalf("revoke unknown: %v", err)
		}
		if err := ca.Revoke(ctx, iss.Cert.SerialNumber, ""); !errors.Is(err, ErrBadRequest) {
			t.Fatalf("empty reason: %v", err)
		}
	})
}

func TestPassphrase(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ca, err := NewCA(ctx, db, "main", Options{}, PassphraseKey([]byte("the real passphrase")))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := LoadCA(ctx, db, "main", PassphraseKey([]byte("the wrong passphrase"))); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("wrong passphrase: %v, want ErrWrongKey", err)
		}
		raw := make([]byte, 32)
		rk, _ := RawKey(raw)
		if _, err := LoadCA(ctx, db, "main", rk); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("raw key for passphrase CA: %v, want ErrWrongKey", err)
		}
		got, err := LoadCA(ctx, db, "main", PassphraseKey([]byte("the real passphrase")))
		if err != nil {
			t.Fatal(err)
		}
		if got.ID() != ca.ID() || !got.Certificate().Equal(ca.Certificate()) {
			t.Fatal("loaded a different CA")
		}
		// A loaded CA issues certificates the original verifies.
		iss := issue(t, got, reqFor(RoleClient, "c"))
		if _, err := ca.Verify(ctx, iss.Cert, RoleClient, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if _, err := NewCA(ctx, db, "main", Options{}, fastKey("whatever passphrase")); !errors.Is(err, ErrCAExists) {
			t.Fatalf("NewCA twice: %v, want ErrCAExists", err)
		}
		if _, err := LoadCA(ctx, db, "missing", fastKey("whatever passphrase")); !errors.Is(err, ErrCANotFound) {
			t.Fatalf("LoadCA missing: %v", err)
		}
	})
}

// The sealed key is bound to its CA: copying it into another CA's row fails.
func TestSealedKeyBoundToCA(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		mustCA(t, db, "a", ECDSAP256)
		mustCA(t, db, "b", ECDSAP256)
		if _, err := db.ExecContext(ctx, `UPDATE pki_cas SET key_sealed = (SELECT key_sealed FROM pki_cas WHERE name = 'a') WHERE name = 'b'`); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadCA(ctx, db, "b", fastKey("correct horse battery")); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("swapped key: %v, want ErrWrongKey", err)
		}
	})
}

func TestCAKeyNotStoredInClear(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		for _, alg := range []Algorithm{ECDSAP256, SM2} {
			ca := mustCA(t, db, "ca-"+string(alg), alg)
			var d []byte
			switch k := ca.Signer().(type) {
			case *ecdsa.PrivateKey:
				d = k.D.FillBytes(make([]byte, 32))
			case *sm2.PrivateKey:
				d = k.D.FillBytes(make([]byte, 32))
			default:
				t.Fatalf("key type %T", k)
			}
			pkcs8, _ := marshalPrivateKey(ca.Signer())
			rows, err := db.QueryContext(ctx, `SELECT name, algorithm, cert_der, key_sealed, created_at FROM pki_cas`)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var cols [5][]byte
				if err := rows.Scan(&cols[0], &cols[1], &cols[2], &cols[3], &cols[4]); err != nil {
					t.Fatal(err)
				}
				for _, c := range cols {
					if bytes.Contains(c, d) || bytes.Contains(c, pkcs8) {
						t.Fatalf("%s private key found in clear in pki_cas", alg)
					}
				}
			}
			rows.Close()
			if db.Path != "" {
				for _, f := range []string{db.Path, db.Path + "-wal"} {
					b, err := os.ReadFile(f)
					if err != nil && !os.IsNotExist(err) {
						t.Fatal(err)
					}
					if bytes.Contains(b, d) {
						t.Fatalf("%s private scalar found in %s", alg, f)
					}
				}
			}
		}
	})
}

func TestOpenOrCreateCA(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		a, err := OpenOrCreateCA(ctx, db, "auto", Options{Subject: "Auto Root"}, fastKey("pass phrase 1"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := OpenOrCreateCA(ctx, db, "auto", Options{}, fastKey("pass phrase 1"))
		if err != nil {
			t.Fatal(err)
		}
		if a.ID() != b.ID() || b.Certificate().Subject.CommonName != "Auto Root" || b.Name() != "auto" {
			t.Fatal("OpenOrCreateCA created a second CA")
		}
		if _, err := OpenOrCreateCA(ctx, db, "auto", Options{}, fastKey("pass phrase 2")); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("wrong passphrase: %v", err)
		}
	})
}

func TestDeviceInfoInCertificate(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		for _, alg := range []Algorithm{ECDSAP256, SM2} {
			ca := mustCA(t, db, "dev-"+string(alg), alg)
			dev := &DeviceInfo{Serial: "SN-0001", Model: "Pax A920", Kind: KindPOS, Attrs: map[string]string{"merchant": "M-77", "城市": "杭州"}}
			fp := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: []byte{0x04, 0x02, 0xca, 0xfe}}
			iss := issue(t, ca, IssueRequest{Role: RoleDevice, CommonName: "pos-1", Device: dev, Extensions: []pkix.Extension{fp},
				URIs: []*url.URL{{Scheme: "urn", Opaque: "qshield:device:SN-0001"}}})
			got, err := ca.Verify(ctx, iss.Cert, RoleDevice, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || got.Serial != dev.Serial || got.Model != dev.Model || got.Kind != dev.Kind || len(got.Attrs) != 2 || got.Attrs["城市"] != "杭州" {
				t.Fatalf("device info = %+v", got)
			}
			// Reparse from PEM: the extension survives serialisation.
			c2, err := ParseCertPEM(EncodeCertPEM(iss.Cert))
			if err != nil {
				t.Fatal(err)
			}
			if d2, err := DeviceInfoOf(c2); err != nil || d2.Serial != "SN-0001" {
				t.Fatalf("DeviceInfoOf after PEM: %+v %v", d2, err)
			}
			found := false
			for _, e := range c2.Extensions {
				if e.Id.Equal(fp.Id) && bytes.Equal(e.Value, fp.Value) {
					found = true
				}
				if e.Id.Equal(oidDeviceInfo) && e.Critical {
					t.Fatal("device info extension is critical")
				}
			}
			if !found {
				t.Fatal("caller extension missing")
			}
			recs, _ := ca.Certificates(ctx, 1)
			if len(recs) != 1 || recs[0].DeviceSerial != "SN-0001" || recs[0].Role != RoleDevice {
				t.Fatalf("register: %+v", recs)
			}
		}
	})
}

func TestDeviceInfoEncoding(t *testing.T) {
	d := &DeviceInfo{Serial: "S1", Model: "M", Kind: "phone", Attrs: map[string]string{"b": "2", "a": "1"}}
	der, err := MarshalDeviceInfo(d)
	if err != nil {
		t.Fatal(err)
	}
	golden, err := os.ReadFile("testdata/deviceinfo.hex")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(golden)); got != hexs(der) {
		t.Fatalf("DER = %s, want %s", hexs(der), got)
	}
	back, err := ParseDeviceInfo(der)
	if err != nil || back.Attrs["a"] != "1" || back.Attrs["b"] != "2" || back.Serial != "S1" {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	// Non-canonical forms are rejected.
	unsorted, _ := asn1.Marshal(asn1Device{Version: 1, Serial: "S", Kind: "k", Attrs: []asn1Attr{{"b", "1"}, {"a", "2"}}})
	dup, _ := asn1.Marshal(asn1Device{Version: 1, Serial: "S", Kind: "k", Attrs: []asn1Attr{{"a", "1"}, {"a", "2"}}})
	v2, _ := asn1.Marshal(asn1Device{Version: 2, Serial: "S", Kind: "k", Attrs: []asn1Attr{}})
	printable, _ := asn1.Marshal(struct {
		Version int
		Serial  string `asn1:"printable"`
		Model   string `asn1:"utf8"`
		Kind    string `asn1:"utf8"`
		Attrs   []asn1Attr
	}{1, "S", "", "k", []asn1Attr{}})
	for name, bad := range map[string][]byte{
		"unsorted": unsorted, "duplicate": dup, "version": v2, "printable": printable,
		"trailing": append(append([]byte(nil), der...), 0), "empty": nil, "huge": make([]byte, maxDeviceExt+1),
	} {
		if _, err := ParseDeviceInfo(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for name, bad := range map[string]*DeviceInfo{
		"no serial": {Kind: "pos"}, "no kind": {Serial: "s"}, "long": {Serial: strings.Repeat("x", 257), Kind: "pos"},
		"bad utf8": {Serial: "\xff", Kind: "pos"}, "empty key": {Serial: "s", Kind: "pos", Attrs: map[string]string{"": "v"}},
	} {
		if _, err := MarshalDeviceInfo(bad); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func TestBadIssueRequests(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ca := mustCA(t, db, "main", ECDSAP256)
		smKey, _ := sm2.GenerateKey(rand.Reader)
		for name, req := range map[string]IssueRequest{
			"no role":          {CommonName: "x"},
			"bad role":         {Role: "admin", CommonName: "x"},
			"no cn":            {Role: RoleClient},
			"long cn":          {Role: RoleClient, CommonName: strings.Repeat("a", 65)},
			"control in cn":    {Role: RoleClient, CommonName: "a\nb"},
			"server no names":  {Role: RoleServer, CommonName: "s"},
			"reserved ext":     {Role: RoleClient, CommonName: "x", Extensions: []pkix.Extension{{Id: oidRole, Value: []byte{0x0c, 0}}}},
			"x509 ext":         {Role: RoleClient, CommonName: "x", Extensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Value: []byte{0x30, 0}}}},
			"short validity":   {Role: RoleClient, CommonName: "x", Validity: time.Second},
			"critical ext":     {Role: RoleClient, CommonName: "x", Extensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}}},
			"bad dns name":     {Role: RoleServer, CommonName: "x", DNSNames: []string{"a b.example"}},
			"bad device":       {Role: RoleDevice, CommonName: "x", Device: &DeviceInfo{Serial: "s"}},
			"sm2 key on ecdsa": {Role: RoleClient, CommonName: "x", PublicKey: smKey.Public()},
			"bad key type":     {Role: RoleClient, CommonName: "x", PublicKey: "nope"},
		} {
			if _, err := ca.Issue(ctx, req); !errors.Is(err, ErrBadRequest) {
				t.Errorf("%s: %v, want ErrBadRequest", name, err)
			}
		}
		if recs, _ := ca.Certificates(ctx, 0); len(recs) != 0 {
			t.Fatalf("rejected requests left %d records", len(recs))
		}
		// A caller-supplied key: no key is returned.
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		iss := issue(t, ca, IssueRequest{Role: RoleApplication, CommonName: "sae-1", PublicKey: k.Public()})
		if iss.Key != nil || !publicKeysEqual(k.Public(), iss.Cert.PublicKey) {
			t.Fatal("caller key not used")
		}
		if _, err := NewCA(ctx, db, "", Options{}, fastKey("pass phrase 1")); !errors.Is(err, ErrBadRequest) {
			t.Fatalf("empty CA name: %v", err)
		}
		if _, err := NewCA(ctx, db, "x", Options{Algorithm: "rsa"}, fastKey("pass phrase 1")); !errors.Is(err, ErrBadRequest) {
			t.Fatalf("bad algorithm: %v", err)
		}
		if _, err := NewCA(ctx, db, "y", Options{}, nil); !errors.Is(err, ErrNoKey) {
			t.Fatalf("nil key: %v", err)
		}
	})
}

func TestSM2ForeignAndTLS(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		a := mustCA(t, db, "sm-a", SM2)
		b := mustCA(t, db, "sm-b", SM2)
		e := mustCA(t, db, "ec", ECDSAP256)
		ib := issue(t, b, reqFor(RoleDevice, "d"))
		if _, err := a.Verify(ctx, ib.Cert, RoleDevice, time.Time{}); !errors.Is(err, ErrUntrusted) {
			t.Fatalf("SM2 cert of another CA: %v", err)
		}
		if _, err := e.Verify(ctx, ib.Cert, RoleDevice, time.Time{}); !errors.Is(err, ErrUntrusted) {
			t.Fatalf("SM2 cert at ECDSA CA: %v", err)
		}
		if err := b.Revoke(ctx, ib.Cert.SerialNumber, "test"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Verify(ctx, ib.Cert, RoleDevice, time.Time{}); !errors.Is(err, ErrRevoked) {
			t.Fatalf("revoked SM2: %v", err)
		}
		if _, err := a.IssueTLS(ctx, RoleServer, "s", []string{"s"}, nil); !errors.Is(err, ErrTLSNotSM2) {
			t.Fatalf("IssueTLS on SM2: %v", err)
		}
		// An SM2 CA loaded from the database still verifies (smx509 parse path).
		a2, err := LoadCA(ctx, db, "sm-a", fastKey("correct horse battery"))
		if err != nil {
			t.Fatal(err)
		}
		ia := issue(t, a2, reqFor(RoleApplication, "app"))
		if _, err := a.Verify(ctx, ia.Cert, RoleApplication, time.Time{}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestEnvKey(t *testing.T) {
	t.Setenv("QSHIELD_TEST_CA_KEY", "")
	if _, err := EnvKey("QSHIELD_TEST_CA_KEY"); !errors.Is(err, ErrNoKey) {
		t.Fatalf("empty: %v", err)
	}
	if _, err := EnvKey("QSHIELD_TEST_CA_KEY_UNSET_XYZ"); !errors.Is(err, ErrNoKey) {
		t.Fatalf("unset: %v", err)
	}
	cases := map[string]bool{ // value → raw key?
		strings.Repeat("ab", 32):                       true,
		"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=": true,
		"a long enough passphrase":                     false,
	}
	for v, raw := range cases {
		t.Setenv("QSHIELD_TEST_CA_KEY", v)
		k, err := EnvKey("QSHIELD_TEST_CA_KEY")
		if err != nil {
			t.Fatal(err)
		}
		if _, isRaw := k.(*rawKey); isRaw != raw {
			t.Errorf("%q: raw = %v, want %v", v, isRaw, raw)
		}
	}
	t.Setenv("QSHIELD_TEST_CA_KEY", "short")
	if _, err := EnvKey("QSHIELD_TEST_CA_KEY"); !errors.Is(err, ErrNoKey) {
		t.Fatalf("short passphrase: %v", err)
	}
	// Raw key seal/open and tamper detection.
	k, _ := KeyFromString(strings.Repeat("01", 32))
	s, err := k.Seal([]byte("secret"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := k.Open(s, []byte("ad")); err != nil || string(p) != "secret" {
		t.Fatalf("open: %q %v", p, err)
	}
	if _, err := k.Open(s, []byte("other ad")); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("other ad: %v", err)
	}
	s[len(s)-1] ^= 1
	if _, err := k.Open(s, []byte("ad")); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("tampered: %v", err)
	}
}

func TestPrivateKeyPEM(t *testing.T) {
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sk, _ := sm2.GenerateKey(rand.Reader)
	enc := fastKey("device key pass")
	for _, signer := range []crypto.Signer{ek, sk} {
		p, err := SealPrivateKeyPEM(signer, enc)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(p, []byte("BEGIN PRIVATE KEY")) {
			t.Fatal("sealed PEM is a plain key")
		}
		got, err := ParsePrivateKeyPEM(p, enc)
		if err != nil || !publicKeysEqual(got.Public(), signer.Public()) {
			t.Fatalf("sealed round trip: %v", err)
		}
		if _, err := ParsePrivateKeyPEM(p, fastKey("not the pass")); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("wrong pass: %v", err)
		}
		if _, err := ParsePrivateKeyPEM(p, nil); !errors.Is(err, ErrNoKey) {
			t.Fatalf("no key: %v", err)
		}
		plain, err := EncodePrivateKeyPEM(signer)
		if err != nil {
			t.Fatal(err)
		}
		got, err = ParsePrivateKeyPEM(plain, nil)
		if err != nil || !publicKeysEqual(got.Public(), signer.Public()) {
			t.Fatalf("plain round trip: %v", err)
		}
	}
}

func TestCertPEM(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ca := mustCA(t, db, "main", ECDSAP256)
		sm := mustCA(t, db, "sm", SM2)
		both := append(EncodeCertPEM(ca.Certificate()), EncodeCertPEM(sm.Certificate())...)
		certs, err := ParseCertsPEM(both)
		if err != nil || len(certs) != 2 || !certs[1].Equal(sm.Certificate()) {
			t.Fatalf("ParseCertsPEM: %d %v", len(certs), err)
		}
		if _, err := ParseCertPEM(both); err == nil {
			t.Fatal("ParseCertPEM accepted two certificates")
		}
		for name, bad := range map[string][]byte{
			"empty": nil, "garbage": []byte("hello"), "trailing": append(EncodeCertPEM(ca.Certificate()), "junk"...),
			"key block": []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
			"bad der":   []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
		} {
			if _, err := ParseCertPEM(bad); err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
	})
}

// tlsTestPair builds a server and client on loopback using ServerTLS / ClientTLS.
func TestMutualTLS(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		testMutualTLS(t, db)
	})
}

var _ = tls.VersionTLS13
