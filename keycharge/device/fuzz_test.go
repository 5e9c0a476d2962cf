package device

import (
	"os"
	"path/filepath"
	"testing"
)

func FuzzParseStore(f *testing.F) {
	dir := filepath.Join(f.TempDir(), "d")
	if err := Manufacture(dir, Info{Serial: "F1", Kind: "ukey"}, pin, puk, fastOpts); err != nil {
		f.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, StoreFile))
	f.Add(b)
	f.Add(b[:headerLen])
	f.Add([]byte("QKMSDv1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, body, err := parseStore(data)
		if err != nil {
			return
		}
		if err := h.kdf.check(); err != nil {
			t.Fatal("accepted bad KDF parameters")
		}
		_ = body
	})
}

func FuzzParseMetadata(f *testing.F) {
	f.Add([]byte(`{"v":1,"info":{"serial":"A","kind":"ukey"},"created":"2026-01-01T00:00:00Z","sk":"AQID"}`))
	f.Add([]byte(`{"v":1,"info":{"serial":"A","kind":"k"},"sk":"AQ==","files":[{"name":"keys-00000000000000000000000000000000.dat","id":"AAAAAAAAAAAAAAAAAAAAAA==","size":10,"hash":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}],"keys":[{"id":"k","file":"keys-00000000000000000000000000000000.dat","off":0,"len":10}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseMetadata(data)
		if err != nil {
			return
		}
		for _, k := range m.Keys {
			if k.Used > k.Len || k.Len <= 0 {
				t.Fatal("accepted inconsistent key entry")
			}
		}
	})
}

func FuzzParseCounters(f *testing.F) {
	f.Add((&counters{pinFail: 2}).marshal())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseCounters(data)
		if err == nil && string(c.marshal()) != string(data) {
			t.Fatal("counter round trip differs")
		}
	})
}

func FuzzParseInfo(f *testing.F) {
	f.Add([]byte(`{"serial":"SN-1","model":"UKEY","kind":"ukey"}`))
	f.Add([]byte(`{"serial":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		i, err := parseInfo(b)
		if err == nil && !ValidID(i.Serial) {
			t.Fatal("accepted an invalid serial")
		}
	})
}
