package fsutil

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for _, durable := range []bool{true, false} {
		if err := WriteFileAtomic(p, []byte("one"), 0o600, durable); err != nil {
			t.Fatal(err)
		}
		if err := WriteFileAtomic(p, []byte("two"), 0o600, durable); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		st, _ := os.Stat(p)
		if string(b) != "two" || st.Mode().Perm() != 0o600 {
			t.Fatalf("got %q, mode %v", b, st.Mode())
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "no", "such", "dir"), nil, 0o600, true); err == nil {
		t.Fatal("wrote into a missing directory")
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	var wg sync.WaitGroup
	keys := make([][]byte, 8)
	for i := range keys {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			k, err := LoadOrCreateKey(p)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}(i)
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if len(k) != 32 || !bytes.Equal(k, keys[0]) {
			t.Fatal("racing creators got different keys")
		}
	}
	if err := os.WriteFile(p, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(p); err == nil {
		t.Fatal("accepted a file that holds no key")
	}
}

func TestDecodeKey32(t *testing.T) {
	k := bytes.Repeat([]byte{0xab}, 32)
	for _, s := range []string{"abababababababababababababababababababababababababababababababab\n", "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=", "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s"} {
		got, err := DecodeKey32(s)
		if err != nil || !bytes.Equal(got, k) {
			t.Errorf("%q: %v", s, err)
		}
	}
	if _, err := DecodeKey32("abab"); err == nil {
		t.Error("short key accepted")
	}
}
