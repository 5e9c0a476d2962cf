package platform

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Finding (#12 item 4): without QSHIELD_ADMIN_PASSPHRASE the admin key was
// written as plain PKCS #8 into the data directory, so a copy of that
// directory carried a usable admin credential. It is now sealed under
// admin-seal.key in the secret directory. With the plain write restored,
// the first check (not parseable by x509) fails.
func TestAdminKeySealedByDefault(t *testing.T) {
	t.Setenv(EnvAdminPassphrase, "")
	t.Setenv(EnvSecretDir, "")
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	p, err := Open(context.Background(), Config{DB: filepath.Join(dir, "qshield.db"), StateDir: dir, QKD: QKDConfig{Off: true}})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	keyPath := filepath.Join(dir, "admin-key.pem")
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(keyPEM); b == nil {
		t.Fatal("admin-key.pem holds no PEM block")
	} else if _, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil || b.Type == "PRIVATE KEY" {
		t.Fatalf("admin key stored in clear (%s)", b.Type)
	}
	sealKey := filepath.Join(DefaultSecretDir(dir), AdminSealKeyFile)
	if fi, err := os.Stat(sealKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("seal key %s: %v %v", sealKey, fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, AdminSealKeyFile)); err == nil {
		t.Fatal("the admin seal key is in the data directory")
	}
	cert, err := LoadAdmin(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Leaf == nil || cert.Leaf.Subject.CommonName != AdminName {
		t.Fatalf("loaded %v", cert.Leaf)
	}

	// A copy of the data directory without the secret directory: a clear
	// error naming both files and the ways out.
	copyDir := filepath.Join(t.TempDir(), "copy")
	if err := os.MkdirAll(copyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"admin.pem", "admin-key.pem"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(copyDir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err = LoadKeyPair(filepath.Join(copyDir, "admin.pem"), filepath.Join(copyDir, "admin-key.pem"))
	if err == nil {
		t.Fatal("a sealed admin key opened without its seal key file")
	}
	for _, want := range []string{"admin-key.pem", AdminSealKeyFile, EnvAdminPassphrase, EnvSecretDir} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	// QSHIELD_SECRET_DIR naming the original secret directory opens it.
	t.Setenv(EnvSecretDir, DefaultSecretDir(dir))
	if _, err := LoadKeyPair(filepath.Join(copyDir, "admin.pem"), filepath.Join(copyDir, "admin-key.pem")); err != nil {
		t.Fatalf("with %s: %v", EnvSecretDir, err)
	}
	t.Setenv(EnvSecretDir, "")

	// A plain key of an older layout is read, and sealed in place.
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAdmin(dir); err != nil {
		t.Fatalf("plain admin key of an older layout: %v", err)
	}
	keyPEM, err = os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(keyPEM); b == nil || b.Type == "PRIVATE KEY" {
		t.Fatal("plain admin key not sealed on load")
	}
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("resealed key mode: %v %v", fi, err)
	}
	if _, err := LoadAdmin(dir); err != nil {
		t.Fatalf("resealed admin key: %v", err)
	}
}
