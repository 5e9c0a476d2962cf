package kme

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestSchemaV3 migrates a pool written under schema version 2 (kme_keys
// WITHOUT ROWID, where a segment's 8 KiB ciphertext sat inside the b-tree
// key) to version 3 and checks that the table is an ordinary rowid table
// and that the units written before are delivered with the same bytes.
func TestSchemaV3(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	ctx := context.Background()
	if err := db.Migrate(ctx, component, migrations[:2]); err != nil {
		t.Fatal(err)
	}
	s, err := newSealer(testMaster)
	if err != nil {
		t.Fatal(err)
	}
	// A 64-kbit segment and a 256-bit unit, as a v2 node filed them.
	seg := bytes.Repeat([]byte{0xa5}, 8192)
	for i := range seg {
		seg[i] ^= byte(i * 7)
	}
	small := bytes.Repeat([]byte{0x3c}, 32)
	ids := []string{"6f1e7f0a-8d6b-4c1e-9a57-0d5b3a2e9c11", "0b8c4d2e-1f3a-4b5c-8d6e-7f8091a2b3c4"}
	for i, plain := range [][]byte{seg, small} {
		enc, err := s.seal("KME_A", ids[i], plain)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO kme_keys (kme_id, key_id, seq, key_enc, state, created_at, bits) VALUES (?, ?, ?, ?, 0, ?, ?)`,
			"KME_A", ids[i], i+1, enc, 1000+i, len(plain)*8); err != nil {
			t.Fatal(err)
		}
	}
	k, err := New(ctx, db, Config{KMEID: "KME_A", SAEs: []string{"SAE_1", "SAE_2"}, MasterKey: testMaster, MaxKeySize: 65536})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	var ddl string
	if err := db.QueryRowContext(ctx, `SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'kme_keys'`).Scan(&ddl); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.ToUpper(ddl), "WITHOUT ROWID") {
		t.Fatalf("kme_keys is still WITHOUT ROWID after the migration:\n%s", ddl)
	}
	if got := k.StoredBits(); got != int64(len(seg)+len(small))*8 {
		t.Fatalf("stored bits after the migration: %d, want %d", got, (len(seg)+len(small))*8)
	}
	// The whole pool in one key: the segment (oldest first), then the unit.
	out, e := k.encKeys(ctx, "SAE_1", "SAE_2", 1, 65536)
	if e != nil {
		t.Fatal(e)
	}
	if !bytes.Equal(out[0].Key, seg) || out[0].ID != ids[0] {
		t.Fatalf("key after the migration: ID %s, %d bytes, equal %v", out[0].ID, len(out[0].Key), bytes.Equal(out[0].Key, seg))
	}
	out2, e := k.encKeys(ctx, "SAE_1", "SAE_2", 1, 256)
	if e != nil {
		t.Fatal(e)
	}
	if !bytes.Equal(out2[0].Key, small) {
		t.Fatal("second unit changed by the migration")
	}
	got, e := k.decKeys(ctx, "SAE_2", "SAE_1", []string{out[0].ID, out2[0].ID})
	if e != nil {
		t.Fatal(e)
	}
	if !bytes.Equal(got[0].Key, seg) || !bytes.Equal(got[1].Key, small) {
		t.Fatal("dec_keys after the migration returned other bytes")
	}
}
