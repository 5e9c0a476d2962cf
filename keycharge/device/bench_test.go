package device

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkStage9MB writes and stages a 9 MiB charge (8 KiB keys), fsync included.
func BenchmarkStage9MB(b *testing.B) {
	keys := make([][]byte, 1152)
	for i := range keys {
		keys[i] = make([]byte, 8192)
		rand.Read(keys[i])
	}
	b.SetBytes(9 << 20)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := filepath.Join(b.TempDir(), "d")
		Manufacture(dir, Info{Serial: "B", Kind: "ukey"}, pin, puk, fastOpts)
		d, _ := Open(dir, pin, fastOpts)
		d.cert = nil
		d.meta.Cert = nil
		d.cert = fakeCert()
		b.StartTimer()
		w, err := d.BeginCharge(fmt.Sprintf("c%d", i))
		if err != nil {
			b.Fatal(err)
		}
		for j, k := range keys {
			w.Add(fmt.Sprint(j), k)
		}
		if _, err := w.Stage(); err != nil {
			b.Fatal(err)
		}
		d.Close()
	}
}

func fakeCert() *x509.Certificate { return &x509.Certificate{} }
